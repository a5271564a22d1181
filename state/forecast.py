"""The cash forecast (issue #18), pure: one engine for the alert rules, the API, the dashboard
and the backtest. No I/O, no clock (``today`` is a parameter), integer KRW, deterministic.

For each day ``today .. today + horizon - 1`` it projects an account's closing ``cash`` and
``available`` (= cash - committed) from the position now and the flows expected on each day,
every one of them listed (``Flow``), so that each figure is the position now plus the flows on
or before its day, to the won.

**Known flows** (what the ledger knows):

* a **payment order** (지급명령, kind ``order``): its open amount leaves cash and committed on
  its pay day (available unchanged);
* an **open commitment**'s part not yet ordered (``commitment``): the same on its due day.
  Assumption (as the ``projected_shortfall`` rule): a commitment without a due date falls due
  on its fiscal year's last day (``cashpos.calendar.year_end_day``, the books close);
* an **expected receipt** (세입 예정, ``receipt``): its open amount (expected less realised)
  enters cash and available on its expected day, ``confirmed`` (a notified grant instalment)
  or ``estimated`` (a tax's expected yield).

Assumption for all three: a flow whose day is past and that is still open happens **today**
(an overdue order or commitment is paid, a late receipt arrives, today), with one exception:
an ``estimated`` receipt still open more than ``ESTIMATE_GRACE_DAYS`` after its day is no
longer expected (a tax's yield estimated 10-20 % high would otherwise "arrive today" every day
until the year's close; late payments are not forecast). A flow after the horizon is not
listed.

**Learned flows** (``state.forecast_learn``, certainty ``learned``), from tomorrow on (today is
under way: what it still brings is unknown, and a forecast made at its close must not count it
twice):

* ``baseline`` (``net:<class>``): the account's usual net flow that no known flow explains
  (receipts naming no schedule and transfers in, less payments against no commitment and
  transfers out) on a day of that class (off, business, month end, year end);
* ``recurring``: a monthly flow found on its last three occurrences (the payroll on the 20th);
* ``new_commitments``: commitments not yet made, at the usual pace of a day of that class
  (committed up, so available down; no cash);
* ``pace`` of committed payments (``committed_payments``): commitments are paid before their
  due day, and commitments not yet made are paid within the horizon too, so by day ``d`` at
  least the usual pace of committed payments ``R(d)`` (the account's mean per day class, summed
  from tomorrow) is expected to leave, of which the known orders and commitments cover ``K(d)``
  (those on or before ``d``, today's included). The pace flows add up to ``max(0, R(d) -
  K(d))`` by each day ``d`` (cash and committed down); a day on which a known flow catches up
  with the pace has a pace flow back (positive);
* ``pace`` of scheduled receipts (``scheduled_receipts``): the same for receipts that realise
  a schedule (monthly grant instalments are announced only early in their month or the month
  before): by day ``d`` at least their usual pace is expected in, of which the listed expected
  receipts cover what they do (cash and available up).

**Bands**: ``confirmed`` adds the orders, commitments and confirmed receipts to the position;
``expected`` adds every flow (also estimated receipts and learned flows). So ``expected -
confirmed`` on a day is exactly the sum of the estimated and learned flows on or before it;
neither band bounds the other (learned payments lower it, receipts raise it).

**Crossings** (expected band): the first day cash, and available, is below 0 and below the
floor, with the flows that drive it: the largest decreases of that figure on or before that
day (top ``TOP_DRIVERS``, largest first, ties by day, account, kind and reference).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Final

import msgspec

from cashpos.calendar import year_end_day
from state.forecast_learn import (
    CLASS_NAMES,
    IN,
    NET,
    OPENED,
    DayFlow,
    Learned,
    day_class,
    learn,
    recurring_days,
)

HORIZON_DAYS: Final = 90
TOP_DRIVERS: Final = 5
CONFIRMED: Final = "confirmed"
ESTIMATED: Final = "estimated"
LEARNED: Final = "learned"
EXPECTED: Final = "expected"  # the band with every flow

ORDER: Final = "order"
COMMITMENT: Final = "commitment"
RECEIPT: Final = "receipt"
BASELINE: Final = "baseline"
RECURRING: Final = "recurring"
NEW_COMMITMENTS: Final = "new_commitments"
PACE: Final = "pace"
KINDS: Final = (ORDER, COMMITMENT, RECEIPT, RECURRING, BASELINE, NEW_COMMITMENTS, PACE)
_RANK: Final = {k: i for i, k in enumerate(KINDS)}
PACE_REF: Final = "committed_payments"
SCHEDULED_REF: Final = "scheduled_receipts"
ESTIMATE_GRACE_DAYS: Final = 7  # an estimate still open a week after its day is not expected


# -- inputs ---------------------------------------------------------------------------------------


class Order(msgspec.Struct, frozen=True):
    """An open payment order: ``amount`` still to pay, on ``pay_day``."""

    id: str
    amount: int
    pay_day: int


class OpenCommitment(msgspec.Struct, frozen=True):
    """An open commitment's part not yet ordered (``amount``); ``due_day`` None: its fiscal
    year's last day."""

    id: str
    amount: int
    fiscal_year: int
    due_day: int | None = None


