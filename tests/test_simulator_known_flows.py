"""The simulator's known future flows (``cashpos.simulator.known``): payment orders ahead of
commitment payments, expected receipts realised by receipts naming their schedule.

No broker needed. ``check_flows`` is an independent model of what the stream promises (orders
against open commitments, schedules announced before they are realised, on their own account,
year and category); it runs over fixed stretches (summer's tax dates, the year end) and over
hypothesis-drawn seeds, starts and speeds. The plain stream (``known_flows=False``) must be the
known stream without its additions.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.calendar import KST, is_business_day
from cashpos.names import Topics, side_of_topic
from cashpos.refdata import governments
from cashpos.simulator import ORDERED_SHARE, REFERENCE_EVENTS_PER_DAY, Simulator, annual_budgets, budget_class
from cashpos.simulator.channels import CATEGORIES, REV_AMOUNT_SHARES
from cashpos.simulator.known import GRANT_SCHEDULED_SHARE, SUBSIDY_SCHEDULED_SHARE, TAX_SHARES
from state.ledger import APPLIED, Journal, Ledger
from streams.contract import Event, Rejection, YearClose, check_message

TOPICS = Topics("cashpos")
SUMMER_SPEED = 1200.0

SEOUL = "6110000"
SINGLE_TIER = {"5690000", "6500000"}  # 세종, 제주: no basic governments under them
NEW_KINDS = {"payment_order", "expected_receipt"}
# schedule flow -> (category, certainty, due (month, day) for the taxes)
FLOWS = {
    "grant": "grant",
    "subsidy": "subsidy",
    "inctax": "local_tax",
    "cartax": "local_tax",
    "proptax": "local_tax",
}
TAX_DUES = {("inctax", 5): 31, ("cartax", 6): 30, ("proptax", 7): 31, ("proptax", 9): 30, ("cartax", 12): 31}


def parse(raws: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(r) for r in raws]


def run_raw(
    start: dt.datetime, end: dt.datetime, *, seed: int, speed: float, known: bool = True
) -> list[bytes]:
    sim = Simulator(seed=seed, start=start, speed=speed, rate=20, known_flows=known)
    raws = sim.until(end.timestamp(), 2_000_000)
    assert sim.next_time > end.timestamp(), "the run must cover the whole period"
    return raws


def run(
    start: dt.datetime, end: dt.datetime, *, seed: int, speed: float, known: bool = True
) -> list[dict[str, Any]]:
    return parse(run_raw(start, end, seed=seed, speed=speed, known=known))


def date_of(o: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(o["occurred_at"][:10])


def business_days_between(a: dt.date, b: dt.date) -> int:
    """Business days after ``a`` up to and including ``b``."""
    return sum(is_business_day(a + dt.timedelta(days=i)) for i in range(1, (b - a).days + 1))


def flow_of(sid: str) -> tuple[str, int, int]:
    """(flow, year, month) of a schedule id ``{prefix}-{flow}-{yyyy}-{mm}``."""
    *_, flow, year, month = sid.split("-")
    return flow, int(year), int(month)


class Schedule:
    def __init__(self, o: dict[str, Any]) -> None:
        self.first = o
        self.latest = o
        self.revisions = 0
        self.realised = 0
        self.receipts: list[dict[str, Any]] = []


def check_flows(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every promise the known flows make, checked event by event; returns what it saw."""
    commitments: dict[tuple[str, str], list[Any]] = {}  # -> [account, fy, open, open order id]
    orders: dict[tuple[str, str], dict[str, Any]] = {}
    schedules: dict[tuple[str, str], Schedule] = {}
    ids: set[tuple[str, str, str]] = set()
    seen: collections.Counter[str] = collections.Counter()
    last = ""
    for o in events:
        kind = o["kind"]
        assert o["occurred_at"] >= last, "time order"
        last = o["occurred_at"]
        if kind == "fiscal_year_close":
            continue
        org = o["org_code"]
        side = "revenue" if kind in ("receipt", "expected_receipt") else "expenditure"
        key = (org, side, o["event_id"])
        assert key not in ids and len(o["event_id"]) <= 64, o
        ids.add(key)
        day = date_of(o)
        assert o["fiscal_year"] == day.year or (
            day.month == 1 and day.day <= 20 and o["fiscal_year"] == day.year - 1
        )
        cid: str = o.get("commitment_id", "")
        if kind == "commitment":
            commitments[(org, cid)] = [o["account"], o["fiscal_year"], o["amount"], None]
        elif kind == "commitment_carry_forward":
            c = commitments[(org, cid)]
            assert c[3] is None, "an order is open over the carry-forward"
            c[1] += 1
        elif kind == "payment_order":
            seen["order"] += 1
            c = commitments[(org, cid)]
            assert (o["account"], o["fiscal_year"]) == (c[0], c[1]), "the commitment's account and year"
            assert c[3] is None and 1 <= o["amount"] <= c[2], "within the open amount not yet ordered"
            assert o["event_id"].startswith(f"{cid}-o")
            assert dt.date.fromisoformat(o["pay_date"]) >= day
            c[3] = o["event_id"]
            orders[(org, o["event_id"])] = o
        elif kind in ("payment", "commitment_cancel") and cid:
            c = commitments[(org, cid)]
            assert o["amount"] <= c[2] and (o["account"], o["fiscal_year"]) == (c[0], c[1])
            c[2] -= o["amount"]
            oid = o.get("order_id")
            if kind == "payment":
                seen["commitment payment"] += 1
            if oid is None:
                assert c[3] is None, "a cancel or an unordered payment while an order is open"
            else:
                order = orders.pop((org, oid))
                assert c[3] == oid and order["commitment_id"] == cid and order["amount"] == o["amount"]
                assert order["pay_date"] == o["occurred_at"][:10], "paid on its pay date"
                lead = business_days_between(date_of(order), day)
                seen[f"lead {min(lead, 6)}"] += 1
                seen["ordered payment"] += 1
                c[3] = None
        elif kind == "payment":
            assert "order_id" not in o, "only commitment payments are ordered"
            seen["payroll" if o["source"] == "insarang-payroll" else "direct payment"] += 1
        elif kind == "expected_receipt":
            sid = o["schedule_id"]
            flow, year, month = flow_of(sid)
            assert (o["account"], o["fiscal_year"], o["category"]) == ("general", year, FLOWS[flow])
            assert o["certainty"] == ("estimated" if FLOWS[flow] == "local_tax" else "confirmed")
            expected = dt.date.fromisoformat(o["expected_date"])
            assert (expected.year, expected.month) == (year, month) and expected >= day
            if FLOWS[flow] == "local_tax":
                assert expected.day == TAX_DUES[(flow, month)]
            else:  # one of the first five business days of the month
                assert business_days_between(dt.date(year, month, 1) - dt.timedelta(days=1), expected) <= 5
                assert is_business_day(expected)
            s = schedules.get((org, sid))
            if s is None:
                assert o["event_id"] == f"{sid}-e1"
                schedules[(org, sid)] = Schedule(o)
            else:
                assert FLOWS[flow] == "local_tax" and o["event_id"] == f"{sid}-e2", o
                assert o["expected_date"] == s.first["expected_date"] and o["certainty"] == "estimated"
                s.latest = o
                s.revisions += 1
        elif kind == "receipt" and "schedule_id" in o:
            s = schedules[(org, o["schedule_id"])]  # announced before
            for f in ("account", "fiscal_year", "category", "source"):
                assert o[f] == s.first[f], f
            expected = dt.date.fromisoformat(s.first["expected_date"])
            if o["category"] == "local_tax":  # daily settlements up to the due date
                assert expected - dt.timedelta(days=15) <= day <= expected and is_business_day(day)
            else:  # on the day, a day late or in two parts
                assert 0 <= business_days_between(expected, day) <= 3
            assert o["event_id"] == f"{o['schedule_id']}-p{len(s.receipts) + 1}"
            s.realised += o["amount"]
            s.receipts.append(o)
            seen["scheduled receipt"] += 1
    end = date_of(events[-1])
    for o in orders.values():  # open orders at the end are due after it
        assert dt.date.fromisoformat(o["pay_date"]) >= end
    for (org, sid), s in schedules.items():
        expected = dt.date.fromisoformat(s.first["expected_date"])
        if expected + dt.timedelta(days=14) >= end:
            continue  # may still be arriving
        assert s.receipts, sid
        if s.first["certainty"] == "confirmed":  # notified: exactly what arrives
            assert s.realised == s.first["amount"] and s.revisions == 0
        else:  # estimated 10-20% off what arrives; a revision is closer
            off = abs(s.first["amount"] - s.realised) / s.realised
            assert 0.0999 - 10 / s.realised <= off <= 0.2001 + 10 / s.realised, (sid, off)
            assert s.revisions <= 1
            if s.revisions:
                assert abs(s.latest["amount"] - s.realised) < abs(s.first["amount"] - s.realised)
            seen["revised"] += s.revisions
            seen["completed tax schedule"] += 1
    seen["schedules"] = len(schedules)
    return {"seen": seen, "schedules": schedules}


