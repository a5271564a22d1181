"""The ledger fold: pure, no I/O. Applies validated events to per-account positions.

A position is kept per (government, account, fiscal year): ``cash`` (bank truth), ``committed``
(open commitments not yet paid), ``version`` (number of events that changed it) and ``received``
(the revenue side's net share of ``cash``; the rest is the expenditure side's). Commitments
behave like two-phase transfers: opened by ``commitment``, consumed by ``payment``, released by
``commitment_cancel``. Every applied event is journalled with its exact effect, which makes
duplicates detectable, reversals exact, and balances as of any instant re-derivable.

The two input topics are folded independently: event ids are unique per government *and side*
(a receipt and a payment may share an id), every reference (a reversal, a commitment) stays on
its own side, and the bound on positions is checked per side (``MAX_SIDE_TOTAL``). So no verdict
depends on how the two topics' records interleave, and a rebuild reproduces the live state.

The fiscal year (``docs/design.md``, "The fiscal year"): a ``commitment_carry_forward`` moves a
commitment's open amount into the next year; a ``fiscal_year_close`` (a control record on both
topics) closes a year for its side: the side's share of the year's cash carries into the next
year as an opening entry, and (expenditure) every commitment still open lapses, each journalled
under a lapse id (``lapse_id``). After its close a side refuses the year's events
(``period_closed``). Everything a close does depends on that side's own state only.

The fold sees state as plain dicts. In production an entry absent from them is looked up in the
store through ``load_journal``/``load_commitment`` (point reads, no other I/O); in tests the
dicts simply hold everything. A key absent from both means "not in state".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, TypeVar

import msgspec

from cashpos.names import CLOSE_KIND, EXPENDITURE, REVENUE, side_of_kind, side_of_topic
from state.retention import event_digest
from streams.contract import MAX_SIDE_TOTAL, Event, Record, Rejection, YearClose, decode, epoch_ms

K = TypeVar("K")
V = TypeVar("V")
PosKey = tuple[str, str, int]  # (org_code, account, fiscal_year)
# (org_code, scoped id): ids are unique per government and side, the scoped id is the event_id
# behind its side's tag (``scoped_id``). Index rows and the store's journal keys use it too.
EventKey = tuple[str, str]
CommitKey = tuple[str, str]  # (org_code, commitment_id)
OrderKey = tuple[str, str]  # (org_code, order id = the payment_order's event_id)
ScheduleKey = tuple[str, str]  # (org_code, schedule_id)
# The record an event came from: topic, partition, offset, and its record timestamp (epoch ms: the
# known-at axis of the history, state/history.py).
Source = tuple[str, int, int, int]

REVENUE_TAG: Final = "r:"
EXPENDITURE_TAG: Final = "e:"
LAPSE_TAG: Final = "l:"  # not a side's: a lapse is no source event, its id can match none


def scoped_id(kind: str, event_id: str) -> str:
    """The journal's name for an event: its id in its side's scope."""
    return (REVENUE_TAG if side_of_kind(kind) == REVENUE else EXPENDITURE_TAG) + event_id


def side_scoped_id(side: str, event_id: str) -> str:
    """The journal's name for an event read from ``side``'s topic (a close has one per side)."""
    return (REVENUE_TAG if side == REVENUE else EXPENDITURE_TAG) + event_id


def unscoped_id(scoped: str) -> str:
    """The event_id a source system sent, from a journal name (``scoped_id``)."""
    return scoped[2:]


def lapse_id(close_id: str, commitment_id: str) -> str:
    """The journal's name for a commitment's lapse at a close (length-prefixed: unambiguous)."""
    return f"{LAPSE_TAG}{len(close_id)}:{close_id}:{commitment_id}"


APPLIED: Final = "applied"
DUPLICATE: Final = "duplicate"
Outcome = str | Rejection


@dataclass(slots=True)
class Position:
    cash: int = 0
    committed: int = 0
    version: int = 0
    last_event_ms: int = 0  # occurred_at of the latest event applied, epoch ms
    received: int = 0  # the revenue side's net share of cash (receipts less their reversals)
    # Open payment orders (part of ``committed``): not an effect of the index rows, so an as-of
    # answer rebuilt from them has no ``ordered``; the live position does.
    ordered: int = 0

    @property
    def available(self) -> int:
        return self.cash - self.committed


class Commitment(msgspec.Struct, array_like=True):
    account: str
    fiscal_year: int
    amount: int
    open: int
    due_date: str | None
    event_id: str
    consumed: bool = False  # a payment or cancel touched it: a reversal can no longer be exact
    reversed: bool = False
    ordered: int = 0  # its open payment orders' total, never above ``open``
    orders: list[str] = []  # the ids of its open payment orders


class Order(msgspec.Struct, array_like=True):
    """A payment order (지급명령) against a commitment: the most certain outflow, due ``pay_date``.
    Executed by payments naming it; trimmed when its commitment's open amount falls below what
    is ordered (latest pay date first); gone when its commitment lapses."""

    commitment_id: str
    account: str
    fiscal_year: int
    amount: int
    open: int
    pay_date: str  # ISO date
    event_id: str
    executed: bool = False  # a payment executed part of it: its reversal would not be exact
    reversed: bool = False


# One revision of an expected receipt: (event_id, amount, expected_date ISO, certainty).
Revision = tuple[str, int, str, str]


class Schedule(msgspec.Struct, array_like=True):
    """An expected receipt (세입 예정): its revisions, the latest last (none: withdrawn), and what
    receipts naming it have realised so far."""

    account: str
    fiscal_year: int
    category: str
    revisions: list[Revision]
    realised: int = 0

    @property
    def open(self) -> int:
        """What is still expected: the latest amount less what arrived, never below 0."""
        return max(0, self.revisions[-1][1] - self.realised) if self.revisions else 0


# One position change caused by one event (a transfer has two):
# (account, fiscal_year, cash delta, committed delta)
Effect = tuple[str, int, int, int]


class Journal(msgspec.Struct, array_like=True):
    """What an applied event did. ``raw`` is the message exactly as received."""

    raw: bytes
    kind: str
    account: str
    fiscal_year: int
    amount: int
    occurred_ms: int
    effects: list[Effect]
    commitment_id: str | None = None
    released: int = 0  # commitment amount this event released (payment, cancel) or restored
    reverses: str | None = None
    reversed_by: str | None = None
    source: tuple[str, int, int, int] | None = None  # topic, partition, offset, record timestamp ms
    # The known flows (contract version 3): the order a payment executed and how much of it; the
    # orders a payment or cancel trimmed (id, amount); the schedule a receipt realised or an
    # expected receipt revised. A reversal gives each back.
    order_id: str | None = None
    order_released: int = 0
    trimmed: list[tuple[str, int]] = []
    schedule_id: str | None = None
    # A retired year's entry (state/retention.py) keeps no ``raw``, only its event's digest: the
    # duplicate test still tells a copy from a conflict.
    digest: bytes | None = None


_enc = msgspec.msgpack.Encoder()
_dec_journal = msgspec.msgpack.Decoder(Journal)


@dataclass(slots=True)
class Done:
    """What an event the fold accepted does (``Ledger._apply`` journals it)."""

    effects: list[Effect]
    released: int = 0  # commitment amount released (payment, cancel) or restored
    order_id: str | None = None
    order_released: int = 0
    trimmed: list[tuple[str, int]] = field(default_factory=list)
    schedule_id: str | None = None


@dataclass(slots=True)
class Changes:
    """What one batch changed: the store writes exactly this, atomically with the offsets.
    The changed positions are the keys of ``index``."""

    journal: dict[EventKey, Journal | bytes] = field(default_factory=dict)
    commitments: dict[CommitKey, Commitment] = field(default_factory=dict)
    orders: dict[OrderKey, Order] = field(default_factory=dict)
    schedules: dict[ScheduleKey, Schedule] = field(default_factory=dict)
    # per changed position: [(occurred_ms, scoped id, cash delta, committed delta), ...]
    index: dict[PosKey, list[tuple[int, str, int, int]]] = field(default_factory=dict)
    closed: dict[tuple[str, str], int] = field(default_factory=dict)  # (org, side) -> fiscal year
    # the duplicates dropped, for their fate (state/fate_projection.py): (org, scoped id, source)
    copies: list[tuple[str, str, Source | None]] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    last_event_ms: int = 0


@dataclass(slots=True)
class Ledger:
    positions: dict[PosKey, Position] = field(default_factory=dict)
    # Journal entries as stored (msgpack bytes, decoded only when a duplicate or a reversal
    # needs one) or as Journal objects; the store writes bytes as they are.
    journal: dict[EventKey, Journal | bytes] = field(default_factory=dict)
    commitments: dict[CommitKey, Commitment] = field(default_factory=dict)
    orders: dict[OrderKey, Order] = field(default_factory=dict)
    schedules: dict[ScheduleKey, Schedule] = field(default_factory=dict)
    # The last fiscal year each side closed, per government: side -> {org: year}.
    closed: dict[str, dict[str, int]] = field(default_factory=lambda: {REVENUE: {}, EXPENDITURE: {}})
    changes: Changes = field(default_factory=Changes)
    # Where an entry absent from the dicts is looked up (the store, one key at a time); without
    # them the dicts hold everything. The worker clears the dicts after each batch's write.
    load_journal: Callable[[EventKey], bytes | None] | None = None
    load_commitment: Callable[[CommitKey], Commitment | None] | None = None
    load_order: Callable[[OrderKey], Order | None] | None = None
    load_schedule: Callable[[ScheduleKey], Schedule | None] | None = None
    # The same lookup for the C kernel (state/partition.py): the store's raw get and the
    # journal keys' prefix (key = prefix + org + NUL + scoped id, as the store lays them out).
    journal_source: tuple[Callable[[bytes], bytes | None], bytes] | None = None
    # Every commitment of a government in the store (a close's lapses), by commitment id.
    scan_commitments: Callable[[str], Iterator[tuple[str, Commitment]]] | None = None

    def entry(self, key: EventKey) -> Journal | None:
        v = self.journal.get(key)
        if v is None and (self.load_journal is None or (v := self.load_journal(key)) is None):
            return None
        if isinstance(v, bytes):
            v = self.journal[key] = _dec_journal.decode(v)
        return v

    def commitment(self, key: CommitKey) -> Commitment | None:
        return _lookup(self.commitments, key, self.load_commitment)

    def order(self, key: OrderKey) -> Order | None:
        return _lookup(self.orders, key, self.load_order)

    def schedule(self, key: ScheduleKey) -> Schedule | None:
        return _lookup(self.schedules, key, self.load_schedule)

    def take_changes(self) -> Changes:
        out, self.changes = self.changes, Changes()
        return out

    # -- the fold ---------------------------------------------------------------------------

    def update(self, ev: Record, raw: bytes, source: Source | None = None) -> Outcome:
        """Apply one validated event. Returns APPLIED, DUPLICATE or a Rejection; never raises."""
        for _, out in self.fold(((ev, raw, source),)):
            return out
        return APPLIED

    def fold(self, items: Iterable[tuple[Record, bytes, Source | None]]) -> list[tuple[int, Outcome]]:
        """Apply events in order, as ``update`` would one by one. Returns (position in
        ``items``, outcome) for each event not APPLIED (duplicates and rejections).

        The bulk of the stream — receipts and payments without a commitment, not seen before,
        not reversals — takes a loop with everything it touches in local variables: one cash
        effect, and the journal entry encoded straight from a tuple in Journal's order. Every
        other event takes ``_apply``."""
        positions = self.positions
        journal = self.journal
        ch = self.changes
        index = ch.index
        ch_journal = ch.journal
        encode = _enc.encode
        to_ms = epoch_ms
        load = self.load_journal
        closed_rev, closed_exp = self.closed[REVENUE], self.closed[EXPENDITURE]
        not_applied: list[tuple[int, Outcome]] = []
        applied = 0
        last_ms = ch.last_event_ms
        i = -1
        for ev, raw, source in items:
            i += 1
            org = ev.org_code
            if type(ev) is YearClose:  # rare: a year's close is never the fast loop's
                ch.applied += applied
                ch.last_event_ms = last_ms
                applied = 0
                out = self._apply(ev, raw, source, (org, EXPENDITURE_TAG + ev.event_id))
                last_ms = ch.last_event_ms
                if out is not APPLIED:
                    not_applied.append((i, out))
                continue
            kind = ev.kind
            if kind == "receipt":
                dc = ev.amount if ev.schedule_id is None else 0
                sid = REVENUE_TAG + ev.event_id
            elif kind == "expected_receipt":
                dc = 0
                sid = REVENUE_TAG + ev.event_id
            else:
                dc = -ev.amount if kind == "payment" and ev.commitment_id is None else 0
                sid = EXPENDITURE_TAG + ev.event_id
            key = (org, sid)
            fast = dc and ev.reverses is None and key not in journal
            if fast and (closed_rev or closed_exp):
                done = (closed_rev if dc > 0 else closed_exp).get(org)
                fast = done is None or ev.fiscal_year > done
            if fast and load is not None:
                stored = load(key)
                if stored is not None:  # applied before: a duplicate or a conflict
                    journal[key] = stored
                    fast = False
            if fast:
                pk = (org, ev.account, ev.fiscal_year)
                pos = positions.get(pk)
                if pos is not None and (
                    pos.received + dc > MAX_SIDE_TOTAL
                    if dc > 0
                    else pos.cash - pos.received + dc < -MAX_SIDE_TOTAL
                ):
                    fast = False  # past the bound: _apply names it
            if not fast:
                ch.applied += applied
                ch.last_event_ms = last_ms
                applied = 0
                out = self._apply(ev, raw, source, key)
                last_ms = ch.last_event_ms
                if out is not APPLIED:
                    not_applied.append((i, out))
                continue
            ms = to_ms(ev.occurred_at)
            account = ev.account
            fy = ev.fiscal_year
            if pos is None:
                pos = positions[pk] = Position()
            pos.cash += dc
            if dc > 0:
                pos.received += dc
            pos.version += 1
            pos.last_event_ms = max(pos.last_event_ms, ms)
            rows = index.get(pk)
            if rows is None:
                rows = index[pk] = []
            rows.append((ms, sid, dc, 0))
            journal[key] = ch_journal[key] = encode(
                (raw, kind, account, fy, ev.amount, ms, [(account, fy, dc, 0)], None, 0, None, None, source)
            )
            applied += 1
            last_ms = max(last_ms, ms)
        ch.applied += applied
        ch.last_event_ms = last_ms
        return not_applied

    def _apply(self, ev: Record, raw: bytes, source: Source | None, key: EventKey) -> Outcome:
        """Every event the fast loop of ``fold`` does not take."""
        side = side_of_kind(ev.kind)
        if ev.__class__ is YearClose:  # on both topics: its side is its topic's
            if source is None:
                return self._reject("wrong_topic", "a fiscal_year_close is read from an input topic")
            side = side_of_topic(source[0])
            key = (ev.org_code, (REVENUE_TAG if side == REVENUE else EXPENDITURE_TAG) + ev.event_id)
        seen = self.entry(key)
        if seen is not None:
            if (
                seen.raw == raw
                or (seen.digest is not None and seen.digest == event_digest(ev))
                or (seen.raw and decode(seen.raw, max_bytes=len(seen.raw)) == ev)
            ):
                self.changes.duplicates += 1
                self.changes.copies.append((key[0], key[1], source))
                return DUPLICATE
            return self._reject("event_id_conflict", f"{ev.event_id} was applied with other content")
        done = self.closed[side].get(ev.org_code)
        if done is not None and ev.fiscal_year <= done:
            return self._reject(
                "period_closed", f"fiscal year {ev.fiscal_year} is closed (the {side} side closed {done})"
            )
        if ev.__class__ is YearClose:
            return self._close(ev, side, raw, source, key)
        assert isinstance(ev, Event)
        result = self._reversal(ev) if ev.reverses is not None else self._original(ev)
        if type(result) is Rejection:
            self.changes.rejected += 1
            return result
        assert type(result) is Done
        ms = epoch_ms(ev.occurred_at)
        entry = Journal(
            raw,
            ev.kind,
            ev.account,
            ev.fiscal_year,
            ev.amount,
            ms,
            result.effects,
            ev.commitment_id,
            result.released,
            ev.reverses,
            None,
            source,
            result.order_id,
            result.order_released,
            result.trimmed,
            result.schedule_id,
        )
        self._post(ev.org_code, key[1], result.effects, ms, entry, side == REVENUE)
        return APPLIED

    def _reject(self, reason: str, detail: str) -> Rejection:
        self.changes.rejected += 1
        return Rejection(reason, detail)

    def _out_of_range(self, org: str, revenue: bool, effects: list[Effect]) -> Rejection | None:
        """The bound (``MAX_SIDE_TOTAL``) on the side's share of each position these effects
        touch. Called before anything is changed, so a refused event leaves no trace."""
        for account, fy, dc, dm in effects:
            pos = self.positions.get((org, account, fy))
            cash, received, committed = (0, 0, 0) if pos is None else (pos.cash, pos.received, pos.committed)
            share = received + dc if revenue else cash - received + dc
            if not -MAX_SIDE_TOTAL <= share <= MAX_SIDE_TOTAL or committed + dm > MAX_SIDE_TOTAL:
                return Rejection(
                    "position_out_of_range",
                    f"{account}/{fy} would leave ±{MAX_SIDE_TOTAL} on the "
                    f"{'revenue' if revenue else 'expenditure'} side",
                )
        return None

    def _original(self, ev: Event) -> Done | Rejection:
        acc, fy, amt = ev.account, ev.fiscal_year, ev.amount
        kind = ev.kind
        org = ev.org_code
        if kind == "receipt":
            effects = [(acc, fy, amt, 0)]
            if ev.schedule_id is not None:
                return self._realise(ev, effects)
            return self._out_of_range(org, True, effects) or Done(effects)
        if kind == "expected_receipt":
            return self._expect(ev)
        if kind == "payment_order":
            return self._order(ev)
        if kind == "transfer":
            assert ev.to_account is not None
            effects = [(acc, fy, -amt, 0), (ev.to_account, fy, amt, 0)]
            return self._out_of_range(org, False, effects) or Done(effects)
        if kind == "commitment":
            ck = (org, ev.commitment_id or "")
            if self.commitment(ck) is not None:
                return Rejection("commitment_id_reused", f"commitment {ev.commitment_id} exists")
            effects = [(acc, fy, 0, amt)]
            if (bad := self._out_of_range(org, False, effects)) is not None:
                return bad
            due = ev.due_date.isoformat() if ev.due_date else None
            self._put_commitment(ck, Commitment(acc, fy, amt, amt, due, ev.event_id))
            return Done(effects)
        if kind == "commitment_carry_forward":
            return self._carry_forward(ev)
        # payment or commitment_cancel
        if ev.commitment_id is None:  # a payment not against a commitment
            effects = [(acc, fy, -amt, 0)]
            return self._out_of_range(org, False, effects) or Done(effects)
        ck = (org, ev.commitment_id)
        c = self.commitment(ck)
        if c is None:
            return Rejection("unknown_commitment", f"no commitment {ev.commitment_id}")
        if c.account != acc or c.fiscal_year != fy:
            return Rejection(
                "commitment_mismatch",
                f"commitment {ev.commitment_id} is on {c.account}/{c.fiscal_year}",
            )
        order: Order | None = None
        if ev.order_id is not None:
            order = self.order((org, ev.order_id))
            if order is None:
                return Rejection("unknown_order", f"no payment order {ev.order_id}")
            if order.commitment_id != ev.commitment_id or order.reversed:
                return Rejection(
                    "order_mismatch",
                    f"payment order {ev.order_id} is "
                    + ("reversed" if order.reversed else f"against commitment {order.commitment_id}"),
                )
        released = min(amt, c.open)
        effects = [(acc, fy, -amt if kind == "payment" else 0, -released)]
        if (bad := self._out_of_range(org, False, effects)) is not None:
            return bad
        done = Done(effects, released)
        c.open -= released
        c.consumed = True
        if order is not None and ev.order_id is not None:
            executed = min(amt, order.open)
            if executed:
                self._order_open(org, c, ev.order_id, order, -executed)
                order.executed = True
            done.order_id, done.order_released = ev.order_id, executed
        done.trimmed = self._trim(org, c)
        self._put_commitment(ck, c)
        return done

    def _named_commitment(self, ev: Event) -> tuple[CommitKey, Commitment] | Rejection:
        """The commitment ``ev`` names, on the event's own account and fiscal year."""
        ck = (ev.org_code, ev.commitment_id or "")
        c = self.commitment(ck)
        if c is None:
            return Rejection("unknown_commitment", f"no commitment {ev.commitment_id}")
        if c.account != ev.account or c.fiscal_year != ev.fiscal_year:
            return Rejection(
                "commitment_mismatch", f"commitment {ev.commitment_id} is on {c.account}/{c.fiscal_year}"
            )
        return ck, c

    def _order(self, ev: Event) -> Done | Rejection:
        """A payment order: part of its commitment's open amount, to be paid on ``pay_date``."""
        org, acc, fy, amt = ev.org_code, ev.account, ev.fiscal_year, ev.amount
        found = self._named_commitment(ev)
        if type(found) is Rejection:
            return found
        assert type(found) is tuple
        ck, c = found
        if amt > c.open - c.ordered:
            return Rejection(
                "order_exceeds_commitment",
                f"commitment {ev.commitment_id} has {c.open - c.ordered} open and not ordered",
            )
        assert ev.pay_date is not None
        order = Order(ev.commitment_id or "", acc, fy, amt, 0, ev.pay_date.isoformat(), ev.event_id)
        self._order_open(org, c, ev.event_id, order, amt)
        self._put_commitment(ck, c)
        return Done([(acc, fy, 0, 0)])

    def _order_open(self, org: str, c: Commitment, oid: str, order: Order, delta: int) -> None:
        """Change an order's open amount by ``delta``, and with it its commitment's ``ordered``,
        its list of open orders and its position's ``ordered``."""
        was_open = order.open > 0
        order.open += delta
        c.ordered += delta
        if order.open > 0 and not was_open:
            c.orders.append(oid)
        elif order.open == 0 and was_open:
            c.orders.remove(oid)
        pk = (org, order.account, order.fiscal_year)
        pos = self.positions.get(pk)
        if pos is None:
            pos = self.positions[pk] = Position()
        pos.ordered += delta
        self.orders[(org, oid)] = order
        self.changes.orders[(org, oid)] = order

    def _trim(self, org: str, c: Commitment) -> list[tuple[str, int]]:
        """Keep what is ordered within the commitment's open amount: cut its orders, the latest
        pay date first (then the greatest id), and say what was cut."""
        cut: list[tuple[str, int]] = []
        if c.ordered <= c.open:
            return cut
        orders = [(oid, self.order((org, oid))) for oid in c.orders]
        for oid, o in sorted(orders, key=lambda x: (x[1].pay_date if x[1] else "", x[0]), reverse=True):
            if c.ordered <= c.open:
                break
            assert o is not None  # an open order of a commitment is in state
            n = min(o.open, c.ordered - c.open)
            self._order_open(org, c, oid, o, -n)
            cut.append((oid, n))
        return cut

    def _expect(self, ev: Event) -> Done | Rejection:
        """An expected receipt opens its schedule, or revises it (same schedule_id)."""
        org, acc, fy = ev.org_code, ev.account, ev.fiscal_year
        sk = (org, ev.schedule_id or "")
        sch = self.schedule(sk)
        if sch is not None and (sch.account, sch.fiscal_year, sch.category) != (acc, fy, ev.category):
            return Rejection(
                "schedule_mismatch",
                f"schedule {ev.schedule_id} is {sch.category} on {sch.account}/{sch.fiscal_year}",
            )
        assert ev.expected_date is not None and ev.certainty is not None and ev.category is not None
        revision = (ev.event_id, ev.amount, ev.expected_date.isoformat(), ev.certainty)
        if sch is None:
            sch = Schedule(acc, fy, ev.category, [])
        sch.revisions.append(revision)
        self._put_schedule(sk, sch)
        return Done([(acc, fy, 0, 0)], schedule_id=ev.schedule_id)

    def _realise(self, ev: Event, effects: list[Effect]) -> Done | Rejection:
        """A receipt naming its schedule: the cash as any receipt's; the schedule realised."""
        org = ev.org_code
        sk = (org, ev.schedule_id or "")
        sch = self.schedule(sk)
        if sch is None:
            return Rejection("unknown_schedule", f"no expected receipt {ev.schedule_id}")
        if (sch.account, sch.fiscal_year, sch.category) != (ev.account, ev.fiscal_year, ev.category):
            return Rejection(
                "schedule_mismatch",
                f"schedule {ev.schedule_id} is {sch.category} on {sch.account}/{sch.fiscal_year}",
            )
        if (bad := self._out_of_range(org, True, effects)) is not None:
            return bad
        sch.realised += ev.amount
        self._put_schedule(sk, sch)
        return Done(effects, schedule_id=ev.schedule_id)

    def _carry_forward(self, ev: Event) -> Done | Rejection:
        """이월: the commitment's whole open amount moves into the next fiscal year, same id."""
        org, acc, fy, amt = ev.org_code, ev.account, ev.fiscal_year, ev.amount
        found = self._named_commitment(ev)
        if type(found) is Rejection:
            return found
        assert type(found) is tuple
        ck, c = found
        if c.open != amt:
            return Rejection(
                "commitment_mismatch",
                f"commitment {ev.commitment_id} has {c.open} open; a carry-forward moves all of it",
            )
        effects = [(acc, fy, 0, -amt), (acc, fy + 1, 0, amt)]
        if (bad := self._out_of_range(org, False, effects)) is not None:
            return bad
        for oid in list(c.orders):  # its open orders move with it
            o = self.order((org, oid))
            assert o is not None
            n = o.open
            self._order_open(org, c, oid, o, -n)
            o.fiscal_year = fy + 1
            self._order_open(org, c, oid, o, n)
        c.fiscal_year = fy + 1
        c.consumed = True  # the original commitment can no longer be reversed exactly
        self._put_commitment(ck, c)
        return Done(effects, amt)

    def _close(self, ev: YearClose, side: str, raw: bytes, source: Source | None, key: EventKey) -> Outcome:
        """Close fiscal year ``ev.fiscal_year`` (and any earlier one still open) for ``side``:
        the side's share of each such position's cash carries into the next year of the same
        account, and (expenditure) each commitment still open lapses. Deterministic: accounts
        and commitments in sorted order; the lapses' ids derive from the close's."""
        org, n = ev.org_code, ev.fiscal_year
        revenue = side == REVENUE
        out: list[Effect] = []
        carry: dict[str, int] = {}
        for (o, acc, fy), pos in sorted(p for p in self.positions.items() if p[0][0] == org):
            share = pos.received if revenue else pos.cash - pos.received
            if fy <= n and share:
                out.append((acc, fy, -share, 0))
                carry[acc] = carry.get(acc, 0) + share
        lapses = (
            []
            if revenue
            else sorted((cid, c) for cid, c in self._commitments_of(org) if c.fiscal_year <= n and c.open)
        )
        into = [(acc, n + 1, amount, 0) for acc, amount in sorted(carry.items()) if amount]
        released = [(c.account, c.fiscal_year, 0, -c.open) for _, c in lapses]
        if (bad := self._out_of_range(org, revenue, into)) is not None:
            return self._reject(bad.reason, f"closing {n}: {bad.detail}")
        ms = epoch_ms(ev.occurred_at)
        for (cid, c), effect in zip(lapses, released, strict=True):
            lapse = Journal(
                b"", "lapse", c.account, c.fiscal_year, c.open, ms, [effect], cid, c.open, None, None, source
            )
            self._post(org, lapse_id(ev.event_id, cid), [effect], ms, lapse, False, count=False)
            for oid in list(c.orders):  # its payment orders lapse with it
                order = self.order((org, oid))
                assert order is not None
                self._order_open(org, c, oid, order, -order.open)
            c.open = 0
            c.consumed = True
            self._put_commitment((org, cid), c)
        effects = out + into
        entry = Journal(
            raw, CLOSE_KIND, "", n, sum(a for _, _, a, _ in into), ms, effects, None, 0, None, None, source
        )
        self._post(org, key[1], effects, ms, entry, revenue)
        self.closed[side][org] = n
        self.changes.closed[(org, side)] = n
        return APPLIED

    def _commitments_of(self, org: str) -> list[tuple[str, Commitment]]:
        """Every commitment of ``org``: those of this batch over those in the store."""
        found = dict(self.scan_commitments(org)) if self.scan_commitments is not None else {}
        found.update((cid, c) for (o, cid), c in self.commitments.items() if o == org)
        return list(found.items())

    def _reversal(self, ev: Event) -> Done | Rejection:
        if ev.kind == "commitment_carry_forward":
            return Rejection(
                "reversal_not_possible",
                "a carry-forward is not reversed; the commitment can be cancelled in its new fiscal year",
            )
        ok = (ev.org_code, scoped_id(ev.kind, ev.reverses or ""))
        orig = self.entry(ok)
        if orig is None:
            return Rejection("unknown_reversal_target", f"no applied event {ev.reverses}")
        if orig.reversed_by is not None:
            return Rejection("already_reversed", f"{ev.reverses} was reversed by {orig.reversed_by}")
        if orig.reverses is not None:
            return Rejection("reversal_not_possible", f"{ev.reverses} is itself a reversal")
        if (
            (orig.kind, orig.account, orig.amount) != (ev.kind, ev.account, ev.amount)
            or (ev.kind == "transfer" and orig.effects[1][0] != ev.to_account)
            or (orig.commitment_id != ev.commitment_id)
            or (ev.order_id is not None and ev.order_id != orig.order_id)
            or (ev.schedule_id is not None and ev.schedule_id != orig.schedule_id)
        ):
            return Rejection(
                "reversal_mismatch",
                f"{ev.reverses} was {orig.kind} {orig.account} {orig.amount}",
            )
        done = self.closed[side_of_kind(ev.kind)].get(ev.org_code)
        if done is not None and orig.fiscal_year <= done:  # a final year stays final
            return Rejection("period_closed", f"{ev.reverses} is of fiscal year {orig.fiscal_year}, closed")
        effects = [(acc, fy, -dc, -dm) for acc, fy, dc, dm in orig.effects]
        released = 0
        c = None
        if orig.commitment_id is not None:
            c = self.commitment((ev.org_code, orig.commitment_id))
            if c is None:  # journal and commitments are written together; cannot happen
                return Rejection("reversal_not_possible", f"commitment {orig.commitment_id} missing")
            if orig.kind == "commitment" and (c.consumed or c.reversed or c.ordered):
                return Rejection(
                    "reversal_not_possible",
                    f"commitment {orig.commitment_id} was paid, cancelled or ordered; cancel it instead",
                )
            if orig.kind != "commitment" and c.fiscal_year != orig.fiscal_year:
                # what it released (and its orders) belong to the year the commitment moved to
                return Rejection(
                    "reversal_not_possible",
                    f"commitment {orig.commitment_id} was carried into {c.fiscal_year}",
                )
        org = ev.org_code
        order = sch = None
        if orig.kind == "payment_order":
            order = self.order((org, unscoped_id(ok[1])))
            if order is None or order.executed or order.open != order.amount:
                return Rejection(
                    "reversal_not_possible",
                    f"payment order {ev.reverses} was executed or trimmed in part; cancel instead",
                )
        if orig.schedule_id is not None:
            sch = self.schedule((org, orig.schedule_id))
            if sch is None:  # journal and schedules are written together; cannot happen
                return Rejection("reversal_not_possible", f"schedule {orig.schedule_id} missing")
            if orig.kind == "expected_receipt" and (not sch.revisions or sch.revisions[-1][0] != ev.reverses):
                return Rejection(
                    "reversal_not_possible",
                    f"{ev.reverses} is not the latest revision of schedule {orig.schedule_id}",
                )
        if (bad := self._out_of_range(org, side_of_kind(ev.kind) == REVENUE, effects)) is not None:
            return bad
        if c is not None:
            if orig.kind == "commitment":
                c.open = 0
                c.reversed = True
            elif order is not None:  # a payment order: withdrawn whole
                self._order_open(org, c, order.event_id, order, -order.open)
                order.reversed = True
            else:  # payment/cancel: give back what it released, and the orders it took
                released = orig.released
                c.open += released
                if orig.order_id is not None and orig.order_released:
                    executed = self.order((org, orig.order_id))
                    assert executed is not None
                    self._order_open(org, c, orig.order_id, executed, orig.order_released)
                for oid, n in orig.trimmed:
                    cut = self.order((org, oid))
                    assert cut is not None
                    self._order_open(org, c, oid, cut, n)
            self._put_commitment((org, orig.commitment_id or ""), c)
        if sch is not None:
            if orig.kind == "expected_receipt":
                sch.revisions.pop()
            else:
                sch.realised -= orig.amount
            self._put_schedule((org, orig.schedule_id or ""), sch)
        orig.reversed_by = ev.event_id
        self.journal[ok] = orig
        self.changes.journal[ok] = orig
        return Done(effects, released)

    def _put_commitment(self, ck: CommitKey, c: Commitment) -> None:
        self.commitments[ck] = c
        self.changes.commitments[ck] = c

    def _put_schedule(self, sk: ScheduleKey, sch: Schedule) -> None:
        self.schedules[sk] = sch
        self.changes.schedules[sk] = sch

    def _post(
        self,
        org: str,
        sid: str,
        effects: list[Effect],
        ms: int,
        entry: Journal | bytes,
        revenue: bool,
        *,
        count: bool = True,
    ) -> None:
        ch = self.changes
        positions = self.positions
        index = ch.index
        for account, fy, dc, dm in effects:
            pk = (org, account, fy)
            pos = positions.get(pk)
            if pos is None:
                pos = positions[pk] = Position()
            pos.cash += dc
            if revenue:
                pos.received += dc
            pos.committed += dm
            pos.version += 1
            pos.last_event_ms = max(pos.last_event_ms, ms)
            rows = index.get(pk)
            if rows is None:
                rows = index[pk] = []
            rows.append((ms, sid, dc, dm))
        key = (org, sid)
        self.journal[key] = entry
        ch.journal[key] = entry
        ch.applied += count
        ch.last_event_ms = max(ch.last_event_ms, ms)


def _lookup(cache: dict[K, V], key: K, load: Callable[[K], V | None] | None) -> V | None:
    """``key`` from the batch's dict, else from the store (kept in the dict once read)."""
    v = cache.get(key)
    if v is None and load is not None:
        v = load(key)
        if v is not None:
            cache[key] = v
    return v
