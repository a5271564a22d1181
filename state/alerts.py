"""Funds alerts: the rules and the alert book. Pure: no I/O (bytes in, bytes out).

Everything is integer KRW. "Day" is a Korea-time (KST) calendar day, counted as days since
1970-01-01 (:func:`day_of`). Alerts are kept per position, i.e. per (government, account, fiscal
year) as in ``state.ledger``, except the two operational rules (per government, per worker).

Clocks
------
Rules on money use *event time*, never the wall clock, so that re-folding the same events gives
the same alerts (and the same ids):

* the **position clock** is the KST day of the latest ``occurred_at`` applied to the position
  (``Position.last_event_ms``); it drives the outflow window and the floor;
* the **government clock** ("today") is the latest position clock of the government; it drives
  the projection and the year-end rule. When it moves to a new day every position of that
  government is re-evaluated (at most once a day per government).

Only the operational rules (5) use the wall clock.

History (per position, daily buckets)
-------------------------------------
* ``outflow(d)``: payments and transfers *out of* the account on day ``d`` (a reversal of one
  counts negatively on the reversal's day). Receipts, transfers in and commitments are not
  outflow.
* ``net(d)``: the *uncommitted* net cash flow of day ``d``: every cash change except payments
  against a commitment (those are already foreseen by the commitment's due date).
* The **observed window** for day ``D`` is the days ``[max(first + 1, D - W), D - 1]`` where
  ``first`` is the first day the position had any event and ``W = outflow_days`` (default 90).
  The first day itself never counts: it is a partial day and typically holds the opening
  balance. ``n`` is the number of days in the window. With ``n < min_history_days`` (default 7)
  there is no history-based floor and no trend; with fewer than ``W`` days the average is over the
  ``n`` days observed.

The rules
---------
1. **shortfall** (critical): ``available = cash - committed < 0``.
2. **below_floor** (warning): ``available < floor``. ``floor = floor_krw`` when configured
   (absolute), else ``floor_months * 30 * sum(outflow over the window) // n`` (default 2 months;
   ``floor_months = 0`` and no ``floor_krw``: no floor). A floor <= 0 or undefined (short history)
   means the rule is inactive (an active alert resolves).
   Rules 1 and 2 are evaluated **after every event** of the batch (the index rows, in applied
   order), so the crossing event is exact and does not depend on batch boundaries. The floor is
   the one of the position clock's day (it only moves when the day does, or when a late event
   changes a past day of the window).
3. **projected_shortfall** (warning): with ``today`` the government clock, ``H = horizon_days``
   (default 90) and ``t = min(0, trend)`` where ``trend = sum(net over the window) // n`` (0 without
   enough history, or with ``trend = false``)::

       projected_cash(D) = cash - sum(open(c) for open commitments c with due(c) <= D) + (D - today) * t

   for ``D`` in ``[today, today + H]``; ``due(c)`` is the commitment's ``due_date``; an overdue
   commitment counts from ``today``; a commitment without ``due_date`` counts on 31 December of
   its fiscal year (cash books close then). There are **no scheduled receipts** in the event
   contract, so none are added; a positive trend is never counted (receipts are not promised),
   a negative one is (spending not yet committed keeps draining cash). The alert is raised when
   ``min_D projected_cash(D) < threshold`` (0, or the floor with ``projected_against_floor``); it
   names the first such ``D`` (``projected_date``), the projected cash then, and the largest open
   commitments due by then (``drivers``, top 5). Note that committed money is already out of
   ``available``: paying a commitment leaves ``available`` unchanged, it moves ``cash``; this rule
   is about the bank balance going below zero on the day the payments fall due, which it
   announces when the commitments are registered, before it happens. Without a trend it cannot
   fire while ``available >= 0`` *and* every commitment falls due within the horizon.
   Evaluated at the end of each batch for the positions the batch touched (and, on a new day,
   for the whole government). A raise is attributed to the batch's event (in occurred_at order)
   from which the projection stayed below the threshold, so, like rules 1-2, it does not depend
   on where batches end (a replay batches differently). While raised, the date is only ever moved *earlier* (an
   ``updated`` change with new drivers); it is not moved later, so a wobbling balance cannot
   produce a stream of updates.
4. **year_end** (info at 30 days, warning at 14 and 7): the position has open commitments
   (``committed > 0``) and ``31 Dec(fiscal_year) - today <= N`` for a stage ``N`` of
   ``year_end_days`` (default 30, 14, 7). Each stage is raised at most once per position (a later
   stage resolves the earlier alert as ``superseded``); the alert resolves when no commitment is
   open. After 31 December the last stage applies (commitments still open in the prior-year
   processing window).
5. Operational, wall clock (``check_stale``/``check_lag``):
   **stale_data**: no event applied for a government for ``stale_minutes`` (default 120)
   *office-hour* minutes (KST 09:00-18:00 on business days; weekends and public holidays do not
   count). Resolved by the next applied event. **processor_lag**: the worker's consumer lag is
   above ``lag_records`` for ``lag_seconds`` in a row; resolved below half of ``lag_records``.

Edge triggering and hysteresis
------------------------------
An alert is raised once when its condition becomes true and resolved once when the condition is
false *by a margin*: ``margin = max(margin_krw, floor * margin_pct // 100)`` (defaults 1,000,000
KRW and 5 %). shortfall resolves at ``available >= margin``, below_floor at ``available >= floor
+ margin``, projected_shortfall at ``min projected_cash >= threshold + margin``. Between the two
levels nothing happens, so a balance wobbling around a threshold raises one alert, not a storm.

Identity and lifecycle
----------------------
``id = {org}:{account}:{fiscal_year}:{rule}:{ms}`` where ``ms`` is the epoch-ms instant of the
event the raise is attributed to (``-{seq}`` appended when two crossings share an instant;
year-end: ``...:year_end:d{N}``; operational: ``{org}::0:stale_data:{ms}`` and
``worker-{id}::0:processor_lag:{ms}``, wall-clock instants). ``rev`` counts the changes of one alert. States: ``raised``
-> ``acknowledged`` (by a user) -> ``resolved``; an acknowledgement is kept through resolution.
The book's state (per position: crossing counters, open alerts, year-end stage, first day; daily
buckets; the open commitments with their due days) is encoded as RocksDB records that the worker
writes in the same WriteBatch as the balances, with an outbox record per change; so after a crash
the book on disk matches the balances on disk, and the replayed events raise exactly what had
not been written.
"""

from __future__ import annotations

import datetime as dt
import heapq
import operator
import tomllib
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from cashpos.calendar import DAY_MS, KST, KST_OFFSET_MS, is_business_day
from cashpos.refdata import governments
from state import layout
from state.layout import alert_pos_key as pos_key
from state.layout import day_key, marker_key, open_key, org_key, worker_key
from state.ledger import Changes, Commitment, Position, PosKey, unscoped_id

_EPOCH: Final = dt.date(1970, 1, 1).toordinal()

SHORTFALL: Final = "shortfall"
BELOW_FLOOR: Final = "below_floor"
PROJECTED: Final = "projected_shortfall"
YEAR_END: Final = "year_end"
STALE: Final = "stale_data"
LAG: Final = "processor_lag"
RULES: Final = (SHORTFALL, BELOW_FLOOR, PROJECTED, YEAR_END, STALE, LAG)
STATES: Final = ("raised", "acknowledged", "resolved")
_SEVERITY: Final = {SHORTFALL: "critical", BELOW_FLOOR: "warning", PROJECTED: "warning",
                    STALE: "warning", LAG: "warning"}
TOP_DRIVERS: Final = 5
_NEVER: Final = 1 << 40  # a day after every real day
_LAZY: Final = ("", -1, -1)  # "the source of the triggering event, looked up when needed"


