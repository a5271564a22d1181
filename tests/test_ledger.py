"""The ledger fold (state.ledger): each semantic rule and stateful rejection, with exact integers,
and property tests against the independent reference fold (reconcile.reference), the known future
flows (payment orders, expected receipts) included: outcomes, positions, versions, each position's
``ordered``, each order's and each schedule's open amount.

Every unit test runs the same messages through the Ledger *and* the reference fold and requires
the same outcome from both; the expected integers are worked out by hand from the contract.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.refdata import governments
from reconcile.reference import Reference, fold
from state.ledger import Ledger, scoped_id
from streams.contract import (
    MAX_SIDE_TOTAL,
    REASONS,
    STATEFUL_REASONS,
    Event,
    Rejection,
    check_message,
    epoch_ms,
)

SEOUL = "6110000"
JONGNO = "3000000"
AT = "2026-03-02T10:00:00+09:00"
AT_JAN = "2026-01-10T10:00:00+09:00"  # fiscal years 2025 and 2026 both allowed

STATEFUL = set(STATEFUL_REASONS)
STATELESS = set(REASONS) - STATEFUL
# Rejections that later events can never turn into "applied" on redelivery. Not
# reversal_not_possible any more: an order cut and given back, a schedule's later revision
# reversed, a commitment's orders withdrawn make a refused reversal possible again.
STABLE_REJECTIONS = STATELESS | {
    "event_id_conflict",
    "commitment_id_reused",
    "commitment_mismatch",
    "already_reversed",
    "reversal_mismatch",
    "order_mismatch",
    "schedule_mismatch",
}
# Rejected only because of what had (not) arrived yet: redelivered later, they may apply.
TRANSIENT_REJECTIONS = {
    "unknown_commitment",
    "unknown_reversal_target",
    "unknown_order",
    "unknown_schedule",
    "order_exceeds_commitment",
    "reversal_not_possible",
}
SIDE = {
    "receipt": "revenue",
    "expected_receipt": "revenue",
    "commitment": "expenditure",
    "commitment_cancel": "expenditure",
    "payment": "expenditure",
    "transfer": "expenditure",
    "payment_order": "expenditure",
}


def body(
    kind: str,
    event_id: str,
    amount: int,
    *,
    org: str = SEOUL,
    account: str = "general",
    fy: int = 2026,
    at: str = AT,
    **extra: Any,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "event_id": event_id,
        "org_code": org,
        "account": account,
        "fiscal_year": fy,
        "kind": kind,
        "amount": amount,
        "occurred_at": at,
        "source": "unit-test",
    }
    if kind == "receipt":
        d["category"] = "local_tax"
    d.update({k: v for k, v in extra.items() if v is not None})
    return d


def msg(kind: str, event_id: str, amount: int, **kw: Any) -> bytes:
    return orjson.dumps(body(kind, event_id, amount, **kw))


class Fold:
    """The Ledger and the reference fold side by side."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.ref = Reference()

    def send(self, value: bytes) -> str:
        ev = check_message(value, None, None)
        assert isinstance(ev, Event), ev
        out = self.ledger.update(ev, value)
        got = out if isinstance(out, str) else out.reason
        if isinstance(out, Rejection):
            assert out.reason in STATEFUL and out.detail
        assert self.ref.feed(value) == got, (self.ref.outcomes[-1], got)
        return got

    def pos(self, account: str = "general", fy: int = 2026, org: str = SEOUL) -> tuple[int, int, int] | None:
        p = self.ledger.positions.get((org, account, fy))
        return None if p is None else (p.cash, p.committed, p.version)

    def check_reference(self) -> None:
        assert snapshot(self.ledger) == self.ref.positions()
        assert versions(self.ledger) == self.ref.versions()
        assert known_flows(self.ledger) == known_flows_of(self.ref)


def snapshot(ledger: Ledger) -> dict[tuple[str, str, int], tuple[int, int]]:
    return {k: (p.cash, p.committed) for k, p in ledger.positions.items()}


def versions(ledger: Ledger) -> dict[tuple[str, str, int], int]:
    return {k: p.version for k, p in ledger.positions.items()}


Known = tuple[dict[tuple[str, str, int], int], dict[tuple[str, str], int], dict[tuple[str, str], int]]


def known_flows(ledger: Ledger) -> Known:
    """The known flows a ledger keeps: each position's ``ordered``, each payment order's and each
    schedule's open amount."""
    return (
        {k: p.ordered for k, p in ledger.positions.items()},
        {k: o.open for k, o in ledger.orders.items()},
        {k: sch.open for k, sch in ledger.schedules.items()},
    )


def known_flows_of(ref: Reference) -> Known:
    """The same, derived from the reference fold's log."""
    return ref.ordered(), ref.orders_open(), ref.schedules()


@pytest.fixture
def f() -> Iterator[Fold]:
    fo = Fold()
    yield fo
    fo.check_reference()


# -- originals --------------------------------------------------------------------------------


def test_receipts_add_cash(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 1_000)) == "applied"
    assert f.pos() == (1_000, 0, 1)
    assert f.send(msg("receipt", "r2", 250)) == "applied"
    assert f.pos() == (1_250, 0, 2)
    assert f.pos("custody") is None


def test_payment_without_commitment_subtracts_cash(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 100)) == "applied"
    assert f.send(msg("payment", "p1", 300)) == "applied"
    assert f.pos() == (-200, 0, 2)


