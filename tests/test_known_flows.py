"""The known future flows (contract version 3, docs/events.md) in the ledger fold, as examples.

Payment orders (지급명령): an order is a part of its commitment's open amount (the position's
``ordered``), executed by payments naming it, cut (the latest pay date first) when the commitment's
open amount falls below what is ordered, given back by the reversal of what cut it, carried with
its commitment into the next year and gone with its lapse. Expected receipts (세입 예정): a schedule
revised by later expected receipts, realised by receipts naming it, never expected below 0.

Every example runs the ledger and the independent reference fold (``reconcile.reference``) side by
side: each outcome must be the same, and at the end so must the positions, versions, ``ordered``,
and every order's and schedule's open amount. The last examples go through the RocksDB store: a
batch written, the fold's caches cleared, the next batch folded from what the store gives back
(``load_order``, ``load_schedule``), equal to the fold that kept everything in memory.
"""

from __future__ import annotations

import itertools
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
from state.ledger import Ledger
from state.store import Store
from streams.contract import Event, Rejection, YearClose, check_message
from tests.events import event
from tests.test_ledger import Msg, streams
from tests.test_ledger import known_flows as ledger_known_flows

SEOUL = "6110000"
AT = "2026-11-20T10:00:00+09:00"
DEC = "2026-12-15T10:00:00+09:00"
JAN = "2027-01-10T10:00:00+09:00"
TOPICS = Topics("cashpos")
TOPIC = {REVENUE: TOPICS.revenue, EXPENDITURE: TOPICS.expenditure}


def ev(kind: str, eid: str, amount: int, **kw: Any) -> bytes:
    """An event of Seoul's general account, fiscal year 2026 (unless ``kw`` says otherwise)."""
    kw.setdefault("org", SEOUL)
    kw.setdefault("at", AT)
    return event(eid, kind, amount, **kw)


def commitment(eid: str, amount: int, cid: str = "k", **kw: Any) -> bytes:
    return ev("commitment", eid, amount, commitment_id=cid, **kw)


def order(eid: str, amount: int, pay_date: str, cid: str = "k", **kw: Any) -> bytes:
    return ev("payment_order", eid, amount, commitment_id=cid, pay_date=pay_date, **kw)


def payment(eid: str, amount: int, cid: str | None = "k", **kw: Any) -> bytes:
    return ev("payment", eid, amount, **({"commitment_id": cid} if cid else {}), **kw)


def cancel(eid: str, amount: int, cid: str = "k", **kw: Any) -> bytes:
    return ev("commitment_cancel", eid, amount, commitment_id=cid, **kw)


def expected(eid: str, amount: int, sid: str = "s", *, on: str = "2026-12-10", **kw: Any) -> bytes:
    kw.setdefault("category", "grant")
    kw.setdefault("certainty", "confirmed")
    return ev("expected_receipt", eid, amount, schedule_id=sid, expected_date=on, **kw)


def receipt(eid: str, amount: int, sid: str | None = "s", **kw: Any) -> bytes:
    kw.setdefault("category", "grant")
    return ev("receipt", eid, amount, **({"schedule_id": sid} if sid else {}), **kw)