class ExpectedReceipt(msgspec.Struct, frozen=True):
    """An expected receipt's open amount (expected less realised, never negative), by
    schedule id."""

    id: str
    amount: int
    expected_day: int
    certainty: str = ESTIMATED  # confirmed | estimated
    category: str = "other"


class Inputs(msgspec.Struct, frozen=True):
    """One account's position now (``ordered``: the open orders' total, ``<= committed``; for
    the caller's figures: the curve uses the orders listed), its known future flows and its past
    (``history``, ``history_from``: see ``forecast_learn.learn``). ``learned``: what was learned
    on ``today`` already (the past only changes with the day, so a caller may keep it; a late
    event for a past day is then taken in the next day); ignored if learned on another day."""

    cash: int
    committed: int
    ordered: int = 0
    orders: tuple[Order, ...] = ()
    commitments: tuple[OpenCommitment, ...] = ()
    receipts: tuple[ExpectedReceipt, ...] = ()
    history: tuple[DayFlow, ...] = ()
    history_from: int | None = None
    account: str = ""
    learned: Learned | None = None


# -- outputs --------------------------------------------------------------------------------------


class Flow(msgspec.Struct, frozen=True):
    """One flow behind the curve: on ``day``, ``cash`` and ``committed`` change by these
    amounts (so ``available`` by ``cash - committed``). ``ref``: the order, commitment or
    schedule id; for a learned flow what it was learned as (``net:business``, ``out:day20``,
    ``committed_payments``)."""

    day: int
    cash: int
    committed: int
    kind: str
    certainty: str
    ref: str
    account: str = ""

    @property
    def available(self) -> int:
        return self.cash - self.committed


class Band(msgspec.Struct, frozen=True):
    """Projected closing figures, one per day from ``today``."""

    cash: tuple[int, ...]
    available: tuple[int, ...]


class Crossing(msgspec.Struct, frozen=True):
    """The first day a figure is below ``threshold``, its value then, and what drives it."""

    day: int
    value: int
    threshold: int
    drivers: tuple[Flow, ...]


class Forecast(msgspec.Struct, frozen=True):
    """An account's (or, ``combine``d, a government's: ``account`` "") forecast made on
    ``today``: both bands, every flow, the crossings of the expected band, what was learned."""

    today: int
    horizon: int
    account: str
    cash: int  # the position now
    committed: int
    floor: int | None
    confirmed: Band
    expected: Band
    flows: tuple[Flow, ...]  # in (day, account, kind, ref) order
    cash_below_zero: Crossing | None = None
    cash_below_floor: Crossing | None = None
    available_below_zero: Crossing | None = None
    available_below_floor: Crossing | None = None
    learned: Learned | None = None  # None for a combined forecast

    def band(self, name: str) -> Band:
        return self.confirmed if name == CONFIRMED else self.expected

    def index(self, day: int) -> int:
        """The position of ``day`` in the bands (ValueError outside the horizon)."""
        i = day - self.today
        if not 0 <= i < self.horizon:
            raise ValueError(f"day {day} is outside the forecast")
        return i


def _key(f: Flow) -> tuple[int, str, int, str, int, int]:
    return (f.day, f.account, _RANK.get(f.kind, len(KINDS)), f.ref, f.cash, f.committed)


