"""The forecast's view of the ledger (``state.forecast_book``): kept batch by batch it equals the
view loaded afresh from the store, whatever the batching; and a forecast moved to a new position
(``rebase``) equals the engine's forecast from that position."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.calendar import date_day
from state.forecast import ExpectedReceipt, Inputs, OpenCommitment, Order, forecast
from state.forecast_book import ForecastBook, rebase
from state.ledger import Ledger
from state.partition import fold_partition_py
from state.store import Store
from streams.lean_records import LeanRecord as Rec
from tests.events import event

ORG = "6110000"
REV, EXP = "cashpos.events.revenue", "cashpos.events.expenditure"
DAYS = ["2026-03-02", "2026-03-03", "2026-03-04"]


@st.composite
def streams(draw: Any) -> list[tuple[str, bytes]]:
    """Events of one government touching every known flow: commitments, orders, payments that
    execute or cut them, expected receipts, their revisions and realisations, reversals."""
    out: list[tuple[str, bytes]] = []
    n = draw(st.integers(5, 40))
    for i in range(n):
        at = f"{draw(st.sampled_from(DAYS))}T10:00:{i % 60:02d}+09:00"
        ci, si = draw(st.integers(0, 3)), draw(st.integers(0, 2))
        c, s = f"C{ci}", f"S{si}"
        amt = draw(st.sampled_from([100, 250, 1_000]))
        kind = draw(
            st.sampled_from(
                [
                    "commitment",
                    "commitment",
                    "order",
                    "order",
                    "order",
                    "pay_order",
                    "pay",
                    "cancel",
                    "expect",
                    "realise",
                    "reverse",
                ]
            )
        )
        # an id's account is fixed (most events then find what they name); the last ones: custody
        acc = "custody" if (ci == 3 if kind not in ("expect", "realise") else si == 2) else "general"
        common: dict[str, Any] = {"org": ORG, "account": acc, "at": at}
        eid = f"x{i}"
        if kind == "commitment":
            raw = event(eid, "commitment", amt * 4, commitment_id=c, due_date="2026-04-30", **common)
        elif kind == "order":
            raw = event(eid, "payment_order", amt, commitment_id=c, pay_date="2026-03-20", **common)
        elif kind == "pay_order":
            raw = event(
                eid, "payment", amt, commitment_id=c, order_id=f"x{draw(st.integers(0, i))}", **common
            )
        elif kind == "pay":
            raw = event(eid, "payment", amt, commitment_id=c, **common)
        elif kind == "cancel":
            raw = event(eid, "commitment_cancel", amt, commitment_id=c, **common)
        elif kind == "expect":
            certainty = draw(st.sampled_from(["confirmed", "estimated"]))
            raw = event(
                eid,
                "expected_receipt",
                amt * 3,
                category="grant",
                schedule_id=s,
                expected_date=draw(st.sampled_from(["2026-03-10", "2026-03-25"])),
                certainty=certainty,
                **common,
            )
        elif kind == "realise":
            raw = event(eid, "receipt", amt, category="grant", schedule_id=s, **common)
        else:  # a reversal of an earlier event of the same shape (most are refused: fine)
            raw = event(
                eid,
                "payment_order",
                amt,
                commitment_id=c,
                pay_date="2026-03-20",
                reverses=f"x{i - 1}",
                **common,
            )
        side = REV if kind in ("expect", "realise") else EXP
        out.append((side, raw))
    return out


def _fold(events: list[tuple[str, bytes]], cuts: list[int], path: Path) -> tuple[ForecastBook, Store, Ledger]:
    store = Store(path)
    ledger = store.attach(Ledger())
    book = ForecastBook()
    book.load(ORG, [], [], [])
    offsets = {REV: 0, EXP: 0}
    start = 0
    for end in [*cuts, len(events)]:
        if end <= start:
            continue
        for side, raw in events[start:end]:
            fold_partition_py(ledger, [Rec(offsets[side], 0, ORG.encode(), raw)], side, 0, None, {}, 8192)
            offsets[side] += 1
        changes = ledger.take_changes()
        book.apply(changes)
        store.commit(changes, ledger.positions, {})
        ledger.journal.clear()
        ledger.commitments.clear()
        ledger.orders.clear()
        ledger.schedules.clear()
        start = end
    return book, store, ledger


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.integers(0, 40), max_size=4))
def test_kept_batch_by_batch_equals_loaded_from_the_store(
    events: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        kept, store, ledger = _fold(events, sorted(cuts), Path(d))
        loaded = ForecastBook()
        loaded.load(ORG, store.commitments(ORG), store.orders(ORG), store.schedules(ORG))
        assert kept.orgs[ORG] == loaded.orgs[ORG]
        for acc in ("general", "custody"):
            a = kept.inputs(ORG, acc, ledger.positions, -1)
            assert a == loaded.inputs(ORG, acc, ledger.positions, -1)
            # what is ordered is on the position, and within what is open
            assert a.ordered == sum(o.amount for o in a.orders)
            assert 0 <= a.ordered <= a.committed
        store.close()


def test_an_order_is_taken_out_of_its_commitment_and_a_schedule_counts_what_is_still_expected() -> None:
    events = [
        (EXP, event("c", "commitment", 1_000, org=ORG, commitment_id="C", due_date="2026-04-30")),
        (EXP, event("o", "payment_order", 300, org=ORG, commitment_id="C", pay_date="2026-03-20")),
        (
            REV,
            event(
                "e",
                "expected_receipt",
                900,
                org=ORG,
                category="grant",
                schedule_id="S",
                expected_date="2026-03-25",
                certainty="confirmed",
            ),
        ),
        (REV, event("r", "receipt", 400, org=ORG, category="grant", schedule_id="S")),
    ]
    with tempfile.TemporaryDirectory() as d:
        book, store, ledger = _fold(events, [], Path(d))
        inp = book.inputs(ORG, "general", ledger.positions, -1)
        assert inp.orders == (Order("o", 300, date_day_of("2026-03-20")),)
        assert inp.commitments == (OpenCommitment("C", 700, 2026, date_day_of("2026-04-30")),)
        assert inp.receipts == (ExpectedReceipt("S", 500, date_day_of("2026-03-25"), "confirmed", "grant"),)
        assert (inp.cash, inp.committed, inp.ordered) == (400, 1_000, 300)
        store.close()


def date_day_of(iso: str) -> int:
    import datetime as dt

    return date_day(dt.date.fromisoformat(iso))


TODAY = date_day_of("2026-03-02")


@st.composite
def inputs(draw: Any) -> Inputs:
    amounts = st.integers(1, 10**12)
    days = st.integers(TODAY - 5, TODAY + 100)
    return Inputs(
        draw(st.integers(-(10**13), 10**13)),
        draw(st.integers(0, 10**13)),
        orders=tuple(Order(f"o{i}", draw(amounts), draw(days)) for i in range(draw(st.integers(0, 4)))),
        commitments=tuple(
            OpenCommitment(f"c{i}", draw(amounts), 2026, draw(st.none() | days))
            for i in range(draw(st.integers(0, 4)))
        ),
        receipts=tuple(
            ExpectedReceipt(
                f"s{i}", draw(amounts), draw(days), draw(st.sampled_from(["confirmed", "estimated"]))
            )
            for i in range(draw(st.integers(0, 4)))
        ),
    )


@settings(max_examples=150, deadline=None)
@given(inputs(), st.integers(-(10**13), 10**13), st.integers(0, 10**13), st.none() | st.integers(0, 10**12))
def test_rebase_equals_the_engine_from_the_new_position(
    inp: Inputs, cash: int, committed: int, floor: int | None
) -> None:
    before = forecast(inp, TODAY, 90, floor)
    after = forecast(msgspec.structs.replace(inp, cash=cash, committed=committed), TODAY, 90, floor)
    assert rebase(before, cash, committed) == after