@pytest.fixture(scope="module")
def summer_raw() -> list[bytes]:
    """20 May - 20 August 2026 at ~1,450 events a simulated day: 지방소득세 (May), 자동차세 (June),
    재산세 (July), three months of instalments."""
    return run_raw(
        dt.datetime(2026, 5, 20, tzinfo=KST),
        dt.datetime(2026, 8, 20, tzinfo=KST),
        seed=21,
        speed=SUMMER_SPEED,
    )


@pytest.fixture(scope="module")
def summer(summer_raw: list[bytes]) -> list[dict[str, Any]]:
    return parse(summer_raw)


@pytest.fixture(scope="module")
def year_end_raw() -> list[bytes]:
    """25 November 2026 - 31 January 2027: 자동차세 (December), carried-forward commitments, the
    January instalments, the close of 2026."""
    return run_raw(
        dt.datetime(2026, 11, 25, tzinfo=KST), dt.datetime(2027, 1, 31, tzinfo=KST), seed=7, speed=1500
    )


@pytest.fixture(scope="module")
def year_end(year_end_raw: list[bytes]) -> list[dict[str, Any]]:
    return parse(year_end_raw)


def test_summer_keeps_every_promise(summer: list[dict[str, Any]]) -> None:
    seen = check_flows(summer)["seen"]
    assert seen["order"] > 3000 and seen["scheduled receipt"] > 3000
    assert seen["completed tax schedule"] > 350 and seen["revised"] > 100
    # most orders are 2-5 business days ahead; a few closer (a commitment paid within days)
    lead = {k: v for k, v in seen.items() if k.startswith("lead")}
    assert sum(lead[f"lead {n}"] for n in range(2, 6)) > 0.8 * seen["ordered payment"]
    assert lead.get("lead 6", 0) == 0
    assert seen["payroll"] > 100  # the payroll stays a payment without order or schedule


