"""The fiscal year in the fold: carry-forward (이월), the close (출납정리기한 passed), lapse (불용).

Every scenario runs the ledger and the independent reference fold (``reconcile.reference``) side
by side; the property test at the end puts streams that cross 31 December and 20 January, cut
into arbitrary batches, with crashes at arbitrary points, through the worker's path (C kernel
and pure Python, a real RocksDB store) and compares everything with the reference fed the two
topics in another interleaving.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.names import EXPENDITURE, REVENUE, Topics, side_of_kind
from reconcile.reference import Reference
from state import partition
from state.ledger import Journal, Ledger, lapse_id
from state.store import Store
from streams.contract import Rejection, YearClose, check_message
from streams.lean_records import LeanRecord as Rec
from streams.lean_records import RawRecord
from tests.events import event

SEOUL, BUSAN = "6110000", "6260000"
OTHER = "public_dev"  # in Seoul's chart of accounts
TOPICS = Topics("cashpos")
TOPIC = {REVENUE: TOPICS.revenue, EXPENDITURE: TOPICS.expenditure}
DEC = "2026-12-15T10:00:00+09:00"
JAN = "2027-01-10T10:00:00+09:00"
CLOSE_AT = "2027-01-21T00:00:00+09:00"


def close(year: int = 2026, org: str = SEOUL, event_id: str | None = None, at: str = CLOSE_AT) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id or f"close-{year}",
            "org_code": org,
            "fiscal_year": year,
            "kind": "fiscal_year_close",
            "occurred_at": at,
            "source": "cashpos close-year",
        }
    )


def side_of_value(value: bytes) -> str:
    """The side of an event's kind (a close's: expenditure; its callers name the side)."""
    return side_of_kind(orjson.loads(value)["kind"])


class Both:
    """The ledger and the reference, fed record by record from the two topics."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.ref = Reference()
        self.offset = 0

    def send(self, value: bytes, side: str | None = None) -> str:
        side = side or side_of_value(value)
        ev = check_message(value, None, side)
        if isinstance(ev, Rejection):
            got = ev.reason
        else:
            self.offset += 1
            out = self.ledger.update(ev, value, (TOPIC[side], 0, self.offset, 0))
            got = out if isinstance(out, str) else out.reason
        assert self.ref.feed(value, side) == got, (self.ref.outcomes[-1], got)
        return got

    def close_both(self, year: int = 2026, org: str = SEOUL, **kw: Any) -> tuple[str, str]:
        return self.send(close(year, org, **kw), REVENUE), self.send(close(year, org, **kw), EXPENDITURE)

    def pos(self, account: str = "general", fy: int = 2026, org: str = SEOUL) -> tuple[int, int] | None:
        p = self.ledger.positions.get((org, account, fy))
        return None if p is None else (p.cash, p.committed)

    def check(self) -> None:
        got = {k: (p.cash, p.committed) for k, p in self.ledger.positions.items()}
        assert got == self.ref.positions()
        assert {k: p.version for k, p in self.ledger.positions.items()} == self.ref.versions()
        assert {k: p.ordered for k, p in self.ledger.positions.items()} == self.ref.ordered()
        assert {k: o.open for k, o in self.ledger.orders.items()} == self.ref.orders_open()
        assert {k: sch.open for k, sch in self.ledger.schedules.items()} == self.ref.schedules()


@pytest.fixture
def b() -> Iterator[Both]:
    both = Both()
    yield both
    both.check()


# -- carry-forward --------------------------------------------------------------------------------