class Flows:
    """The ledger and the reference fold, fed the same records."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.ref = Reference()
        self.offset = 0

    def send(self, value: bytes, side: str | None = None) -> str:
        checked = check_message(value, None, side)
        assert isinstance(checked, (Event, YearClose)), checked
        side = side or side_of_kind(checked.kind)
        self.offset += 1
        out = self.ledger.update(checked, value, (TOPIC[side], 0, self.offset, 0))
        got = out if isinstance(out, str) else out.reason
        assert self.ref.feed(value, side) == got, f"reference {self.ref.outcomes[-1]}, ledger {got}"
        return got

    def close_both(self, year: int = 2026) -> tuple[str, str]:
        value = _close(year)
        return self.send(value, REVENUE), self.send(value, EXPENDITURE)

    def pos(self, fy: int = 2026, account: str = "general") -> tuple[int, int, int]:
        """(cash, committed, ordered) of a position."""
        p = self.ledger.positions[(SEOUL, account, fy)]
        return p.cash, p.committed, p.ordered

    def orders(self) -> dict[str, int]:
        """Each payment order's open amount."""
        return {oid: o.open for (_, oid), o in self.ledger.orders.items()}

    def schedule(self, sid: str = "s") -> int:
        """What is still expected of a schedule."""
        return self.ledger.schedules[(SEOUL, sid)].open

    def check(self) -> None:
        """Everything the ledger keeps equals what the reference derives from its log."""
        assert {k: (p.cash, p.committed) for k, p in self.ledger.positions.items()} == self.ref.positions()
        assert {k: p.version for k, p in self.ledger.positions.items()} == self.ref.versions()
        assert ledger_known_flows(self.ledger) == (
            self.ref.ordered(),
            self.ref.orders_open(),
            self.ref.schedules(),
        )
        for p in self.ledger.positions.values():
            assert 0 <= p.ordered <= p.committed, p  # open orders are a part of what is committed
        for c in self.ledger.commitments.values():
            assert 0 <= c.ordered <= c.open, c


def _close(year: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"close-{year}",
            "org_code": SEOUL,
            "fiscal_year": year,
            "kind": "fiscal_year_close",
            "occurred_at": f"{year + 1}-01-21T00:00:00+09:00",
            "source": "cashpos close-year",
        }
    )


@pytest.fixture
def f() -> Iterator[Flows]:
    flows = Flows()
    yield flows
    flows.check()


# -- payment orders --------------------------------------------------------------------------------