def test_max_amounts_stay_exact_ints(f: Fold) -> None:
    for i in range(5):
        assert f.send(msg("receipt", f"r{i}", 10**15)) == "applied"
    assert f.send(msg("payment", "p", 1)) == "applied"
    pos = f.pos()
    assert pos is not None
    cash, committed, version = pos
    assert cash == 5 * 10**15 - 1 and type(cash) is int
    assert (committed, version) == (0, 6)


def test_commitment_then_payments_release_min_of_amount_and_open(f: Fold) -> None:
    assert f.send(msg("commitment", "c", 500, commitment_id="k1", due_date="2026-06-30")) == "applied"
    assert f.pos() == (0, 500, 1)
    assert f.send(msg("payment", "p1", 200, commitment_id="k1")) == "applied"
    assert f.pos() == (-200, 300, 2)
    assert f.send(msg("payment", "p2", 400, commitment_id="k1")) == "applied"  # releases 300
    assert f.pos() == (-600, 0, 3)
    assert f.send(msg("commitment_cancel", "x1", 100, commitment_id="k1")) == "applied"  # nothing open
    assert f.pos() == (-600, 0, 4)


def test_cancel_releases_without_moving_cash(f: Fold) -> None:
    assert f.send(msg("commitment", "c", 500, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment_cancel", "x1", 200, commitment_id="k1")) == "applied"
    assert f.pos() == (0, 300, 2)
    assert f.send(msg("commitment_cancel", "x2", 1_000, commitment_id="k1")) == "applied"
    assert f.pos() == (0, 0, 3)
    assert f.send(msg("payment", "p1", 50, commitment_id="k1")) == "applied"
    assert f.pos() == (-50, 0, 4)


def test_commitments_are_per_commitment_not_per_account(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 500, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment", "c2", 70, commitment_id="k2")) == "applied"
    assert f.send(msg("payment", "p1", 100, commitment_id="k2")) == "applied"  # releases 70 only
    assert f.pos() == (-100, 500, 3)


def test_transfer_moves_cash_between_accounts(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 1_000)) == "applied"
    assert f.send(msg("transfer", "t1", 300, to_account="custody")) == "applied"
    assert f.pos() == (700, 0, 2)
    assert f.pos("custody") == (300, 0, 1)


def test_transfer_stays_in_its_fiscal_year(f: Fold) -> None:
    assert f.send(msg("transfer", "t1", 40, fy=2025, at=AT_JAN, to_account="custody")) == "applied"
    assert f.pos("general", 2025) == (-40, 0, 1)
    assert f.pos("custody", 2025) == (40, 0, 1)
    assert f.pos("general", 2026) is None and f.pos("custody", 2026) is None


def test_governments_are_independent(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 10)) == "applied"
    assert f.send(msg("receipt", "r1", 99, org=JONGNO)) == "applied"  # same id, other government
    assert f.send(msg("commitment", "c1", 5, commitment_id="k")) == "applied"
    assert f.send(msg("commitment", "c1", 7, org=JONGNO, commitment_id="k")) == "applied"
    assert f.pos() == (10, 5, 2)
    assert f.pos(org=JONGNO) == (99, 7, 2)


# -- duplicates and conflicts --------------------------------------------------------------------


def test_same_bytes_again_is_a_duplicate(f: Fold) -> None:
    m = msg("receipt", "r1", 1_000)
    assert f.send(m) == "applied"
    assert f.send(m) == "duplicate"
    assert f.send(m) == "duplicate"
    assert f.pos() == (1_000, 0, 1)
    ch = f.ledger.take_changes()
    assert (ch.applied, ch.duplicates, ch.rejected) == (1, 2, 0)


def test_same_content_other_encoding_is_a_duplicate(f: Fold) -> None:
    d = body("payment", "p1", 300)
    assert f.send(orjson.dumps(d)) == "applied"
    again = json.dumps(dict(sorted(d.items(), reverse=True)), indent=1).encode()
    assert again != orjson.dumps(d)
    assert f.send(again) == "duplicate"
    assert f.pos() == (-300, 0, 1)


def test_same_event_id_other_content_is_a_conflict(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 1_000)) == "applied"
    assert f.send(msg("receipt", "r1", 999)) == "event_id_conflict"
    assert f.send(msg("receipt", "r1", 1_000, account="custody")) == "event_id_conflict"
    assert f.pos() == (1_000, 0, 1)
    # ids are unique per side: the expenditure side has its own "r1"
    assert f.send(msg("commitment", "r1", 700, commitment_id="c")) == "applied"
    assert f.send(msg("payment", "r1", 1_000)) == "event_id_conflict"
    assert f.pos() == (1_000, 700, 2)
    assert f.pos("custody") is None
    ch = f.ledger.take_changes()
    assert (ch.applied, ch.duplicates, ch.rejected) == (2, 0, 3)


def test_rejected_event_does_not_use_up_its_id(f: Fold) -> None:
    assert f.send(msg("payment", "e5", 10, commitment_id="nope")) == "unknown_commitment"
    assert f.send(msg("receipt", "e5", 10)) == "applied"
    assert f.pos() == (10, 0, 1)


def test_duplicate_of_a_reversal(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 100)) == "applied"
    rev = msg("receipt", "r2", 100, reverses="r1")
    assert f.send(rev) == "applied"
    assert f.send(rev) == "duplicate"
    assert f.send(msg("receipt", "r1", 100)) == "duplicate"  # the reversed original, redelivered
    assert f.pos() == (0, 0, 2)


# -- commitment rejections ---------------------------------------------------------------------