def test_a_carried_commitment_is_paid_in_the_next_year(b: Both) -> None:
    assert b.send(event("r", "receipt", 5_000, org=SEOUL, at=DEC)) == "applied"
    assert b.send(event("c", "commitment", 800, org=SEOUL, at=DEC, commitment_id="k")) == "applied"
    assert (
        b.send(
            event(
                "f", "commitment_carry_forward", 800, org=SEOUL, at=DEC, commitment_id="k", basis="explicit"
            )
        )
        == "applied"
    )
    assert b.pos() == (5_000, 0) and b.pos(fy=2027) == (0, 800)
    # the commitment is 2027's now: paying it as 2026 is refused, as 2027 it is released
    assert (
        b.send(event("p1", "payment", 300, org=SEOUL, at=JAN, fiscal_year=2026, commitment_id="k"))
        == "commitment_mismatch"
    )
    assert (
        b.send(event("p2", "payment", 300, org=SEOUL, at=JAN, fiscal_year=2027, commitment_id="k"))
        == "applied"
    )
    assert b.pos(fy=2027) == (-300, 500)
    # the original can no longer be reversed, nor the carry-forward
    assert (
        b.send(event("x", "commitment", 800, org=SEOUL, at=DEC, commitment_id="k", reverses="c"))
        == "reversal_not_possible"
    )
    assert (
        b.send(
            event(
                "y",
                "commitment_carry_forward",
                800,
                org=SEOUL,
                at=DEC,
                commitment_id="k",
                basis="explicit",
                reverses="f",
            )
        )
        == "reversal_not_possible"
    )


def test_a_carry_forward_moves_the_whole_open_amount_or_nothing(b: Both) -> None:
    assert b.send(event("c", "commitment", 800, org=SEOUL, at=DEC, commitment_id="k")) == "applied"
    assert b.send(event("p", "payment", 100, org=SEOUL, at=DEC, commitment_id="k")) == "applied"
    assert (
        b.send(
            event(
                "f1", "commitment_carry_forward", 800, org=SEOUL, at=DEC, commitment_id="k", basis="accident"
            )
        )
        == "commitment_mismatch"
    )
    assert (
        b.send(
            event(
                "f2",
                "commitment_carry_forward",
                700,
                org=SEOUL,
                at=DEC,
                commitment_id="nope",
                basis="accident",
            )
        )
        == "unknown_commitment"
    )
    assert (
        b.send(
            event(
                "f3",
                "commitment_carry_forward",
                700,
                org=SEOUL,
                account=OTHER,
                at=DEC,
                commitment_id="k",
                basis="accident",
            )
        )
        == "commitment_mismatch"
    )
    assert (
        b.send(
            event(
                "f4",
                "commitment_carry_forward",
                700,
                org=SEOUL,
                at=JAN,
                fiscal_year=2026,
                commitment_id="k",
                basis="continuing",
            )
        )
        == "applied"
    )
    assert b.pos() == (-100, 0) and b.pos(fy=2027) == (0, 700)


# -- the close ----------------------------------------------------------------------------------


def test_the_close_carries_cash_forward_and_lapses_what_is_open(b: Both) -> None:
    assert b.send(event("r1", "receipt", 5_000_000_000, org=SEOUL, at=DEC)) == "applied"
    assert b.send(event("r2", "receipt", 7, org=SEOUL, account=OTHER, at=JAN, fiscal_year=2026)) == "applied"
    assert b.send(event("p1", "payment", 1_000, org=SEOUL, at=DEC)) == "applied"
    assert b.send(event("c1", "commitment", 900, org=SEOUL, at=DEC, commitment_id="k1")) == "applied"
    assert b.send(event("c2", "commitment", 50, org=SEOUL, at=DEC, commitment_id="k2")) == "applied"
    assert (
        b.send(event("p2", "payment", 40, org=SEOUL, at=JAN, fiscal_year=2026, commitment_id="k2"))
        == "applied"
    )
    assert b.send(event("n1", "payment", 3_000, org=SEOUL, at=JAN, fiscal_year=2027)) == "applied"
    assert b.pos(fy=2027) == (-3_000, 0)  # 2027 alone is short; the bank account is not
    assert b.close_both() == ("applied", "applied")
    assert b.pos() == (0, 0) and b.pos(OTHER) == (0, 0)  # final: everything carried out or lapsed
    assert b.pos(fy=2027) == (5_000_000_000 - 1_000 - 40 - 3_000, 0)
    assert b.pos(OTHER, fy=2027) == (7, 0)
    # each open commitment lapsed under its own journal entry, deterministic ids
    lapses = {sid: e for (org, sid), e in b.ledger.journal.items() if sid.startswith("l:")}
    assert set(lapses) == {lapse_id("close-2026", "k1"), lapse_id("close-2026", "k2")}
    assert {(e.commitment_id, e.released) for e in lapses.values() if isinstance(e, Journal)} == {
        ("k1", 900),
        ("k2", 10),
    }