# -- the engine -----------------------------------------------------------------------------------


def forecast(
    inputs: Inputs, today: int, horizon_days: int = HORIZON_DAYS, floor: int | None = None
) -> Forecast:
    """The forecast of one account (or position) from ``today`` for ``horizon_days`` days;
    crossings of ``floor`` too when given. See the module's docstring."""
    if horizon_days < 1:
        raise ValueError("horizon_days must be at least 1")
    last = today + horizon_days - 1
    acc = inputs.account
    flows: list[Flow] = []
    add = flows.append
    for o in inputs.orders:
        d = max(o.pay_day, today)
        if o.amount > 0 and d <= last:
            add(Flow(d, -o.amount, -o.amount, ORDER, CONFIRMED, o.id, acc))
    for c in inputs.commitments:
        d = max(year_end_day(c.fiscal_year) if c.due_day is None else c.due_day, today)
        if c.amount > 0 and d <= last:
            add(Flow(d, -c.amount, -c.amount, COMMITMENT, CONFIRMED, c.id, acc))
    for r in inputs.receipts:
        if r.certainty not in (CONFIRMED, ESTIMATED):
            raise ValueError(f"expected receipt {r.id}: certainty {r.certainty!r}")
        d = max(r.expected_day, today)
        stale = r.certainty == ESTIMATED and today - r.expected_day > ESTIMATE_GRACE_DAYS
        if r.amount > 0 and d <= last and not stale:
            add(Flow(d, r.amount, 0, RECEIPT, r.certainty, r.id, acc))
    lr = inputs.learned
    if lr is None or lr.today != today:
        lr = learn(inputs.history, today, inputs.history_from)
    _learned_flows(lr, flows, today, last, acc)
    flows.sort(key=_key)
    confirmed, expected = _bands(inputs.cash, inputs.cash - inputs.committed, flows, today, horizon_days)
    return _finish(
        today, horizon_days, acc, inputs.cash, inputs.committed, floor, confirmed, expected, tuple(flows), lr
    )


def _learned_flows(lr: Learned, flows: list[Flow], today: int, last: int, acc: str) -> None:
    """Append the learned flows of days ``today + 1 .. last`` (the pace needs the known
    flows, already in ``flows``)."""
    known_out = [0] * (last - today + 1)  # known commitment and order cash out, per day
    known_in = [0] * (last - today + 1)  # known expected receipts, per day
    for f in flows:
        if f.kind in (ORDER, COMMITMENT):
            known_out[f.day - today] -= f.cash
        elif f.kind == RECEIPT:
            known_in[f.day - today] += f.cash
    add = flows.append
    net, opened, paid, scheduled = lr.net, lr.opened, lr.paid, lr.scheduled
    pace_r, pace_k, pace_prev = 0, known_out[0], 0  # R(d), K(d) (see above) and the pace so far
    sched_r, sched_k, sched_prev = 0, known_in[0], 0  # the same for scheduled receipts
    for d in range(today + 1, last + 1):
        c = day_class(d)
        name = CLASS_NAMES[c]
        if net[c]:
            add(Flow(d, net[c], 0, BASELINE, LEARNED, f"{NET}:{name}", acc))
        if opened[c]:
            add(Flow(d, 0, opened[c], NEW_COMMITMENTS, LEARNED, f"{OPENED}:{name}", acc))
        pace_r += paid[c]
        pace_k += known_out[d - today]
        pace = max(0, pace_r - pace_k)
        if pace != pace_prev:
            x = pace - pace_prev
            add(Flow(d, -x, -x, PACE, LEARNED, PACE_REF, acc))
            pace_prev = pace
        sched_r += scheduled[c]
        sched_k += known_in[d - today]
        sched = max(0, sched_r - sched_k)
        if sched != sched_prev:
            add(Flow(d, sched - sched_prev, 0, PACE, LEARNED, SCHEDULED_REF, acc))
            sched_prev = sched
    for r in lr.recurring:
        sign = 1 if r.series == IN else -1
        for d in recurring_days(r, today + 1, last):
            add(Flow(d, sign * r.amount, 0, RECURRING, LEARNED, r.ref, acc))