def test_year_end_keeps_every_promise(year_end: list[dict[str, Any]]) -> None:
    seen = check_flows(year_end)["seen"]
    assert seen["order"] > 500 and seen["scheduled receipt"] > 500
    kinds = collections.Counter(o["kind"] for o in year_end)
    assert kinds["fiscal_year_close"] == 243 and kinds["commitment_carry_forward"] > 50
    # carried commitments are ordered and paid as next year's; prior-year payments are ordered
    ordered = [o for o in year_end if "order_id" in o]
    assert any(o["fiscal_year"] == 2027 and o["occurred_at"] < "2027-01-21" for o in ordered)
    assert any(o["fiscal_year"] == 2026 and o["occurred_at"][:4] == "2027" for o in ordered)
    # January's instalments are announced in January (their own fiscal year)
    january = [o for o in year_end if o["kind"] == "expected_receipt" and o["fiscal_year"] == 2027]
    assert len(january) >= 2 * 242 and all(o["occurred_at"][:7] == "2027-01" for o in january)
    assert {o["certainty"] for o in january} == {"confirmed"}


def test_ordered_share_is_the_intended_one(
    summer: list[dict[str, Any]], year_end: list[dict[str, Any]]
) -> None:
    for events in (summer, year_end):
        seen = check_flows(events)["seen"]
        share = seen["ordered payment"] / seen["commitment payment"]
        # ORDERED_SHARE, less the few with no room between the previous step and the payment
        assert ORDERED_SHARE - 0.06 < share < ORDERED_SHARE + 0.02, share