def test_after_the_close_the_year_takes_nothing(b: Both) -> None:
    assert b.send(event("c1", "commitment", 900, org=SEOUL, at=DEC, commitment_id="k1")) == "applied"
    assert b.close_both() == ("applied", "applied")
    late = [
        event("r9", "receipt", 1, org=SEOUL, at=DEC),
        event("p9", "payment", 1, org=SEOUL, at=DEC),
        event("q9", "payment", 1, org=SEOUL, at=JAN, fiscal_year=2026, commitment_id="k1"),
        event("x9", "commitment_cancel", 1, org=SEOUL, at=JAN, fiscal_year=2026, commitment_id="k1"),
        event("f9", "commitment_carry_forward", 900, org=SEOUL, at=DEC, commitment_id="k1", basis="accident"),
    ]
    for value in late:
        assert b.send(value) == "period_closed", value
    assert b.close_both() == ("duplicate", "duplicate")  # the same close again: nothing changes
    assert b.close_both(event_id="close-2026-again") == ("period_closed", "period_closed")
    assert b.send(event("r10", "receipt", 1, org=SEOUL, at=JAN, fiscal_year=2027)) == "applied"
    assert b.send(event("r9", "receipt", 1, org=SEOUL, at=DEC)) == "period_closed"  # not a duplicate either


def test_a_reversal_naming_a_close_is_a_mismatch(b: Both) -> None:
    """A close is no event of a kind to reverse: the ledger says reversal_mismatch, and so does
    the reference (it raised AttributeError on the close's missing ``reverses``)."""
    assert b.close_both() == ("applied", "applied")
    for kind in ("receipt", "payment"):  # the close is on either side
        assert (
            b.send(event(f"x-{kind}", kind, 5, org=SEOUL, at=JAN, fiscal_year=2027, reverses="close-2026"))
            == "reversal_mismatch"
        )


def test_each_side_closes_its_own_share_in_any_interleaving() -> None:
    """Each topic's records in its own order; the worker may read the two topics interleaved in
    any way. Every verdict and every position is the same whichever way."""
    revenue = [
        event("r1", "receipt", 100, org=SEOUL, at=DEC),
        close(),
        event("r2", "receipt", 5, org=SEOUL, at=JAN, fiscal_year=2026),
    ]
    expenditure = [
        event("p1", "payment", 30, org=SEOUL, at=DEC),
        close(),
        event("p2", "payment", 2, org=SEOUL, at=JAN, fiscal_year=2026),
    ]
    results = set()
    for order in ("rrreee", "eeerrr", "rerere", "eererr"):
        both = Both()
        feeds = {"r": iter(revenue), "e": iter(expenditure)}
        outcomes = [both.send(next(feeds[c]), REVENUE if c == "r" else EXPENDITURE) for c in order]
        both.check()
        results.add((tuple(sorted(outcomes)), both.pos(), both.pos(fy=2027)))
    assert results == {(("applied",) * 4 + ("period_closed",) * 2, (0, 0), (70, 0))}


def test_a_close_without_a_topic_is_refused() -> None:
    both = Both()
    ev = check_message(close(), None, None)
    assert isinstance(ev, YearClose)
    out = both.ledger.update(ev, close())
    assert isinstance(out, Rejection) and out.reason == "wrong_topic"
    assert both.ref.feed(close(), None) == "wrong_topic"


