"""An independent reference fold of the event stream, for tests and ``cashpos reconcile``.

Deliberately shares no code with ``state.ledger``: it is written as an event-sourced log. Each
message is first judged against the history of *accepted* events (kept as plain records, in
order); balances are then derived only at the end, by summing the effects of the accepted
events. Only ``streams.contract`` is used, for strict decoding and the stateless rules.

Semantics, per government (org_code), account and fiscal year:

* receipt: cash += amount.
* payment: cash -= amount; naming a commitment, it also releases min(amount, open) of it.
* commitment: committed += amount; opens the commitment (an id is usable once per government).
* commitment_cancel: releases min(amount, open) of the named commitment.
* transfer: cash moves from ``account`` to ``to_account`` (same fiscal year).
* an event with ``reverses`` undoes exactly the effects of an earlier accepted event with the
  same kind, account and amount (same to_account, same commitment_id); once only; a reversal
  cannot be reversed; a commitment that was ever paid or cancelled cannot be reversed.
* an event_id already accepted for the government on the same side (revenue: receipts;
  expenditure: every other kind): same content -> duplicate, else rejected. The two sides have
  separate id spaces, and a reversal names an event of its own side.
* an event that would take its side's net share of a position's cash, or the committed amount,
  past ±MAX_SIDE_TOTAL is rejected (position_out_of_range).
* commitment_carry_forward: the commitment's whole open amount (the event's amount must equal
  it) moves from its fiscal year to the next; from then on the commitment belongs to that year
  and can no longer be reversed; a carry-forward itself is never reversed.
* fiscal_year_close (read from an input topic; the topic says which side closes): for that side
  the year and every earlier one are closed. Each such position's net share of that side moves
  to the same account's next year (refused whole if that breaks the bound); on the expenditure
  side every commitment still open in a closed year lapses (its open amount released, one
  record per commitment). Afterwards any event of the side for a closed year is refused
  (period_closed), and so is a second close of a year already closed.

Money is integer KRW throughout; nothing here ever produces a float.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from streams.contract import MAX_SIDE_TOTAL, Event, Rejection, YearClose, check_message, side_of

PosKey = tuple[str, str, int]  # (org_code, account, fiscal_year)
Delta = tuple[PosKey, int, int]  # (position, cash delta, committed delta)


class Counts(TypedDict):
    """What ``Reference.counts`` returns: records per outcome."""

    applied: int
    duplicate: int
    rejected: dict[str, int]  # reason -> records


@dataclass
class Accepted:
    """One accepted (applied) event and the position deltas it caused."""

    event: Event | YearClose
    deltas: list[Delta]
    released: int = 0  # commitment amount this event released (payment, cancel)
    reversed_by: str | None = None
    lapse_of: str | None = None  # a lapse at a close: the commitment it released (no event of its own)


@dataclass
class Reference:
    """Feed messages in order with :meth:`feed`; read :meth:`positions` at any time."""

    log: list[Accepted] = field(default_factory=list)
    by_id: dict[tuple[str, str, str], Accepted] = field(default_factory=dict)  # (org, side, id)
    # running sums the bound is judged on: (position, side) -> net cash; position -> committed
    share: dict[tuple[PosKey, str], int] = field(default_factory=dict)
    open_total: dict[PosKey, int] = field(default_factory=dict)
    # (org, commitment_id) -> the accepted commitment event that opened it
    opened_by: dict[tuple[str, str], Accepted] = field(default_factory=dict)
    # (org, commitment_id) -> every accepted payment/cancel that named it, reversed or not
    consumers: dict[tuple[str, str], list[Accepted]] = field(default_factory=dict)
    # (org, commitment_id) -> the fiscal year it was carried into; (org, commitment_id) lapsed
    carried_to: dict[tuple[str, str], int] = field(default_factory=dict)
    lapsed: set[tuple[str, str]] = field(default_factory=set)
    closed: dict[tuple[str, str], int] = field(default_factory=dict)  # (org, side) -> last closed year
    outcomes: list[str] = field(default_factory=list)  # "applied" | "duplicate" | reason code
    max_bytes: int = 8192  # the processor's MAX_EVENT_BYTES

    # -- input ---------------------------------------------------------------------------------

    def feed(self, raw: bytes, side: str | None = None, key: bytes | None = None) -> str:
        """Judge one message; returns "applied", "duplicate" or the rejection reason."""
        checked = check_message(raw, key, side, self.max_bytes)
        if isinstance(checked, Rejection):
            outcome = checked.reason
        elif isinstance(checked, YearClose):
            outcome = self._judge_close(checked, side)
        else:
            outcome = self._judge(checked)
        self.outcomes.append(outcome)
        return outcome

    def feed_record(self, raw: bytes, side: str, key: bytes | None) -> str:
        """Judge one Kafka record: as ``feed``, and a record without a key is refused (the
        contract's key is org_code)."""
        if key is not None:
            return self.feed(raw, side, key)
        checked = check_message(raw, None, side, self.max_bytes)  # the contract names bad input first
        outcome = checked.reason if isinstance(checked, Rejection) else "missing_key"
        self.outcomes.append(outcome)
        return outcome

    def feed_all(self, messages: Iterable[bytes | tuple]) -> None:
        for m in messages:
            if isinstance(m, (bytes, bytearray, memoryview)):
                self.feed(bytes(m))
            else:
                self.feed(*m)

    # -- the rules -----------------------------------------------------------------------------

    def _open_amount(self, org: str, cid: str) -> int:
        """What is still open of a commitment, recomputed from the accepted history."""
        opener = self.opened_by[(org, cid)]
        if (org, cid) in self.lapsed:
            return 0
        opened = opener.event
        assert isinstance(opened, Event)  # a commitment opened it
        total = opened.amount
        if opener.reversed_by is not None:
            total -= opened.amount
        for c in self.consumers.get((org, cid), []):
            if c.reversed_by is None:
                total -= c.released
        assert total >= 0, (org, cid, total)
        return total

    def _judge(self, ev: Event) -> str:
        org = ev.org_code
        earlier = self.by_id.get((org, side_of(ev.kind), ev.event_id))
        if earlier is not None:
            return "duplicate" if earlier.event == ev else "event_id_conflict"
        if ev.fiscal_year <= self.closed.get((org, side_of(ev.kind)), -1):
            return "period_closed"
        if ev.reverses is not None:
            return self._judge_reversal(ev, ev.reverses)

        acc, fy, amount = ev.account, ev.fiscal_year, ev.amount
        here = (org, acc, fy)
        released = 0
        if ev.kind == "receipt":
            deltas = [(here, amount, 0)]
        elif ev.kind == "transfer":
            assert ev.to_account is not None
            deltas = [(here, -amount, 0), ((org, ev.to_account, fy), amount, 0)]
        elif ev.kind == "commitment":
            assert ev.commitment_id is not None
            if (org, ev.commitment_id) in self.opened_by:
                return "commitment_id_reused"
            deltas = [(here, 0, amount)]
        elif ev.kind == "commitment_carry_forward":
            cid = ev.commitment_id
            assert cid is not None
            if (org, cid) not in self.opened_by:
                return "unknown_commitment"
            if (self._commitment_account(org, cid), self._commitment_year(org, cid)) != (acc, fy):
                return "commitment_mismatch"
            if self._open_amount(org, cid) != amount:
                return "commitment_mismatch"
            deltas = [(here, 0, -amount), ((org, acc, fy + 1), 0, amount)]
        else:  # payment or commitment_cancel
            cash = -amount if ev.kind == "payment" else 0
            cid = ev.commitment_id
            if cid is None:
                assert ev.kind == "payment"
                deltas = [(here, cash, 0)]
            else:
                opener = self.opened_by.get((org, cid))
                if opener is None:
                    return "unknown_commitment"
                if (self._commitment_account(org, cid), self._commitment_year(org, cid)) != (acc, fy):
                    return "commitment_mismatch"
                released = min(amount, self._open_amount(org, cid))
                deltas = [(here, cash, -released)]

        rec = Accepted(ev, deltas, released)
        if not self._accept(rec):
            return "position_out_of_range"
        if ev.kind == "commitment":
            assert ev.commitment_id is not None
            self.opened_by[(org, ev.commitment_id)] = rec
        elif ev.commitment_id is not None:
            self.consumers.setdefault((org, ev.commitment_id), []).append(rec)
            if ev.kind == "commitment_carry_forward":
                self.carried_to[(org, ev.commitment_id)] = fy + 1
        return "applied"

    def _commitment_account(self, org: str, cid: str) -> str:
        opened = self.opened_by[(org, cid)].event
        assert isinstance(opened, Event)  # a commitment opened it
        return opened.account

    def _commitment_year(self, org: str, cid: str) -> int:
        """The fiscal year a commitment belongs to now (its own, or the one it was carried into)."""
        return self.carried_to.get((org, cid), self.opened_by[(org, cid)].event.fiscal_year)

    def _judge_close(self, close: YearClose, side: str | None) -> str:
        if side is None:
            return "wrong_topic"  # a close is one side's: only its topic says which
        org, year = close.org_code, close.fiscal_year
        earlier = self.by_id.get((org, side, close.event_id))
        if earlier is not None:
            return "duplicate" if earlier.event == close else "event_id_conflict"
        if year <= self.closed.get((org, side), -1):
            return "period_closed"
        moved: dict[PosKey, int] = {}
        for (pk, s), amount in self.share.items():
            if s == side and pk[0] == org and pk[2] <= year and amount:
                moved[pk] = amount
        deltas: list[Delta] = [(pk, -amount, 0) for pk, amount in moved.items()]
        into: dict[PosKey, int] = {}
        for (_, acc, _), amount in moved.items():
            into[(org, acc, year + 1)] = into.get((org, acc, year + 1), 0) + amount
        deltas += [(pk, amount, 0) for pk, amount in into.items() if amount]
        lapses: list[Accepted] = []
        if side == "expenditure":
            for o, cid in sorted(self.opened_by):
                if (
                    o == org
                    and self._commitment_year(org, cid) <= year
                    and (left := self._open_amount(org, cid))
                ):
                    pk = (org, self._commitment_account(org, cid), self._commitment_year(org, cid))
                    lapses.append(Accepted(close, [(pk, 0, -left)], left, lapse_of=cid))
        if not self._accept(Accepted(close, deltas), side):
            return "position_out_of_range"
        for lapse in lapses:
            self.open_total[lapse.deltas[0][0]] -= lapse.released
            self.log.append(lapse)
            self.lapsed.add((org, lapse.lapse_of or ""))
        self.closed[(org, side)] = year
        return "applied"

    def _judge_reversal(self, ev: Event, reverses: str) -> str:
        org = ev.org_code
        if ev.kind == "commitment_carry_forward":
            return "reversal_not_possible"
        target = self.by_id.get((org, side_of(ev.kind), reverses))
        if target is None:
            return "unknown_reversal_target"
        t = target.event
        if not isinstance(t, Event):  # a year's close: no event of the reversal's kind (as the ledger)
            return "reversal_mismatch"
        if t.reverses is not None:
            return "reversal_not_possible"  # a reversal cannot be reversed
        if target.reversed_by is not None:
            return "already_reversed"
        same = (
            t.kind == ev.kind
            and t.account == ev.account
            and t.amount == ev.amount
            and t.commitment_id == ev.commitment_id
            and (t.kind != "transfer" or t.to_account == ev.to_account)
        )
        if not same:
            return "reversal_mismatch"
        if (
            t.kind == "commitment"
            and t.commitment_id is not None
            and (self.consumers.get((org, t.commitment_id)) or (org, t.commitment_id) in self.lapsed)
        ):
            return "reversal_not_possible"  # paid, cancelled (even partially), carried or lapsed
        undo = [(pk, -cash, -committed) for pk, cash, committed in target.deltas]
        if not self._accept(Accepted(ev, undo)):
            return "position_out_of_range"
        target.reversed_by = ev.event_id
        return "applied"

    def _accept(self, rec: Accepted, side: str | None = None) -> bool:
        """Record an accepted event, unless it breaks the bound (then nothing is recorded)."""
        side = side or side_of(rec.event.kind)
        for pk, dc, dm in rec.deltas:
            if abs(self.share.get((pk, side), 0) + dc) > MAX_SIDE_TOTAL:
                return False
            if self.open_total.get(pk, 0) + dm > MAX_SIDE_TOTAL:
                return False
        for pk, dc, dm in rec.deltas:
            self.share[(pk, side)] = self.share.get((pk, side), 0) + dc
            self.open_total[pk] = self.open_total.get(pk, 0) + dm
        self.log.append(rec)
        self.by_id[(rec.event.org_code, side, rec.event.event_id)] = rec
        return True

    # -- results: derived from the accepted log only, by summation ----------------------------

    def positions(self) -> dict[PosKey, tuple[int, int]]:
        """(cash, committed) of every position any accepted event touched."""
        cash: dict[PosKey, int] = {}
        committed: dict[PosKey, int] = {}
        for rec in self.log:
            for pk, dc, dm in rec.deltas:
                cash[pk] = cash.get(pk, 0) + dc
                committed[pk] = committed.get(pk, 0) + dm
        return {pk: (cash[pk], committed[pk]) for pk in cash}

    def versions(self) -> dict[PosKey, int]:
        """Number of accepted events (reversals included) that touched each position."""
        out: dict[PosKey, int] = {}
        for rec in self.log:
            for pk in {d[0] for d in rec.deltas}:
                out[pk] = out.get(pk, 0) + 1
        return out

    def counts(self) -> Counts:
        """{"applied": n, "duplicate": n, "rejected": {reason: n}}."""
        rejected: dict[str, int] = {}
        applied = duplicate = 0
        for o in self.outcomes:
            if o == "applied":
                applied += 1
            elif o == "duplicate":
                duplicate += 1
            else:
                rejected[o] = rejected.get(o, 0) + 1
        return {"applied": applied, "duplicate": duplicate, "rejected": rejected}


def fold(
    messages: Iterable[bytes | tuple], max_bytes: int = 8192
) -> tuple[dict[PosKey, tuple[int, int]], Counts]:
    """Fold an ordered stream of messages.

    Each item is the raw message value (bytes), or a tuple ``(value, side)`` or
    ``(value, side, key)`` where side is "revenue", "expenditure" or None (topic unknown) and key
    the Kafka message key (None: not checked). Returns (positions, counts): positions maps
    (org_code, account, fiscal_year) -> (cash, committed); counts is
    {"applied": n, "duplicate": n, "rejected": {reason: n}}. ``wrong_partition`` is not judged
    (the reference does not know partitions).
    """
    ref = Reference(max_bytes=max_bytes)
    ref.feed_all(messages)
    return ref.positions(), ref.counts()