def test_commitment_id_reused(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 500, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment", "c2", 500, commitment_id="k1")) == "commitment_id_reused"
    assert f.send(msg("commitment", "c3", 9, account="custody", commitment_id="k1")) == "commitment_id_reused"
    assert f.pos() == (0, 500, 1)
    assert f.pos("custody") is None


def test_commitment_id_reused_after_full_payment_and_after_reversal(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 50, commitment_id="k1")) == "applied"
    assert f.send(msg("payment", "p1", 50, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment", "c2", 50, commitment_id="k1")) == "commitment_id_reused"
    assert f.send(msg("commitment", "c3", 20, commitment_id="k2")) == "applied"
    assert f.send(msg("commitment", "c4", 20, commitment_id="k2", reverses="c3")) == "applied"
    assert f.send(msg("commitment", "c5", 20, commitment_id="k2")) == "commitment_id_reused"
    assert f.pos() == (-50, 0, 4)


def test_unknown_commitment(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 5, org=JONGNO, commitment_id="k1")) == "applied"
    assert f.send(msg("payment", "p1", 10, commitment_id="k1")) == "unknown_commitment"
    assert f.send(msg("commitment_cancel", "x1", 10, commitment_id="k1")) == "unknown_commitment"
    assert f.pos() is None
    assert f.pos(org=JONGNO) == (0, 5, 1)


def test_unknown_commitment_leaves_no_position(f: Fold) -> None:
    assert f.send(msg("payment", "p1", 10, commitment_id="k1")) == "unknown_commitment"
    assert f.send(msg("commitment_cancel", "x1", 10, commitment_id="k1")) == "unknown_commitment"
    assert f.pos() is None
    assert f.ledger.positions == {}


def test_commitment_mismatch_account(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 500, commitment_id="k1")) == "applied"
    assert f.send(msg("payment", "p1", 100, account="custody", commitment_id="k1")) == "commitment_mismatch"
    assert (
        f.send(msg("commitment_cancel", "x1", 100, account="custody", commitment_id="k1"))
        == "commitment_mismatch"
    )
    assert f.pos() == (0, 500, 1)
    assert f.pos("custody") is None


def test_commitment_mismatch_fiscal_year(f: Fold) -> None:
    assert (
        f.send(msg("commitment", "c1", 500, fy=2025, at="2025-12-15T10:00:00+09:00", commitment_id="k1"))
        == "applied"
    )
    assert f.send(msg("payment", "p1", 100, fy=2026, at=AT_JAN, commitment_id="k1")) == "commitment_mismatch"
    assert (
        f.send(msg("commitment_cancel", "x1", 100, fy=2026, at=AT_JAN, commitment_id="k1"))
        == "commitment_mismatch"
    )
    assert f.send(msg("payment", "p2", 100, fy=2025, at=AT_JAN, commitment_id="k1")) == "applied"
    assert f.pos("general", 2025) == (-100, 400, 2)
    assert f.pos("general", 2026) is None


# -- reversals ----------------------------------------------------------------------------------


def test_reversal_of_receipt(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 1_000)) == "applied"
    assert f.send(msg("receipt", "r2", 40)) == "applied"
    assert f.send(msg("receipt", "r3", 1_000, reverses="r1")) == "applied"
    assert f.pos() == (40, 0, 3)


def test_reversal_of_plain_payment(f: Fold) -> None:
    assert f.send(msg("payment", "p1", 70)) == "applied"
    assert f.send(msg("payment", "p2", 70, reverses="p1")) == "applied"
    assert f.pos() == (0, 0, 2)


def test_reversal_of_payment_restores_the_commitment(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 500, commitment_id="k1")) == "applied"
    assert f.send(msg("payment", "p1", 200, commitment_id="k1")) == "applied"
    assert f.pos() == (-200, 300, 2)
    assert f.send(msg("payment", "p2", 200, commitment_id="k1", reverses="p1")) == "applied"
    assert f.pos() == (0, 500, 3)
    assert f.send(msg("payment", "p3", 500, commitment_id="k1")) == "applied"  # all 500 open again
    assert f.pos() == (-500, 0, 4)


def test_reversal_of_overpayment_restores_only_what_it_released(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 100, commitment_id="k1")) == "applied"
    assert f.send(msg("payment", "p1", 250, commitment_id="k1")) == "applied"
    assert f.pos() == (-250, 0, 2)
    assert f.send(msg("payment", "p2", 250, commitment_id="k1", reverses="p1")) == "applied"
    assert f.pos() == (0, 100, 3)


def test_reversal_of_cancel(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 500, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment_cancel", "x1", 200, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment_cancel", "x2", 200, commitment_id="k1", reverses="x1")) == "applied"
    assert f.pos() == (0, 500, 3)