def test_a_close_also_closes_an_earlier_open_year(b: Both) -> None:
    assert (
        b.send(event("r0", "receipt", 11, org=SEOUL, at="2026-01-05T10:00:00+09:00", fiscal_year=2025))
        == "applied"
    )
    assert b.send(event("r1", "receipt", 100, org=SEOUL, at=DEC)) == "applied"
    assert b.close_both() == ("applied", "applied")
    assert b.pos(fy=2025) == (0, 0) and b.pos(fy=2027) == (111, 0)


def test_a_close_that_would_break_the_bound_is_refused_whole() -> None:
    both = Both()
    both.ledger.positions[(SEOUL, "general", 2027)] = partition.Position(cash=10**18, received=10**18)
    both.ledger.positions[(SEOUL, "general", 2026)] = partition.Position(cash=5, received=5)
    ev = check_message(close(), None, REVENUE)
    assert isinstance(ev, YearClose)
    out = both.ledger.update(ev, close(), (TOPICS.revenue, 0, 1, 0))
    assert isinstance(out, Rejection) and out.reason == "position_out_of_range"
    assert both.ledger.positions[(SEOUL, "general", 2026)].cash == 5
    assert not both.ledger.closed[REVENUE]


# -- reversals across the year end: the ledger alone (found while testing the known flows) -------


def _ledger_send(ledger: Ledger, value: bytes, side: str | None = None) -> str:
    checked = check_message(value, None, side)
    assert not isinstance(checked, Rejection), checked
    out = ledger.update(checked, value, (TOPIC[side or side_of_value(value)], 0, 0, 0))
    return out if isinstance(out, str) else out.reason


def _committed_where_the_commitments_are(ledger: Ledger) -> None:
    """Each position's committed is the open amount of the commitments that belong to it now."""
    open_by_position: dict[tuple[str, str, int], int] = {}
    for (org, _), c in ledger.commitments.items():
        pk = (org, c.account, c.fiscal_year)
        open_by_position[pk] = open_by_position.get(pk, 0) + c.open
    for pk, p in ledger.positions.items():
        assert p.committed == open_by_position.get(pk, 0), (pk, p, open_by_position.get(pk, 0))


def test_a_payment_made_before_the_carry_forward_is_not_given_back_to_the_old_year() -> None:
    """A payment of 2026 released 100 of commitment k; k's remaining 700 was carried into 2027.
    Reversing the payment now gives the 100 back to 2026's committed while k (open 800 again) is
    2027's: 2026 shows 100 committed that nothing can pay or cancel, and paying k's 800 in 2027
    takes 2027's committed to -100. Either refuse the reversal (its commitment was carried, as
    the ledger already does for one that cut or executed orders) or give the 100 back where k is;
    both keep each position's committed equal to its commitments' open amounts."""
    ledger = Ledger()
    assert (
        _ledger_send(ledger, event("c", "commitment", 800, org=SEOUL, at=DEC, commitment_id="k")) == "applied"
    )
    assert _ledger_send(ledger, event("p", "payment", 100, org=SEOUL, at=DEC, commitment_id="k")) == "applied"
    carry = event(
        "f", "commitment_carry_forward", 700, org=SEOUL, at=DEC, commitment_id="k", basis="explicit"
    )
    assert _ledger_send(ledger, carry) == "applied"
    _committed_where_the_commitments_are(ledger)
    _ledger_send(ledger, event("p-rev", "payment", 100, org=SEOUL, at=DEC, commitment_id="k", reverses="p"))
    _committed_where_the_commitments_are(ledger)
    _ledger_send(ledger, event("q", "payment", 800, org=SEOUL, at=JAN, fiscal_year=2027, commitment_id="k"))
    assert all(p.committed >= 0 for p in ledger.positions.values()), ledger.positions
    _committed_where_the_commitments_are(ledger)