def _bands(cash: int, available: int, flows: Sequence[Flow], today: int, n: int) -> tuple[Band, Band]:
    """Prefix sums of the flows' per-day deltas: each band in one pass."""
    cc = [0] * n
    ca = [0] * n
    ec = [0] * n
    ea = [0] * n
    for f in flows:
        i = f.day - today
        a = f.cash - f.committed
        ec[i] += f.cash
        ea[i] += a
        if f.certainty == CONFIRMED:
            cc[i] += f.cash
            ca[i] += a
    return (
        Band(tuple(accumulate(cc, initial=cash))[1:], tuple(accumulate(ca, initial=available))[1:]),
        Band(tuple(accumulate(ec, initial=cash))[1:], tuple(accumulate(ea, initial=available))[1:]),
    )


def _finish(
    today: int,
    horizon: int,
    account: str,
    cash: int,
    committed: int,
    floor: int | None,
    confirmed: Band,
    expected: Band,
    flows: tuple[Flow, ...],
    lr: Learned | None,
) -> Forecast:
    def cash_of(f: Flow) -> int:
        return f.cash

    def avail_of(f: Flow) -> int:
        return f.available

    return Forecast(
        today,
        horizon,
        account,
        cash,
        committed,
        floor,
        confirmed,
        expected,
        flows,
        cash_below_zero=first_crossing(expected.cash, 0, today, flows, cash_of),
        cash_below_floor=None
        if floor is None
        else first_crossing(expected.cash, floor, today, flows, cash_of),
        available_below_zero=first_crossing(expected.available, 0, today, flows, avail_of),
        available_below_floor=(
            None if floor is None else first_crossing(expected.available, floor, today, flows, avail_of)
        ),
        learned=lr,
    )


def first_crossing(
    values: Sequence[int], threshold: int, today: int, flows: Iterable[Flow], delta: Callable[[Flow], int]
) -> Crossing | None:
    """The first day whose value is below ``threshold``, with the flows (``delta``: the flow's
    change of the figure) that lower it most on or before that day."""
    for i, v in enumerate(values):
        if v < threshold:
            day = today + i
            return Crossing(day, v, threshold, drivers(flows, day, delta))
    return None


def drivers(flows: Iterable[Flow], day: int, delta: Callable[[Flow], int]) -> tuple[Flow, ...]:
    """The ``TOP_DRIVERS`` flows on or before ``day`` that lower the figure most, largest
    first; ties by day, account, kind and reference (deterministic)."""
    low = ((delta(f), _key(f), f) for f in flows if f.day <= day)
    top = heapq.nsmallest(TOP_DRIVERS, (x for x in low if x[0] < 0), key=lambda x: (x[0], x[1]))
    return tuple(x[2] for x in top)


def combine(parts: Sequence[Forecast], floor: int | None = None, account: str = "") -> Forecast:
    """A government's forecast as the sum of its accounts' (same ``today`` and horizon): the
    bands day by day, the positions and every flow; crossings of the sum (against ``floor``)."""
    if not parts:
        raise ValueError("nothing to combine")
    today, horizon = parts[0].today, parts[0].horizon
    if any(p.today != today or p.horizon != horizon for p in parts):
        raise ValueError("forecasts of different days or horizons")

    def add(bands: list[tuple[int, ...]]) -> tuple[int, ...]:
        return tuple(map(sum, zip(*bands, strict=True)))

    confirmed = Band(add([p.confirmed.cash for p in parts]), add([p.confirmed.available for p in parts]))
    expected = Band(add([p.expected.cash for p in parts]), add([p.expected.available for p in parts]))
    flows = tuple(sorted((f for p in parts for f in p.flows), key=_key))
    return _finish(
        today,
        horizon,
        account,
        sum(p.cash for p in parts),
        sum(p.committed for p in parts),
        floor,
        confirmed,
        expected,
        flows,
        None,
    )


# -- idle cash ------------------------------------------------------------------------------------

IDLE_TERMS: Final = (7, 14, 30, 60, 90)


class Idle(msgspec.Struct, frozen=True):
    """Cash above the floor that the forecast says is not needed (see ``idle_cash``)."""

    floor: int
    amount: int  # idle over the whole horizon
    days: int  # days from today on which some cash is above the floor, without a break
    ladder: tuple[tuple[int, int], ...]  # (term days, amount idle for that term)