def day_of(ms: int) -> int:
    """KST calendar day of an epoch-ms instant (days since 1970-01-01)."""
    return (ms + KST_OFFSET_MS) // DAY_MS


def day_date(day: int) -> dt.date:
    return dt.date.fromordinal(day + _EPOCH)


def date_day(d: dt.date) -> int:
    return d.toordinal() - _EPOCH


def day_start_ms(day: int) -> int:
    return day * DAY_MS - KST_OFFSET_MS


def year_end_day(fiscal_year: int) -> int:
    return date_day(dt.date(fiscal_year, 12, 31))


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, KST).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# Configuration

Krw = Annotated[int, Meta(gt=0, le=10**17)]
NonNegKrw = Annotated[int, Meta(ge=0, le=10**17)]
Days = Annotated[int, Meta(ge=1, le=366)]
Months = Annotated[int, Meta(ge=0, le=24)]
Pct = Annotated[int, Meta(ge=0, le=100)]
Minutes = Annotated[int, Meta(ge=1, le=7 * 24 * 60)]


class Thresholds(Struct, forbid_unknown_fields=True, frozen=True):
    """The effective settings of one (government, account)."""

    floor_krw: Krw | None = None  # absolute reserve floor; wins over floor_months
    floor_months: Months = 2  # floor = months x 30 days x average daily outflow; 0: none
    outflow_days: Days = 90
    min_history_days: Days = 7
    margin_krw: NonNegKrw = 1_000_000
    margin_pct: Pct = 5
    horizon_days: Days = 90
    trend: bool = True  # the projection subtracts a draining (negative) uncommitted trend
    projected_against_floor: bool = False
    year_end_days: tuple[Days, ...] = (30, 14, 7)
    stale_minutes: Minutes = 120
    enabled: bool = True