def test_a_final_year_stays_final() -> None:
    """Once both sides closed 2026 its positions are final: cash 0, committed 0. A reversal dated
    in 2027 (fiscal year 2027, open) of a 2026 receipt or payment is applied today, in 2026 (the
    original's year): the final position shows -800 cash and 200 committed again, and commitment
    k, lapsed, is open again (the next close lapses it a second time). Whatever the verdict
    (reversal_not_possible, period_closed), a closed year's positions must not move."""
    ledger = Ledger()
    later = "2027-02-02T10:00:00+09:00"
    assert _ledger_send(ledger, event("r", "receipt", 800, org=SEOUL, at=DEC)) == "applied"
    assert (
        _ledger_send(ledger, event("c", "commitment", 500, org=SEOUL, at=DEC, commitment_id="k")) == "applied"
    )
    assert _ledger_send(ledger, event("p", "payment", 200, org=SEOUL, at=DEC, commitment_id="k")) == "applied"
    for side in (REVENUE, EXPENDITURE):
        assert _ledger_send(ledger, close(), side) == "applied"
    final = ledger.positions[(SEOUL, "general", 2026)]
    assert (final.cash, final.committed) == (0, 0)
    _ledger_send(ledger, event("r-rev", "receipt", 800, org=SEOUL, at=later, fiscal_year=2027, reverses="r"))
    _ledger_send(
        ledger,
        event(
            "p-rev", "payment", 200, org=SEOUL, at=later, fiscal_year=2027, commitment_id="k", reverses="p"
        ),
    )
    final = ledger.positions[(SEOUL, "general", 2026)]
    assert (final.cash, final.committed) == (0, 0)
    assert ledger.commitments[(SEOUL, "k")].open == 0


# -- the worker's path: batches, crashes, both topics, kernel and pure path ---------------------