def test_schedules_carry_their_intended_share_of_the_money(summer: list[dict[str, Any]]) -> None:
    """Each instalment is 1/12 of its share of the category's yearly amount (grants 60%, Seoul
    none; subsidies 50%), each tax yield its due date's share of the year's local tax, at the
    run's scale and within their ±10% jitter."""
    scale = 20 / SUMMER_SPEED * 86400 / REFERENCE_EVENTS_PER_DAY
    budgets = annual_budgets()
    classes = {
        c: "si" if c in SINGLE_TIER else budget_class(g.name, g.level) for c, g in governments().items()
    }
    want_share = {"grant": GRANT_SCHEDULED_SHARE / 12, "subsidy": SUBSIDY_SCHEDULED_SHARE / 12}
    schedules = check_flows(summer)["schedules"]
    n = 0
    for (org, sid), sch in schedules.items():
        flow, _year, month = flow_of(sid)
        shares = REV_AMOUNT_SHARES[budget_class(governments()[org].name, governments()[org].level)]
        if flow in want_share:
            got = sch.first["amount"]
            want = want_share[flow] * shares[CATEGORIES.index(flow)] * budgets[org] * scale
        elif sch.receipts and sch.realised:  # what arrives: the yield
            got = sch.realised
            want = TAX_SHARES[classes[org]][(flow, month)] * shares[0] * budgets[org] * scale
        else:
            continue
        assert 0.9 * want - 1000 <= got <= 1.1 * want + 1000, (org, sid, got, want)
        n += 1
    assert n > 1000


def test_grant_receipts_naming_a_schedule_by_amount(summer: list[dict[str, Any]]) -> None:
    """So the scheduled receipts carry about 60% of the grant money and 50% of the subsidies;
    the spontaneous rest is few, large receipts (noisy at this density): loose bounds."""
    amount: collections.Counter[tuple[str, bool]] = collections.Counter()
    for o in summer:
        if (
            o["kind"] == "receipt"
            and "2026-06-01" <= o["occurred_at"][:10] <= "2026-07-31"
            and o["org_code"] != SEOUL
        ):
            amount[(o["category"], "schedule_id" in o)] += o["amount"]
    grant = amount[("grant", True)] / (amount[("grant", True)] + amount[("grant", False)])
    subsidy = amount[("subsidy", True)] / (amount[("subsidy", True)] + amount[("subsidy", False)])
    assert 0.4 < grant < 0.8, grant
    assert 0.3 < subsidy < 0.65, subsidy  # July's first days carry extra spontaneous subsidies


def test_which_governments_have_which_schedules(summer: list[dict[str, Any]]) -> None:
    flows: dict[str, set[str]] = collections.defaultdict(set)
    for o in summer:
        if o["kind"] == "expected_receipt":
            flows[o["org_code"]].add(flow_of(o["schedule_id"])[0])
    for code, g in governments().items():
        cls = budget_class(g.name, g.level)
        if code in SINGLE_TIER:
            cls = "si"
        want = {"subsidy"} | ({"grant"} if code != SEOUL else set())
        want |= {
            "si": {"inctax", "cartax", "proptax"},
            "gun": {"inctax", "cartax", "proptax"},
            "gu": {"proptax"},
            "metro_city": {"inctax", "cartax"},
            "province": set(),
        }[cls]
        want -= {"inctax"}  # May's 지방소득세 was paid from 16 May: before the run, left out
        assert flows[code] == want, (g.name, flows[code], want)


def test_the_plain_stream_is_the_known_one_without_its_additions() -> None:
    """No draw of the plain stream moves: removing the orders, the expected receipts, the
    scheduled receipts and the payments' order ids gives the plain stream back, except that the
    spontaneous grant, subsidy and local-tax receipts are smaller (the schedules carry the rest)."""
    start, end = dt.datetime(2026, 6, 10, tzinfo=KST), dt.datetime(2026, 7, 20, tzinfo=KST)
    known = run(start, end, seed=5, speed=900)
    plain = run(start, end, seed=5, speed=900, known=False)
    assert not any(o["kind"] in NEW_KINDS or "order_id" in o or "schedule_id" in o for o in plain)
    stripped = []
    for o in known:
        if o["kind"] in NEW_KINDS or "schedule_id" in o:
            continue
        o = dict(o)
        o.pop("order_id", None)
        stripped.append(o)
    assert len(stripped) == len(plain) and len(known) > len(plain) * 1.05
    scaled = 0
    for a, b in zip(stripped, plain):
        if (
            a.get("category") in ("grant", "subsidy", "local_tax")
            and a["kind"] == "receipt"
            and a["amount"] != b["amount"]
        ):
            assert 0.3 * b["amount"] - 10 <= a["amount"] <= b["amount"], (a, b)
            a = {**a, "amount": b["amount"]}
            scaled += 1
        assert a == b
    assert scaled > 1000


