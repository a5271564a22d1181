"""The alert: rule names, the alert and its changes, the public shape and the messages; and the
records of the book's state (their RocksDB keys and codecs are ``state.layout``'s).

An alert's public shape (API, alerts topic, Redis, webhook) is its fields plus the government's
names and the instants as ``cashpos.calendar.utc_stamp``; ``due_date`` and ``projected_date``
are Korean calendar dates (``YYYY-MM-DD``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec
from msgspec import Struct

from cashpos.calendar import PRIOR_YEAR_LAST_JANUARY_DAY, utc_stamp
from cashpos.refdata import governments

SHORTFALL: Final = "shortfall"
BELOW_FLOOR: Final = "below_floor"
PROJECTED: Final = "projected_shortfall"
YEAR_END: Final = "year_end"
STALE: Final = "stale_data"
LAG: Final = "processor_lag"
RULES: Final = (SHORTFALL, BELOW_FLOOR, PROJECTED, YEAR_END, STALE, LAG)
# The rules judged on the account as a whole (every fiscal year of a government's account, i.e.
# its bank account) while more than one year is open; the others are judged per fiscal year.
ACCOUNT_RULES: Final = (SHORTFALL, BELOW_FLOOR, PROJECTED)
# year_end's stage on 20 January of the next year (출납정리기한), in days before 31 December: the
# commitments of the year still open then lapse at its close.
LAPSE_STAGE: Final = -PRIOR_YEAR_LAST_JANUARY_DAY
STATES: Final = ("raised", "acknowledged", "resolved")
# year_end's severity depends on its stage (rules.year_end)
SEVERITY: Final = {
    SHORTFALL: "critical",
    BELOW_FLOOR: "warning",
    PROJECTED: "warning",
    STALE: "warning",
    LAG: "warning",
}
TOP_DRIVERS: Final = 5

Source = tuple[str, int, int]  # the record (topic, partition, offset) of an event


class Driver(Struct, omit_defaults=True):
    """A flow behind a projected shortfall: ``commitment_id`` names the commitment, or for
    another ``kind`` of flow (``state.forecast.KINDS``) its reference (an order id, a schedule
    id, a learned pattern); ``open``: KRW it takes out; ``due_date``: its day."""

    commitment_id: str
    open: int
    due_date: str | None
    kind: str | None = None


class Alert(Struct, omit_defaults=True):
    id: str
    rule: str
    severity: str
    state: str  # raised | acknowledged | resolved
    rev: int  # changes of this alert (raise = 1)
    seq: int
    org_code: str
    account: str | None = None
    fiscal_year: int | None = None
    raised_ms: int = 0  # occurred_at of the event that crossed (operational: wall clock)
    raised_event: str | None = None
    updated_ms: int | None = None
    resolved_ms: int | None = None
    resolved_event: str | None = None
    resolution: str | None = None
    cash: int | None = None
    committed: int | None = None
    available: int | None = None
    floor: int | None = None
    threshold: int | None = None
    resolve_at: int | None = None  # the level (available or projected cash) that resolves it
    projected_date: str | None = None
    projected_cash: int | None = None
    trend_per_day: int | None = None
    drivers: list[Driver] = []
    stage_days: int | None = None  # year_end: days before 31 December (LAPSE_STAGE: 20 January)
    open_commitments: int | None = None
    open_amount: int | None = None
    minutes: int | None = None
    lag_records: int | None = None
    worker: str | None = None
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    message: str = ""
    # shortfall, below_floor, projected_shortfall judged on the account as a whole: the fiscal
    # years whose positions the figures add (the alert is kept on the newest; None: its own)
    fiscal_years: list[int] | None = None


@dataclass(slots=True)
class AlertChange:
    """One change of one alert: what the worker publishes (topic, Redis, channel, webhook)."""

    change: str  # raised | updated | resolved
    alert: Alert  # a snapshot
    source: Source | None = None  # the triggering record, to recognise replays

    def to_dict(self) -> dict[str, object]:
        return alert_dict(self.alert, self.change)


def alert_dict(a: Alert, change: str | None = None) -> dict[str, object]:
    """The public JSON shape of an alert (API, topic, channel, webhook)."""
    d: dict[str, object] = msgspec.to_builtins(a)
    g = governments().get(a.org_code)
    if g is not None:
        d["name"] = g.name
        d["province_code"] = g.province_code
        d["province_name"] = g.province_name
    d["raised_at"] = d["opened_at"] = utc_stamp(a.raised_ms)
    if a.resolved_ms is not None:
        d["resolved_at"] = utc_stamp(a.resolved_ms)
    if a.acknowledged_ms is not None:
        d["acknowledged_at"] = utc_stamp(a.acknowledged_ms)
    if change is not None:
        d["change"] = change
    return d


def parse_id(alert_id: str) -> tuple[str, str, int, str, str] | None:
    """``{org}:{account}:{fiscal_year}:{rule}:{n}`` split (None: not an alert id)."""
    parts = alert_id.split(":")
    if len(parts) != 5:
        return None
    org, acc, fy, rule, n = parts
    try:
        return org, acc, int(fy), rule, n
    except ValueError:
        return None


def message(a: Alert) -> str:
    """The alert's one-line text (English; the dashboard shows it as is)."""
    where = _label(a.org_code, a.account, a.fiscal_year, a.fiscal_years)
    r = a.rule
    if r == SHORTFALL:
        return f"{where}: available {_krw(a.available or 0)} is below zero"
    if r == BELOW_FLOOR:
        return f"{where}: available {_krw(a.available or 0)} is below the reserve floor {_krw(a.floor or 0)}"
    if r == PROJECTED:
        what = "below zero" if not a.threshold else f"below {_krw(a.threshold)}"
        due = ", ".join(d.commitment_id for d in a.drivers[:3])
        return (
            f"{where}: cash projected to fall {what} on {a.projected_date} "
            f"({_krw(a.projected_cash or 0)})" + (f"; commitments due: {due}" if due else "")
        )
    if r == YEAR_END and a.stage_days == LAPSE_STAGE:
        return (
            f"{where}: {a.open_commitments} open commitment(s), {_krw(a.open_amount or 0)}, "
            f"lapse at the close of fiscal year {a.fiscal_year} (20 January has come)"
        )
    if r == YEAR_END:
        return (
            f"{where}: {a.open_commitments} open commitment(s), {_krw(a.open_amount or 0)}, "
            f"{a.stage_days} days or less before 31 December"
        )
    if r == STALE:
        return f"{where}: no event applied for {a.minutes} office-hour minutes"
    if r == LAG:
        return f"processor {a.worker}: {a.lag_records:,} records behind"
    return where