def _record(
    draw: Any, i: int, sent: list[bytes], opened: list[dict[str, Any]], orders: list[dict[str, Any]]
) -> bytes:
    org = draw(st.sampled_from([SEOUL, SEOUL, BUSAN]))
    account = OTHER if org == SEOUL and draw(st.booleans()) else "general"
    amount = draw(st.sampled_from([1, 7, 100, 10**15, draw(st.integers(1, 10**9))]))
    at, fy = draw(
        st.sampled_from(
            [
                (DEC, 2026),
                (DEC, 2026),
                (JAN, 2026),
                (JAN, 2027),
                ("2027-01-20T23:59:59+09:00", 2026),
                ("2027-01-25T10:00:00+09:00", 2027),
                ("2027-01-25T10:00:00+09:00", 2026),
            ]
        )
    )
    cid = f"k{draw(st.integers(0, 4))}"
    kind = draw(
        st.sampled_from(
            ["receipt"] * 6
            + ["payment"] * 3
            + ["commitment"] * 3
            + [
                "commitment_cancel",
                "payment_on",
                "payment_on",
                "carry",
                "carry",
                "close",
                "close_other_id",
                "close_early",
                "close_2027",
                "dup",
                "transfer",
                # the known flows: orders (and their reversal), payments executing them,
                # expected receipts (revised, reversed) and receipts realising them
                *("order",) * 3,
                *("payment_on_order",) * 3,
                "reverse_order",
                "expected",
                "expected",
                "receipt_on_schedule",
                "receipt_on_schedule",
                "reverse_revision",
            ]
        )
    )
    common: dict[str, Any] = {"org": org, "at": at, "fiscal_year": fy, "account": account}
    if kind in ("receipt", "payment"):
        return event(f"e{i}", kind, amount, **common)
    if kind == "commitment":
        if draw(st.booleans()):
            common.update(at=DEC, fiscal_year=2026)
        opened.append(
            {
                "commitment_id": cid,
                "org": org,
                "account": account,
                "amount": amount,
                "fiscal_year": common["fiscal_year"],
            }
        )
        return event(f"e{i}", kind, amount, commitment_id=cid, **common)
    linked = (
        kind in ("commitment_cancel", "payment_on", "carry", "order") and opened and draw(st.integers(0, 3))
    )
    if linked:
        c = dict(draw(st.sampled_from(opened)))  # one that was opened (its year: maybe carried since)
        common.update(org=c.pop("org"), account=c.pop("account"), fiscal_year=c.pop("fiscal_year"))
        cid, amount = c["commitment_id"], draw(st.sampled_from([c["amount"], amount]))
        common["at"] = DEC if common["fiscal_year"] == 2026 and draw(st.booleans()) else JAN
    if kind in ("commitment_cancel", "payment_on"):
        return event(
            f"e{i}", "payment" if kind == "payment_on" else kind, amount, commitment_id=cid, **common
        )
    if kind == "carry":
        return event(
            f"e{i}", "commitment_carry_forward", amount, commitment_id=cid, basis="explicit", **common
        )
    if kind == "order":  # amount at most 1,000: some fit what is open and not ordered yet
        pay_date = draw(st.sampled_from(["2026-12-20", "2027-01-15", "2027-02-01"]))
        amount = min(amount, draw(st.integers(1, 1_000)))
        if linked:  # for payments to execute
            orders.append({"event_id": f"e{i}", "commitment_id": cid, **common})
        return event(f"e{i}", "payment_order", amount, commitment_id=cid, pay_date=pay_date, **common)
    if kind == "payment_on_order" and orders:
        o = dict(draw(st.sampled_from(orders)))  # its year: maybe carried since
        oid, cid = o.pop("event_id"), o.pop("commitment_id")
        if not draw(st.integers(0, 3)):  # in the year it may have been carried into
            o.update(fiscal_year=2027, at=JAN)
        return event(f"e{i}", "payment", amount, commitment_id=cid, order_id=oid, **o)
    if kind in ("expected", "receipt_on_schedule"):
        sid = f"s{draw(st.integers(0, 2))}"
        category = draw(st.sampled_from(["local_tax", "local_tax", "grant"]))
        if kind == "receipt_on_schedule":
            expected = [orjson.loads(v) for v in sent if b'"expected_receipt"' in v]
            if expected and draw(st.integers(0, 3)):  # most realise one expected before
                e = draw(st.sampled_from(expected))
                sid, category = e["schedule_id"], e["category"]
                common.update(org=e["org_code"], account=e["account"], fiscal_year=e["fiscal_year"])
                common["at"] = e["occurred_at"]
            return event(f"e{i}", "receipt", amount, category=category, schedule_id=sid, **common)
        return event(
            f"e{i}",
            "expected_receipt",
            amount,
            category=category,
            schedule_id=sid,
            expected_date="2027-01-05",
            certainty=draw(st.sampled_from(["confirmed", "estimated"])),
            **common,
        )
    which = b'"payment_order"' if kind == "reverse_order" else b'"expected_receipt"'
    if kind in ("reverse_order", "reverse_revision") and (targets := [v for v in sent if which in v]):
        t = orjson.loads(draw(st.sampled_from(targets)))
        return orjson.dumps({**t, "event_id": f"e{i}", "reverses": t["event_id"]})
    if kind == "transfer" and org == SEOUL:
        return event(
            f"e{i}", "transfer", amount, to_account=OTHER if account == "general" else "general", **common
        )
    if kind == "close":
        return close(org=org)
    if kind == "close_other_id":
        return close(org=org, event_id=f"close-{i}", at="2027-02-01T09:00:00+09:00")
    if kind == "close_early":
        return close(org=org, event_id=f"close-{i}", at="2027-01-20T23:59:59+09:00")
    if kind == "close_2027":
        return close(2027, org=org, at="2028-01-21T00:00:00+09:00")
    if kind == "dup" and sent:
        return draw(st.sampled_from(sent))
    return event(f"e{i}", "receipt", amount, **common)


