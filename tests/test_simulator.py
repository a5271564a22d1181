"""The event simulator: contract conformance, determinism, lifecycle integrity, calendar rhythm.

No broker needed. The runs are module-scoped and shared between the tests that read them.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import re
import time
from typing import Any

import orjson
import pytest

from cashpos.calendar import KST
from cashpos.names import Topics, side_of_topic
from cashpos.refdata import governments
from cashpos.simulator import Simulator, annual_budgets, budget_class, run
from state.ledger import APPLIED, Ledger
from streams.contract import Rejection, check_message

TOPICS = Topics("cashpos")

N = 50_000
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+09:00$")


def parse(raws: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(r) for r in raws]


@pytest.fixture(scope="module")
def year_end() -> tuple[list[bytes], list[dict[str, Any]]]:
    """50k events from 15 Dec 2025 over ~2 months: year-end rush, the two open fiscal years
    of 1-20 January, commitments paid across the year boundary."""
    sim = Simulator(seed=7, start=dt.datetime(2025, 12, 15, 8, 0, tzinfo=KST), speed=2000, rate=20)
    raws = sim.next_batch(N)
    return raws, parse(raws)


@pytest.fixture(scope="module")
def march() -> list[dict[str, Any]]:
    """March 2026 at ~7,000 events a simulated day (enough to compare single days)."""
    sim = Simulator(seed=11, start=dt.datetime(2026, 3, 1, tzinfo=KST), speed=240, rate=20)
    end = dt.datetime(2026, 3, 28, tzinfo=KST).timestamp()
    raws = sim.until(end, 1_000_000)
    assert sim.next_time > end, "the run must cover the whole period"
    return parse(raws)


def test_every_event_passes_the_contract(year_end: tuple[list[bytes], list[dict[str, Any]]]) -> None:
    raws, events = year_end
    assert len(raws) == N
    reasons: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    for raw, o in zip(raws, events):
        for side in TOPICS.for_record(o["kind"]):
            ev = check_message(raw, o["org_code"].encode(), side_of_topic(side))
            if isinstance(ev, Rejection):
                reasons[ev.reason] += 1
        kinds[o["kind"]] += 1
    assert not reasons, reasons
    # every kind occurs, receipts dominate by count; each government's 2025 closes on 21 January
    assert set(kinds) == {
        "receipt",
        "commitment",
        "payment",
        "commitment_cancel",
        "transfer",
        "commitment_carry_forward",
        "fiscal_year_close",
    }
    assert kinds["fiscal_year_close"] == len(governments())
    assert kinds["receipt"] > N / 2


def test_the_ledger_fold_applies_every_event(year_end: tuple[list[bytes], list[dict[str, Any]]]) -> None:
    raws, events = year_end
    ledger = Ledger()
    outcomes: collections.Counter[str] = collections.Counter()
    for i, (raw, o) in enumerate(zip(raws, events)):
        for topic in TOPICS.for_record(o["kind"]):  # a close: once per topic
            ev = check_message(raw, o["org_code"].encode(), side_of_topic(topic))
            assert not isinstance(ev, Rejection)
            out = ledger.update(ev, raw, (topic, 0, i, 0))
            outcomes[out if isinstance(out, str) else out.reason] += 1
    assert outcomes == {APPLIED: N + len(governments())}


def test_fields_ids_amounts_and_timestamps(year_end: tuple[list[bytes], list[dict[str, Any]]]) -> None:
    _, events = year_end
    ids = set()
    last = ""
    for o in events:
        if o["kind"] == "fiscal_year_close":  # no amount; dated 21 January 00:00 KST exactly
            assert o["occurred_at"] == "2026-01-21T00:00:00+09:00" and o["event_id"] == "close-2025"
            continue
        assert type(o["amount"]) is int and 1 <= o["amount"] <= 10**15
        assert len(o["event_id"]) <= 64 and o["event_id"] not in ids
        ids.add(o["event_id"])
        assert STAMP.match(o["occurred_at"]), o["occurred_at"]
        assert o["occurred_at"] >= last  # same offset everywhere: string order = time order
        last = o["occurred_at"]
    # amounts span many orders of magnitude (log-normal, budget-scaled)
    amounts = sorted(o["amount"] for o in events if "amount" in o)
    assert amounts[len(amounts) // 2] < 10**7 and amounts[-1] > 10**9


def test_prior_fiscal_year_only_in_the_january_window(
    year_end: tuple[list[bytes], list[dict[str, Any]]],
) -> None:
    _, events = year_end
    window = [o for o in events if "2026-01-01" <= o["occurred_at"][:10] <= "2026-01-20"]
    later = [o for o in events if o["occurred_at"][:10] > "2026-01-20" and o["kind"] != "fiscal_year_close"]
    assert window and later
    receipts = [o for o in window if o["kind"] == "receipt" and "reverses" not in o]
    prior = [o for o in receipts if o["fiscal_year"] == 2025]
    assert 0.25 < len(prior) / len(receipts) < 0.35  # 30% prior-year processing
    # December's commitments are still paid in January against fiscal year 2025
    assert any(o["fiscal_year"] == 2025 and o["kind"] == "payment" and "commitment_id" in o for o in window)
    assert all(o["fiscal_year"] == 2026 for o in later)
    assert {o["kind"] for o in window if o["fiscal_year"] == 2025 and "commitment_id" in o} <= {
        "payment",
        "commitment_cancel",
    }


def test_all_243_governments_appear_and_big_ones_more(
    year_end: tuple[list[bytes], list[dict[str, Any]]],
) -> None:
    _, events = year_end
    counts = collections.Counter(o["org_code"] for o in events)
    assert set(counts) == set(governments())
    budgets = annual_budgets()
    seoul, ulleung = "6110000", next(c for c, g in governments().items() if g.name == "울릉군")
    assert counts[seoul] > 20 * counts[ulleung]
    assert budgets[seoul] == 457_000 * 10**8
    # flows scale with budget: Seoul receives far more money than the smallest county
    received: collections.Counter[str] = collections.Counter()
    for o in events:
        if o["kind"] == "receipt" and "reverses" not in o:
            received[o["org_code"]] += o["amount"]
    assert received[seoul] > 30 * received[ulleung]


def test_budgets_follow_domain_magnitudes() -> None:
    b = annual_budgets()
    gs = governments()
    assert len(b) == 243
    by_name = {(g.province_name, g.name): b[c] for c, g in gs.items()}
    assert by_name[("서울특별시", "도봉구")] == 8_293 * 10**8
    assert by_name[("부산광역시", "부산광역시")] == 171_000 * 10**8
    counties = {c: b[c] for c, g in gs.items() if budget_class(g.name, g.level) == "gun"}
    assert min(counties.values()) == 2_615 * 10**8 == by_name[("경상북도", "울릉군")]
    assert max(b.values()) == b["6110000"]
    assert 380 * 10**12 < sum(b.values()) < 520 * 10**12  # ~468조 nationally
    metro = [v for c, v in b.items() if gs[c].level == "metropolitan"]
    basic = [v for c, v in b.items() if gs[c].level == "basic"]
    assert min(metro) > max(basic) / 2


def test_commitment_lifecycle_integrity(year_end: tuple[list[bytes], list[dict[str, Any]]]) -> None:
    _, events = year_end
    open_: dict[tuple[str, str], list[Any]] = {}  # (org, cid) -> [account, fy, open]
    seen_cids: set[tuple[str, str]] = set()
    follow = partial = cancels = carried = 0
    for o in events:
        cid = o.get("commitment_id")
        if cid is None:
            continue
        key = (o["org_code"], cid)
        if o["kind"] == "commitment":
            assert key not in seen_cids, "commitment_id reused"
            seen_cids.add(key)
            due = dt.date.fromisoformat(o["due_date"])
            days = (due - dt.date.fromisoformat(o["occurred_at"][:10])).days
            assert 7 <= days <= 90
            open_[key] = [o["account"], o["fiscal_year"], o["amount"]]
            continue
        assert o["kind"] in ("payment", "commitment_cancel", "commitment_carry_forward")
        assert key in open_, f"{o['kind']} names unknown or closed commitment {cid}"
        account, fy, left = open_[key]
        assert (o["account"], o["fiscal_year"]) == (account, fy)
        if o["kind"] == "commitment_carry_forward":  # all of it, into next year, in December
            assert o["amount"] == left and o["occurred_at"][5:7] == "12" and o["basis"]
            open_[key][1] = fy + 1
            carried += 1
            continue
        assert o["amount"] <= left
        follow += 1
        cancels += o["kind"] == "commitment_cancel"
        partial += o["amount"] < left
        if o["amount"] == left:
            del open_[key]
        else:
            open_[key][2] = left - o["amount"]
    assert follow > 1000 and partial > 50 and cancels > 50 and carried > 50
    assert len(open_) < len(seen_cids)  # many closed within the run


def test_reversals_are_exact_and_unique(year_end: tuple[list[bytes], list[dict[str, Any]]]) -> None:
    _, events = year_end
    by_id: dict[tuple[str, str], dict[str, Any]] = {}
    reversed_: set[tuple[str, str]] = set()
    n = 0
    for o in events:
        target = o.get("reverses")
        if target is not None:
            key = (o["org_code"], target)
            orig = by_id.get(key)
            assert orig is not None, "reverses an unknown or later event"
            assert key not in reversed_, "reversed twice"
            reversed_.add(key)
            assert "reverses" not in orig and "commitment_id" not in orig
            for f in ("kind", "account", "amount", "fiscal_year", "category", "to_account"):
                assert o.get(f) == orig.get(f), f
            n += 1
        by_id[(o["org_code"], o["event_id"])] = o
    assert 0.0005 * N < n < 0.005 * N  # ~0.2%
    assert {by_id[k]["kind"] for k in reversed_} >= {"receipt"}


def test_transfers_stay_within_the_government(year_end: tuple[list[bytes], list[dict[str, Any]]]) -> None:
    _, events = year_end
    charts = {c: g.account_codes for c, g in governments().items()}
    transfers = [o for o in events if o["kind"] == "transfer"]
    assert len(transfers) > 100
    for o in transfers:
        assert o["to_account"] != o["account"] and o["to_account"] in charts[o["org_code"]]
    from_general = sum(o["account"] == "general" for o in transfers)
    assert from_general > len(transfers) / 2  # 전출 from the general account dominates


def test_revenue_mix(year_end: tuple[list[bytes], list[dict[str, Any]]]) -> None:
    _, events = year_end
    count: collections.Counter[str] = collections.Counter()
    amount: collections.Counter[str] = collections.Counter()
    accounts: collections.Counter[str] = collections.Counter()
    for o in events:
        if o["kind"] == "receipt":
            count[o["category"]] += 1
            amount[o["category"]] += o["amount"]
            accounts[o["account"]] += 1
    assert set(count) == {"local_tax", "non_tax", "grant", "subsidy", "bond", "other"}
    mean = {c: amount[c] / count[c] for c in count}
    # grants and subsidies: fewer, larger receipts than local taxes
    assert count["grant"] < count["local_tax"] / 50 and mean["grant"] > 100 * mean["local_tax"]
    assert count["subsidy"] < count["local_tax"] / 20 and mean["subsidy"] > 20 * mean["local_tax"]
    assert accounts["general"] > 0.7 * sum(accounts.values())
    assert accounts["custody"] > 0


def test_determinism() -> None:
    start = dt.datetime(2026, 6, 1, tzinfo=KST)
    a = Simulator(seed=5, start=start, speed=600).next_batch(5000)
    b = Simulator(seed=5, start=start, speed=600)
    assert b.next_batch(1234) + list(b.events(5000 - 1234)) == a
    assert Simulator(seed=6, start=start, speed=600).next_batch(5000) != a
    assert Simulator(seed=5).next_batch(300) == Simulator(seed=5).next_batch(300)


def test_payroll_day_carries_more_payments(march: list[dict[str, Any]]) -> None:
    # 2026-03-20 is a Friday (payroll); 17 and 18 March are ordinary weekdays
    count: collections.Counter[str] = collections.Counter()
    volume: collections.Counter[str] = collections.Counter()
    payroll: collections.Counter[str] = collections.Counter()
    for o in march:
        if o["kind"] == "payment":
            day = o["occurred_at"][:10]
            count[day] += 1
            volume[day] += o["amount"]
            payroll[day] += o["source"] == "insarang-payroll"
    for other in ("2026-03-17", "2026-03-18"):
        assert volume["2026-03-20"] > 2 * volume[other]
        assert count["2026-03-20"] > count[other]
    assert payroll["2026-03-20"] > 100 and sum(payroll.values()) == payroll["2026-03-20"]


def test_office_hours_month_end_and_weekends(march: list[dict[str, Any]]) -> None:
    office = night = 0
    per_day: collections.Counter[str] = collections.Counter()
    for o in march:
        stamp = o["occurred_at"]
        per_day[stamp[:10]] += 1
        if dt.date.fromisoformat(stamp[:10]).weekday() < 5:
            h = int(stamp[11:13])
            if 9 <= h < 18:
                office += 1
            elif h < 6:
                night += 1
    # per hour: 9 office hours vs 6 night hours
    assert office / 9 > 10 * (night / 6)
    weekdays = [per_day[f"2026-03-{d:02d}"] for d in (9, 10, 11, 12, 13)]
    weekend = [per_day["2026-03-07"], per_day["2026-03-08"]]
    assert max(weekend) < min(weekdays) / 2
    # 1 March is a public holiday (Sunday) and 2 March (Mon) a business day
    assert per_day["2026-03-02"] > 2 * per_day["2026-03-01"]


class FakePublisher:
    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    async def send_many(self, raws: list[bytes]) -> int:
        batch = list(raws)
        self.batches.append(batch)
        return len(batch)


def test_run_paces_and_stops_at_total() -> None:
    start = dt.datetime(2026, 4, 1, 9, tzinfo=KST)
    sim = Simulator(seed=3, start=start, speed=60, rate=2000)
    pub = FakePublisher()
    t = time.perf_counter()
    sent = asyncio.run(run(pub, sim, total=500, tick=0.02))
    elapsed = time.perf_counter() - t
    assert sent == 500
    assert [r for b in pub.batches for r in b] == Simulator(
        seed=3, start=start, speed=60, rate=2000
    ).next_batch(500)
    assert len(pub.batches) >= 5  # in small batches, not all at once
    assert 0.15 < elapsed < 5  # 500 events at 2000/s take ~0.25 s


def test_run_stops_on_event() -> None:
    async def main() -> tuple[int, float]:
        stop = asyncio.Event()
        sim = Simulator(seed=3, speed=60, rate=200)
        asyncio.get_running_loop().call_later(0.5, stop.set)
        t = time.perf_counter()
        sent = await run(FakePublisher(), sim, stop=stop, tick=0.05)
        return sent, time.perf_counter() - t

    sent, elapsed = asyncio.run(main())
    assert elapsed < 1.5
    assert 40 <= sent <= 160  # ~100 events in 0.5 s at 200/s


def test_run_clock_pacing_follows_simulated_time() -> None:
    start = dt.datetime(2026, 4, 1, 9, tzinfo=KST)
    sim = Simulator(seed=4, start=start, speed=3600, rate=500)
    pub = FakePublisher()
    sent = asyncio.run(run(pub, sim, total=200, tick=0.02, pace="clock"))
    assert sent == 200
    events = parse([r for b in pub.batches for r in b])
    assert [o["occurred_at"] for o in events] == sorted(o["occurred_at"] for o in events)
    with pytest.raises(ValueError):
        asyncio.run(run(pub, sim, total=1, pace="bogus"))


def test_opening_balances_cover_every_account_once_and_conform():
    from cashpos.refdata import governments
    from streams.contract import Rejection, check_message

    sim = Simulator(seed=5, start=dt.datetime(2026, 11, 20, 9, 0, tzinfo=KST))
    raws = sim.opening_balances()
    seen = set()
    for raw in raws:
        ev = check_message(raw, orjson.loads(raw)["org_code"].encode(), "revenue")
        assert not isinstance(ev, Rejection), ev
        assert ev.kind == "receipt" and ev.amount >= 1 and ev.fiscal_year == 2026
        seen.add((ev.org_code, ev.account))
    assert seen == {(g.org_code, a.code) for g in governments().values() for a in g.accounts}
    assert len(raws) == len(seen)
    # Seoul's general account opens larger than 울릉군's: sized by budget, not uniform
    amount = {
        (orjson.loads(r)["org_code"], orjson.loads(r)["account"]): orjson.loads(r)["amount"] for r in raws
    }
    assert amount[("6110000", "general")] > 20 * amount[("5260000", "general")]