def test_reversal_of_payment_after_commitment_was_cancelled(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 100, commitment_id="k1")) == "applied"
    assert f.send(msg("payment", "p1", 30, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment_cancel", "x1", 100, commitment_id="k1")) == "applied"  # releases 70
    assert f.pos() == (-30, 0, 3)
    assert f.send(msg("payment", "p2", 30, commitment_id="k1", reverses="p1")) == "applied"
    assert f.pos() == (0, 30, 4)
    assert f.send(msg("commitment_cancel", "x2", 1_000, commitment_id="k1")) == "applied"  # releases 30
    assert f.pos() == (0, 0, 5)


def test_reversal_of_transfer(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 1_000)) == "applied"
    assert f.send(msg("transfer", "t1", 300, to_account="custody")) == "applied"
    assert f.send(msg("transfer", "t2", 300, to_account="custody", reverses="t1")) == "applied"
    assert f.pos() == (1_000, 0, 3)
    assert f.pos("custody") == (0, 0, 2)


def test_reversal_of_unconsumed_commitment(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 500, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment", "c2", 500, commitment_id="k1", reverses="c1")) == "applied"
    assert f.pos() == (0, 0, 2)
    # the commitment is closed: payments and cancels naming it release nothing
    assert f.send(msg("payment", "p1", 100, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment_cancel", "x1", 50, commitment_id="k1")) == "applied"
    assert f.pos() == (-100, 0, 4)


def test_reversal_in_a_later_fiscal_year_undoes_the_original_position(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 800, fy=2026, at="2026-11-02T10:00:00+09:00")) == "applied"
    assert (
        f.send(msg("receipt", "r2", 800, fy=2027, at="2027-02-02T10:00:00+09:00", reverses="r1")) == "applied"
    )
    assert f.pos("general", 2026) == (0, 0, 2)
    assert f.pos("general", 2027) is None


def test_unknown_reversal_target(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 100, reverses="nope")) == "unknown_reversal_target"
    assert f.send(msg("payment", "p1", 5, commitment_id="k9")) == "unknown_commitment"
    assert f.send(msg("payment", "p2", 5, commitment_id="k9", reverses="p1")) == "unknown_reversal_target"
    assert f.send(msg("receipt", "r2", 100, org=JONGNO)) == "applied"
    assert f.send(msg("receipt", "r3", 100, reverses="r2")) == "unknown_reversal_target"  # other org
    assert f.pos() is None
    assert f.pos(org=JONGNO) == (100, 0, 1)


def test_already_reversed(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 100)) == "applied"
    assert f.send(msg("receipt", "r2", 100, reverses="r1")) == "applied"
    assert f.send(msg("receipt", "r3", 100, reverses="r1")) == "already_reversed"
    assert f.pos() == (0, 0, 2)


def test_a_reversal_names_an_event_of_its_own_side(f: Fold) -> None:
    """Ids are scoped per side: a receipt cannot reverse a payment, whatever their ids."""
    assert f.send(msg("payment", "o", 100)) == "applied"
    assert f.send(msg("receipt", "r", 100, reverses="o")) == "unknown_reversal_target"
    assert f.send(msg("receipt", "o", 100)) == "applied"  # the same id, the other side
    assert f.send(msg("payment", "r", 100, reverses="o")) == "applied"  # undoes the payment
    assert f.pos() == (100, 0, 3)
    f.check_reference()


@pytest.mark.parametrize("kind", ["receipt", "payment"])
def test_position_bound_is_exact_and_per_side(f: Fold, kind: str) -> None:
    """A side's share of a position stops at MAX_SIDE_TOTAL, exactly: the event that would pass
    it is refused and changes nothing; the other side is not affected."""
    step = 10**15
    n = MAX_SIDE_TOTAL // step
    sign = 1 if kind == "receipt" else -1
    for i in range(n):
        assert f.send(msg(kind, f"x{i}", step)) == "applied"
    pos = f.pos()
    assert pos is not None and pos[0] == sign * MAX_SIDE_TOTAL
    before = snapshot(f.ledger)
    assert f.send(msg(kind, "over", 1)) == "position_out_of_range"
    assert snapshot(f.ledger) == before
    other = "payment" if kind == "receipt" else "receipt"
    assert f.send(msg(other, "o1", step)) == "applied"  # the other side's share is its own
    assert f.send(msg(kind, "over2", 1)) == "position_out_of_range"  # still at its bound
    assert f.send(msg(kind, f"x{n - 1}", step)) == "duplicate"
    f.check_reference()


@pytest.mark.parametrize(
    ("original", "reversal"),
    [
        (msg("receipt", "o", 100), msg("receipt", "r", 99, reverses="o")),
        (msg("receipt", "o", 100), msg("receipt", "r", 100, account="custody", reverses="o")),
        (msg("transfer", "o", 100, to_account="custody"), msg("payment", "r", 100, reverses="o")),
        (
            msg("transfer", "o", 100, to_account="custody"),
            msg("transfer", "r", 100, to_account="sewerage", reverses="o"),
        ),
        (
            msg("transfer", "o", 100, to_account="custody"),
            msg("transfer", "r", 100, account="custody", to_account="general", reverses="o"),
        ),
    ],
    ids=["amount", "account", "kind_transfer_as_payment", "to_account", "swapped_transfer"],
)
def test_reversal_mismatch(f: Fold, original: bytes, reversal: bytes) -> None:
    assert f.send(original) == "applied"
    before = f.ledger.positions.copy()
    snap = snapshot(f.ledger)
    assert f.send(reversal) == "reversal_mismatch"
    assert snapshot(f.ledger) == snap and f.ledger.positions.keys() == before.keys()


def test_reversal_mismatch_on_commitment_id(f: Fold) -> None:
    assert f.send(msg("commitment", "c1", 100, commitment_id="k1")) == "applied"
    assert f.send(msg("commitment", "c2", 100, commitment_id="k2")) == "applied"
    assert f.send(msg("payment", "p1", 10, commitment_id="k1")) == "applied"
    assert f.send(msg("payment", "r1", 10, reverses="p1")) == "reversal_mismatch"
    assert f.send(msg("payment", "r2", 10, commitment_id="k2", reverses="p1")) == "reversal_mismatch"
    assert f.send(msg("commitment", "r3", 100, commitment_id="k1", reverses="c2")) == "reversal_mismatch"
    assert f.send(msg("payment", "p2", 10)) == "applied"
    assert f.send(msg("payment", "r4", 10, commitment_id="k1", reverses="p2")) == "reversal_mismatch"
    assert f.pos() == (-20, 190, 4)
    # the mismatching attempts did not use up the right reversal
    assert f.send(msg("payment", "r5", 10, commitment_id="k1", reverses="p1")) == "applied"
    assert f.pos() == (-10, 200, 5)


def test_a_reversal_cannot_be_reversed(f: Fold) -> None:
    assert f.send(msg("receipt", "r1", 100)) == "applied"
    assert f.send(msg("receipt", "r2", 100, reverses="r1")) == "applied"
    assert f.send(msg("receipt", "r3", 100, reverses="r2")) == "reversal_not_possible"
    assert f.pos() == (0, 0, 2)


@pytest.mark.parametrize(
    "consume",
    [
        [msg("payment", "p1", 1, commitment_id="k1")],
        [msg("payment", "p1", 500, commitment_id="k1")],
        [msg("commitment_cancel", "x1", 1, commitment_id="k1")],
        [msg("commitment_cancel", "x1", 500, commitment_id="k1")],
        # paid and the payment reversed: the commitment was still paid once
        [
            msg("payment", "p1", 20, commitment_id="k1"),
            msg("payment", "p2", 20, commitment_id="k1", reverses="p1"),
        ],
    ],
    ids=["paid_1", "paid_fully", "cancelled_1", "cancelled_fully", "paid_then_payment_reversed"],
)
def test_consumed_commitment_cannot_be_reversed(f: Fold, consume: list[bytes]) -> None:
    assert f.send(msg("commitment", "c1", 500, commitment_id="k1")) == "applied"
    for m in consume:
        assert f.send(m) == "applied"
    snap = snapshot(f.ledger)
    assert f.send(msg("commitment", "c2", 500, commitment_id="k1", reverses="c1")) == "reversal_not_possible"
    assert snapshot(f.ledger) == snap


def test_rejections_count_in_changes(f: Fold) -> None:
    f.send(msg("receipt", "r1", 100))
    f.send(msg("receipt", "r1", 100))
    f.send(msg("receipt", "r1", 101))
    f.send(msg("payment", "p1", 1, commitment_id="zz"))
    f.send(msg("receipt", "r9", 100, reverses="zz"))
    ch = f.ledger.take_changes()
    assert (ch.applied, ch.duplicates, ch.rejected) == (1, 1, 3)
    assert set(ch.index) == {(SEOUL, "general", 2026)}  # the changed positions
    assert set(ch.journal) == {(SEOUL, "r:r1")}
    ch2 = f.ledger.take_changes()
    assert (ch2.applied, ch2.duplicates, ch2.rejected, ch2.index) == (0, 0, 0, {})


def test_reference_fold_api() -> None:
    stream: list[bytes | tuple[Any, ...]] = [
        (msg("receipt", "r1", 100), "revenue", SEOUL.encode()),
        (msg("receipt", "r1", 100), "revenue", SEOUL.encode()),
        (msg("receipt", "r2", 5), "expenditure", SEOUL.encode()),  # wrong topic
        (msg("transfer", "t1", 30, to_account="custody"), "expenditure", JONGNO.encode()),  # key
        msg("transfer", "t2", 30, to_account="custody"),
        (msg("payment", "p1", 1, commitment_id="k"), None),
    ]
    positions, counts = fold(stream)
    assert positions == {(SEOUL, "general", 2026): (70, 0), (SEOUL, "custody", 2026): (30, 0)}
    assert counts == {
        "applied": 2,
        "duplicate": 1,
        "rejected": {"wrong_topic": 1, "key_mismatch": 1, "unknown_commitment": 1},
    }


# -- property tests -----------------------------------------------------------------------------

_GOVS = governments()
ORG_ACCOUNTS = {
    SEOUL: ("general", "custody", "sewerage"),
    JONGNO: ("general", "custody", min(_GOVS[JONGNO].account_codes - {"general", "custody"})),
}
assert all(set(a) <= _GOVS[o].account_codes for o, a in ORG_ACCOUNTS.items())
CIDS = ("k0", "k1", "k2", "k3")
SIDS = ("s0", "s1", "s2")
PAY_DATES = ("2026-04-01", "2026-05-01", "2026-06-01")  # few: ties cut by order id
# the kinds of new events; "payment_on_order" and "receipt_on_schedule": a payment naming an order,
# a receipt naming a schedule
PRELUDE = ("commitment", "commitment", "expected_receipt")  # a focused stream's first events
FOCUS_KINDS = (
    "commitment",
    "commitment_cancel",
    "commitment_cancel",
    "payment",
    "payment",
    "payment_order",
    "payment_order",
    "payment_order",
    "payment_on_order",
    "payment_on_order",
    "expected_receipt",
    "receipt_on_schedule",
    "receipt_on_schedule",
)
KINDS = (
    "receipt",
    "commitment",
    "commitment",
    "commitment_cancel",
    "payment",
    "transfer",
    "payment_order",
    "payment_order",
    "payment_on_order",
    "payment_on_order",
    "expected_receipt",
    "receipt_on_schedule",
)
OPS = ("new",) * 8 + ("reverse",) * 4 + ("dup",) * 2 + ("reencode", "conflict", "invalid")
FOCUS_OPS = ("new",) * 12 + ("reverse",) * 4 + ("dup", "reencode", "conflict", "invalid")

Msg = tuple[bytes, str | None, bytes | None]  # value, side, key


def _encode(d: dict[str, Any]) -> Msg:
    return orjson.dumps(d), SIDE.get(d["kind"]), d["org_code"].encode()


def _link(
    draw: st.DrawFn,
    d: dict[str, Any],
    bodies: list[dict[str, Any]],
    kind: str,
    same: tuple[str, ...],
    **ids: str,
) -> None:
    """Make ``d`` name an earlier event of ``kind`` (when there is one): its government, account,
    fiscal year and the fields ``same``; ``ids``: d's field -> that event's field."""
    earlier = [b for b in bodies if b["kind"] == kind and "reverses" not in b]
    if kind == "commitment":  # not one refused by construction (2025's, dated in 2026)
        earlier = [b for b in earlier if b["fiscal_year"] == 2026]
    if not earlier:
        return
    b = draw(st.sampled_from(earlier))
    d.update({k: b[k] for k in ("org_code", "account", "fiscal_year", *same)})
    d.update({k: b[v] for k, v in ids.items()})


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40, focus: bool | None = None) -> list[Msg]:
    """A stream over two governments, a few accounts, two fiscal years and a few commitment ids,
    with redeliveries, re-encodings, reversals (some deliberately wrong), conflicts, and events
    that name unknown or mismatching commitments; payment orders (few pay dates) and payments
    executing them (or naming an unknown order or another commitment's), expected receipts under
    a few schedule ids (two categories) and receipts realising them."""
    out: list[Msg] = []
    bodies: list[dict[str, Any]] = []
    n = draw(st.integers(0, max_size))
    # Focused (half the streams): most events on one position, opening with two commitments and
    # a schedule, new events mostly of the known flows; so orders, their executions, cuts and
    # give-backs, and revisions and realisations meet in most streams.
    focus = draw(st.booleans()) if focus is None else focus
    for i in range(n):
        op = draw(st.sampled_from(FOCUS_OPS if focus else OPS)) if bodies else "new"
        op = "new" if focus and i < len(PRELUDE) else op
        eid = f"e{i}"
        at = f"2026-01-{draw(st.integers(1, 20)):02d}T{draw(st.integers(0, 23)):02d}:00:00+09:00"
        if op == "new":
            org = draw(st.sampled_from(sorted(ORG_ACCOUNTS)))
            accounts = ORG_ACCOUNTS[org]
            if focus:
                kind = PRELUDE[i] if i < len(PRELUDE) else draw(st.sampled_from(FOCUS_KINDS))
            else:
                kind = draw(st.sampled_from(KINDS))
            on_order, on_schedule = kind == "payment_on_order", kind == "receipt_on_schedule"
            kind = "payment" if on_order else "receipt" if on_schedule else kind
            account = draw(st.sampled_from(accounts))
            fy = draw(st.sampled_from((2025, 2026)))
            if focus and (i < len(PRELUDE) or draw(st.integers(0, 5))):
                org, account, fy = SEOUL, "general", 2026
            amount = 10**15 if draw(st.integers(0, 7)) == 0 else draw(st.integers(1, 1_000))
            if focus and kind == "payment_order":  # a few fit a commitment
                amount = draw(st.integers(1, 400))
            d = body(kind, eid, amount, org=org, account=account, fy=fy, at=at)
            if kind == "commitment":
                d["commitment_id"] = CIDS[i] if focus and i < len(PRELUDE) else draw(st.sampled_from(CIDS))
                if draw(st.booleans()):
                    d["due_date"] = "2026-06-30"
                if draw(st.integers(0, 3)):  # 2025's, dated in January 2026, is period_closed
                    d["fiscal_year"] = 2026
            elif kind in ("commitment_cancel", "payment_order", "payment"):
                if kind != "payment" or on_order or draw(st.booleans()):
                    d["commitment_id"] = draw(st.sampled_from(CIDS))
            elif kind == "transfer":
                d["to_account"] = draw(st.sampled_from([a for a in accounts if a != account]))
            if kind == "payment_order":
                d["pay_date"] = draw(st.sampled_from(PAY_DATES))
            elif kind == "expected_receipt":
                d["expected_date"] = draw(st.sampled_from(PAY_DATES))
                d["certainty"] = draw(st.sampled_from(("confirmed", "estimated")))
            if kind == "expected_receipt" or on_schedule:
                d["category"] = draw(st.sampled_from(("local_tax", "grant")))
                d["schedule_id"] = draw(st.sampled_from(SIDS))
            # Most events naming a commitment, an order or a schedule name one an earlier event
            # opened, with its government, account and year (else nearly all would be unknown).
            if "commitment_id" in d and kind != "commitment" and draw(st.integers(0, 3)):
                _link(draw, d, bodies, "commitment", ("commitment_id",))
            if on_order:
                if draw(st.integers(0, 5)):
                    _link(draw, d, bodies, "payment_order", ("commitment_id",), order_id="event_id")
                if "order_id" not in d:  # unknown, or another commitment's
                    d["order_id"] = draw(st.sampled_from([b["event_id"] for b in bodies] + ["zz"]))
            if "schedule_id" in d and draw(st.integers(0, 3)):
                _link(draw, d, bodies, "expected_receipt", ("category", "schedule_id"))
            bodies.append(d)
            out.append(_encode(d))
        elif op == "reverse":
            target = draw(st.sampled_from(bodies))
            d = dict(target, event_id=eid, reverses=target["event_id"], occurred_at=at)
            d["fiscal_year"] = draw(st.sampled_from((2025, 2026)))
            how = draw(
                st.sampled_from(
                    ("exact",) * 5 + ("amount", "account", "to", "cid", "target", "order", "schedule")
                )
            )
            if how == "amount":
                d["amount"] = d["amount"] % 1_000 + 1
            elif how == "account":
                d["account"] = draw(st.sampled_from(ORG_ACCOUNTS[d["org_code"]]))
            elif how == "to" and d["kind"] == "transfer":
                d["to_account"] = draw(st.sampled_from(ORG_ACCOUNTS[d["org_code"]]))
            elif how == "cid" and d["kind"] == "payment":
                if d.pop("commitment_id", None) is None:
                    d["commitment_id"] = draw(st.sampled_from(CIDS))
            elif how == "target":
                d["reverses"] = draw(st.sampled_from([b["event_id"] for b in bodies] + ["zz"]))
            elif how in ("order", "schedule") and d["kind"] == ("payment" if how == "order" else "receipt"):
                name = "order_id" if how == "order" else "schedule_id"
                pool = [b["event_id"] for b in bodies] if how == "order" else list(SIDS)
                if d.pop(name, None) is None or draw(st.booleans()):  # left out: still exact
                    d[name] = draw(st.sampled_from(pool))
            bodies.append(d)
            out.append(_encode(d))
        elif op == "dup":
            out.append(draw(st.sampled_from(out)))
        elif op == "reencode":
            d = draw(st.sampled_from(bodies))
            value = json.dumps(dict(sorted(d.items(), reverse=True)), indent=1).encode()
            out.append((value, SIDE[d["kind"]], d["org_code"].encode()))
        elif op == "conflict":
            d = dict(draw(st.sampled_from(bodies)))
            d["amount"] = d["amount"] % 1_000 + 1
            bodies.append(d)
            out.append(_encode(d))
        else:  # invalid: a stateless rejection the fold never sees
            d = draw(st.sampled_from(bodies))
            value, side, key = _encode(d)
            bad = draw(st.sampled_from(("topic", "key", "amount")))
            if bad == "topic":
                out.append((value, "revenue" if side == "expenditure" else "expenditure", key))
            elif bad == "key":
                out.append((value, side, b"0000000"))
            else:
                out.append(_encode(dict(d, amount=0)))
    return out