@st.composite
def two_topics(draw: Any) -> tuple[dict[str, list[RawRecord]], list[tuple[str, int]], set[int]]:
    """Both topics' records, the order the worker reads runs of them in (topic, run length),
    and the steps after which it is killed (its last batch not written)."""
    n = draw(st.integers(1, 70))
    recs: dict[str, list[RawRecord]] = {REVENUE: [], EXPENDITURE: []}
    sent: list[bytes] = []
    opened: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    for i in range(n):
        value = _record(draw, i, sent, opened, orders)
        sent.append(value)
        if b"fiscal_year_close" in value:
            sides = draw(
                st.sampled_from([[REVENUE, EXPENDITURE], [EXPENDITURE, REVENUE], [REVENUE], [EXPENDITURE]])
            )
        else:
            sides = [side_of_value(value)]
        for side in sides:
            org = orjson.loads(value)["org_code"]
            recs[side].append(Rec(len(recs[side]), 0, org.encode(), value))
    runs: list[tuple[str, int]] = []
    left = {s: len(r) for s, r in recs.items()}
    while any(left.values()):
        side = draw(st.sampled_from([s for s, k in left.items() if k]))
        k = draw(st.integers(1, left[side]))
        runs.append((side, k))
        left[side] -= k
    kills = set(draw(st.lists(st.integers(0, len(runs) - 1), max_size=3)))
    return recs, runs, kills


Known = tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]  # orders', schedules' open amounts


def _worker(
    fold: partition.Fold, recs: dict[str, list[RawRecord]], runs: list[tuple[str, int]], kills: set[int]
) -> tuple[
    dict[tuple[str, int], str], dict[Any, tuple[int, int, int, int]], set[tuple[str, str, int]], Known
]:
    """The worker's loop: fold a run of one topic, write it with its next offset; a kill loses
    the run (not written) and a new worker resumes from the store. Returns the verdicts, the
    positions (cash, committed, version, ordered), the closes and the stored orders' and
    schedules' open amounts."""
    path = Path(tempfile.mkdtemp(prefix="cashpos-fy-"))
    store = Store(path)
    ledger = store.attach(Ledger())
    verdicts: dict[tuple[str, int], str] = {}
    step = 0
    try:
        queue = list(runs)
        while queue:
            side, k = queue.pop(0)
            topic = TOPIC[side]
            start = store.next_offset(topic, 0) or 0
            batch = recs[side][start : start + k]
            if not batch:
                continue
            _, dead = fold(ledger, batch, topic, 0, side, {}, 8192)
            out = {(side, r.offset): "ok" for r in batch}
            out.update({(side, r.offset): rej.reason for rej, r in dead})
            if step in kills:  # kill -9 before the write: a new worker, the run again
                kills = kills - {step}
                store.close()
                store = Store(path)
                ledger = store.attach(Ledger())
                for org in (SEOUL, BUSAN):
                    store.load(ledger, org)
                queue.insert(0, (side, k))
                step += 1
                continue
            ch = ledger.take_changes()
            store.commit(ch, ledger.positions, {(topic, 0): batch[-1].offset + 1})
            ledger.journal.clear()
            ledger.commitments.clear()
            ledger.orders.clear()
            ledger.schedules.clear()
            verdicts.update(out)
            step += 1
        closes: set[tuple[str, str, int]] = set()
        for org in (SEOUL, BUSAN):
            closes |= {(org, side, y) for side, y in store.closes(org).items()}
            closes |= {
                (org, sid, e.fiscal_year)
                for sid, e in store.journal_entries(org)
                if e.kind == "fiscal_year_close"
            }
        positions = {k: (p.cash, p.committed, p.version, p.ordered) for k, p in ledger.positions.items()}
        orders = {(org, oid): o.open for org in (SEOUL, BUSAN) for oid, o in store.orders(org)}
        schedules = {(org, sid): sch.open for org in (SEOUL, BUSAN) for sid, sch in store.schedules(org)}
    finally:
        store.close()
    return verdicts, positions, closes, (orders, schedules)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_topics())