def test_open_commitments_count_no_schedule() -> None:
    start, end = dt.datetime(2026, 6, 10, tzinfo=KST), dt.datetime(2026, 6, 20, tzinfo=KST)
    a = Simulator(seed=3, start=start, speed=900, known_flows=True)
    b = Simulator(seed=3, start=start, speed=900)
    a.until(end.timestamp(), 10**6)
    b.until(end.timestamp(), 10**6)
    assert a.open_commitments == b.open_commitments > 100


def test_determinism_and_batches() -> None:
    start = dt.datetime(2026, 6, 28, tzinfo=KST)
    a = Simulator(seed=5, start=start, speed=1200, known_flows=True).next_batch(8000)
    b = Simulator(seed=5, start=start, speed=1200, known_flows=True)
    assert b.next_batch(1234) + list(b.events(8000 - 1234)) == a
    assert Simulator(seed=6, start=start, speed=1200, known_flows=True).next_batch(8000) != a
    assert any(orjson.loads(r)["kind"] == "expected_receipt" for r in a)


def test_scheduled_amounts_scale_with_the_rate() -> None:
    """A simulation twice as dense samples twice the spontaneous money: its instalments and tax
    yields double too, their number does not."""
    start = dt.datetime(2026, 6, 25, tzinfo=KST)  # June's instalments are past: July's plans

    def announced(rate: float) -> dict[tuple[str, str], int]:
        sim = Simulator(seed=4, start=start, speed=1000, rate=rate, known_flows=True)
        out = {}
        for o in parse(sim.until(dt.datetime(2026, 7, 1, tzinfo=KST).timestamp(), 10**6)):
            if o["kind"] == "expected_receipt" and o["event_id"].endswith("-e1"):
                out[(o["org_code"], o["schedule_id"])] = o["amount"]
        return out

    one, two = announced(20), announced(40)
    assert one.keys() == two.keys() and len(one) > 400
    for k, v in one.items():
        assert abs(two[k] - 2 * v) <= 1500, (k, v, two[k])  # each rounded to 1,000원 (taxes 10원)


def test_ids_fit_with_the_longest_prefix() -> None:
    prefix = "p" * 40
    sim = Simulator(
        seed=2, start=dt.datetime(2026, 6, 20, tzinfo=KST), speed=2000, id_prefix=prefix, known_flows=True
    )
    events = parse(sim.until(dt.datetime(2026, 7, 25, tzinfo=KST).timestamp(), 10**6))
    assert {"payment_order", "expected_receipt"} <= {o["kind"] for o in events}
    assert max(len(o["event_id"]) for o in events if "event_id" in o) <= 64
    assert max(len(o.get("schedule_id", "")) for o in events) <= 64


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**6),
    start=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2028, 12, 31)),
    speed=st.sampled_from([300.0, 1500.0, 6000.0]),
)
def test_any_start_keeps_every_promise(seed: int, start: dt.datetime, speed: float) -> None:
    sim = Simulator(seed=seed, start=start.replace(tzinfo=KST), speed=speed, rate=20, known_flows=True)
    check_flows(parse(sim.next_batch(10_000)))


# -- against the contract (version 3) and the ledger fold ----------------------------------------


def topic_checked(raw: bytes, o: dict[str, Any]) -> list[tuple[str, Event | YearClose]]:
    """The message as the worker reads it from each topic it goes to, checked."""
    out = []
    for topic in TOPICS.for_record(o["kind"]):
        ev = check_message(raw, o["org_code"].encode(), side_of_topic(topic))
        assert not isinstance(ev, Rejection), (ev, o)
        out.append((topic, ev))
    return out