def run(ledger: Ledger, stream: list[Msg]) -> list[str]:
    """Feed messages as the worker does: contract check first, then the fold."""
    outs = []
    for value, side, key in stream:
        ev = check_message(value, key, side)
        if isinstance(ev, Rejection):
            outs.append(ev.reason)
            continue
        o = ledger.update(ev, value)
        outs.append(o if isinstance(o, str) else o.reason)
    return outs


def independent_expectations(stream: list[Msg], outs: list[str]) -> tuple[dict, dict]:
    """Per org: receipts − payments (reversals negate), and per position: number of applied
    events that touched it, from the messages and their outcomes alone."""
    cash_by_org: Counter[str] = Counter()
    touched: Counter[tuple[str, str, int]] = Counter()
    applied: dict[tuple[str, str], dict[str, Any]] = {}
    for (value, _, _), o in zip(stream, outs):
        if o != "applied":
            continue
        d = json.loads(value)
        org = d["org_code"]
        sign = -1 if d.get("reverses") else 1
        if d["kind"] == "receipt":
            cash_by_org[org] += sign * d["amount"]
        elif d["kind"] == "payment":
            cash_by_org[org] -= sign * d["amount"]
        orig = applied[(org, d["reverses"])] if d.get("reverses") else d
        touched[(org, orig["account"], orig["fiscal_year"])] += 1
        if orig["kind"] == "transfer":
            touched[(org, orig["to_account"], orig["fiscal_year"])] += 1
        applied[(org, d["event_id"])] = d
    return dict(cash_by_org), dict(touched)