def resolved_message(a: Alert) -> str:
    return f"resolved ({a.resolution}): {message(a)}"


def _krw(n: int) -> str:
    return f"{n:,} KRW"


def _label(org: str, account: str | None, fy: int | None, years: list[int] | None = None) -> str:
    g = governments().get(org)
    name = f"{g.name} ({org})" if g else org
    if account is None:
        return name
    return f"{name} {account} {'+'.join(map(str, years)) if years else fy}"


# -- the book's state, as stored (keys and codecs: ``state.layout``) -------------------------------


class PosRecord(Struct, array_like=True):
    """One position's alert state."""

    first_day: int = -1  # the first Korean day with an event (``cashpos.calendar.kst_day``)
    seqs: dict[str, int] = {}  # crossings per rule
    open: dict[str, Alert] = {}
    ye_stage: int = 0  # the most urgent year-end stage announced (0: none)
    held: bool = False  # evaluation deferred until the partition is settled
    last_ids: dict[str, str] = {}  # the latest id raised per rule (ids never repeat)


class OpenCommitment(Struct, array_like=True):
    account: str
    fiscal_year: int
    open: int
    due_day: int  # -1: no due_date
    due_date: str | None = None


class OrgRecord(Struct, array_like=True):
    """One government's stale-data alert."""

    stale_seq: int = 0
    stale: Alert | None = None


class WorkerRecord(Struct, array_like=True):
    """One worker's processor-lag alert."""

    lag_seq: int = 0
    lag: Alert | None = None
    above_since_ms: int = 0
