"""The money rules 1-4 of docs/alerts.md, pure: each returns what should change (``Raise``,
``Resolve``, ``Update``) from a position, its history and the clock passed in (``today``, a
Korean day). Nothing here reads a clock or writes anything; the book (``alerts.book``) turns the
decisions into alerts and records.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from alerts.config import Thresholds
from alerts.model import (
    BELOW_FLOOR,
    LAPSE_STAGE,
    PROJECTED,
    SHORTFALL,
    TOP_DRIVERS,
    YEAR_END,
    Alert,
    Driver,
    PosRecord,
)
from cashpos.calendar import date_day, day_date, year_end_day
from state.forecast import Flow, Forecast
from state.forecast import drivers as forecast_drivers
from state.ledger import Commitment, EventKey, Journal, Position, PosKey

# An index row: (occurred ms, scoped event id, cash delta, committed delta); the event id is None
# for "the position as it is" (a release, a change of thresholds).
Row = tuple[int, str | None, int, int]
_FAR: int = 1 << 40  # a day after every real day


@dataclass(slots=True)
class Raise:
    rule: str
    ms: int  # the instant the raise is attributed to (the alert's id carries it)
    eid: str | None  # the scoped id of that event
    fields: dict[str, object] = field(default_factory=dict)
    severity: str | None = None
    stage: int = 0  # year_end: the stage announced


@dataclass(slots=True)
class Resolve:
    rule: str
    ms: int
    eid: str | None
    reason: str
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class Update:
    """projected_shortfall: the date moved earlier (new figures and drivers)."""

    rule: str
    ms: int
    eid: str | None
    fields: dict[str, object] = field(default_factory=dict)


Decision = Raise | Resolve | Update


class History(Protocol):
    """What the rules read of one position besides its balance: ``alerts.history.PosState``, or
    ``alerts.history.AccountHistory`` for an account judged as a whole (every fiscal year in
    play; ``pk`` and ``rec`` are then those of the newest year, which carries its alerts)."""

    @property
    def pk(self) -> PosKey: ...
    @property
    def rec(self) -> PosRecord: ...
    @property
    def cfg(self) -> Thresholds: ...
    @property
    def floor(self) -> int | None: ...
    @property
    def margin(self) -> int: ...
    @property
    def trend(self) -> int: ...
    @property
    def due(self) -> Mapping[int, int]: ...  # effective due day -> open amount
    @property
    def due_in_win(self) -> int: ...  # open amount due on or before today + horizon_days
    @property
    def commits(self) -> Mapping[str, tuple[int, int, str | None]]: ...  # cid -> open, due, date


def floor_and_trend(
    days: Mapping[int, list[int]], first: int, day: int, cfg: Thresholds
) -> tuple[int | None, int, int]:
    """(floor, trend, margin) on ``day``. The observed window is ``[max(first + 1, day - W),
    day - 1]``, ``W = outflow_days``: the first day never counts (a partial day, typically the
    opening balance). With fewer than ``min_history_days`` days observed there is no
    history-based floor and no trend."""
    start = max(first + 1, day - cfg.outflow_days)
    n = day - start
    auto: int | None = None
    trend = 0
    if first >= 0 and n >= cfg.min_history_days:
        so = sn = 0
        for d in range(start, day):
            b = days.get(d)
            if b is not None:
                so += b[0]
                sn += b[1]
        if cfg.floor_months:
            auto = max(0, so) * 30 * cfg.floor_months // n
        trend = sn // n
    floor = cfg.floor_krw if cfg.floor_krw is not None else auto
    if floor is not None and floor <= 0:
        floor = None
    margin = max(cfg.margin_krw, (floor or 0) * cfg.margin_pct // 100)
    return floor, (trend if cfg.trend else 0), margin


# -- 1. shortfall, 2. below_floor ------------------------------------------------------------------


def available(h: History, p: Position, rows: Sequence[Row]) -> list[Decision]:
    """Rules 1-2 on the position after a batch (``rows``: its index rows; empty: the position
    as it is). A transition is decided on the position after the batch: the two input topics
    are consumed independently, so a state in the middle of a batch may never have existed."""
    avail = p.cash - p.committed
    opened = h.rec.open
    floor, margin = h.floor, h.margin
    sf_on = SHORTFALL in opened
    bf_on = BELOW_FLOOR in opened
    # what the batch ends in, per rule: True = raise, False = resolve, None = nothing
    sf = (avail < 0) if not sf_on else (False if avail >= margin else None)
    if not sf_on and not sf:
        sf = None
    if not bf_on:
        bf = True if floor is not None and avail < floor else None
    else:
        bf = False if floor is None or avail >= floor + margin else None
    if sf is None and bf is None:
        return []
    if not rows:
        rows = [(p.last_event_ms, None, 0, 0)]
    ordered = sorted(rows, key=_row_ms) if len(rows) > 1 else rows
    out: list[Decision] = []
    if sf is not None:
        cond = (lambda a: a < 0) if sf else (lambda a: a >= margin)
        ms, eid, cash, com = since(ordered, p, cond)
        figures: dict[str, object] = {"cash": cash, "committed": com, "available": cash - com}
        if sf:
            figures.update(threshold=0, floor=floor, resolve_at=margin)
            out.append(Raise(SHORTFALL, ms, eid, figures))
        else:
            out.append(Resolve(SHORTFALL, ms, eid, "recovered", figures))
    if bf is not None:
        if floor is None:
            ms, eid = ordered[0][:2]
            out.append(Resolve(BELOW_FLOOR, ms, eid, "no_floor", balance(p)))
            return out
        fl = floor
        cond = (lambda a: a < fl) if bf else (lambda a: a >= fl + margin)
        ms, eid, cash, com = since(ordered, p, cond)
        figures = {"cash": cash, "committed": com, "available": cash - com}
        if bf:
            figures.update(
                threshold=floor,
                floor=floor,
                resolve_at=floor + margin,
                trend_per_day=h.trend if h.cfg.trend else None,
            )
            out.append(Raise(BELOW_FLOOR, ms, eid, figures))
        else:
            out.append(Resolve(BELOW_FLOOR, ms, eid, "recovered", figures))
    return out


def since(
    ordered: Sequence[Row], p: Position, cond: Callable[[int], bool]
) -> tuple[int, str | None, int, int]:
    """The first row (of rows in time order, ending in ``p``) from which ``cond(available)``
    held to the end; with the position (cash, committed) right after it."""
    cash, com = p.cash, p.committed
    at = len(ordered) - 1
    i = at
    while i >= 0:
        if not cond(cash - com):
            break
        at = i
        _ms, _eid, dc, dm = ordered[i]
        cash -= dc
        com -= dm
        i -= 1
    ms, eid = ordered[at][:2]
    cash, com = p.cash, p.committed  # the position right after row ``at``
    for r in ordered[at + 1 :]:
        cash -= r[2]
        com -= r[3]
    return ms, eid, cash, com


# -- 3. projected_shortfall ----------------------------------------------------------------------


def projected(
    h: History,
    p: Position,
    today: int,
    ms: int,
    eid: str | None,
    current: Alert | None,
    rows: Sequence[Row] | None = None,
    journal: Mapping[EventKey, Journal | bytes] | None = None,
    commitments: Mapping[tuple[str, str], Commitment] | None = None,
    fc: Forecast | None = None,
) -> list[Decision]:
    """Rule 3 with ``today`` the government clock (``h.due_in_win`` must be up to date for
    ``today + horizon_days``). ``current``: the open alert, if any; ``rows``, ``journal`` and
    ``commitments``: the batch's, to attribute a raise to its event. While raised, the date is
    only ever moved earlier, so a wobbling balance cannot produce a stream of updates.

    ``fc``: the account's forecast (``state.forecast``) on ``today``: the projection is then its
    expected cash over the horizon, with its drivers, the same computation the API serves.
    Without one (no forecast wired: the rule's own tests) the projection is the commitments due
    and the draining trend."""
    cfg = h.cfg
    thr = h.floor if cfg.projected_against_floor and h.floor is not None else 0
    if fc is not None and fc.today == today:
        return _projected_by(fc, h, p, today, ms, eid, current, thr, rows, journal, commitments)
    end = today + cfg.horizon_days
    tneg = min(h.trend, 0)
    low = p.cash - h.due_in_win + cfg.horizon_days * tneg
    if current is None:
        if low >= thr:
            return []
        if rows:
            due_by = _due_by(h, journal or {}, commitments or {}, end)
            ms, eid = projected_since(rows, low, thr, due_by)
        day, pc = first_crossing(h.due, p.cash, today, end, thr, tneg)
        figures = balance(p)
        figures.update(
            threshold=thr,
            floor=h.floor,
            resolve_at=thr + h.margin,
            projected_date=day_date(day).isoformat(),
            projected_cash=pc,
            trend_per_day=tneg or None,
            drivers=drivers(h.commits, day),
        )
        return [Raise(PROJECTED, ms, eid, figures)]
    if low >= thr + h.margin:
        return [Resolve(PROJECTED, ms, eid, "recovered", balance(p))]
    day, pc = first_crossing(h.due, p.cash, today, end, thr, tneg)
    iso = day_date(day).isoformat()
    if current.projected_date is not None and iso >= current.projected_date:
        return []
    figures = balance(p)
    figures.update(projected_date=iso, projected_cash=pc, drivers=drivers(h.commits, day))
    return [Update(PROJECTED, ms, eid, figures)]


def _projected_by(
    fc: Forecast,
    h: History,
    p: Position,
    today: int,
    ms: int,
    eid: str | None,
    current: Alert | None,
    thr: int,
    rows: Sequence[Row] | None,
    journal: Mapping[EventKey, Journal | bytes] | None,
    commitments: Mapping[tuple[str, str], Commitment] | None,
) -> list[Decision]:
    """Rule 3 on the forecast: the first day within the horizon its expected cash is below
    ``thr``; resolved when the horizon's lowest expected cash is back at ``thr`` + margin."""
    window = fc.expected.cash[: h.cfg.horizon_days + 1]
    low = min(window)
    if current is None and low >= thr:
        return []
    if current is not None and low >= thr + h.margin:
        return [Resolve(PROJECTED, ms, eid, "recovered", balance(p))]
    i = next(i for i, v in enumerate(window) if v < thr) if low < thr else len(window) - 1
    day, pc = today + i, window[i]
    iso = day_date(day).isoformat()
    top = [
        Driver(f.ref, -f.cash, day_date(f.day).isoformat(), f.kind)
        for f in forecast_drivers(fc.flows, day, _cash_of)
    ]
    if current is None:
        if rows:
            due_by = _due_by(h, journal or {}, commitments or {}, today + h.cfg.horizon_days)
            ms, eid = projected_since(rows, low, thr, due_by)
        figures = balance(p)
        figures.update(
            threshold=thr,
            floor=h.floor,
            resolve_at=thr + h.margin,
            projected_date=iso,
            projected_cash=pc,
            drivers=top,
        )
        return [Raise(PROJECTED, ms, eid, figures)]
    if low >= thr or (current.projected_date is not None and iso >= current.projected_date):
        return []
    figures = balance(p)
    figures.update(projected_date=iso, projected_cash=pc, drivers=top)
    return [Update(PROJECTED, ms, eid, figures)]


def _cash_of(f: Flow) -> int:
    return f.cash


def projected_since(
    rows: Sequence[Row], low: int, thr: int, due_by: Callable[[str | None], bool]
) -> tuple[int, str | None]:
    """The batch's event (in occurred_at order) from which the projection stayed below ``thr``
    to the end of the batch. Walking back, an event's cash change and its change to the open
    commitments due inside the window are undone; the day and the trend are the batch's."""
    ordered = sorted(rows, key=_row_ms) if len(rows) > 1 else rows
    at = len(ordered) - 1
    i = at
    while i >= 0 and low < thr:
        at = i
        _ms, eid, dc, dm = ordered[i]
        low -= dc
        if dm and due_by(eid):
            low += dm
        i -= 1
    return ordered[at][0], ordered[at][1]


def _due_by(
    h: History,
    journal: Mapping[EventKey, Journal | bytes],
    commitments: Mapping[tuple[str, str], Commitment],
    end: int,
) -> Callable[[str | None], bool]:
    """Whether the commitment an event changed falls due by ``end`` (unknown: yes)."""
    org = h.pk[0]

    def due_by(eid: str | None) -> bool:
        j = journal.get((org, eid)) if eid is not None else None
        cid = j.commitment_id if isinstance(j, Journal) else None
        if cid is None:
            return True
        c = h.commits.get(cid)
        if c is not None:
            return c[1] <= end
        cm = commitments.get((org, cid))
        if cm is None:
            return True
        due = date_day(dt.date.fromisoformat(cm.due_date)) if cm.due_date else year_end_day(cm.fiscal_year)
        return due <= end

    return due_by


def first_crossing(
    due: Mapping[int, int], cash: int, today: int, end: int, thr: int, tneg: int
) -> tuple[int, int]:
    """The first day in [today, end] with projected cash below ``thr`` (and that cash)."""
    keys = sorted(d for d in due if d <= end)
    i, n, cum = 0, len(keys), 0
    while i < n and keys[i] <= today:  # overdue and due today
        cum += due[keys[i]]
        i += 1
    if cash - cum < thr:
        return today, cash - cum
    if tneg == 0:
        for d in keys[i:]:
            cum += due[d]
            if cash - cum < thr:
                return d, cash - cum
    else:
        for d in range(today + 1, end + 1):
            while i < n and keys[i] <= d:
                cum += due[keys[i]]
                i += 1
            pc = cash - cum + (d - today) * tneg
            if pc < thr:
                return d, pc
    return end, cash - cum + (end - today) * tneg


def drivers(commits: Mapping[str, tuple[int, int, str | None]], day: int) -> list[Driver]:
    """The largest open commitments due by ``day``."""
    top = heapq.nlargest(
        TOP_DRIVERS,
        ((v[0], cid, v[2]) for cid, v in commits.items() if v[1] <= day),
        key=lambda x: (x[0], x[1]),
    )
    return [Driver(cid, amount, date) for amount, cid, date in top]


# -- 4. year_end -----------------------------------------------------------------------------------


def year_end(h: History, p: Position, today: int, ms: int, eid: str | None) -> list[Decision]:
    """Rule 4: each stage of ``year_end_days`` at most once per position (a later stage
    supersedes the earlier alert); resolved when no commitment is open. After 31 December the
    last stage applies (commitments still open in the prior-year processing window), and from
    20 January of the next year (출납정리기한) the stage ``LAPSE_STAGE``: what is still open
    then lapses at the year's close (which resolves it, as it does every alert of the year)."""
    stages = h.cfg.year_end_days
    rec = h.rec
    a = rec.open.get(YEAR_END)
    if not stages:
        return []
    left = year_end_day(h.pk[2]) - today
    if left > stages[0] and a is None:
        return []
    stage = 0
    if left <= LAPSE_STAGE:
        stage = LAPSE_STAGE
    else:
        for s in reversed(stages):  # ascending: the most urgent stage reached
            if left <= s:
                stage = s
                break
    out: list[Decision] = []
    if a is not None and p.committed <= 0:
        out.append(
            Resolve(YEAR_END, ms, eid, "no_open_commitments", {"open_commitments": 0, "open_amount": 0})
        )
        a = None
    if stage and p.committed > 0 and (rec.ye_stage == 0 or stage < rec.ye_stage):
        if a is not None:
            out.append(Resolve(YEAR_END, ms, eid, "superseded"))
        figures = balance(p)
        figures.update(
            stage_days=stage,
            open_commitments=len(h.commits),
            open_amount=p.committed,
            drivers=drivers(h.commits, _FAR),
        )
        out.append(Raise(YEAR_END, ms, eid, figures, "info" if stage >= 30 else "warning", stage))
    return out


def balance(p: Position) -> dict[str, object]:
    """The figures of a position an alert change carries."""
    return {"cash": p.cash, "committed": p.committed, "available": p.cash - p.committed}


def _row_ms(r: Row) -> int:
    return r[0]