def check_invariants(ledger: Ledger, stream: list[Msg], outs: list[str]) -> None:
    cash_by_org, touched = independent_expectations(stream, outs)
    for pk, p in ledger.positions.items():
        assert type(p.cash) is int and type(p.committed) is int and type(p.version) is int
        assert p.committed >= 0, (pk, p)
        assert 0 <= p.ordered <= p.committed, (pk, p)  # open orders are a part of committed
    for ck, c in ledger.commitments.items():
        assert 0 <= c.ordered <= c.open, (ck, c)
    for org in ORG_ACCOUNTS:
        total = sum(p.cash for k, p in ledger.positions.items() if k[0] == org)
        assert total == cash_by_org.get(org, 0), org
    assert versions(ledger) == touched


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(streams())
def test_ledger_equals_reference_fold(stream: list[Msg]) -> None:
    ledger = Ledger()
    outs = run(ledger, stream)
    ref = Reference()
    ref_outs = [ref.feed(*m) for m in stream]
    assert outs == ref_outs
    assert snapshot(ledger) == ref.positions()
    assert versions(ledger) == ref.versions()
    assert known_flows(ledger) == known_flows_of(ref)
    for cash, committed in ref.positions().values():
        assert type(cash) is int and type(committed) is int
    check_invariants(ledger, stream, outs)
    ch = ledger.take_changes()
    assert ch.applied == outs.count("applied")
    assert ch.duplicates == outs.count("duplicate")
    assert ch.rejected == sum(o in STATEFUL for o in outs)