def test_an_order_takes_at_most_what_is_open_and_not_ordered(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(order("o1", 600, "2026-12-01")) == "applied"
    assert f.pos() == (0, 1_000, 600)  # an order moves no cash, nor committed
    assert f.send(order("o2", 401, "2026-12-05")) == "order_exceeds_commitment"  # 400 left
    assert f.send(order("o2", 400, "2026-12-05")) == "applied"  # the same id, fixed: it fits exactly
    assert f.send(order("o3", 1, "2026-12-05")) == "order_exceeds_commitment"
    assert f.pos() == (0, 1_000, 1_000)
    assert f.orders() == {"o1": 600, "o2": 400}
    # each counts as an event of its position
    assert f.ledger.positions[(SEOUL, "general", 2026)].version == 3


def test_a_payment_executes_its_order_by_min_of_amount_and_open(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(order("o1", 600, "2026-12-01")) == "applied"
    assert f.send(payment("p1", 250, order_id="o1")) == "applied"
    assert f.pos() == (-250, 750, 350)
    assert f.orders() == {"o1": 350}
    # paying more than the order's open amount executes what is open; the commitment releases
    # min(amount, its open amount), as any payment naming it
    assert f.send(payment("p2", 500, order_id="o1")) == "applied"
    assert f.pos() == (-750, 250, 0)
    assert f.orders() == {"o1": 0}
    # an order executed whole can still be named: it executes nothing more
    assert f.send(payment("p3", 100, order_id="o1")) == "applied"
    assert f.pos() == (-850, 150, 0)


def test_paying_one_order_cuts_another_when_the_commitment_runs_short(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(order("o1", 500, "2026-12-01")) == "applied"
    assert f.send(order("o2", 500, "2026-12-20")) == "applied"
    # 700 executes 500 of o1 and releases 700: 300 open, o2's 500 is cut to 300
    assert f.send(payment("p", 700, order_id="o1")) == "applied"
    assert f.pos() == (-700, 300, 300)
    assert f.orders() == {"o1": 0, "o2": 300}
    # its reversal gives back the execution and the cut
    assert f.send(payment("p-rev", 700, order_id="o1", reverses="p")) == "applied"
    assert f.pos() == (0, 1_000, 1_000)
    assert f.orders() == {"o1": 500, "o2": 500}


def test_a_cancel_cuts_orders_latest_pay_date_first_and_its_reversal_gives_them_back(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(order("o-apr", 300, "2026-04-01")) == "applied"
    assert f.send(order("o-jun", 300, "2026-06-01")) == "applied"
    assert f.send(order("o-may", 300, "2026-05-01")) == "applied"
    assert f.pos() == (0, 1_000, 900)
    # 500 open after the cancel, 900 ordered: 400 cut, June's whole, then 100 of May's
    assert f.send(cancel("x", 500)) == "applied"
    assert f.pos() == (0, 500, 500)
    assert f.orders() == {"o-apr": 300, "o-jun": 0, "o-may": 200}
    # a payment without order_id cuts as well: May's next (April's pay date is the earliest)
    assert f.send(payment("p", 250, cid="k")) == "applied"
    assert f.pos() == (-250, 250, 250)
    assert f.orders() == {"o-apr": 250, "o-jun": 0, "o-may": 0}
    # reversals give back exactly what each cut
    assert f.send(cancel("x-rev", 500, reverses="x")) == "applied"
    assert f.pos() == (-250, 750, 650)
    assert f.orders() == {"o-apr": 250, "o-jun": 300, "o-may": 100}
    assert f.send(payment("p-rev", 250, cid="k", reverses="p")) == "applied"
    assert f.pos() == (0, 1_000, 900)
    assert f.orders() == {"o-apr": 300, "o-jun": 300, "o-may": 300}


def test_orders_due_the_same_day_are_cut_greatest_id_first(f: Flows) -> None:
    assert f.send(commitment("c", 300)) == "applied"
    for oid in ("o-b", "o-c", "o-a"):
        assert f.send(order(oid, 100, "2026-12-01")) == "applied"
    assert f.send(cancel("x", 150)) == "applied"
    assert f.orders() == {"o-a": 100, "o-b": 50, "o-c": 0}
    assert f.pos() == (0, 150, 150)


def test_a_carry_forward_carries_the_open_orders_into_the_next_year(f: Flows) -> None:
    assert f.send(commitment("c", 800, at=DEC)) == "applied"
    assert f.send(order("o1", 200, "2026-12-28", at=DEC)) == "applied"
    assert f.send(order("o2", 500, "2027-01-15", at=DEC)) == "applied"
    assert f.send(payment("p", 200, order_id="o1", at=DEC)) == "applied"  # o1 executed whole
    carry = ev("commitment_carry_forward", "f", 600, commitment_id="k", basis="accident", at=DEC)
    assert f.send(carry) == "applied"
    assert f.pos(2026) == (-200, 0, 0)
    assert f.pos(2027) == (0, 600, 500)
    # executed in 2027, as 2027's
    assert f.send(payment("q", 100, order_id="o2", at=JAN, fiscal_year=2026)) == "commitment_mismatch"
    assert f.send(payment("q", 100, order_id="o2", at=JAN, fiscal_year=2027)) == "applied"
    assert f.pos(2027) == (-100, 500, 400)
    # neither a carried order nor what executed or cut one before the carry is reversed: the
    # orders are 2027's now
    assert f.send(order("o2-rev", 500, "2027-01-15", at=DEC, reverses="o2")) == "reversal_not_possible"
    assert f.send(payment("p-rev", 200, order_id="o1", at=JAN, reverses="p")) == "reversal_not_possible"
    assert f.orders() == {"o1": 0, "o2": 400}


def test_a_lapse_at_the_close_takes_the_orders_with_it(f: Flows) -> None:
    assert f.send(commitment("c", 800, at=DEC)) == "applied"
    assert f.send(order("o1", 300, "2027-01-05", at=DEC)) == "applied"
    assert f.send(payment("p", 100, order_id="o1", at=JAN, fiscal_year=2026)) == "applied"
    assert f.pos(2026) == (-100, 700, 200)
    assert f.close_both() == ("applied", "applied")
    assert f.pos(2026) == (0, 0, 0)  # final: nothing committed, nothing ordered
    assert f.pos(2027) == (-100, 0, 0)
    assert f.orders() == {"o1": 0}
    assert f.ledger.commitments[(SEOUL, "k")].orders == []
    # and the year takes no more of them
    assert f.send(order("o2", 1, "2027-01-25", at=JAN)) == "period_closed"
    assert f.send(payment("p2", 1, order_id="o1", at=JAN)) == "period_closed"


def test_an_untouched_order_is_withdrawn_by_its_reversal(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(order("o1", 600, "2026-12-01")) == "applied"
    assert f.send(order("o1-rev", 600, "2026-12-01", reverses="o1")) == "applied"
    assert f.pos() == (0, 1_000, 0)
    assert f.orders() == {"o1": 0}
    assert f.ledger.positions[(SEOUL, "general", 2026)].version == 3
    # withdrawn: no payment executes it; the commitment can be ordered whole again
    assert f.send(payment("p", 10, order_id="o1")) == "order_mismatch"
    assert f.send(order("o2", 1_000, "2026-12-01")) == "applied"


def test_an_order_executed_even_once_is_not_reversed(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(order("o1", 600, "2026-12-01")) == "applied"
    assert f.send(payment("p", 100, order_id="o1")) == "applied"
    assert f.send(order("o1-rev", 600, "2026-12-01", reverses="o1")) == "reversal_not_possible"
    # the payment's reversal makes it whole again, but a payment did execute it: still refused
    assert f.send(payment("p-rev", 100, order_id="o1", reverses="p")) == "applied"
    assert f.orders() == {"o1": 600}
    assert f.send(order("o1-rev2", 600, "2026-12-01", reverses="o1")) == "reversal_not_possible"
    assert f.pos() == (0, 1_000, 600)


def test_an_order_cut_is_not_reversed_while_the_cut_stands(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(order("o1", 600, "2026-12-01")) == "applied"
    assert f.send(cancel("x", 700)) == "applied"  # 300 open: o1 cut to 300
    assert f.orders() == {"o1": 300}
    assert f.send(order("o1-rev", 600, "2026-12-01", reverses="o1")) == "reversal_not_possible"
    # the cancel's reversal gives the cut back: the order is whole and was never executed, so
    # (as the ledger decides it) it can be withdrawn now
    assert f.send(cancel("x-rev", 700, reverses="x")) == "applied"
    assert f.send(order("o1-rev2", 600, "2026-12-01", reverses="o1")) == "applied"
    assert f.pos() == (0, 1_000, 0)


def test_a_commitment_with_open_orders_cannot_be_reversed(f: Flows) -> None:
    """Reversing the commitment would leave its orders a part of nothing (``ordered`` above
    ``committed``; a payment could still execute them). Refused, as a paid or cancelled one is;
    once its orders are withdrawn it can be reversed."""
    assert f.send(commitment("c", 100)) == "applied"
    assert f.send(order("o1", 60, "2026-12-01")) == "applied"
    assert f.send(commitment("c-rev", 100, reverses="c")) == "reversal_not_possible"
    assert f.pos() == (0, 100, 60)
    assert f.send(order("o1-rev", 60, "2026-12-01", reverses="o1")) == "applied"
    assert f.send(commitment("c-rev2", 100, reverses="c")) == "applied"
    assert f.pos() == (0, 0, 0)


# -- expected receipts -------------------------------------------------------------------------------


def test_a_schedule_revised_realised_in_part_and_over_realised(f: Flows) -> None:
    assert f.send(expected("e1", 1_000, certainty="estimated")) == "applied"
    assert f.pos() == (0, 0, 0)  # moves no cash
    assert f.schedule() == 1_000
    assert f.send(expected("e2", 1_200, on="2026-12-20")) == "applied"  # revised: the latest counts
    assert f.schedule() == 1_200
    sch = f.ledger.schedules[(SEOUL, "s")]
    assert sch.revisions[-1] == ("e2", 1_200, "2026-12-20", "confirmed")
    assert f.send(receipt("r1", 500)) == "applied"  # realised in part; its cash as any receipt's
    assert f.pos() == (500, 0, 0)
    assert f.schedule() == 700
    assert f.send(receipt("r2", 900)) == "applied"  # more arrived than expected: 0, never below
    assert f.schedule() == 0
    assert f.pos() == (1_400, 0, 0)
    # a revision after it arrived counts against what arrived
    assert f.send(expected("e3", 2_000)) == "applied"
    assert f.schedule() == 600
    assert f.send(receipt("r2-rev", 900, reverses="r2")) == "applied"  # gives back what it realised
    assert f.schedule() == 1_500
    assert f.pos() == (500, 0, 0)


def test_reversing_the_latest_revision_restores_the_one_before(f: Flows) -> None:
    assert f.send(expected("e1", 1_000)) == "applied"
    assert f.send(expected("e2", 300)) == "applied"
    assert f.send(receipt("r1", 400)) == "applied"
    assert f.schedule() == 0  # 300 expected, 400 arrived
    # an older revision cannot be reversed (revise again instead)
    assert f.send(expected("e1-rev", 1_000, reverses="e1")) == "reversal_not_possible"
    assert f.send(expected("e2-rev", 300, reverses="e2")) == "applied"
    assert f.schedule() == 600  # e1's 1,000 again, less the 400 that arrived
    assert f.ledger.schedules[(SEOUL, "s")].revisions == [("e1", 1_000, "2026-12-10", "confirmed")]
    # now e1 is the latest: its reversal withdraws the schedule (kept, nothing expected)
    assert f.send(expected("e1-rev", 1_000, reverses="e1")) == "applied"
    assert f.schedule() == 0
    assert f.ledger.schedules[(SEOUL, "s")].revisions == []
    # a withdrawn schedule is still known (the ledger's reading): a receipt naming it applies
    assert f.send(receipt("r2", 50)) == "applied"
    assert f.send(expected("e4", 500)) == "applied"  # a new revision opens it again
    assert f.schedule() == 50


def test_a_schedule_of_a_closed_year_is_kept_but_takes_nothing(f: Flows) -> None:
    assert f.send(expected("e1", 1_000, at=DEC)) == "applied"
    assert f.send(receipt("r1", 400, at=JAN, fiscal_year=2026)) == "applied"
    assert f.close_both() == ("applied", "applied")
    assert f.schedule() == 600  # the record as it stood
    assert f.send(receipt("r2", 1, at=JAN, fiscal_year=2026)) == "period_closed"
    assert f.send(expected("e2", 1, at=JAN, fiscal_year=2026)) == "period_closed"


# -- every reason code of the known flows ---------------------------------------------------------


def test_every_reason_code_of_the_known_flows(f: Flows) -> None:
    assert f.send(commitment("c", 1_000)) == "applied"
    assert f.send(commitment("c2", 1_000, cid="k2")) == "applied"
    assert f.send(commitment("c3", 1_000, cid="k3", account="custody")) == "applied"
    assert f.send(order("o1", 400, "2026-12-01")) == "applied"
    assert f.send(order("o2", 400, "2026-12-01", cid="k2")) == "applied"
    assert f.send(order("o3", 100, "2026-12-01")) == "applied"
    assert f.send(order("o3-rev", 100, "2026-12-01", reverses="o3")) == "applied"
    assert f.send(expected("e1", 500)) == "applied"
    assert f.send(expected("e2", 500, sid="s2")) == "applied"
    before = {k: (p.cash, p.committed, p.ordered, p.version) for k, p in f.ledger.positions.items()}
    refused = [
        (order("x1", 1, "2026-12-01", cid="nope"), "unknown_commitment"),
        (order("x2", 1, "2026-12-01", cid="k3"), "commitment_mismatch"),
        (order("x3", 601, "2026-12-01"), "order_exceeds_commitment"),
        (payment("x4", 1, order_id="nope"), "unknown_order"),
        (payment("x5", 1, order_id="o2"), "order_mismatch"),  # k2's order
        (payment("x6", 1, order_id="o3"), "order_mismatch"),  # withdrawn
        (payment("x7", 1, order_id="o1", cid="nope"), "unknown_commitment"),
        (receipt("x8", 1, sid="nope"), "unknown_schedule"),
        (receipt("x9", 1, category="local_tax"), "schedule_mismatch"),
        (receipt("x10", 1, account="custody"), "schedule_mismatch"),
        (receipt("x11", 1, fiscal_year=2027, at="2027-02-01T10:00:00+09:00"), "schedule_mismatch"),
        (expected("x12", 1, category="local_tax"), "schedule_mismatch"),
        (expected("x13", 1, account="custody"), "schedule_mismatch"),
        (expected("x14", 500, reverses="e1", sid="s2"), "reversal_mismatch"),  # another schedule
        (order("x15", 400, "2026-12-01", cid="k2", reverses="o1"), "reversal_mismatch"),
        (order("x16", 100, "2026-12-01", reverses="o3"), "already_reversed"),
    ]
    for value, reason in refused:
        assert f.send(value) == reason, value
    assert {k: (p.cash, p.committed, p.ordered, p.version) for k, p in f.ledger.positions.items()} == before
    # reversal_not_possible: an order executed, an order cut, an older revision
    assert f.send(payment("p", 1, order_id="o1")) == "applied"
    assert f.send(order("o1-rev", 400, "2026-12-01", reverses="o1")) == "reversal_not_possible"
    assert f.send(cancel("x", 900, cid="k2")) == "applied"  # o2 cut to 100
    assert f.send(order("o2-rev", 400, "2026-12-01", cid="k2", reverses="o2")) == "reversal_not_possible"
    assert f.send(expected("e1b", 700)) == "applied"
    assert f.send(expected("e1-rev", 500, reverses="e1")) == "reversal_not_possible"
    # a reversal naming a payment's order or a receipt's schedule must name the same
    assert f.send(payment("p-rev", 1, order_id="o3", reverses="p")) == "reversal_mismatch"
    assert f.send(receipt("r", 10)) == "applied"
    assert f.send(receipt("r-rev", 10, sid="s2", reverses="r")) == "reversal_mismatch"
    assert f.send(receipt("r-rev", 10, reverses="r")) == "applied"
    reasons = set(f.ref.counts()["rejected"])
    assert {
        "unknown_order",
        "order_mismatch",
        "order_exceeds_commitment",
        "unknown_schedule",
        "schedule_mismatch",
        "reversal_not_possible",
    } <= reasons


# -- through the store: what a batch wrote is what the next batch reads -----------------------------


def _fold_batches(batches: list[list[Msg]], store: Store | None) -> tuple[Ledger, list[str]]:
    """Fold ``batches`` as the worker does: each batch through ``Ledger.fold``; with a store,
    written after each batch and the fold's caches cleared, so the next batch reads journal
    entries, commitments, orders and schedules back from the store."""
    ledger = store.attach(Ledger()) if store is not None else Ledger()
    outs: list[str] = []
    offset = 0
    for batch in batches:
        good = []
        verdicts: list[str] = []
        for value, side, key in batch:
            checked = check_message(value, key, side)
            verdicts.append(checked.reason if isinstance(checked, Rejection) else "applied")
            if not isinstance(checked, Rejection):
                good.append((len(verdicts) - 1, (checked, value, (TOPIC[side or REVENUE], 0, offset, 0))))
            offset += 1
        for i, out in ledger.fold([item for _, item in good]):
            verdicts[good[i][0]] = out if isinstance(out, str) else out.reason
        outs += verdicts
        changes = ledger.take_changes()
        if store is not None:
            store.commit(changes, ledger.positions, {})
            ledger.journal.clear()
            ledger.commitments.clear()
            ledger.orders.clear()
            ledger.schedules.clear()
    return ledger, outs


def _stored(
    store: Store, ledger: Ledger
) -> tuple[dict[Any, tuple[int, int, int, int]], dict[Any, int], dict[Any, int]]:
    orgs = {k[0] for k in ledger.positions}
    positions = {}
    for org in orgs:
        positions.update(store.positions(org))
    return (
        {k: (p.cash, p.committed, p.version, p.ordered) for k, p in positions.items()},
        {(org, oid): o.open for org in orgs for oid, o in store.orders(org)},
        {(org, sid): s.open for org in orgs for sid, s in store.schedules(org)},
    )


def _in_memory(ledger: Ledger) -> tuple[dict[Any, tuple[int, int, int, int]], dict[Any, int], dict[Any, int]]:
    return (
        {k: (p.cash, p.committed, p.version, p.ordered) for k, p in ledger.positions.items()},
        {k: o.open for k, o in ledger.orders.items()},
        {k: s.open for k, s in ledger.schedules.items()},
    )


def _m(value: bytes) -> Msg:
    checked = check_message(value, None, None)
    assert isinstance(checked, Event)
    return value, side_of_kind(checked.kind), SEOUL.encode()


def test_the_next_batch_reads_orders_and_schedules_back_from_the_store(tmp_path: Path) -> None:
    first = [
        commitment("c", 1_000),
        order("o1", 400, "2026-12-01"),
        order("o2", 300, "2026-12-20"),
        order("o3", 200, "2026-12-05"),
        expected("e1", 800),
    ]
    second = [
        payment("p", 300, order_id="o1"),  # executes a stored order
        cancel("x", 500),  # cuts stored orders (o2, then o3)
        order("o3-rev", 200, "2026-12-05", reverses="o3"),  # refused: o3 was cut
        cancel("x-rev", 500, reverses="x"),  # gives the cuts back
        order("o3-rev2", 200, "2026-12-05", reverses="o3"),  # whole again: withdrawn
        expected("e2", 900),  # revises a stored schedule
        receipt("r", 200),  # realises it
        expected("e1-rev", 800, reverses="e1"),  # an older revision: refused
        payment("q", 1, order_id="o3"),  # a withdrawn order: order_mismatch
    ]
    batches = [[_m(v) for v in first], [_m(v) for v in second]]
    store = Store(tmp_path)
    reads: list[str] = []
    load_order, load_schedule = store.order_at, store.schedule_at
    try:
        ledger, outs = _fold_batches(batches, store)
        # the second batch found the orders and the schedule in the store only
        ledger.load_order = lambda key: reads.append(f"w:{key[1]}") or load_order(key)  # type: ignore[func-returns-value]  # append() is None: the or reads on
        ledger.load_schedule = lambda key: reads.append(f"s:{key[1]}") or load_schedule(key)  # type: ignore[func-returns-value]  # append() is None: the or reads on
        memory, mem_outs = _fold_batches(batches, None)
        assert outs == mem_outs
        assert outs[len(first) :] == [
            "applied",
            "applied",
            "reversal_not_possible",
            "applied",
            "applied",
            "applied",
            "applied",
            "reversal_not_possible",
            "order_mismatch",
        ]
        assert _stored(store, ledger) == _in_memory(memory)
        assert _in_memory(memory)[1] == {(SEOUL, "o1"): 100, (SEOUL, "o2"): 300, (SEOUL, "o3"): 0}
        assert _in_memory(memory)[2] == {(SEOUL, "s"): 700}
        # what is cleared is read again from the store, one key at a time
        ledger.update(*_event_and_raw(payment("p2", 1, order_id="o2")))
        ledger.update(*_event_and_raw(receipt("r2", 1)))
        assert reads == ["w:o2", "s:s"]
    finally:
        store.close()


def _event_and_raw(value: bytes) -> tuple[Event, bytes]:
    checked = check_message(value, None, None)
    assert isinstance(checked, Event)
    return checked, value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(focus=True), st.data())
def test_batches_through_the_store_equal_the_fold_in_memory(stream: list[Msg], data: st.DataObject) -> None:
    """Generated streams (mostly one position: orders, executions, cuts, give-backs, schedules),
    cut into batches: written to the store batch by batch with the caches cleared, the fold
    decides and keeps exactly what the all-in-memory fold does."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    batches = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    with tempfile.TemporaryDirectory(prefix="cashpos-known-") as tmp:
        store = Store(Path(tmp))
        try:
            ledger, outs = _fold_batches(batches, store)
            memory, mem_outs = _fold_batches(batches, None)
            assert outs == mem_outs
            assert _stored(store, ledger) == _in_memory(memory)
        finally:
            store.close()