class Override(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A partial setting (file sections, ``PUT /v1/thresholds``): unset fields inherit;
    ``floor_krw: null`` removes an inherited absolute floor."""

    floor_krw: Krw | None | UnsetType = UNSET
    floor_months: Months | UnsetType = UNSET
    outflow_days: Days | UnsetType = UNSET
    min_history_days: Days | UnsetType = UNSET
    margin_krw: NonNegKrw | UnsetType = UNSET
    margin_pct: Pct | UnsetType = UNSET
    horizon_days: Days | UnsetType = UNSET
    trend: bool | UnsetType = UNSET
    projected_against_floor: bool | UnsetType = UNSET
    year_end_days: Annotated[list[Days], Meta(max_length=8)] | UnsetType = UNSET
    stale_minutes: Minutes | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


_OVERRIDE_FIELDS: Final = Override.__struct_fields__


def merge(base: Thresholds, ov: Override) -> Thresholds:
    upd = {f: getattr(ov, f) for f in _OVERRIDE_FIELDS if getattr(ov, f) is not UNSET}
    if not upd:
        return base
    if "year_end_days" in upd:
        upd["year_end_days"] = tuple(sorted(set(upd["year_end_days"]), reverse=True))
    return msgspec.structs.replace(base, **upd)


class Operational(Struct, forbid_unknown_fields=True, frozen=True):
    lag_records: Annotated[int, Meta(gt=0)] = 100_000
    lag_seconds: Annotated[int, Meta(ge=0)] = 30
    recent_keep: Annotated[int, Meta(gt=0, le=100_000)] = 2_000  # resolved alerts kept in Redis
    # A partition is "settled" (its rules evaluated batch by batch) unless it is being rebuilt
    # or one of its two input topics has more than this many records left to read.
    settle_backlog_records: Annotated[int, Meta(ge=0)] = 5_000


class AlertConfig(Struct, forbid_unknown_fields=True):
    """The alert configuration file (TOML or JSON)::

        [defaults]                       # every government and account
        [accounts.custody]               # one account code, every government
        [governments."5260000"."*"]      # one government, every account
        [governments."5260000".general]  # one government and account
        [operational]

    Resolution order, later wins: built-in defaults, ``defaults``, ``accounts.<acc>``,
    ``governments.<org>."*"``, ``governments.<org>.<acc>``, then the ``PUT /v1/thresholds``
    overrides (``<org>/*``, then ``<org>/<acc>``).
    """

    defaults: Override = msgspec.field(default_factory=Override)
    accounts: dict[str, Override] = {}
    governments: dict[str, dict[str, Override]] = {}
    operational: Operational = msgspec.field(default_factory=Operational)

    def validate(self) -> AlertConfig:
        govs = governments()
        codes = {a.code for g in govs.values() for a in g.accounts}
        for acc in self.accounts:
            if acc not in codes:
                raise ValueError(f"alert config: unknown account {acc!r}")
        for org, per in self.governments.items():
            g = govs.get(org)
            if g is None:
                raise ValueError(f"alert config: unknown government {org!r}")
            for acc in per:
                if acc != "*" and acc not in g.account_codes:
                    raise ValueError(f"alert config: {org} has no account {acc!r}")
        return self


DEFAULT_CONFIG_PATH: Final = Path(__file__).resolve().parent.parent / "cashpos" / "alerts.toml"


def decode_config(raw: bytes, fmt: str = "toml") -> AlertConfig:
    """Strictly decode and validate a configuration (raises ValueError/msgspec.ValidationError)."""
    if fmt == "json":
        cfg = msgspec.json.decode(raw, type=AlertConfig)
    else:
        cfg = msgspec.convert(tomllib.loads(raw.decode()), type=AlertConfig)
    return cfg.validate()


def load_config(path: str | Path | None = None) -> AlertConfig:
    """Read the configuration file (``None``: the shipped default; a missing default file means
    the built-in defaults)."""
    p = Path(path) if path else DEFAULT_CONFIG_PATH
    if not p.exists():
        if path:
            raise FileNotFoundError(f"alert config {p} not found")
        return AlertConfig()
    return decode_config(p.read_bytes(), "json" if p.suffix == ".json" else "toml")


def override_field(org: str, account: str) -> str:
    """The field of the Redis thresholds hash for one override (account ``*``: all)."""
    return f"{org}|{account}"


def decode_overrides(raw: Mapping[bytes | str, bytes | str]) -> dict[tuple[str, str], Override]:
    """The Redis thresholds hash, decoded; invalid entries are skipped."""
    out: dict[tuple[str, str], Override] = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else k
        org, _, acc = key.partition("|")
        try:
            out[(org, acc)] = msgspec.json.decode(v, type=Override)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
    return out


class Resolver:
    """Effective thresholds per (government, account), cached."""

    def __init__(self, config: AlertConfig, overrides: Mapping[tuple[str, str], Override] | None = None):
        self.config = config
        self.overrides = dict(overrides or {})
        self.base = merge(Thresholds(), config.defaults)
        self._cache: dict[tuple[str, str], Thresholds] = {}

    def get(self, org: str, account: str) -> Thresholds:
        key = (org, account)
        t = self._cache.get(key)
        if t is None:
            c = self.config
            t = self.base
            if account in c.accounts:
                t = merge(t, c.accounts[account])
            per = c.governments.get(org)
            if per:
                if "*" in per:
                    t = merge(t, per["*"])
                if account != "*" and account in per:
                    t = merge(t, per[account])
            for k in ((org, "*"), (org, account)):
                ov = self.overrides.get(k)
                if ov is not None:
                    t = merge(t, ov)
            self._cache[key] = t
        return t

    def set_overrides(self, overrides: Mapping[tuple[str, str], Override]) -> set[tuple[str, str]]:
        """Replace the overrides; returns the (org, account|*) keys whose override changed."""
        old = self.overrides
        changed = {k for k in set(old) | set(overrides) if old.get(k) != overrides.get(k)}
        if changed:
            self.overrides = dict(overrides)
            self._cache.clear()
        return changed


# ---------------------------------------------------------------------------------------------
# Alerts


class Driver(Struct):
    commitment_id: str
    open: int
    due_date: str | None


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
    stage_days: int | None = None
    open_commitments: int | None = None
    open_amount: int | None = None
    minutes: int | None = None
    lag_records: int | None = None
    worker: str | None = None
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    message: str = ""


@dataclass(slots=True)
class AlertChange:
    """One change of one alert: what the worker publishes (topic, Redis, channel, webhook)."""

    change: str  # raised | updated | resolved
    alert: Alert  # a snapshot
    source: tuple[str, int, int] | None = None  # the triggering record, to recognise replays

    @property
    def outbox_key(self) -> bytes:
        a = self.alert
        return layout.outbox_key(a.org_code, a.id, a.rev)

    def to_dict(self) -> dict[str, object]:
        return alert_dict(self.alert, self.change)

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.to_dict())


def alert_dict(a: Alert, change: str | None = None) -> dict[str, object]:
    """The public JSON shape of an alert (API, topic, channel, webhook)."""
    d: dict[str, object] = msgspec.to_builtins(a)
    g = governments().get(a.org_code)
    if g is not None:
        d["name"] = g.name
        d["province_code"] = g.province_code
        d["province_name"] = g.province_name
    d["raised_at"] = d["opened_at"] = iso_ms(a.raised_ms)
    if a.resolved_ms is not None:
        d["resolved_at"] = iso_ms(a.resolved_ms)
    if a.acknowledged_ms is not None:
        d["acknowledged_at"] = iso_ms(a.acknowledged_ms)
    if change is not None:
        d["change"] = change
    return d


def parse_id(alert_id: str) -> tuple[str, str, int, str, str] | None:
    parts = alert_id.split(":")
    if len(parts) != 5:
        return None
    org, acc, fy, rule, n = parts
    try:
        return org, acc, int(fy), rule, n
    except ValueError:
        return None


def _krw(n: int) -> str:
    return f"{n:,} KRW"


def _label(org: str, account: str | None, fy: int | None) -> str:
    g = governments().get(org)
    name = f"{g.name} ({org})" if g else org
    return name if account is None else f"{name} {account} {fy}"


# ---------------------------------------------------------------------------------------------
# Persistent records

class PosRecord(Struct, array_like=True):
    first_day: int = -1
    seqs: dict[str, int] = {}  # crossings per rule
    open: dict[str, Alert] = {}
    ye_stage: int = 0  # the most urgent year-end stage announced (0: none)
    held: bool = False  # evaluation deferred until the partition is settled (see ``hold``)
    last_ids: dict[str, str] = {}  # the latest id raised per rule (ids never repeat)


class OpenCommitment(Struct, array_like=True):
    account: str
    fiscal_year: int
    open: int
    due_day: int  # -1: no due_date
    due_date: str | None = None


class OrgRecord(Struct, array_like=True):
    stale_seq: int = 0
    stale: Alert | None = None


class WorkerRecord(Struct, array_like=True):
    lag_seq: int = 0
    lag: Alert | None = None
    above_since_ms: int = 0


# The keys of these records (tag ``a``) and their msgpack codec are ``state.layout``'s.
_encode = layout.encode_record
_dec_pos = layout.record_decoder(PosRecord)
_dec_open = layout.record_decoder(OpenCommitment)
_dec_org = layout.record_decoder(OrgRecord)
_dec_worker = layout.record_decoder(WorkerRecord)

# scan(prefix, start) -> (key, value) pairs with key >= start (or prefix) and key.startswith(prefix)
Scan = Callable[[bytes, bytes | None], Iterable[tuple[bytes, bytes]]]


# ---------------------------------------------------------------------------------------------
# The book


@dataclass(slots=True)
class PosState:
    pk: PosKey
    rec: PosRecord
    cfg: Thresholds
    clock: int = -1  # the position clock (KST day)
    days: dict[int, list[int]] = field(default_factory=dict)  # day -> [outflow, net]
    commits: dict[str, tuple[int, int, str | None]] = field(default_factory=dict)  # cid -> open, due, date
    due: dict[int, int] = field(default_factory=dict)  # effective due day -> open amount
    win_end: int | None = None
    due_in_win: int = 0
    floor_day: int = -2  # the day floor/trend/margin were computed for (-2: stale)
    floor: int | None = None
    margin: int = 0
    trend: int = 0
    changed_days: set[int] = field(default_factory=set)
    ye_from: int = 0  # the first day of the earliest year-end stage


@dataclass(slots=True)
class OrgState:
    clock: int = -1  # the government clock (KST day)
    clock_ms: int = 0
    rec: OrgRecord = field(default_factory=OrgRecord)
    pks: set[PosKey] = field(default_factory=set)


class AlertBook:
    def __init__(self, config: AlertConfig | None = None,
                 overrides: Mapping[tuple[str, str], Override] | None = None,
                 worker_id: str = "worker") -> None:
        self.config = config or AlertConfig()
        self.resolver = Resolver(self.config, overrides)
        self.worker_id = worker_id
        self.positions: dict[PosKey, PosState] = {}
        self.orgs: dict[str, OrgState] = {}
        self.worker = WorkerRecord()
        self._dirty: set[PosKey] = set()
        self._dirty_orgs: set[str] = set()
        self._dirty_worker = False
        self._commit_records: dict[bytes, bytes] = {}
        self._outbox: list[AlertChange] = []
        self._journal: Mapping[tuple[str, str], object] = {}
        self._commitments: Mapping[tuple[str, str], Commitment] = {}  # the batch's
        self.held: set[PosKey] = set()  # positions whose evaluation waits for a settled partition
        # Open in the serving copy but not in this book (see ``load_org``): per position, by rule
        self.published: dict[PosKey, dict[str, Alert]] = {}

    # -- loading ---------------------------------------------------------------------------------

    def _org(self, org: str) -> OrgState:
        o = self.orgs.get(org)
        if o is None:
            o = self.orgs[org] = OrgState()
        return o

    def _new_pos(self, pk: PosKey, rec: PosRecord | None = None) -> PosState:
        cfg = self.resolver.get(pk[0], pk[1])
        st = PosState(pk, rec or PosRecord(), cfg, ye_from=_ye_from(pk[2], cfg))
        self.positions[pk] = st
        self._org(pk[0]).pks.add(pk)
        return st

    def load_org(self, org: str, positions: Mapping[PosKey, Position], scan: Scan,
                 seed: Iterable[Alert] = ()) -> list[tuple[bytes, bytes]]:
        """Load one government's alert state (its records, through ``scan``) next to its
        positions (those of ``org``). Returns records to write.

        Without alert state on disk for ``org`` (first start with alerting, or a worker taking
        over a partition it never owned), the open-commitment index is built from the ledger's
        commitments and the open alerts are taken from ``seed`` (the serving copy's open alerts
        of ``org``, i.e. the previous owner's), so that the new owner continues them instead of
        raising them again; its positions are evaluated once it has caught up (``hold``)."""
        self.drop_orgs({org})
        o = self._org(org)
        for k, v in scan(layout.alert_pos_prefix(org), None):
            self._new_pos(layout.parse_alert_pos_key(k), _dec_pos.decode(v))
        for pk, p in positions.items():
            if pk[0] != org:
                continue
            st = self.positions.get(pk) or self._new_pos(pk)
            if p.last_event_ms:
                st.clock = day_of(p.last_event_ms)
                if st.clock > o.clock:
                    o.clock, o.clock_ms = st.clock, p.last_event_ms
        for pk in list(o.pks):
            st = self.positions[pk]
            start = st.clock - st.cfg.outflow_days - 1
            prefix = layout.day_prefix(pk)
            for k, v in scan(prefix, layout.day_start(prefix, max(start, 0))):
                st.days[layout.day_of_key(prefix, k)] = list(layout.decode_day(v))
        out: list[tuple[bytes, bytes]] = []
        found = any(True for _ in scan(marker_key(org), None))
        for a in seed:
            if a.org_code != org or a.state == "resolved":
                continue
            if a.rule == STALE:
                if not found:
                    o.rec.stale = a
                    self._dirty_orgs.add(org)
                continue
            if a.account is None or a.fiscal_year is None or a.rule not in _SEVERITY and a.rule != YEAR_END:
                continue
            pk = (org, a.account, a.fiscal_year)
            st = self.positions.get(pk) or self._new_pos(pk)
            if not found:
                self._adopt(st, a)
                continue
            cur = st.rec.open.get(a.rule)
            if cur is None or cur.id != a.id:
                # published after this state was last written (a crash lost the rest): a raise
                # of the same rule continues it; see ``_reconcile``
                self.published.setdefault(pk, {})[a.rule] = a
        if found:
            for k, v in scan(layout.open_prefix(org), None):
                if v:
                    oc = _dec_open.decode(v)
                    self._set_open(org, layout.open_cid(k), oc.account, oc.fiscal_year,
                                   oc.open, oc.due_day, oc.due_date)
        else:  # first start with alerting on this state: index the ledger's open commitments
            for k, v in scan(layout.commitments_prefix(org), None):
                c = layout.decode_commitment(v)
                if c.open > 0 and not c.reversed:
                    cid = layout.commitment_id(k)
                    due = date_day(dt.date.fromisoformat(c.due_date)) if c.due_date else -1
                    self._set_open(org, cid, c.account, c.fiscal_year, c.open, due, c.due_date)
                    out.append((open_key(org, cid),
                                _encode(OpenCommitment(c.account, c.fiscal_year, c.open, due, c.due_date))))
            out.append((marker_key(org), b"1"))
        for _k, v in scan(org_key(org), None):
            o.rec = _dec_org.decode(v)
        for pk in o.pks:
            if self.positions[pk].rec.held:
                self.held.add(pk)
        return out

    def load_worker(self, scan: Scan) -> None:
        for _k, v in scan(worker_key(self.worker_id), None):
            self.worker = _dec_worker.decode(v)

    def drop_orgs(self, orgs: Iterable[str]) -> None:
        for org in orgs:
            o = self.orgs.pop(org, None)
            if o is None:
                continue
            for pk in o.pks:
                self.positions.pop(pk, None)
                self._dirty.discard(pk)
                self.held.discard(pk)
                self.published.pop(pk, None)
            self._dirty_orgs.discard(org)

    # -- queries ---------------------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        out = [a for st in self.positions.values() for a in st.rec.open.values()]
        out += [o.rec.stale for o in self.orgs.values() if o.rec.stale is not None]
        if self.worker.lag is not None:
            out.append(self.worker.lag)
        return out

    def find(self, alert_id: str) -> Alert | None:
        parsed = parse_id(alert_id)
        if parsed is None:
            return None
        org, acc, fy, rule, _ = parsed
        if rule == STALE:
            o = self.orgs.get(org)
            a = o.rec.stale if o else None
        elif rule == LAG:
            a = self.worker.lag
        else:
            st = self.positions.get((org, acc, fy))
            a = st.rec.open.get(rule) if st else None
        return a if a is not None and a.id == alert_id else None

    def acknowledge(self, alert_id: str, by: str, at_ms: int) -> bool:
        """Record a user's acknowledgement (first one wins). True if it changed the book."""
        a = self.find(alert_id)
        if a is None or a.acknowledged_by is not None:
            return False
        a.acknowledged_by, a.acknowledged_ms = by, at_ms
        if a.state == "raised":
            a.state = "acknowledged"
        parsed = parse_id(alert_id)
        assert parsed is not None
        if parsed[3] == STALE:
            self._dirty_orgs.add(parsed[0])
        elif parsed[3] == LAG:
            self._dirty_worker = True
        else:
            self._dirty.add((parsed[0], parsed[1], parsed[2]))
        return True

    # -- records ---------------------------------------------------------------------------------

    def take_records(self) -> list[tuple[bytes, bytes]]:
        """Encoded state changed since the last call, and one outbox record per alert change."""
        out: list[tuple[bytes, bytes]] = []
        enc = _encode
        for pk in self._dirty:
            st = self.positions.get(pk)
            if st is not None:
                out.append((pos_key(pk), enc(st.rec)))
        self._dirty.clear()
        for org in self._dirty_orgs:
            o = self.orgs.get(org)
            if o is not None:
                out.append((org_key(org), enc(o.rec)))
        self._dirty_orgs.clear()
        if self._dirty_worker:
            out.append((worker_key(self.worker_id), enc(self.worker)))
            self._dirty_worker = False
        out += self._commit_records.items()
        self._commit_records = {}
        for ch in self._outbox:
            out.append((ch.outbox_key, ch.to_json()))
        self._outbox = []
        return out

    # -- open commitments --------------------------------------------------------------------------

    def _set_open(self, org: str, cid: str, account: str, fy: int, open_: int, due_day: int,
                  due_date: str | None) -> PosState:
        pk = (org, account, fy)
        st = self.positions.get(pk) or self._new_pos(pk)
        eff = due_day if due_day >= 0 else year_end_day(fy)
        old = st.commits.get(cid)
        if old is not None:
            self._due_add(st, old[1], -old[0])
        if open_ > 0:
            st.commits[cid] = (open_, eff, due_date)
            self._due_add(st, eff, open_)
        elif old is not None:
            del st.commits[cid]
        return st

    @staticmethod
    def _due_add(st: PosState, day: int, amount: int) -> None:
        v = st.due.get(day, 0) + amount
        if v:
            st.due[day] = v
        else:
            st.due.pop(day, None)
        if st.win_end is not None and day <= st.win_end:
            st.due_in_win += amount

    def _commitment(self, org: str, cid: str, c: Commitment) -> PosState:
        pk = (org, c.account, c.fiscal_year)
        st = self.positions.get(pk)
        old = st.commits.get(cid) if st is not None else None
        open_ = 0 if c.reversed else c.open
        if old is not None:
            if old[0] == open_:
                return st  # type: ignore[return-value]
            due_day, due_date = old[1], old[2]
        else:
            if open_ <= 0:
                return st or self._new_pos(pk)
            due_date = c.due_date
            due_day = date_day(dt.date.fromisoformat(due_date)) if due_date else -1
        st = self._set_open(org, cid, c.account, c.fiscal_year, open_, due_day if due_date else -1, due_date)
        if open_ > 0:
            self._commit_records[open_key(org, cid)] = _encode(
                OpenCommitment(c.account, c.fiscal_year, open_, due_day if due_date else -1, due_date))
        else:
            self._commit_records[open_key(org, cid)] = b""  # tombstone, deleted after the write
        return st

    # -- floor, trend, window ------------------------------------------------------------------

    def _refresh(self, st: PosState) -> None:
        """Floor, margin and trend for the position clock's day."""
        cfg = st.cfg
        day = st.clock
        first = st.rec.first_day
        start = max(first + 1, day - cfg.outflow_days)
        n = day - start
        auto: int | None = None
        trend = 0
        if first >= 0 and n >= cfg.min_history_days:
            so = sn = 0
            days = st.days
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
        st.floor = floor
        st.trend = trend if cfg.trend else 0
        st.margin = max(cfg.margin_krw, (floor or 0) * cfg.margin_pct // 100)
        if st.floor_day != day and len(st.days) > cfg.outflow_days + 2:
            cut = day - cfg.outflow_days - 1
            for d in [d for d in st.days if d < cut]:
                del st.days[d]
        st.floor_day = day

    def _window(self, st: PosState, end: int) -> None:
        old = st.win_end
        if old is not None and old <= end and end - old <= 64:
            add = st.due.get
            s = st.due_in_win
            for d in range(old + 1, end + 1):
                s += add(d, 0)
            st.due_in_win = s
        else:
            st.due_in_win = sum(v for d, v in st.due.items() if d <= end)
        st.win_end = end

    # -- alert lifecycle -------------------------------------------------------------------------

    def _raise(self, st: PosState, rule: str, ms: int, eid: str | None, src: tuple[str, int, int] | None,
               out: list[AlertChange], *, key: str | None = None, severity: str | None = None,
               **fields: object) -> Alert:
        rec = st.rec
        org, acc, fy = st.pk
        key = key or rule
        pub = self.published.get(st.pk)
        if pub is not None:
            prior = pub.get(key)
            if prior is not None and (rule != YEAR_END or prior.stage_days == fields.get("stage_days")):
                del pub[key]
                if not pub:
                    del self.published[st.pk]
                return self._adopt(st, prior)  # already announced: continued, not raised again
        seq = rec.seqs.get(rule, 0) + 1
        rec.seqs[rule] = seq
        if rule == YEAR_END:
            aid = f"{org}:{acc}:{fy}:{rule}:d{fields['stage_days']}"
        else:
            aid = f"{org}:{acc}:{fy}:{rule}:{ms}"
            if rec.last_ids.get(rule, "").split("-")[0] == aid:  # same instant as the last one
                aid = f"{aid}-{seq}"
        rec.last_ids[rule] = aid
        a = Alert(id=aid, rule=rule,
                  severity=severity or _SEVERITY.get(rule, "warning"), state="raised", rev=1,
                  seq=seq, org_code=org, account=acc, fiscal_year=fy, raised_ms=ms,
                  raised_event=_public_id(eid), **fields)  # type: ignore[arg-type]
        a.message = _message(a)
        rec.open[key] = a
        self._dirty.add(st.pk)
        self._emit("raised", a, src, out, eid)
        return a

    def _adopt(self, st: PosState, a: Alert) -> Alert:
        """Make ``a`` (an alert another run announced) this book's open alert of its rule."""
        rec = st.rec
        rec.open[a.rule] = a
        rec.seqs[a.rule] = max(rec.seqs.get(a.rule, 0), a.seq)
        rec.last_ids[a.rule] = a.id
        if a.rule == YEAR_END and a.stage_days:
            rec.ye_stage = a.stage_days
        self._dirty.add(st.pk)
        return a

    def _reconcile(self, st: PosState, p: Position, ms: int, out: list[AlertChange]) -> None:
        """After the first evaluation of a position on a settled partition: what the serving
        copy still shows open and this evaluation did not raise again. The latest announced
        alert of a rule that is open here replaces this book's older one (whose resolution was
        announced); otherwise it no longer holds and is resolved."""
        for rule, a in self.published.pop(st.pk, {}).items():
            cur = st.rec.open.get(rule)
            if cur is not None and cur.id == a.id:
                continue
            if cur is not None and (rule != YEAR_END or (a.stage_days or 0) < (cur.stage_days or 0)):
                self._adopt(st, a)
                continue
            self._close(st, msgspec.structs.replace(a), ms, None, None, out,
                        "superseded" if cur is not None else "recovered",
                        cash=p.cash, committed=p.committed, available=p.cash - p.committed)

    def _resolve(self, st: PosState, key: str, ms: int, eid: str | None,
                 src: tuple[str, int, int] | None, out: list[AlertChange], reason: str,
                 **fields: object) -> None:
        self._close(st, st.rec.open.pop(key), ms, eid, src, out, reason, **fields)

    def _close(self, st: PosState, a: Alert, ms: int, eid: str | None,
               src: tuple[str, int, int] | None, out: list[AlertChange], reason: str,
               **fields: object) -> None:
        a.state = "resolved"
        a.rev += 1
        a.resolved_ms, a.resolved_event, a.resolution = ms, _public_id(eid), reason
        for k, v in fields.items():
            setattr(a, k, v)
        a.message = f"resolved ({reason}): {_message(a)}"
        self._dirty.add(st.pk)
        self._emit("resolved", a, src, out, eid)

    def _emit(self, change: str, a: Alert, src: tuple[str, int, int] | None,
              out: list[AlertChange], eid: str | None = None) -> None:
        if src is _LAZY:
            src = _src(self._journal, a.org_code, eid) if eid is not None else None
        ch = AlertChange(change, msgspec.structs.replace(a), src)
        out.append(ch)
        self._outbox.append(ch)

    # -- the batch -------------------------------------------------------------------------------

    def apply(self, changes: Changes, positions: Mapping[PosKey, Position],
              hold: Container[str] = ()) -> list[AlertChange]:
        """Update from one batch of the ledger (its ``Changes`` and the positions after it).
        O(changed positions + index rows); a new day re-evaluates the government's positions.

        ``hold``: governments whose partition is not *settled* (being rebuilt from the book of
        record, or far behind): their history is updated but their rules are evaluated only when
        ``release`` is called for them, on the state they have then. While a partition catches
        up, its two input topics are read independently, and a state in between (payments folded
        before the receipts that preceded them) is not one that existed."""
        out: list[AlertChange] = []
        journal = self._journal = changes.journal
        self._commitments = changes.commitments
        extra: set[PosKey] = set()
        for (org, cid), c in changes.commitments.items():
            pk = self._commitment(org, cid, c).pk
            if pk not in changes.index:
                extra.add(pk)
        last: dict[str, tuple[int, str]] = {}  # org -> (latest occurred ms, an event id)
        sget = _specials(changes).get
        book = self.positions
        work: list[tuple[PosState, Position, int, str]] = []
        held_orgs = ({org for org, _a, _f in changes.index if org in hold}
                     | {org for org, _c in changes.commitments if org in hold}) if hold else ()
        walk = self._walk
        for pk, rows in changes.index.items():
            st = book.get(pk) or self._new_pos(pk)
            p = positions[pk]
            org = pk[0]
            walk(st, p, rows, journal, out, org not in held_orgs, sget(pk))
            ms, eid = rows[-1][:2]
            work.append((st, p, ms, eid, rows))
            cur = last.get(org)
            if cur is None or p.last_event_ms > cur[0]:
                last[org] = (p.last_event_ms, eid)
        # government clocks; a new day re-evaluates every position of the government
        for org, (ms, eid) in last.items():
            o = self._org(org)
            d = day_of(ms)
            if d > o.clock:
                o.clock, o.clock_ms = d, ms
                extra |= o.pks
            elif ms > o.clock_ms and d == o.clock:
                o.clock_ms = ms
        for pk in extra:
            st = book.get(pk)
            p = positions.get(pk)
            if st is not None and p is not None and pk not in changes.index:
                ms, eid = last.get(pk[0], (p.last_event_ms, None))  # type: ignore[assignment]
                work.append((st, p, ms, eid, None))
        orgs = self.orgs
        for st, p, ms, eid, rows in work:
            org = st.pk[0]
            if org in held_orgs:
                self._hold(st)
                continue
            if not st.cfg.enabled:
                continue
            today = orgs[org].clock
            if st.floor_day != st.clock:
                self._refresh(st)
            self._projected(st, p, today, ms, eid, _LAZY, out, rows)
            if today >= st.ye_from or YEAR_END in st.rec.open:
                self._year_end(st, p, today, ms, eid, _LAZY, out)
            if rows is not None and self.published and st.pk in self.published:
                self._reconcile(st, p, ms, out)
        return out

    def _hold(self, st: PosState) -> None:
        if not st.rec.held:
            st.rec.held = True
            self._dirty.add(st.pk)
        self.held.add(st.pk)

    def release(self, positions: Mapping[PosKey, Position],
                settled: Callable[[str], bool]) -> list[AlertChange]:
        """Evaluate the held positions of the governments that are ``settled`` now, on their
        current state (attributed to their latest event time)."""
        out: list[AlertChange] = []
        if not self.held:
            return out
        self._journal = {}
        for pk in [pk for pk in self.held if settled(pk[0])]:
            self.held.discard(pk)
            st = self.positions.get(pk)
            p = positions.get(pk)
            if st is None:
                continue
            st.rec.held = False
            self._dirty.add(pk)
            if p is None or not st.cfg.enabled:
                continue
            o = self.orgs[pk[0]]
            self._refresh(st)
            self._available_rules(st, p, [], {}, out)
            self._projected(st, p, o.clock, p.last_event_ms, None, None, out)
            self._year_end(st, p, o.clock, p.last_event_ms, None, None, out)
            if pk in self.published:
                self._reconcile(st, p, p.last_event_ms, out)
        return out

    def _walk(self, st: PosState, p: Position, rows: list[tuple[int, str, int, int]],
              journal: Mapping[tuple[str, str], object], out: list[AlertChange],
              evaluate: bool = True, specials: list[tuple[int, str, bool, bool]] | None = None) -> None:
        """The daily buckets and rules 1-2 on the position as it stands after the batch (see
        ``_available_rules``).

        Common case (every row on the same day, not before the position clock): the buckets
        are sums in C over the rows, corrected by the few ``specials`` (cash changes of events
        that are not plain receipts or payments without commitment, see ``apply``). Otherwise,
        row by row with a journal lookup per cash change."""
        org, acc, _fy = st.pk
        rec = st.rec
        days = st.days
        changed = st.changed_days
        clock = st.clock
        first = rec.first_day if rec.first_day >= 0 else _NEVER
        fresh = st.floor_day == clock
        if len(rows) == 1:
            lo = hi = (rows[0][0] + KST_OFFSET_MS) // DAY_MS
        else:
            lo = (min(rows)[0] + KST_OFFSET_MS) // DAY_MS
            hi = (max(rows)[0] + KST_OFFSET_MS) // DAY_MS
        if lo == hi and hi >= clock:
            day = hi
            if day > clock:
                clock = day
                fresh = False
            if day < first:
                rec.first_day = day
                self._dirty.add(st.pk)
                fresh = False
            dcs = list(map(_IG2, rows))
            net = sum(dcs)
            outflow = -sum(filter(_NEG, dcs))
            if specials:
                for dc, kind, uncommitted, from_here in specials:
                    # undo the plain-row reading (outflow if dc < 0, all of it net), apply the kind's
                    o = -dc if dc < 0 else 0
                    if kind == "payment":
                        outflow += -dc - o
                        if not uncommitted:
                            net -= dc
                    elif kind == "transfer":
                        outflow += (-dc if from_here else 0) - o
                    else:
                        outflow -= o
            if outflow or net or any(dcs):
                b = days.get(day)
                if b is None:
                    b = days[day] = [0, 0]
                b[0] += outflow
                b[1] += net
                self._commit_records[day_key(st.pk, day)] = _encode(b)
            self._settle(st, clock, fresh, evaluate, p, rows, journal, out)
            return
        cur = days.get(clock)  # the bucket of the clock's day, the common case
        jget = journal.get
        for ms, eid, dc, _dm in rows:
            day = (ms + KST_OFFSET_MS) // DAY_MS
            if day != clock:
                if day > clock:
                    if cur is not None:
                        changed.add(clock)
                    clock = day
                    fresh = False
                    cur = days.get(clock)
                if day < first:
                    first = rec.first_day = day
                    self._dirty.add(st.pk)
                    fresh = False
            if dc:
                j = jget((org, eid))
                if day == clock:
                    b = cur
                    if b is None:
                        b = cur = days[day] = [0, 0]
                else:
                    b = days.get(day)
                    if b is None:
                        b = days[day] = [0, 0]
                    changed.add(day)
                    fresh = False  # a past day of the window changed
                if j.__class__ is bytes:
                    # the ledger's fast path (kept encoded): a receipt (dc > 0) or a payment
                    # without commitment (dc < 0); never a reversal or a transfer
                    if dc < 0:
                        b[0] -= dc
                    b[1] += dc
                elif j is not None:
                    kind = j.kind  # type: ignore[attr-defined]
                    if kind == "payment":
                        b[0] -= dc
                        if j.commitment_id is None:  # type: ignore[attr-defined]
                            b[1] += dc
                    elif kind == "transfer":
                        if j.account == acc:  # type: ignore[attr-defined]
                            b[0] -= dc
                        b[1] += dc
                    else:
                        b[1] += dc
        if cur is not None:
            changed.add(clock)  # (may be unchanged: one record more, never one less)
        for d in changed:
            b = days.get(d)
            if b is not None:
                self._commit_records[day_key(st.pk, d)] = _encode(b)
        changed.clear()
        self._settle(st, clock, fresh, evaluate, p, rows, journal, out)

    def _settle(self, st: PosState, clock: int, fresh: bool, evaluate: bool, p: Position,
                rows: list[tuple[int, str, int, int]], journal: Mapping[tuple[str, str], object],
                out: list[AlertChange]) -> None:
        """After a position's buckets moved: advance its clock, refresh its floor if the day
        changed, then evaluate its rules (or hold them while its partition settles)."""
        st.clock = clock
        if not fresh:
            self._refresh(st)
        if not evaluate:
            self._hold(st)
        elif st.cfg.enabled:
            self._available_rules(st, p, rows, journal, out)

    def _available_rules(self, st: PosState, p: Position, rows: list[tuple[int, str, int, int]],
                         journal: Mapping[tuple[str, str], object], out: list[AlertChange]) -> None:
        """Rules 1-2 after a batch. A transition is decided on the position after the batch
        (the two input topics are consumed independently, so a state in the middle of a batch
        may never have existed: e.g. payments applied before the receipts that preceded them);
        it is attributed to the event (in occurred_at order) from which the new condition held
        to the end of the batch."""
        avail = p.cash - p.committed
        opened = st.rec.open
        floor, margin = st.floor, st.margin
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
            return
        if not rows:  # no events (a release, a change of thresholds): the position as it is
            rows = [(p.last_event_ms, None, 0, 0)]  # type: ignore[list-item]
        ordered = sorted(rows, key=_row_ms) if len(rows) > 1 else rows
        if sf is not None:
            cond = (lambda a: a < 0) if sf else (lambda a: a >= margin)
            ms, eid, cash, com = _since(ordered, p, cond)
            src = _src(journal, st.pk[0], eid) if eid is not None else None
            if sf:
                self._raise(st, SHORTFALL, ms, eid, src, out, cash=cash, committed=com,
                            available=cash - com, threshold=0, floor=floor, resolve_at=margin)
            else:
                self._resolve(st, SHORTFALL, ms, eid, src, out, "recovered", cash=cash,
                              committed=com, available=cash - com)
        if bf is not None:
            if floor is None:
                ms, eid = ordered[0][:2]
                self._resolve(st, BELOW_FLOOR, ms, eid,
                              _src(journal, st.pk[0], eid) if eid is not None else None, out,
                              "no_floor", cash=p.cash, committed=p.committed, available=avail)
                return
            fl = floor
            cond = (lambda a: a < fl) if bf else (lambda a: a >= fl + margin)
            ms, eid, cash, com = _since(ordered, p, cond)
            src = _src(journal, st.pk[0], eid) if eid is not None else None
            if bf:
                self._raise(st, BELOW_FLOOR, ms, eid, src, out, cash=cash, committed=com,
                            available=cash - com, threshold=floor, floor=floor,
                            resolve_at=floor + margin, trend_per_day=st.trend if st.cfg.trend else None)
            else:
                self._resolve(st, BELOW_FLOOR, ms, eid, src, out, "recovered", cash=cash,
                              committed=com, available=cash - com)

    def _projected(self, st: PosState, p: Position, today: int, ms: int, eid: str | None,
                   src: tuple[str, int, int] | None, out: list[AlertChange],
                   rows: list[tuple[int, str, int, int]] | None = None) -> None:
        cfg = st.cfg
        end = today + cfg.horizon_days
        if st.win_end != end:
            self._window(st, end)
        tneg = st.trend if st.trend < 0 else 0
        thr = st.floor if cfg.projected_against_floor and st.floor is not None else 0
        low = p.cash - st.due_in_win + cfg.horizon_days * tneg
        a = st.rec.open.get(PROJECTED)
        if a is None:
            if low < thr:
                if rows:
                    ms, eid = self._projected_since(st, rows, low, thr, end)
                day, pc = self._first_crossing(st, p.cash, today, end, thr, tneg)
                self._raise(st, PROJECTED, ms, eid, src, out, cash=p.cash, committed=p.committed,
                            available=p.cash - p.committed, threshold=thr, floor=st.floor,
                            resolve_at=thr + st.margin, projected_date=day_date(day).isoformat(),
                            projected_cash=pc, trend_per_day=tneg or None,
                            drivers=self._drivers(st, day))
        elif low >= thr + st.margin:
            self._resolve(st, PROJECTED, ms, eid, src, out, "recovered", cash=p.cash,
                          committed=p.committed, available=p.cash - p.committed)
        else:
            day, pc = self._first_crossing(st, p.cash, today, end, thr, tneg)
            iso = day_date(day).isoformat()
            if a.projected_date is None or iso < a.projected_date:
                a.rev += 1
                a.updated_ms = ms
                a.projected_date, a.projected_cash = iso, pc
                a.cash, a.committed, a.available = p.cash, p.committed, p.cash - p.committed
                a.drivers = self._drivers(st, day)
                a.message = _message(a)
                self._dirty.add(st.pk)
                self._emit("updated", a, src, out, eid)

    def _projected_since(self, st: PosState, rows: list[tuple[int, str, int, int]], low: int,
                         thr: int, end: int) -> tuple[int, str]:
        """The batch's event (in occurred_at order) from which the projection stayed below
        ``thr`` to the end of the batch: like ``_since``, so that the alert's id does not depend
        on where a batch ends (a replay after a crash batches differently). Walking back, an
        event's cash change and its change to the open commitments due inside the window are
        undone; the day and the trend are the batch's."""
        ordered = sorted(rows, key=_row_ms) if len(rows) > 1 else rows
        org = st.pk[0]
        at = len(ordered) - 1
        i = at
        while i >= 0 and low < thr:
            at = i
            _ms, eid, dc, dm = ordered[i]
            low -= dc
            if dm and self._due_by(st, org, eid, end):
                low += dm
            i -= 1
        return ordered[at][0], ordered[at][1]

    def _due_by(self, st: PosState, org: str, eid: str, end: int) -> bool:
        """Whether the commitment an event changed falls due by ``end`` (unknown: yes)."""
        j = self._journal.get((org, eid))
        cid = getattr(j, "commitment_id", None)
        if cid is None:
            return True
        c = st.commits.get(cid)
        if c is not None:
            return c[1] <= end
        cm = self._commitments.get((org, cid))
        if cm is None:
            return True
        due = date_day(dt.date.fromisoformat(cm.due_date)) if cm.due_date else year_end_day(st.pk[2])
        return due <= end

    @staticmethod
    def _first_crossing(st: PosState, cash: int, today: int, end: int, thr: int,
                        tneg: int) -> tuple[int, int]:
        """The first day in [today, end] with projected cash below ``thr`` (and that cash)."""
        due = st.due
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

    @staticmethod
    def _drivers(st: PosState, day: int) -> list[Driver]:
        top = heapq.nlargest(TOP_DRIVERS, ((v[0], cid, v[2]) for cid, v in st.commits.items()
                                           if v[1] <= day), key=lambda x: (x[0], x[1]))
        return [Driver(cid, amount, date) for amount, cid, date in top]

    def _year_end(self, st: PosState, p: Position, today: int, ms: int, eid: str | None,
                  src: tuple[str, int, int] | None, out: list[AlertChange]) -> None:
        stages = st.cfg.year_end_days
        a = st.rec.open.get(YEAR_END)
        if not stages:
            return
        left = year_end_day(st.pk[2]) - today
        if left > stages[0] and a is None:
            return
        stage = 0
        for s in reversed(stages):  # ascending: the most urgent stage reached
            if left <= s:
                stage = s
                break
        if a is not None and p.committed <= 0:
            self._resolve(st, YEAR_END, ms, eid, src, out, "no_open_commitments",
                          open_commitments=0, open_amount=0)
            a = None
        if stage and p.committed > 0 and (st.rec.ye_stage == 0 or stage < st.rec.ye_stage):
            if a is not None:
                self._resolve(st, YEAR_END, ms, eid, src, out, "superseded")
            st.rec.ye_stage = stage
            self._raise(st, YEAR_END, ms, eid, src, out,
                        severity="info" if stage >= 30 else "warning", stage_days=stage,
                        open_commitments=len(st.commits), open_amount=p.committed,
                        cash=p.cash, committed=p.committed, available=p.cash - p.committed,
                        drivers=self._drivers(st, 1 << 40))

    # -- thresholds ------------------------------------------------------------------------------

    def thresholds(self, org: str, account: str) -> Thresholds:
        return self.resolver.get(org, account)

    def set_overrides(self, overrides: Mapping[tuple[str, str], Override],
                      positions: Mapping[PosKey, Position]) -> list[AlertChange]:
        """New ``PUT /v1/thresholds`` overrides: re-evaluate the positions they touch now."""
        changed = self.resolver.set_overrides(overrides)
        out: list[AlertChange] = []
        if not changed:
            return out
        orgs_all = {org for org, acc in changed if acc == "*"}
        for pk, st in self.positions.items():
            if pk[0] not in orgs_all and (pk[0], pk[1]) not in changed:
                continue
            st.cfg = self.resolver.get(pk[0], pk[1])
            st.ye_from = _ye_from(pk[2], st.cfg)
            st.floor_day = -2
            st.win_end = None
            p = positions.get(pk)
            if p is None or st.clock < 0:
                continue
            ms = p.last_event_ms
            if not st.cfg.enabled:
                for key in list(st.rec.open):
                    self._resolve(st, key, ms, None, None, out, "disabled")
                continue
            o = self.orgs[pk[0]]
            self._refresh(st)
            if pk in self.held:
                continue  # evaluated on release
            self._available_rules(st, p, [], {}, out)
            self._projected(st, p, o.clock, ms, None, None, out)
            self._year_end(st, p, o.clock, ms, None, None, out)
        return out

    # -- operational (wall clock) -----------------------------------------------------------------

    def check_stale(self, now_ms: int, last_applied: Mapping[str, int], orgs: Iterable[str]) -> list[AlertChange]:
        """Rule 5a for ``orgs``: ``last_applied`` is the wall time (ms) of the latest event applied
        per government (or of the worker taking it over)."""
        out: list[AlertChange] = []
        for org in orgs:
            o = self._org(org)
            la = last_applied.get(org)
            if la is None:
                continue
            a = o.rec.stale
            if a is not None:
                if la > a.raised_ms:
                    a.state = "resolved"
                    a.rev += 1
                    a.resolved_ms, a.resolution = now_ms, "data_flowing"
                    a.message = f"resolved (data_flowing): {_message(a)}"
                    o.rec.stale = None
                    self._dirty_orgs.add(org)
                    self._emit("resolved", a, None, out)
                continue
            cfg = self.resolver.get(org, "*")
            if not cfg.enabled:
                continue
            minutes = office_minutes_between(la, now_ms)
            if minutes >= cfg.stale_minutes:
                o.rec.stale_seq += 1
                a = Alert(id=f"{org}::0:{STALE}:{now_ms}", rule=STALE,
                          severity=_SEVERITY[STALE], state="raised", rev=1, seq=o.rec.stale_seq,
                          org_code=org, raised_ms=now_ms, minutes=minutes,
                          threshold=cfg.stale_minutes)
                a.message = _message(a)
                o.rec.stale = a
                self._dirty_orgs.add(org)
                self._emit("raised", a, None, out)
        return out

    def check_lag(self, now_ms: int, lag_records: int) -> list[AlertChange]:
        """Rule 5b: the worker's consumer lag (records behind the high watermarks)."""
        op = self.config.operational
        w = self.worker
        out: list[AlertChange] = []
        if lag_records > op.lag_records:
            if not w.above_since_ms:
                w.above_since_ms = now_ms
                self._dirty_worker = True
            if w.lag is None and now_ms - w.above_since_ms >= op.lag_seconds * 1000:
                w.lag_seq += 1
                a = Alert(id=f"worker-{self.worker_id}::0:{LAG}:{now_ms}", rule=LAG,
                          severity=_SEVERITY[LAG], state="raised", rev=1, seq=w.lag_seq,
                          org_code="", raised_ms=now_ms, lag_records=lag_records,
                          threshold=op.lag_records, worker=self.worker_id)
                a.message = _message(a)
                w.lag = a
                self._dirty_worker = True
                self._emit("raised", a, None, out)
        else:
            if w.above_since_ms:
                w.above_since_ms = 0
                self._dirty_worker = True
            if w.lag is not None and lag_records <= op.lag_records // 2:
                a = w.lag
                a.state = "resolved"
                a.rev += 1
                a.resolved_ms, a.resolution, a.lag_records = now_ms, "caught_up", lag_records
                a.message = f"resolved (caught_up): {_message(a)}"
                w.lag = None
                self._dirty_worker = True
                self._emit("resolved", a, None, out)
        return out


def _row_ms(r: tuple[int, str, int, int]) -> int:
    return r[0]


_IG2: Final = operator.itemgetter(2)
_NEG: Final = (0).__gt__  # x < 0


def _ye_from(fiscal_year: int, cfg: Thresholds) -> int:
    return year_end_day(fiscal_year) - (cfg.year_end_days[0] if cfg.year_end_days else -(1 << 30))


def _specials(changes: Changes) -> dict[PosKey, list[tuple[int, str, bool, bool]]]:
    """Per position, the cash changes of this batch's events that are not plain receipts or
    payments without commitment: (cash delta, kind, without commitment, out of this account).

    The ledger keeps the journal entries of its fast path (receipts and payments without
    commitment, never reversals) encoded as bytes; every other applied event is a Journal
    object. An entry that is a Journal object only because a reversal in this batch marked it
    (``reversed_by``) was applied earlier and is skipped unless its row is in this batch."""
    out: dict[PosKey, list[tuple[int, str, bool, bool]]] = {}
    index = changes.index
    for (org, eid), j in changes.journal.items():
        if j.__class__ is bytes:
            continue
        kind = j.kind  # type: ignore[union-attr]
        if kind == "commitment" or kind == "commitment_cancel":
            continue  # no cash effect
        effects = j.effects  # type: ignore[union-attr]
        if j.reversed_by is not None:  # type: ignore[union-attr]
            rows = index.get((org, effects[0][0], effects[0][1]), ())
            if not any(r[1] == eid for r in rows):
                continue
        uncommitted = j.commitment_id is None  # type: ignore[union-attr]
        src = j.account  # type: ignore[union-attr]
        for acc, fy, dc, _dm in effects:
            if dc:
                lst = out.get((org, acc, fy))
                if lst is None:
                    lst = out[(org, acc, fy)] = []
                lst.append((dc, kind, uncommitted, acc == src))
    return out


def _since(ordered: list[tuple[int, str, int, int]], p: Position,
           cond: Callable[[int], bool]) -> tuple[int, str, int, int]:
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
    for r in ordered[at + 1:]:
        cash -= r[2]
        com -= r[3]
    return ms, eid, cash, com


def _public_id(sid: str | None) -> str | None:
    """The event_id its source sent, from the journal's side-scoped name of it."""
    return None if sid is None else unscoped_id(sid)


def _src(journal: Mapping[tuple[str, str], object], org: str, eid: str) -> tuple[str, int, int] | None:
    """The source record (topic, partition, offset) of an event of the batch."""
    j = journal.get((org, eid))
    if j.__class__ is bytes:
        j = layout.decode_journal(j)  # type: ignore[arg-type]
    return j.source if j is not None else None  # type: ignore[attr-defined]


def _message(a: Alert) -> str:
    where = _label(a.org_code, a.account, a.fiscal_year)
    r = a.rule
    if r == SHORTFALL:
        return f"{where}: available {_krw(a.available or 0)} is below zero"
    if r == BELOW_FLOOR:
        return f"{where}: available {_krw(a.available or 0)} is below the reserve floor {_krw(a.floor or 0)}"
    if r == PROJECTED:
        what = "below zero" if not a.threshold else f"below {_krw(a.threshold)}"
        due = ", ".join(d.commitment_id for d in a.drivers[:3])
        return (f"{where}: cash projected to fall {what} on {a.projected_date} "
                f"({_krw(a.projected_cash or 0)})" + (f"; commitments due: {due}" if due else ""))
    if r == YEAR_END:
        return (f"{where}: {a.open_commitments} open commitment(s), {_krw(a.open_amount or 0)}, "
                f"{a.stage_days} days or less before 31 December")
    if r == STALE:
        return f"{where}: no event applied for {a.minutes} office-hour minutes"
    if r == LAG:
        return f"processor {a.worker}: {a.lag_records:,} records behind"
    return where


# ---------------------------------------------------------------------------------------------
# Office hours


def office_minutes_between(start_ms: int, end_ms: int, max_days: int = 31) -> int:
    """Minutes of [start, end) that fall in KST office hours (09:00-18:00 on business days:
    weekdays that are not public holidays). Looks back at most ``max_days`` days."""

    if end_ms <= start_ms:
        return 0
    start_ms = max(start_ms, end_ms - max_days * DAY_MS)
    total = 0
    for day in range(day_of(start_ms), day_of(end_ms) + 1):
        if not is_business_day(day_date(day)):
            continue
        lo = day_start_ms(day) + 9 * 3_600_000
        hi = lo + 9 * 3_600_000
        a, b = max(lo, start_ms), min(hi, end_ms)
        if b > a:
            total += b - a
    return total // 60_000


def is_office_hours(ms: int) -> bool:

    day = day_of(ms)
    into = ms - day_start_ms(day)
    return is_business_day(day_date(day)) and 9 * 3_600_000 <= into < 18 * 3_600_000