@PROPS
@given(streams())
def test_immediate_redelivery_is_idempotent(stream: list[Msg]) -> None:
    ledger = Ledger()
    for m in stream:
        [first] = run(ledger, [m])
        before = {k: (p.cash, p.committed, p.version) for k, p in ledger.positions.items()}
        [second] = run(ledger, [m])
        assert second == ("duplicate" if first in ("applied", "duplicate") else first)
        assert {k: (p.cash, p.committed, p.version) for k, p in ledger.positions.items()} == before


@PROPS
@given(streams(), st.data())
def test_redelivery_of_a_prefix(stream: list[Msg], data: st.DataObject) -> None:
    ledger = Ledger()
    outs = run(ledger, stream)
    before = {k: (p.cash, p.committed, p.version) for k, p in ledger.positions.items()}
    k = data.draw(st.integers(0, len(stream)), label="prefix")
    again = run(ledger, stream[:k])
    for first, second in zip(outs, again):
        if first in ("applied", "duplicate"):
            assert second == "duplicate"
        elif first in STATELESS:
            assert second == first
        elif first in STABLE_REJECTIONS:
            assert second in STATEFUL, (first, second)
    # A payment naming a commitment that arrived only later in the stream (or a reversal of a
    # later event) is applied when redelivered: that is the correct fold of the longer stream.
    ref = Reference()
    ref_outs = [ref.feed(*m) for m in stream + stream[:k]]
    assert outs + again == ref_outs
    assert snapshot(ledger) == ref.positions()
    assert known_flows(ledger) == known_flows_of(ref)
    if "applied" not in again:
        assert {k: (p.cash, p.committed, p.version) for k, p in ledger.positions.items()} == before
    check_invariants(ledger, stream + stream[:k], outs + again)


