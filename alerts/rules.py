"""The money rules 1-4 of docs/alerts.md, pure: each returns what should change (``Raise``,
``Resolve``, ``Update``) from a position, its history and the clock passed in (``today``, a
Korean day). Nothing here reads a clock or writes anything; the book (``alerts.book``) turns the
decisions into alerts and records.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec

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
from state import layout
from state.forecast import (
    COMMITMENT,
    ESTIMATE_GRACE_DAYS,
    ESTIMATED,
    ORDER,
    RECEIPT,
    ExpectedReceipt,
    Flow,
    Forecast,
    Inputs,
)
from state.forecast import Order as KnownOrder
from state.forecast import drivers as forecast_drivers
from state.forecast import forecast as run_forecast
from state.ledger import (
    CommitKey,
    Commitment,
    EventKey,
    Journal,
    Order,
    OrderKey,
    Position,
    PosKey,
    Revision,
    Schedule,
    ScheduleKey,
    scoped_id,
    unscoped_id,
)

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


@dataclass(frozen=True, slots=True)
class Batch:
    """The batch a raise of rule 3 is attributed within (``state.ledger.Changes``): the
    account's index rows, the journal, the changed commitments, orders and schedules; and
    ``free_from``, the event (ms, scoped id) an actual shortfall resolved at in this batch:
    until then the shortfall inhibited the projection, so no earlier event raised it."""

    rows: Sequence[Row]
    journal: Mapping[EventKey, Journal | bytes] = field(default_factory=dict)
    commitments: Mapping[CommitKey, Commitment] = field(default_factory=dict)
    orders: Mapping[OrderKey, Order] = field(default_factory=dict)
    schedules: Mapping[ScheduleKey, Schedule] = field(default_factory=dict)
    free_from: tuple[int, str | None] | None = None


def projected(
    h: History,
    p: Position,
    today: int,
    ms: int,
    eid: str | None,
    current: Alert | None,
    batch: Batch | None = None,
    fc: Forecast | None = None,
) -> list[Decision]:
    """Rule 3 with ``today`` the government clock (``h.due_in_win`` must be up to date for
    ``today + horizon_days``). ``current``: the open alert, if any; ``batch``: the batch, to
    attribute a raise to its event (None: the position as it is). While raised, the date is
    only ever moved earlier, so a wobbling balance cannot produce a stream of updates.

    ``fc``: the account's forecast (``state.forecast``) on ``today``: the projection is then its
    expected cash over the horizon, with its drivers, the same computation the API serves.
    Without one (no forecast wired: the rule's own tests) the projection is the commitments due
    and the draining trend."""
    cfg = h.cfg
    thr = h.floor if cfg.projected_against_floor and h.floor is not None else 0
    if fc is not None and fc.today == today:
        return _projected_by(fc, h, p, today, ms, eid, current, thr, batch)
    end = today + cfg.horizon_days
    tneg = min(h.trend, 0)
    low = p.cash - h.due_in_win + cfg.horizon_days * tneg
    if current is None:
        if low >= thr:
            return []
        if batch is not None and batch.rows:
            due_by = _due_by(h, batch.journal, batch.commitments, end)
            ms, eid = projected_since(batch.rows, low, thr, due_by, p.cash - p.committed, batch.free_from)
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
    batch: Batch | None,
) -> list[Decision]:
    """Rule 3 on the forecast: the first day within the horizon (and the forecast's) its
    expected cash is below ``thr``; resolved when the horizon's lowest expected cash is back at
    ``thr`` + margin."""
    window = fc.expected.cash[: h.cfg.horizon_days + 1]
    low = min(window)
    if current is None and low >= thr:
        return []
    if current is not None and low >= thr + h.margin:
        return [Resolve(PROJECTED, ms, eid, "recovered", balance(p))]
    if low >= thr:  # raised, within the margin: nothing moves
        return []
    i = next(i for i, v in enumerate(window) if v < thr)
    day, pc = today + i, window[i]
    iso = day_date(day).isoformat()
    if current is not None and current.projected_date is not None and iso >= current.projected_date:
        return []
    top = [
        Driver(f.ref, -f.cash, day_date(f.day).isoformat(), f.kind)
        for f in forecast_drivers(fc.flows, day, _cash_of)
    ]
    figures = balance(p)
    if current is not None:
        figures.update(projected_date=iso, projected_cash=pc, drivers=top)
        return [Update(PROJECTED, ms, eid, figures)]
    if batch is not None and batch.rows:
        ms, eid = _forecast_since(fc, len(window), thr, h.pk[0], p.cash - p.committed, batch)
    figures.update(
        threshold=thr,
        floor=h.floor,
        resolve_at=thr + h.margin,
        projected_date=iso,
        projected_cash=pc,
        drivers=top,
    )
    return [Raise(PROJECTED, ms, eid, figures)]


def _cash_of(f: Flow) -> int:
    return f.cash


def projected_since(
    rows: Sequence[Row],
    low: int,
    thr: int,
    due_by: Callable[[str | None], bool],
    avail: int,
    free_from: tuple[int, str | None] | None = None,
) -> tuple[int, str | None]:
    """The batch's event (in occurred_at order) from which the projection stayed below ``thr``,
    and no actual shortfall stood (available, ``avail`` after the batch, >= 0), to the end of
    the batch; never before ``free_from`` (``Batch``). Walking back, an event's cash change and
    its change to the open commitments due inside the window are undone; the day and the trend
    are the batch's."""
    ordered = sorted(rows, key=_row_ms) if len(rows) > 1 else rows
    at = len(ordered) - 1
    start = _start(ordered, free_from)
    while at > start:
        _ms, eid, dc, dm = ordered[at]
        low -= dc
        if dm and due_by(eid):
            low += dm
        avail -= dc - dm
        if low >= thr or avail < 0:
            break
        at -= 1
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


def _start(ordered: Sequence[Row], free_from: tuple[int, str | None] | None) -> int:
    """The index of ``free_from``'s row in ``ordered`` (0: none)."""
    if free_from is None:
        return 0
    for i, r in enumerate(ordered):
        if r[0] == free_from[0] and r[1] == free_from[1]:
            return i
    return bisect.bisect_left(ordered, free_from[0], key=_row_ms)


def _forecast_since(
    fc: Forecast, n: int, thr: int, org: str, avail: int, batch: Batch
) -> tuple[int, str | None]:
    """``projected_since`` on the forecast: the batch's event from which the lowest expected
    cash of the first ``n`` days stayed below ``thr`` (and no actual shortfall stood) to the
    end of the batch. Walking back, an event's cash change moves the whole curve; an event that
    changed known flows (an order, a commitment, an expected receipt: none of them moves cash
    on its own) is undone on the batch's copies of them, and the forecast is run again (its
    learned flows as learned today) when the curve may be back at the threshold. The walk does
    not pass an event whose effect on them is not known here (a close), nor, if the copies do
    not give the forecast back, the latest event that changed one."""
    ordered = sorted(batch.rows, key=_row_ms) if len(batch.rows) > 1 else list(batch.rows)
    stop = _start(ordered, batch.free_from)
    known = _Known(org, batch, fc.today)
    # the rows of events that changed known flows: (entry, scoped id, the flows it changed)
    entries: dict[int, tuple[Journal, str, list[Ref]]] = {}
    for i in range(len(ordered) - 1, stop, -1):
        sid = ordered[i][1]
        j = known.entry(sid) if sid is not None else None
        refs = known.take(j, sid) if j is not None and sid is not None else None
        if refs is None or sid is None or j is None:
            stop = i
            break
        if refs:
            entries[i] = (j, sid, refs)
    cash = fc.cash
    whole = fc.expected.cash[:n]
    if entries and known.curve(cash, fc, n) != whole:
        stop = max(stop, *entries)
        entries = {}
    # the lowest expected cash, or (not ``exact``) a bound it is at most: an event's known flows
    # move a day's cash by at most the sum of their changes, and the pace by as much again; the
    # forecast is run again only when that bound reaches the threshold
    low, exact = min(whole), True
    at = len(ordered) - 1
    done: set[str] = set()
    while at > stop:
        _ms, _sid, dc, dm = ordered[at]
        cash -= dc
        avail -= dc - dm
        low -= dc
        e = entries.get(at)
        if e is not None and e[1] not in done:
            done.add(e[1])
            low += 2 * known.undo(*e)
            exact = False
        if low >= thr and not exact:
            low, exact = min(known.curve(cash, fc, n)), True
        if low >= thr or avail < 0:
            break
        at -= 1
    return ordered[at][0], ordered[at][1]


class _Revision(msgspec.Struct):
    """What an expected receipt's raw event says of its revision besides the amount."""

    expected_date: str
    certainty: str


_revision = msgspec.json.Decoder(_Revision).decode


Ref = tuple[str, str]  # one of a batch's known flows: (COMMITMENT, ORDER or RECEIPT, its id)


@dataclass(slots=True)
class _Commitment:
    open: int
    ordered: int
    due: int | None  # None: its fiscal year's last day
    fiscal_year: int


@dataclass(slots=True)
class _Schedule:
    revisions: list[Revision]
    realised: int


_COMMITTED_KINDS: Final = (
    "commitment",
    "commitment_cancel",
    "commitment_carry_forward",
    "payment",
    "payment_order",
)


class _Known:
    """One account's known flows that a batch changed, as the batch left them (its changed
    commitments, orders and schedules), then walked back event by event: an event's effect is
    exactly what its journal entry says it did (``state.ledger``), a reversal's the opposite of
    what it reversed. The rest of the account's known flows are the forecast's own."""

    def __init__(self, org: str, batch: Batch, today: int) -> None:
        self.org = org
        self.batch = batch
        self.today = today
        self.commitments: dict[str, _Commitment] = {}
        self.orders: dict[str, list[int]] = {}  # id -> [open, pay day]
        self.schedules: dict[str, _Schedule] = {}

    def entry(self, sid: str) -> Journal | None:
        j = self.batch.journal.get((self.org, sid))
        return layout.decode_journal(j) if isinstance(j, bytes) else j

    def _original(self, j: Journal, sid: str) -> tuple[Journal, str] | None:
        """The entry an event (``j``, scoped id ``sid``) applies, a reversal's the one it
        reverses, with that event's id."""
        if j.reverses is None:
            return j, unscoped_id(sid)
        orig = self.entry(scoped_id(j.kind, j.reverses))
        return None if orig is None else (orig, j.reverses)

    def take(self, j: Journal, sid: str) -> list[Ref] | None:
        """The known flows the event of entry ``j`` (scoped id ``sid``) changed, taken as the
        batch left them; None if its effect on them is not known here (or one is missing)."""
        found = self._original(j, sid)
        if found is None:
            return None
        o, eid = found
        kind, cid, b = o.kind, o.commitment_id, self.batch
        refs: list[Ref] = []
        if kind in ("receipt", "expected_receipt"):
            if o.schedule_id is not None:
                s = b.schedules.get((self.org, o.schedule_id))
                if s is None:
                    return None
                self.schedules.setdefault(o.schedule_id, _Schedule(list(s.revisions), s.realised))
                refs.append((RECEIPT, o.schedule_id))
            elif kind == "expected_receipt":
                return None
            return refs
        if kind == "transfer" or (kind == "payment" and cid is None):
            return refs
        if cid is None or kind not in _COMMITTED_KINDS:
            return None  # a close, a lapse: not undone here
        c = b.commitments.get((self.org, cid))
        if c is None:
            return None
        due = None if c.due_date is None else date_day(dt.date.fromisoformat(c.due_date))
        self.commitments.setdefault(cid, _Commitment(c.open, c.ordered, due, c.fiscal_year))
        refs.append((COMMITMENT, cid))
        oids = [oid for oid, _n in o.trimmed]
        if kind == "payment_order":
            oids.append(eid)
        elif o.order_id is not None:
            oids.append(o.order_id)
        for oid in oids:
            x = b.orders.get((self.org, oid))
            if x is None:
                return None
            self.orders.setdefault(oid, [x.open, date_day(dt.date.fromisoformat(x.pay_date))])
        return refs + [(ORDER, oid) for oid in oids]

    def undo(self, j: Journal, sid: str, refs: list[Ref]) -> int:
        """Take back the event of entry ``j`` (its scoped id ``sid``) from the copies of the
        flows ``refs`` it changed; returns by how much at most that moves a day's cash."""
        before = [self.flow(r) for r in refs]
        found = self._original(j, sid)
        assert found is not None  # ``take`` found it
        self._effect(found[0], found[1], 1 if j.reverses is not None else -1)
        moved = 0
        for (d0, a0), (d1, a1) in zip(before, map(self.flow, refs), strict=True):
            moved += abs(a1 - a0) if d0 == d1 else a0 + a1
        return moved

    def flow(self, ref: Ref) -> tuple[int, int]:
        """The day and amount (0: none) of one copy's flow, as the forecast takes it: a day past
        is today; an estimate open a week after its day is no longer expected."""
        kind, key = ref
        if kind == COMMITMENT:
            c = self.commitments[key]
            day, amount = year_end_day(c.fiscal_year) if c.due is None else c.due, c.open - c.ordered
        elif kind == ORDER:
            amount, day = self.orders[key]
        else:
            s = self.schedules[key]
            if not s.revisions:
                return self.today, 0
            _eid, expected, date, certainty = s.revisions[-1]
            day, amount = date_day(dt.date.fromisoformat(date)), expected - s.realised
            if certainty == ESTIMATED and self.today - day > ESTIMATE_GRACE_DAYS:
                amount = 0
        return max(day, self.today), max(0, amount)

    def _effect(self, o: Journal, eid: str, sign: int) -> None:
        """Apply (``sign`` 1) or take back (-1) what original entry ``o`` did to its flows."""
        kind, cid = o.kind, o.commitment_id
        if o.schedule_id is not None:
            s = self.schedules[o.schedule_id]
            if kind == "receipt":
                s.realised += sign * o.amount
            elif sign > 0:
                r = _revision(o.raw)
                s.revisions.append((eid, o.amount, r.expected_date, r.certainty))
            else:
                s.revisions = [x for x in s.revisions if x[0] != eid]
            return
        if cid is None:
            return
        c = self.commitments[cid]
        if kind == "commitment":
            c.open += sign * o.amount
        elif kind == "commitment_carry_forward":
            c.fiscal_year += sign
        elif kind == "payment_order":
            self.orders[eid][0] += sign * o.amount
            c.ordered += sign * o.amount
        else:  # a payment or cancel: what it released, executed and cut
            c.open -= sign * o.released
            cut = list(o.trimmed)
            if o.order_id is not None:
                cut.append((o.order_id, o.order_released))
            for oid, amount in cut:
                self.orders[oid][0] -= sign * amount
                c.ordered -= sign * amount

    def curve(self, cash: int, fc: Forecast, n: int) -> tuple[int, ...]:
        """The first ``n`` days of expected cash from ``cash`` with the copies' flows and the
        forecast's other known flows (added up per day) and its learned flows."""
        out: dict[int, int] = {}
        inn: dict[int, int] = {}
        for f in fc.flows:
            if f.kind == RECEIPT and f.ref not in self.schedules:
                inn[f.day] = inn.get(f.day, 0) + f.cash
            elif (f.kind == ORDER and f.ref not in self.orders) or (
                f.kind == COMMITMENT and f.ref not in self.commitments
            ):
                out[f.day] = out.get(f.day, 0) - f.cash
        copies = [(COMMITMENT, k) for k in self.commitments] + [(ORDER, k) for k in self.orders]
        for ref in copies + [(RECEIPT, k) for k in self.schedules]:
            d, amount = self.flow(ref)
            into = inn if ref[0] == RECEIPT else out
            into[d] = into.get(d, 0) + amount
        inputs = Inputs(
            cash,
            0,
            orders=tuple(KnownOrder(str(d), a, d) for d, a in sorted(out.items()) if a > 0),
            receipts=tuple(ExpectedReceipt(str(d), a, d) for d, a in sorted(inn.items()) if a > 0),
            learned=fc.learned,
        )
        return run_forecast(inputs, fc.today, fc.horizon).expected.cash[:n]


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
