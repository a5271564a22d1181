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
* an event_id already accepted for the government on the same side (revenue: receipts and
  expected receipts; expenditure: every other kind): same content -> duplicate, else rejected. The two sides have
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

The known future flows (contract version 3) move neither cash nor committed; each counts as an
event of its position (a delta of 0, 0):

* payment_order: an order against an open commitment (same account and year, else
  unknown_commitment / commitment_mismatch), at most the commitment's open amount not already
  ordered (order_exceeds_commitment). Its event_id names the order.
* payment with order_id (unknown: unknown_order; another commitment's or a withdrawn order:
  order_mismatch) executes min(amount, the order's open amount) of it.
* what is ordered never exceeds what is open: after a payment or a cancel the commitment's orders
  are cut to its open amount, the latest pay_date first (then the greatest order id).
* an order follows its commitment into the next year (carry-forward) and out at its lapse.
* every amount an event took from an order (executed or cut) is recorded with the event; an
  order's open amount is its amount less what the events not reversed took, so reversing one
  gives back what it took. An order is withdrawn by its reversal only if no payment ever
  executed any of it and it is whole (else reversal_not_possible); nor is an order, or an event
  that took from one, reversed once its commitment was carried into another year.
* a commitment with open orders cannot be reversed (reversal_not_possible): nothing would
  remain for the orders to be a part of.
* expected_receipt: opens or revises schedule schedule_id (same account, year and category as
  its first, else schedule_mismatch); the revisions not reversed stack up, the latest counts.
  Only the latest can be reversed (it restores the one before; else reversal_not_possible).
* receipt with schedule_id (unknown: unknown_schedule; else the same match, schedule_mismatch):
  cash as any receipt's; the schedule's open amount is the latest revision's amount less what
  the receipts not reversed brought, never below 0.
* a reversal must repeat the original's order_id and schedule_id when it names them.

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
    # what this event took from payment orders, (order id, amount): its execution of its
    # order_id first (``executed`` of it), then the cuts that kept the orders within what is open
    took: list[tuple[str, int]] = field(default_factory=list)
    executed: int = 0


def _event(rec: Accepted) -> Event:
    """The event of a record that is no close (an order, a payment, a receipt ...)."""
    assert isinstance(rec.event, Event)
    return rec.event


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
    # (org, order id) -> the accepted payment_order; (org, commitment_id) -> its payment orders
    orders: dict[tuple[str, str], Accepted] = field(default_factory=dict)
    orders_of: dict[tuple[str, str], list[Accepted]] = field(default_factory=dict)
    # (org, schedule_id) -> every accepted expected_receipt and receipt naming it, in order
    schedule_log: dict[tuple[str, str], list[Accepted]] = field(default_factory=dict)
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
        released = executed = 0
        took: list[tuple[str, int]] = []
        kind = ev.kind
        if kind == "receipt":
            if ev.schedule_id is not None and (bad := self._schedule_refusal(ev)) is not None:
                return bad
            deltas = [(here, amount, 0)]
        elif kind == "expected_receipt":
            assert ev.schedule_id is not None
            if (org, ev.schedule_id) in self.schedule_log and (bad := self._schedule_refusal(ev)) is not None:
                return bad
            deltas = [(here, 0, 0)]
        elif kind == "transfer":
            assert ev.to_account is not None
            deltas = [(here, -amount, 0), ((org, ev.to_account, fy), amount, 0)]
        elif kind == "commitment":
            assert ev.commitment_id is not None
            if (org, ev.commitment_id) in self.opened_by:
                return "commitment_id_reused"
            deltas = [(here, 0, amount)]
        elif kind == "payment" and ev.commitment_id is None:  # not against a commitment
            deltas = [(here, -amount, 0)]
        else:  # names a commitment: carry-forward, payment order, payment, cancel
            cid = ev.commitment_id
            assert cid is not None
            if (org, cid) not in self.opened_by:
                return "unknown_commitment"
            if (self._commitment_account(org, cid), self._commitment_year(org, cid)) != (acc, fy):
                return "commitment_mismatch"
            left = self._open_amount(org, cid)
            if kind == "commitment_carry_forward":
                if left != amount:
                    return "commitment_mismatch"
                deltas = [(here, 0, -amount), ((org, acc, fy + 1), 0, amount)]
            elif kind == "payment_order":
                if amount > left - sum(self._orders_open(org, cid).values()):
                    return "order_exceeds_commitment"
                deltas = [(here, 0, 0)]
            else:  # payment or commitment_cancel
                if ev.order_id is not None:
                    order = self.orders.get((org, ev.order_id))
                    if order is None:
                        return "unknown_order"
                    if _event(order).commitment_id != cid or order.reversed_by is not None:
                        return "order_mismatch"
                released = min(amount, left)
                executed, took = self._take(org, cid, ev.order_id, amount, left - released)
                deltas = [(here, -amount if kind == "payment" else 0, -released)]

        rec = Accepted(ev, deltas, released, took=took, executed=executed)
        if not self._accept(rec):
            return "position_out_of_range"
        if kind == "commitment":
            assert ev.commitment_id is not None
            self.opened_by[(org, ev.commitment_id)] = rec
        elif kind == "payment_order":
            assert ev.commitment_id is not None
            self.orders[(org, ev.event_id)] = rec
            self.orders_of.setdefault((org, ev.commitment_id), []).append(rec)
        elif ev.commitment_id is not None:
            self.consumers.setdefault((org, ev.commitment_id), []).append(rec)
            if kind == "commitment_carry_forward":
                self.carried_to[(org, ev.commitment_id)] = fy + 1
        if ev.schedule_id is not None:
            self.schedule_log.setdefault((org, ev.schedule_id), []).append(rec)
        return "applied"

    # -- the known flows: orders and schedules, recomputed from the accepted history ------------

    def _order_open(self, org: str, oid: str) -> int:
        """What is still open of a payment order: its amount less what the events not reversed
        took from it; nothing once withdrawn or once its commitment lapsed."""
        order = self.orders[(org, oid)]
        cid = _event(order).commitment_id or ""
        if order.reversed_by is not None or (org, cid) in self.lapsed:
            return 0
        left = _event(order).amount
        for c in self.consumers.get((org, cid), []):
            if c.reversed_by is None:
                left -= sum(n for o, n in c.took if o == oid)
        assert left >= 0, (org, oid, left)
        return left

    def _orders_open(self, org: str, cid: str) -> dict[str, int]:
        """The open payment orders of a commitment: order id -> open amount (> 0)."""
        out = {}
        for order in self.orders_of.get((org, cid), []):
            if n := self._order_open(org, order.event.event_id):
                out[order.event.event_id] = n
        return out

    def _take(
        self, org: str, cid: str, oid: str | None, amount: int, left: int
    ) -> tuple[int, list[tuple[str, int]]]:
        """What a payment or cancel takes from the commitment's orders: ``oid``'s execution (at
        most its open amount), then cuts down to ``left``, the commitment's open amount after
        it: the latest pay date first, then the greatest order id."""
        open_ = self._orders_open(org, cid)
        took: list[tuple[str, int]] = []
        executed = 0
        if oid is not None and (executed := min(amount, open_.get(oid, 0))):
            took.append((oid, executed))
            open_[oid] -= executed
        excess = sum(open_.values()) - left
        for _day, o in sorted(((self._pay_date(org, o), o) for o, n in open_.items() if n), reverse=True):
            if excess <= 0:
                break
            n = min(open_[o], excess)
            took.append((o, n))
            excess -= n
        return executed, took

    def _pay_date(self, org: str, oid: str) -> str:
        pay_date = _event(self.orders[(org, oid)]).pay_date
        assert pay_date is not None
        return pay_date.isoformat()

    def _schedule_refusal(self, ev: Event) -> str | None:
        """Why ``ev`` cannot name its schedule: none with that id (a receipt), or one of another
        account, fiscal year or category."""
        history = self.schedule_log.get((ev.org_code, ev.schedule_id or ""))
        if not history:
            return "unknown_schedule"
        first = _event(history[0])  # the expected receipt that opened it
        if (first.account, first.fiscal_year, first.category) != (ev.account, ev.fiscal_year, ev.category):
            return "schedule_mismatch"
        return None

    def _revisions(self, org: str, sid: str) -> list[Event]:
        """A schedule's revisions not reversed, in order (the latest last)."""
        out = []
        for rec in self.schedule_log.get((org, sid), []):
            if rec.event.kind == "expected_receipt" and rec.reversed_by is None:
                out.append(_event(rec))
        return out

    def _schedule_open(self, org: str, sid: str) -> int:
        """What is still expected: the latest revision's amount less what the receipts not
        reversed brought, never below 0 (0 once every revision was reversed)."""
        revisions = self._revisions(org, sid)
        if not revisions:
            return 0
        arrived = sum(
            _event(rec).amount
            for rec in self.schedule_log[(org, sid)]
            if rec.event.kind == "receipt" and rec.reversed_by is None
        )
        return max(0, revisions[-1].amount - arrived)

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
            and (ev.order_id is None or ev.order_id == t.order_id)
            and (ev.schedule_id is None or ev.schedule_id == t.schedule_id)
        )
        if not same:
            return "reversal_mismatch"
        if t.fiscal_year <= self.closed.get((org, side_of(ev.kind)), -1):
            return "period_closed"  # a final year stays final
        cid = t.commitment_id
        if t.kind == "commitment" and cid is not None:
            if self.consumers.get((org, cid)) or (org, cid) in self.lapsed:
                return "reversal_not_possible"  # paid, cancelled (even partially), carried or lapsed
            if self._orders_open(org, cid):
                return "reversal_not_possible"  # its open orders would be a part of nothing
        if t.kind != "commitment" and cid is not None and self._commitment_year(org, cid) != t.fiscal_year:
            return "reversal_not_possible"  # what it released (and its orders) moved with the commitment
        if t.kind == "payment_order" and (
            self._order_open(org, t.event_id) != t.amount
            or any(
                c.executed and _event(c).order_id == t.event_id
                for c in self.consumers.get((org, cid or ""), [])
            )
        ):
            return "reversal_not_possible"  # executed (ever) or cut: cancel the commitment instead
        if t.kind == "expected_receipt":
            latest = self._revisions(org, t.schedule_id or "")
            if latest[-1].event_id != t.event_id:  # it is not reversed, so there is one
                return "reversal_not_possible"  # an older revision: revise again instead
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

    def ordered(self) -> dict[PosKey, int]:
        """Open payment orders of every position any accepted event touched (0 for most): each
        commitment's open orders count where the commitment is now (its account, its year or
        the one it was carried into)."""
        out = dict.fromkeys(self.positions(), 0)
        for (org, cid), orders in self.orders_of.items():
            pk = (org, self._commitment_account(org, cid), self._commitment_year(org, cid))
            out[pk] = out.get(pk, 0) + sum(self._order_open(org, o.event.event_id) for o in orders)
        return out

    def orders_open(self) -> dict[tuple[str, str], int]:
        """(org, order id) -> what is still open of every accepted payment order."""
        return {key: self._order_open(*key) for key in self.orders}

    def schedules(self) -> dict[tuple[str, str], int]:
        """(org, schedule_id) -> what is still expected of every schedule (0 once withdrawn or
        over-realised). A schedule of a closed year is kept as it was, though no longer
        expected: ``closed`` says which years are."""
        return {key: self._schedule_open(*key) for key in self.schedule_log}

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