def test_the_worker_path_equals_the_reference_across_the_year_end(
    stream: tuple[dict[str, list[RawRecord]], list[tuple[str, int]], set[int]],
) -> None:
    recs, runs, kills = stream
    ref = Reference()
    expected: dict[tuple[str, int], str] = {}
    for side in (EXPENDITURE, REVENUE):  # another interleaving than any the worker reads
        for r in recs[side]:
            got = ref.feed_record(r.value or b"", side, r.key)
            expected[(side, r.offset)] = "ok" if got in ("applied", "duplicate") else got
    ref_positions = {
        k: (cash, committed, ref.versions()[k], ref.ordered()[k])
        for k, (cash, committed) in ref.positions().items()
    }
    folds = [partition.fold_partition_py] + ([partition.fold_partition_native] if partition.fold_hot else [])
    for fold in folds:
        verdicts, positions, closes, known = _worker(fold, recs, runs, kills)
        assert verdicts == expected, fold.__name__
        assert positions == ref_positions, fold.__name__
        assert known == (ref.orders_open(), ref.schedules()), fold.__name__
        # each close applied once, as the reference applied it; the store's closed years agree
        tag = {REVENUE: "r:", EXPENDITURE: "e:"}
        want = {
            (org, tag[side] + eid, acc.event.fiscal_year)
            for (org, side, eid), acc in ref.by_id.items()
            if isinstance(acc.event, YearClose)
        }
        want |= {(org, side, y) for (org, side), y in ref.closed.items()}
        assert closes == want, fold.__name__


# -- serving: a closed year is marked final; totals stay the bank account's ----------------------


def test_the_serving_copy_marks_closed_years_final_and_totals_the_bank_account() -> None:
    from cashpos.names import META_FIELD, RedisKeys
    from cashpos.refdata import governments
    from serving.positions import _rows, by_fiscal_year, totals
    from state.projection import Projection

    both = Both()
    assert both.send(event("r1", "receipt", 900, org=SEOUL, at=DEC)) == "applied"
    assert both.send(event("n1", "payment", 300, org=SEOUL, at=JAN, fiscal_year=2027)) == "applied"

    def served(closed: dict[str, dict[str, int]]) -> dict[bytes, bytes]:
        proj = Projection.__new__(Projection)
        proj.keys, proj.worker_id = RedisKeys("t"), "w"
        prepared = proj.prepare(both.ledger.positions, list(both.ledger.positions), (), 0, closed)
        assert prepared is not None
        argv = prepared[1][2:]
        meta, n = argv[1], int(argv[2])  # one government: seed flag, marker, n, n x (field, value)
        fields = argv[3 : 3 + 2 * n]
        raw: dict[bytes, bytes] = {}
        for f, v in zip(fields[::2], fields[1::2], strict=True):
            assert isinstance(v, bytes)  # an encoded position
            raw[str(f).encode()] = v
        assert isinstance(meta, bytes)
        return {**raw, META_FIELD.encode(): meta}

    gov = governments()[SEOUL]
    before = _rows(gov, served(both.ledger.closed), None)
    assert totals(before)["cash"] == 600 and not any(r.final for r in before)
    assert [(y["fiscal_year"], y["cash"], y["final"]) for y in by_fiscal_year(before)] == [
        (2027, -300, False),
        (2026, 900, False),
    ]  # 2027 alone is short, the bank account is not
    both.send(close(), REVENUE)
    half = _rows(gov, served(both.ledger.closed), None)
    assert not any(r.final for r in half)  # one side closed: not final yet
    both.send(close(), EXPENDITURE)
    after = _rows(gov, served(both.ledger.closed), None)
    assert totals(after)["cash"] == 600
    assert [(y["fiscal_year"], y["cash"], y["final"]) for y in by_fiscal_year(after)] == [
        (2027, 600, False),
        (2026, 0, True),
    ]