@pytest.mark.parametrize(
    ("day", "start"),
    [
        ("2026-07-31", dt.datetime(2026, 7, 10, tzinfo=KST)),
        ("2026-12-04", dt.datetime(2026, 11, 20, tzinfo=KST)),
    ],
)
def test_every_event_of_a_day_passes_the_contract(day: str, start: dt.datetime) -> None:
    """재산세's due date in July; December's instalments, 자동차세's estimates and the year-end rush:
    every event of the day is accepted, for every government; so is every event of a few
    governments (a city, a 자치구, the smallest county, a province) over the weeks before it."""
    end = dt.datetime.fromisoformat(day).replace(tzinfo=KST) + dt.timedelta(days=1)
    raws = run_raw(start, end, seed=31, speed=300)
    few = {"6110000", "3100000", "5260000", "6410000"}  # 서울특별시, 도봉구, 울릉군, 경기도
    shapes: dict[str, set[str]] = collections.defaultdict(set)
    n = 0
    for raw in raws:
        o = orjson.loads(raw)
        that_day = o["occurred_at"][:10] == day
        if not that_day and o["org_code"] not in few:
            continue
        for _topic, ev in topic_checked(raw, o):
            assert ev.kind == o["kind"]
        shape = (
            o["kind"] + ("+order" if "order_id" in o else "") + ("+schedule" if "schedule_id" in o else "")
        )
        if that_day:
            n += 1
            shapes["day"].add(shape)
        if o["org_code"] in few:
            shapes[o["org_code"]].add(shape)
    assert n > 5000
    new = {"payment_order", "payment+order", "receipt+schedule", "expected_receipt+schedule"}
    assert new <= shapes["day"]
    for code in few:
        assert "expected_receipt+schedule" in shapes[code], code
    assert {"payment_order", "payment+order"} <= set().union(*(shapes[code] for code in few))
    # July: 재산세 (자치구, county); December: the instalments of the first business days
    assert sum("receipt+schedule" in shapes[code] for code in few) >= 2


@pytest.mark.parametrize("stretch", ["summer_raw", "year_end_raw"])
def test_the_ledger_folds_weeks_without_a_rejection(stretch: str, request: pytest.FixtureRequest) -> None:
    """No unknown_order, unknown_schedule, order_exceeds_commitment or any other refusal; no order
    is ever cut, confirmed instalments are realised exactly; and the shares the ledger saw are the
    intended ones: ORDERED_SHARE of commitment payments, 60% of the grant money and 50% of the
    subsidies (by amount, Seoul aside) through schedules."""
    raws: list[bytes] = request.getfixturevalue(stretch)
    ledger = Ledger()
    outcomes: collections.Counter[str] = collections.Counter()
    n = 0
    for i, raw in enumerate(raws):
        o = orjson.loads(raw)
        for topic, ev in topic_checked(raw, o):
            out = ledger.update(ev, raw, (topic, 0, i, 0))
            outcomes[out if isinstance(out, str) else out.reason] += 1
            n += 1
    assert outcomes == {APPLIED: n}
    paid: collections.Counter[bool] = collections.Counter()
    money: collections.Counter[tuple[str, bool]] = collections.Counter()
    for (org, _sid), entry in ledger.journal.items():
        j = entry if isinstance(entry, Journal) else msgspec.msgpack.decode(entry, type=Journal)
        assert not j.trimmed, "an order was cut: ordered past its commitment's open amount"
        if j.kind == "payment" and j.commitment_id is not None:
            paid[j.order_id is not None] += 1
        elif j.kind == "receipt" and org != SEOUL:
            money[(orjson.loads(j.raw)["category"], j.schedule_id is not None)] += j.amount
    share = paid[True] / (paid[True] + paid[False])
    assert ORDERED_SHARE - 0.06 < share < ORDERED_SHARE + 0.02, share
    grant = money[("grant", True)] / (money[("grant", True)] + money[("grant", False)])
    subsidy = money[("subsidy", True)] / (money[("subsidy", True)] + money[("subsidy", False)])
    assert 0.4 < grant < 0.8 and 0.3 < subsidy < 0.65, (grant, subsidy)  # see the test above
    end = orjson.loads(raws[-1])["occurred_at"][:10]
    for order in ledger.orders.values():  # executed in full by its payment, or due after the run
        assert order.open == 0 or order.pay_date >= end, order
    confirmed = [s for s in ledger.schedules.values() if s.revisions[-1][3] == "confirmed"]
    assert len(confirmed) > 400 and all(s.realised <= s.revisions[-1][1] for s in confirmed)
    due = dt.date.fromisoformat(end) - dt.timedelta(days=14)  # realised by the end of the run
    done = [s for s in confirmed if dt.date.fromisoformat(s.revisions[-1][2]) < due]
    assert len(done) > 400 and all(s.realised == s.revisions[-1][1] for s in done)