def idle_cash(f: Forecast, floor: int, band: str = EXPECTED) -> Idle:
    """What could go on a term deposit today, for a decision, not an instruction.

    ``amount``: the minimum over the horizon of projected closing cash minus ``floor``, never
    negative: withdrawn from the account today, it would leave every day's projected close at or
    above the floor. ``days``: for how many days from today some cash stays above the floor
    (the horizon if ``amount`` > 0). ``ladder``: for each term of ``IDLE_TERMS`` within the
    horizon, the amount idle for that many days (the minimum over its first days).

    Assumptions: the ``expected`` band (estimated receipts and learned flows count; pass
    ``band="confirmed"`` for known flows only); closing balances (a day's payments and receipts
    are not ordered within the day); nothing is known after the horizon, so a deposit for the
    whole horizon must come back on its last day; a deposit moves cash out of the account today,
    so today's projected close counts."""
    cash = f.band(band).cash
    surplus = [c - floor for c in cash]
    days = next((i for i, s in enumerate(surplus) if s <= 0), len(surplus))
    lows = list(accumulate(surplus, min))
    ladder = tuple((t, max(0, lows[t - 1])) for t in IDLE_TERMS if t <= len(lows))
    return Idle(floor, max(0, lows[-1]), days, ladder)


# -- forecast versus actual -----------------------------------------------------------------------

SNAPSHOT_DAYS: Final = 31  # today and the next 30 days
HORIZONS: Final = (1, 7, 30)


class Snapshot(msgspec.Struct, frozen=True, array_like=True):
    """The expected closing cash made on ``day`` for ``day, day + 1, ...`` (one per day kept:
    31 integers)."""

    day: int
    cash: tuple[int, ...]


def snapshot(f: Forecast, days: int = SNAPSHOT_DAYS, band: str = EXPECTED) -> Snapshot:
    return Snapshot(f.today, f.band(band).cash[:days])


def errors(s: Snapshot, actual: Mapping[int, int], horizons: Iterable[int] = HORIZONS) -> dict[int, int]:
    """Forecast minus actual closing cash, per horizon (days after the snapshot's day) whose
    day has an actual close and is in the snapshot. Positive: the forecast was too high."""
    out: dict[int, int] = {}
    for h in horizons:
        d = s.day + h
        if 0 <= h < len(s.cash) and d in actual:
            out[h] = s.cash[h] - actual[d]
    return out


def mean_abs_errors(errs: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """Mean absolute error per horizon over many snapshots, floored to the won."""
    tot: dict[int, int] = {}
    n: dict[int, int] = {}
    for e in errs:
        for h, v in e.items():
            tot[h] = tot.get(h, 0) + abs(v)
            n[h] = n.get(h, 0) + 1
    return {h: tot[h] // n[h] for h in sorted(tot)}


def flat_baseline(cash: int, today: int, days: int = SNAPSHOT_DAYS) -> Snapshot:
    """The naive forecast ``balance held flat``: today's closing cash on every day."""
    return Snapshot(today, (cash,) * days)


def trend_baseline(closings: Sequence[int], today: int, days: int = SNAPSHOT_DAYS) -> Snapshot:
    """The naive forecast ``linear trend``: the least-squares line through ``closings`` (the
    closing cash of consecutive days ending on ``today``, e.g. the last 30) extended, in
    integers (floored). Fewer than two closings: flat."""
    n = len(closings)
    if n < 2:
        return flat_baseline(closings[-1] if closings else 0, today, days)
    sx = n * (n - 1) // 2
    sxx = (n - 1) * n * (2 * n - 1) // 6
    sy = sum(closings)
    sxy = sum(i * y for i, y in enumerate(closings))
    den = n * sxx - sx * sx
    num = n * sxy - sx * sy
    # fitted(x) = sy/n + num/den * (x - sx/n) = (sy*den + num*(n*x - sx)) / (n*den)
    return Snapshot(
        today, tuple((sy * den + num * (n * x - sx)) // (n * den) for x in range(n - 1, n - 1 + days))
    )