@PROPS
@given(streams(), st.data())
def test_redelivery_of_a_prefix_without_transient_rejections(stream: list[Msg], data: st.DataObject) -> None:
    """Redelivering any prefix (leaving out events rejected only because what they name had not
    arrived yet) changes nothing: applied events come back as duplicates, rejected ones are
    rejected again."""
    ledger = Ledger()
    outs = run(ledger, stream)
    transient = TRANSIENT_REJECTIONS
    k = data.draw(st.integers(0, len(stream)), label="prefix")
    replay = [(m, o) for m, o in zip(stream[:k], outs) if o not in transient]
    before = {k: (p.cash, p.committed, p.version) for k, p in ledger.positions.items()}
    again = run(ledger, [m for m, _ in replay])
    for (_, first), second in zip(replay, again):
        if first in ("applied", "duplicate"):
            assert second == "duplicate"
        elif first in STATELESS:
            assert second == first
        else:
            assert second in STATEFUL, (first, second)
    assert {k: (p.cash, p.committed, p.version) for k, p in ledger.positions.items()} == before
    ch = ledger.take_changes()
    assert ch.applied == outs.count("applied")


@PROPS
@given(streams(), st.data())
def test_fold_in_batches_equals_the_reference_fold(stream: list[Msg], data: st.DataObject) -> None:
    """``Ledger.fold`` (the worker's batch path, with its fast loop) gives the reference's
    outcomes, positions, versions and change counts, however the stream is cut into batches."""
    ledger = Ledger()
    ref = Reference()
    ref_outs = [ref.feed(*m) for m in stream]
    outs: list[str] = []
    checked = []
    for value, side, key in stream:
        ev = check_message(value, key, side)
        checked.append((ev, value))
    i = 0
    while i < len(checked):
        n = data.draw(st.integers(1, 12), label="batch")
        chunk = checked[i : i + n]
        good = [
            (ev, value, ("t", 0, i + j, 0))
            for j, (ev, value) in enumerate(chunk)
            if not isinstance(ev, Rejection)
        ]
        where = [j for j, (ev, _) in enumerate(chunk) if not isinstance(ev, Rejection)]
        batch_outs: list[str] = [ev.reason if isinstance(ev, Rejection) else "applied" for ev, _ in chunk]
        for k, out in ledger.fold(good):
            batch_outs[where[k]] = out if isinstance(out, str) else out.reason
        outs += batch_outs
        ch = ledger.take_changes()
        assert ch.applied == batch_outs.count("applied")
        assert ch.duplicates == batch_outs.count("duplicate")
        assert ch.rejected == sum(o in STATEFUL for o in batch_outs)
        assert set(ch.journal) >= {
            (ev.org_code, scoped_id(ev.kind, ev.event_id))
            for (ev, _), o in zip(chunk, batch_outs)
            if o == "applied" and not isinstance(ev, Rejection)
        }
        assert ch.last_event_ms == max(
            (
                epoch_ms(ev.occurred_at)
                for (ev, _), o in zip(chunk, batch_outs)
                if o == "applied" and not isinstance(ev, Rejection)
            ),
            default=0,
        )
        i += n
    assert outs == ref_outs
    assert snapshot(ledger) == ref.positions()
    assert versions(ledger) == ref.versions()
    assert known_flows(ledger) == known_flows_of(ref)
    check_invariants(ledger, stream, outs)


@settings(PROPS, max_examples=300)
@given(streams(focus=True), st.data())
def test_known_flows_equal_the_reference_fold(stream: list[Msg], data: st.DataObject) -> None:
    """Focused streams (one position mostly: orders executed, cut and given back, schedules
    revised and realised), folded in batches: the reference's outcomes, positions, versions,
    ``ordered``, orders and schedules."""
    test_fold_in_batches_equals_the_reference_fold.hypothesis.inner_test(stream, data)  # type: ignore[attr-defined]  # hypothesis adds .hypothesis at run time
