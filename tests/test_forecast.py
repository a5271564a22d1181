"""The cash forecast engine (``state.forecast``, ``state.forecast_learn``), pure: every figure is
the position plus the flows listed on or before its day; a known flow moves the curve by exactly
its amount from its day on; the bands differ by exactly the estimated and learned flows; crossings,
combine and idle cash against brute force; the payroll on the 20th learned from three months and
not from one; no float anywhere; the same inputs in any order give the same forecast.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from fractions import Fraction

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.calendar import date_day, day_date, is_business_day, year_end_day
from state.forecast import (
    COMMITMENT,
    CONFIRMED,
    ESTIMATE_GRACE_DAYS,
    ESTIMATED,
    IDLE_TERMS,
    KINDS,
    LEARNED,
    ORDER,
    PACE,
    PACE_REF,
    RECEIPT,
    RECURRING,
    SCHEDULED_REF,
    TOP_DRIVERS,
    DayFlow,
    ExpectedReceipt,
    Flow,
    Forecast,
    Inputs,
    OpenCommitment,
    Order,
    Snapshot,
    combine,
    errors,
    first_crossing,
    flat_baseline,
    forecast,
    idle_cash,
    mean_abs_errors,
    snapshot,
    trend_baseline,
)
from state.forecast_learn import (
    BUSINESS,
    MONTH_END,
    OFF,
    OUT,
    WINDOW_DAYS,
    YEAR_END,
    day_class,
    day_flow,
    learn,
    shrunk_mean,
)
from state.history import DayFlows

PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIRST = date_day(dt.date(2025, 3, 1))
LAST = date_day(dt.date(2029, 10, 1))
BIG = 10**12

days = st.integers(FIRST, LAST)
amounts = st.integers(0, BIG)


@st.composite
def histories(draw: st.DrawFn, today: int) -> tuple[DayFlow, ...]:
    """A sparse, lumpy past of up to ~200 days before ``today`` (every column drawn)."""
    n = draw(st.integers(0, 200))
    picked = draw(st.lists(st.integers(1, max(n, 1)), unique=True, max_size=min(n, 120)))
    col = st.integers(-(10**6), 10**10)
    out = []
    for back in picked:
        out.append(
            DayFlow(
                today - back,
                receipts=draw(col),
                payments=draw(col),
                transfers_in=draw(st.sampled_from((0, 0, draw(col)))),
                transfers_out=draw(st.sampled_from((0, 0, draw(col)))),
                committed_opened=draw(st.sampled_from((0, draw(col)))),
                committed_paid=draw(st.sampled_from((0, draw(col)))),
                receipts_scheduled=draw(st.sampled_from((0, 0, draw(col)))),
            )
        )
    return tuple(out)


@st.composite
def inputs(draw: st.DrawFn, today: int, with_history: bool = True, account: str = "general") -> Inputs:
    near = st.integers(today - 20, today + 130)
    year = day_date(today).year
    orders = draw(
        st.lists(st.builds(Order, st.uuids().map(lambda u: f"o{u.hex[:6]}"), amounts, near), max_size=8)
    )
    commits = draw(
        st.lists(
            st.builds(
                OpenCommitment,
                st.uuids().map(lambda u: f"c{u.hex[:6]}"),
                amounts,
                st.sampled_from((year, year - 1)),
                st.none() | near,
            ),
            max_size=8,
        )
    )
    receipts = draw(
        st.lists(
            st.builds(
                ExpectedReceipt,
                st.uuids().map(lambda u: f"s{u.hex[:6]}"),
                amounts,
                near,
                st.sampled_from((CONFIRMED, ESTIMATED)),
            ),
            max_size=8,
        )
    )
    return Inputs(
        cash=draw(st.integers(-BIG, 10 * BIG)),
        committed=draw(st.integers(0, 10 * BIG)),
        orders=tuple(orders),
        commitments=tuple(commits),
        receipts=tuple(receipts),
        history=draw(histories(today)) if with_history else (),
        account=account,
    )


@st.composite
def cases(draw: st.DrawFn, with_history: bool = True) -> tuple[Inputs, int, int]:
    today = draw(days)
    return draw(inputs(today, with_history)), today, draw(st.integers(1, 120))


def _upto(flows: Sequence[Flow], day: int, band: str) -> tuple[int, int]:
    """(cash, available) change of the flows of ``band`` on or before ``day``."""
    fs = [f for f in flows if f.day <= day and (band != CONFIRMED or f.certainty == CONFIRMED)]
    return sum(f.cash for f in fs), sum(f.available for f in fs)


def _effective(day: int, today: int) -> int:
    return max(day, today)


def _no_paces(inp: Inputs) -> Inputs:
    """``inp`` without committed payments and scheduled receipts in its past: no pace to make
    up what a new known flow covers."""
    quiet = tuple(msgspec.structs.replace(h, committed_paid=0, receipts_scheduled=0) for h in inp.history)
    return msgspec.structs.replace(inp, history=quiet)


# -- every figure is the position plus its flows ---------------------------------------------------


@PROPS
@given(cases())
def test_each_figure_is_the_position_plus_the_flows_up_to_its_day(case: tuple[Inputs, int, int]) -> None:
    inp, today, horizon = case
    f = forecast(inp, today, horizon)
    assert len(f.confirmed.cash) == len(f.expected.cash) == len(f.expected.available) == horizon
    for i in range(horizon):
        for name, band in (("confirmed", f.confirmed), ("expected", f.expected)):
            dc, da = _upto(f.flows, today + i, name)
            assert band.cash[i] == inp.cash + dc
            assert band.available[i] == inp.cash - inp.committed + da
    for fl in f.flows:
        assert today <= fl.day < today + horizon
        assert fl.cash or fl.committed
        if fl.certainty == LEARNED:
            assert fl.day > today  # today is under way: learned flows start tomorrow
        if fl.kind in (ORDER, COMMITMENT):
            assert fl.cash == fl.committed < 0 and fl.certainty == CONFIRMED  # available unchanged
        if fl.kind == RECEIPT:
            assert fl.cash > 0 and fl.committed == 0
    assert list(f.flows) == sorted(f.flows, key=lambda x: (x.day, x.account))


@PROPS
@given(cases())
def test_expected_minus_confirmed_is_exactly_the_estimated_and_learned_flows(
    case: tuple[Inputs, int, int],
) -> None:
    inp, today, horizon = case
    f = forecast(inp, today, horizon)
    extra = [x for x in f.flows if x.certainty in (ESTIMATED, LEARNED)]
    for i in range(horizon):
        d = today + i
        assert f.expected.cash[i] - f.confirmed.cash[i] == sum(x.cash for x in extra if x.day <= d)
        assert f.expected.available[i] - f.confirmed.available[i] == sum(
            x.available for x in extra if x.day <= d
        )
    assert {x.certainty for x in f.flows} <= {CONFIRMED, ESTIMATED, LEARNED}
    assert all(x.certainty != ESTIMATED or x.kind == RECEIPT for x in f.flows)


# -- a known flow moves the curve by exactly its amount from its day on ---------------------------


@PROPS
@given(
    cases(), st.integers(1, BIG), st.integers(-30, 150), st.sampled_from(("order", "commitment", "c", "e"))
)
def test_a_known_flow_moves_the_curve_by_its_amount_from_its_day_nowhere_before(
    case: tuple[Inputs, int, int], amount: int, offset: int, what: str
) -> None:
    inp, today, horizon = case
    # without committed payments in the past there is no pace to absorb a new order
    inp = msgspec.structs.replace(
        inp, history=tuple(msgspec.structs.replace(h, committed_paid=0) for h in inp.history)
    )
    day = today + offset
    if what == "order":
        more = msgspec.structs.replace(inp, orders=(*inp.orders, Order("new", amount, day)))
        dc, dm = -amount, -amount
    elif what == "commitment":
        more = msgspec.structs.replace(
            inp, commitments=(*inp.commitments, OpenCommitment("new", amount, day_date(today).year, day))
        )
        dc, dm = -amount, -amount
    else:
        certainty = CONFIRMED if what == "c" else ESTIMATED
        more = msgspec.structs.replace(
            inp, receipts=(*inp.receipts, ExpectedReceipt("new", amount, day, certainty))
        )
        dc, dm = amount, 0
    a, b = forecast(inp, today, horizon), forecast(more, today, horizon)
    at = _effective(day, today)
    if what == "e" and today - day > ESTIMATE_GRACE_DAYS:
        at = today + horizon  # an estimate long past its day is no longer expected
    for i in range(horizon):
        on = today + i >= at
        assert b.expected.cash[i] - a.expected.cash[i] == (dc if on else 0)
        assert b.expected.available[i] - a.expected.available[i] == (dc - dm if on else 0)
        confirmed = what != "e"
        assert b.confirmed.cash[i] - a.confirmed.cash[i] == (dc if on and confirmed else 0)
    listed = [x for x in b.flows if x.ref == "new"]
    assert listed == ([] if at >= today + horizon else [listed[0]])
    if listed:
        assert (listed[0].day, listed[0].cash, listed[0].committed) == (at, dc, dm)


@PROPS
@given(cases())
def test_an_expected_receipt_moves_the_curve_exactly_even_with_learned_flows(
    case: tuple[Inputs, int, int],
) -> None:
    inp, today, horizon = case
    more = msgspec.structs.replace(
        inp, receipts=(*inp.receipts, ExpectedReceipt("new", 12345, today + 3, CONFIRMED))
    )
    a, b = forecast(inp, today, horizon), forecast(more, today, horizon)
    for i in range(horizon):
        step = 12345 if i >= 3 else 0
        assert b.expected.cash[i] - a.expected.cash[i] == step
        assert b.confirmed.available[i] - a.confirmed.available[i] == step


def test_due_days_past_due_and_undated_commitments() -> None:
    today = date_day(dt.date(2026, 11, 20))
    inp = Inputs(
        cash=1000,
        committed=600,
        orders=(Order("late", 100, today - 5),),
        commitments=(
            OpenCommitment("undated", 200, 2026),
            OpenCommitment("overdue", 300, 2026, today - 1),
            OpenCommitment("next_year", 1, 2027),  # due 31 Dec 2027: past the horizon, not listed
        ),
        receipts=(
            ExpectedReceipt("tax", 50, today - 3, ESTIMATED),
            ExpectedReceipt("old-tax", 70, today - 1 - ESTIMATE_GRACE_DAYS, ESTIMATED),  # too high
            ExpectedReceipt("old-grant", 9, today - 40, CONFIRMED),  # notified: it will come
        ),
    )
    f = forecast(inp, today, 90)
    assert [(x.ref, x.day) for x in f.flows] == [
        ("late", today),
        ("overdue", today),
        ("old-grant", today),
        ("tax", today),
        ("undated", year_end_day(2026)),
    ]
    assert f.expected.cash[0] == 1000 - 100 - 300 + 9 + 50
    assert f.confirmed.cash[0] == 1000 - 100 - 300 + 9
    assert f.expected.available[0] == 400 + 9 + 50
    assert f.expected.cash[-1] == 1000 - 600 + 9 + 50


# -- crossings and their drivers, against brute force ---------------------------------------------


def _brute_crossing(
    values: Sequence[int], thr: int, today: int, flows: Sequence[Flow], cash: bool
) -> tuple[int, int, list[Flow]] | None:
    for i, v in enumerate(values):
        if v < thr:
            d = today + i

            def delta(x: Flow) -> int:
                return x.cash if cash else x.available

            low = [x for x in flows if x.day <= d and delta(x) < 0]
            low.sort(
                key=lambda x: (delta(x), x.day, x.account, KINDS.index(x.kind), x.ref, x.cash, x.committed)
            )
            return d, v, low[:TOP_DRIVERS]
    return None


@PROPS
@given(cases(), st.integers(-BIG, 10 * BIG))
def test_first_crossings_are_the_first_days_below_with_the_largest_decreases(
    case: tuple[Inputs, int, int], floor: int
) -> None:
    inp, today, horizon = case
    f = forecast(inp, today, horizon, floor)
    for got, values, thr, cash in (
        (f.cash_below_zero, f.expected.cash, 0, True),
        (f.cash_below_floor, f.expected.cash, floor, True),
        (f.available_below_zero, f.expected.available, 0, False),
        (f.available_below_floor, f.expected.available, floor, False),
    ):
        want = _brute_crossing(values, thr, today, f.flows, cash)
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert (got.day, got.value, got.threshold, list(got.drivers)) == (*want[:2], thr, want[2])
    assert forecast(inp, today, horizon).cash_below_floor is None


def test_drivers_of_a_shortfall_name_the_payments_due_by_then() -> None:
    today = date_day(dt.date(2026, 6, 1))
    inp = Inputs(
        cash=1000,
        committed=1000,
        orders=(Order("o-small", 100, today + 2), Order("o-late", 900, today + 40)),
        commitments=(
            OpenCommitment("c-big", 900, 2026, today + 5),
            OpenCommitment("c-tie", 100, 2026, today + 1),
        ),
        receipts=(ExpectedReceipt("grant", 50, today + 4, CONFIRMED),),
    )
    f = forecast(inp, today, 30)
    c = f.cash_below_zero
    assert c is not None and c.day == today + 5 and c.value == 1000 - 100 - 100 + 50 - 900
    assert [d.ref for d in c.drivers] == ["c-big", "c-tie", "o-small"]  # ties: earlier day first
    assert f.available_below_zero is None  # paying commitments leaves available unchanged


# -- combine, idle cash ---------------------------------------------------------------------------


@PROPS
@given(
    days.flatmap(lambda t: st.tuples(st.just(t), st.lists(inputs(t), min_size=1, max_size=4))),
    st.integers(1, 100),
)
def test_combine_is_the_sum_of_its_parts_day_by_day(drawn: tuple[int, list[Inputs]], horizon: int) -> None:
    today, parts = drawn
    parts = [msgspec.structs.replace(p, account=f"a{i}") for i, p in enumerate(parts)]
    fs = [forecast(p, today, horizon) for p in parts]
    g = combine(fs, floor=5 * BIG)
    for i in range(horizon):
        assert g.expected.cash[i] == sum(x.expected.cash[i] for x in fs)
        assert g.expected.available[i] == sum(x.expected.available[i] for x in fs)
        assert g.confirmed.cash[i] == sum(x.confirmed.cash[i] for x in fs)
        assert g.confirmed.available[i] == sum(x.confirmed.available[i] for x in fs)
    assert g.cash == sum(p.cash for p in parts) and g.committed == sum(p.committed for p in parts)
    assert sorted(g.flows, key=repr) == sorted((x for f in fs for x in f.flows), key=repr)
    for i in range(horizon):  # the sum is still the position plus its flows
        assert g.expected.cash[i] == g.cash + _upto(g.flows, today + i, "expected")[0]
    want = _brute_crossing(g.expected.cash, 5 * BIG, today, g.flows, True)
    assert (None if g.cash_below_floor is None else g.cash_below_floor.day) == (
        None if want is None else want[0]
    )
    assert combine(list(reversed(fs)), floor=5 * BIG) == g  # order of the parts does not matter


@PROPS
@given(cases(), st.integers(-BIG, 10 * BIG))
def test_idle_cash_against_brute_force(case: tuple[Inputs, int, int], floor: int) -> None:
    inp, today, horizon = case
    f = forecast(inp, today, horizon)
    for band, values in (("expected", f.expected.cash), ("confirmed", f.confirmed.cash)):
        idle = idle_cash(f, floor, band)
        # the largest amount x >= 0 that leaves every day's close at or above the floor
        x = idle.amount
        assert x >= 0
        assert x == 0 or all(v - x >= floor for v in values)
        assert not all(v - (x + 1) >= floor for v in values)
        days_above = 0
        while days_above < len(values) and values[days_above] > floor:
            days_above += 1
        assert idle.days == days_above
        assert idle.ladder == tuple(
            (t, max(0, min(v - floor for v in values[:t]))) for t in IDLE_TERMS if t <= len(values)
        )
        assert idle.amount == 0 or idle.days == horizon


# -- learning -------------------------------------------------------------------------------------


def _payday(year: int, month: int) -> int:
    """The 20th, or the business day before it (the payroll's day)."""
    d = dt.date(year, month, 20)
    while not is_business_day(d):
        d -= dt.timedelta(days=1)
    return date_day(d)


@st.composite
def payroll_histories(draw: st.DrawFn) -> tuple[int, list[DayFlow], list[int], int]:
    """Small, noisy daily payments over ~5 months and a payroll on the 20th of the last
    ``months`` months before ``today`` (a day in the first half of a month)."""
    year = draw(st.integers(2025, 2029))
    month = draw(st.integers(1, 12))
    today = date_day(dt.date(year, month, draw(st.integers(1, 15))))
    months = draw(st.integers(1, 4))
    payroll = draw(st.integers(10**9, 10**11))
    rnd = random.Random(draw(st.integers(0, 2**32)))  # noise, not an adversary: a seeded PRNG
    paydays: list[int] = []
    y, m = year, month
    while len(paydays) < months:
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        paydays.append(_payday(y, m))
    hist = []
    for d in range(today - 150, today):
        pay = rnd.randint(0, payroll // 50) if is_business_day(day_date(d)) else 0
        receipts = rnd.randint(0, payroll // 50)
        hist.append(DayFlow(d, receipts=receipts, payments=pay + (payroll if d in paydays else 0)))
    return today, hist, paydays, payroll


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payroll_histories())
def test_a_payroll_on_the_20th_is_learned_from_three_months_not_from_one(
    drawn: tuple[int, list[DayFlow], list[int], int],
) -> None:
    today, hist, paydays, payroll = drawn
    lr = learn(hist, today)
    if len(paydays) < 3:  # one or two months: nothing recurs
        assert lr.recurring == ()
        f = forecast(Inputs(cash=10**13, committed=0, history=tuple(hist)), today, 60)
        assert all(x.kind != RECURRING for x in f.flows)
        return
    assert [(r.series, r.anchor, r.seen) for r in lr.recurring] == [(OUT, 20, tuple(sorted(paydays[:3])))]
    r = lr.recurring[0]
    assert abs(r.amount - payroll) <= payroll // 25  # the payroll, give or take the noise of a day
    f = forecast(Inputs(cash=10**13, committed=0, history=tuple(hist)), today, 60)
    pays = [x for x in f.flows if x.kind == RECURRING]
    nxt = [d for d in (_payday(*ym) for ym in _months_from(today, 3)) if today < d < today + 60]
    assert [x.day for x in pays] == nxt
    assert all(x.cash == -r.amount and x.ref == "out:day20" for x in pays)


def _months_from(today: int, n: int) -> list[tuple[int, int]]:
    d = day_date(today)
    out, y, m = [], d.year, d.month
    for _ in range(n):
        out.append((y, m))
        y, m = (y, m + 1) if m < 12 else (y + 1, 1)
    return out


def test_a_payroll_moved_before_a_weekend_is_the_same_recurring_flow() -> None:
    # 2026: 20 June is a Saturday (paid Friday 19 June), 20 September a Sunday (Friday 18th)
    today = date_day(dt.date(2026, 10, 5))
    paid = {_payday(2026, m) for m in (7, 8, 9)}
    assert date_day(dt.date(2026, 9, 18)) in paid
    hist = [DayFlow(d, payments=5 * 10**9 if d in paid else 1000) for d in range(today - 120, today)]
    lr = learn(hist, today)
    assert [(r.series, r.anchor, r.seen) for r in lr.recurring] == [("out", 20, tuple(sorted(paid)))]
    assert lr.recurring[0].amount == 5 * 10**9 - 1000  # the excess over the business days' mean
    fc = forecast(Inputs(cash=0, committed=0, history=tuple(hist)), today, 60)
    assert [day_date(x.day) for x in fc.flows if x.kind == RECURRING] == [
        dt.date(2026, 10, 20),
        dt.date(2026, 11, 20),
    ]


def test_nothing_is_learned_from_less_than_a_week() -> None:
    today = date_day(dt.date(2026, 3, 10))
    hist = [DayFlow(d, receipts=10**9) for d in range(today - 6, today)]
    lr = learn(hist, today)
    assert lr.days == 5 and lr.net == (0, 0, 0, 0) and lr.recurring == ()
    f = forecast(Inputs(cash=7, committed=0, history=tuple(hist)), today, 30)
    assert f.flows == () and set(f.expected.cash) == {7}


def test_a_steady_account_is_learned_exactly_per_kind_of_day() -> None:
    today = date_day(dt.date(2026, 9, 1))
    hist = []
    for d in range(today - 150, today):
        c = day_class(d)
        net = {OFF: 10, BUSINESS: 1000, MONTH_END: 3000, YEAR_END: 5000}[c]
        hist.append(
            DayFlow(
                d,
                receipts=net + 500,
                payments=500,
                committed_opened=7,
                committed_paid=3,
                receipts_scheduled=4,
            )
        )
    lr = learn(hist, today)
    assert lr.net == (10, 1000, 3000, 1000)  # no 20-31 December in the window: borrowed
    assert lr.opened == (7, 7, 7, 7) and lr.paid == (3, 3, 3, 3) and lr.scheduled == (4, 4, 4, 4)
    assert lr.days == min(149, WINDOW_DAYS)  # the first day is partial: it never counts
    old = learn(hist, today + 1000)  # long quiet since: nothing to extrapolate
    assert old.days == WINDOW_DAYS and old.net == old.paid == old.opened == (0, 0, 0, 0)


@PROPS
@given(st.lists(st.integers(-(10**12), 10**12), min_size=0, max_size=60))
def test_shrunk_mean_is_the_mean_discounted_by_two_standard_errors(values: list[int]) -> None:
    n = len(values)
    got = shrunk_mean(sum(values), sum(v * v for v in values), n)
    assert isinstance(got, int)
    if n < 2 or sum(values) == 0:
        assert got == 0
        return
    m = Fraction(sum(values), n)
    var = Fraction(sum((v - m) ** 2 for v in values), n - 1)
    se2 = var / n
    want = m * (1 - 4 * se2 / (m * m)) if m * m > 4 * se2 else Fraction(0)
    assert got == int(want)  # int() rounds towards zero
    assert abs(got) <= abs(m) and (got == 0 or (got > 0) == (m > 0))
    if len(set(values)) == 1:
        assert got == int(m)  # no spread: the mean itself


@PROPS
@given(days.flatmap(lambda t: st.tuples(st.just(t), histories(t))))
def test_learning_ignores_the_order_of_the_history_and_days_from_today_on(
    drawn: tuple[int, tuple[DayFlow, ...]],
) -> None:
    today, hist = drawn
    lr = learn(hist, today)
    assert learn(tuple(reversed(hist)), today) == lr
    later = (*hist, DayFlow(today, receipts=10**9), DayFlow(today + 5, payments=10**9))
    assert learn(later, today, min((h.day for h in hist), default=today) + 1) == lr


def test_day_flow_takes_what_no_known_flow_explains() -> None:
    f = DayFlows(
        receipts_local_tax=700,
        receipts_grant=300,
        receipts_scheduled=250,
        payments=900,
        committed_paid=600,
        transfers_in=11,
        transfers_out=13,
        committed_opened=80,
        committed_cancelled=30,
        carried_in=10**9,
        committed_lapsed=5,
    )
    assert day_flow(5, f) == DayFlow(5, 750, 300, 11, 13, 50, 600, 250)
    assert day_flow(5, f, 0).receipts == 1000


@PROPS
@given(cases())
def test_the_paces_make_up_what_the_known_flows_do_not_cover(case: tuple[Inputs, int, int]) -> None:
    inp, today, horizon = case
    f = forecast(inp, today, horizon)
    lr = f.learned
    assert lr is not None
    known_out = known_in = usual_paid = usual_scheduled = paid = scheduled = 0
    for i in range(horizon):
        d = today + i
        on = [x for x in f.flows if x.day == d]
        known_out -= sum(x.cash for x in on if x.kind in (ORDER, COMMITMENT))
        known_in += sum(x.cash for x in on if x.kind == RECEIPT)
        if i:  # from tomorrow
            usual_paid += lr.paid[day_class(d)]
            usual_scheduled += lr.scheduled[day_class(d)]
        paid -= sum(x.cash for x in on if x.kind == PACE and x.ref == PACE_REF)
        scheduled += sum(x.cash for x in on if x.kind == PACE and x.ref == SCHEDULED_REF)
        assert paid == max(0, usual_paid - known_out)
        assert scheduled == max(0, usual_scheduled - known_in)
    for x in f.flows:
        if x.kind == PACE:
            assert x.ref in (PACE_REF, SCHEDULED_REF)
            assert x.committed == (x.cash if x.ref == PACE_REF else 0)


def test_a_grant_not_yet_announced_is_expected_at_its_usual_pace() -> None:
    """Monthly grants of 3,000 (realising schedules) on the 7th when a business day: the next one,
    not announced yet, is expected at the usual pace; an announced one takes its place."""
    today = date_day(dt.date(2026, 8, 25))
    hist = []
    for d in range(today - 400, today):
        fifth = day_class(d) != OFF and day_date(d).day == 7
        hist.append(DayFlow(d, receipts_scheduled=3000 if fifth else 0))
    lr = learn(hist, today)
    assert lr.scheduled[BUSINESS] > 0
    quiet = forecast(Inputs(cash=0, committed=0, history=tuple(hist)), today, 60)
    usual = sum(lr.scheduled[day_class(d)] for d in range(today + 1, today + 60))
    assert quiet.expected.cash[-1] == usual > 0 and quiet.confirmed.cash[-1] == 0
    told = forecast(
        Inputs(
            cash=0,
            committed=0,
            receipts=(ExpectedReceipt("sep", 3000, date_day(dt.date(2026, 9, 7)), CONFIRMED),),
            history=tuple(hist),
        ),
        today,
        60,
    )
    assert told.expected.cash[-1] == max(usual, 3000)  # the pace counts what is announced


# -- no float, determinism ------------------------------------------------------------------------


def _numbers(x: object) -> list[object]:
    if isinstance(x, dict):
        return [n for k, v in x.items() for n in (*_numbers(k), *_numbers(v))]
    if isinstance(x, (list, tuple)):
        return [n for v in x for n in _numbers(v)]
    return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


@PROPS
@given(cases(), st.integers(0, 10 * BIG))
def test_no_float_anywhere(case: tuple[Inputs, int, int], floor: int) -> None:
    inp, today, horizon = case
    f = forecast(inp, today, horizon, floor)
    g = combine([f, f])
    for obj in (f, g, idle_cash(f, floor), snapshot(f), f.learned):
        nums = _numbers(msgspec.to_builtins(obj))
        assert nums and all(type(n) is int for n in nums)


@PROPS
@given(cases(), st.randoms(use_true_random=False))
def test_same_inputs_in_any_order_give_the_same_forecast(case: tuple[Inputs, int, int], rnd: object) -> None:
    inp, today, horizon = case
    shuffle = getattr(rnd, "shuffle")  # noqa: B009  (hypothesis' Random)

    def shuffled(xs: tuple[object, ...]) -> tuple[object, ...]:
        out = list(xs)
        shuffle(out)
        return tuple(out)

    other = msgspec.structs.replace(
        inp,
        orders=shuffled(inp.orders),
        commitments=shuffled(inp.commitments),
        receipts=shuffled(inp.receipts),
        history=shuffled(inp.history),
    )
    a = forecast(inp, today, horizon, 10**9)
    assert forecast(other, today, horizon, 10**9) == a
    assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(forecast(inp, today, horizon, 10**9))
    # what was learned on the day may be kept and passed back in: the same forecast
    assert forecast(msgspec.structs.replace(inp, learned=a.learned), today, horizon, 10**9) == a


# -- forecast against actual ----------------------------------------------------------------------


@PROPS
@given(cases(with_history=False), st.dictionaries(st.integers(0, 40), st.integers(-BIG, BIG), max_size=40))
def test_errors_per_horizon_against_actual_closes(
    case: tuple[Inputs, int, int], closes: dict[int, int]
) -> None:
    inp, today, horizon = case
    f = forecast(inp, today, horizon)
    s = snapshot(f)
    assert s.day == today and s.cash == f.expected.cash[:31]
    actual = {today + k: v for k, v in closes.items()}
    errs = errors(s, actual, (0, 1, 7, 30, 31))
    for h in (0, 1, 7, 30, 31):
        if h < len(s.cash) and today + h in actual:
            assert errs[h] == s.cash[h] - actual[today + h]
        else:
            assert h not in errs
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(s), type=Snapshot) == s
    many = [errs, {1: -5}, {}]
    got = mean_abs_errors(many)
    for h in got:
        vals = [abs(e[h]) for e in many if h in e]
        assert got[h] == sum(vals) // len(vals)


@PROPS
@given(st.integers(-(10**12), 10**12), st.integers(-(10**9), 10**9), st.integers(2, 40), st.integers(1, 31))
def test_trend_baseline_extends_an_exact_line_exactly(start: int, slope: int, n: int, ahead: int) -> None:
    today = FIRST
    closes = [start + slope * i for i in range(n)]
    s = trend_baseline(closes, today, ahead)
    assert s.cash == tuple(start + slope * (n - 1 + k) for k in range(ahead))
    assert flat_baseline(closes[-1], today, ahead).cash == (closes[-1],) * ahead
    assert trend_baseline(closes[-1:], today, ahead).cash == (closes[-1],) * ahead


def test_first_crossing_of_no_value_is_none() -> None:
    assert first_crossing((), 0, FIRST, (), lambda x: x.cash) is None


def test_a_forecast_outside_its_horizon_refuses_the_day() -> None:
    f = forecast(Inputs(cash=1, committed=0), FIRST, 3)
    assert f.index(FIRST + 2) == 2
    try:
        f.index(FIRST + 3)
    except ValueError:
        pass
    else:
        raise AssertionError("a day past the horizon has no figure")
    assert isinstance(f, Forecast)
