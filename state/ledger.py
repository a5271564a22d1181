"""The ledger fold: pure, no I/O. Applies validated events to per-account positions.

A position is kept per (government, account, fiscal year): ``cash`` (bank truth), ``committed``
(open commitments not yet paid) and ``version`` (number of events that changed it). Commitments
behave like two-phase transfers: opened by ``commitment``, consumed by ``payment``, released by
``commitment_cancel``. Every applied event is journalled with its exact effect, which makes
duplicates detectable, reversals exact, and balances as of any instant re-derivable.

The fold sees state as plain dicts. In production the store preloads, per batch, the journal
entries and commitments the batch refers to (``Ledger.wants``); in tests the dicts simply hold
everything. A key absent from a dict means "not in state".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import msgspec

from streams.contract import Event, Rejection, decode, epoch_ms

PosKey = tuple[str, str, int]  # (org_code, account, fiscal_year)
EventKey = tuple[str, str]  # (org_code, event_id): ids are unique per government (= per key)
CommitKey = tuple[str, str]  # (org_code, commitment_id)

APPLIED: Final = "applied"
DUPLICATE: Final = "duplicate"
Outcome = str | Rejection


@dataclass(slots=True)
class Position:
    cash: int = 0
    committed: int = 0
    version: int = 0
    last_event_ms: int = 0  # occurred_at of the latest event applied, epoch ms

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
    source: tuple[str, int, int] | None = None  # topic, partition, offset


_enc = msgspec.msgpack.Encoder()
_dec_journal = msgspec.msgpack.Decoder(Journal)


@dataclass(slots=True)
class Changes:
    """What one batch changed: the store writes exactly this, atomically with the offsets.
    The changed positions are the keys of ``index``."""

    journal: dict[EventKey, Journal | bytes] = field(default_factory=dict)
    commitments: dict[CommitKey, Commitment] = field(default_factory=dict)
    # per changed position: [(occurred_ms, event_id, cash delta, committed delta), ...]
    index: dict[PosKey, list[tuple[int, str, int, int]]] = field(default_factory=dict)
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
    changes: Changes = field(default_factory=Changes)

    def entry(self, key: EventKey) -> Journal | None:
        v = self.journal.get(key)
        if v.__class__ is bytes:
            v = self.journal[key] = _dec_journal.decode(v)  # type: ignore[arg-type]
        return v  # type: ignore[return-value]

    @staticmethod
    def wants(events: list[Event]) -> tuple[set[EventKey], set[CommitKey]]:
        """Journal and commitment keys a batch may read, for the store to preload."""
        ev_keys: set[EventKey] = set()
        c_keys: set[CommitKey] = set()
        for ev in events:
            ev_keys.add((ev.org_code, ev.event_id))
            if ev.reverses is not None:
                ev_keys.add((ev.org_code, ev.reverses))
            if ev.commitment_id is not None:
                c_keys.add((ev.org_code, ev.commitment_id))
        return ev_keys, c_keys

    def take_changes(self) -> Changes:
        out, self.changes = self.changes, Changes()
        return out

    # -- the fold ---------------------------------------------------------------------------

    def update(self, ev: Event, raw: bytes, source: tuple[str, int, int] | None = None) -> Outcome:
        """Apply one validated event. Returns APPLIED, DUPLICATE or a Rejection; never raises."""
        org = ev.org_code
        key = (org, ev.event_id)
        seen = self.entry(key) if key in self.journal else None
        if seen is not None:
            if seen.raw == raw or decode(seen.raw, max_bytes=len(seen.raw)) == ev:
                self.changes.duplicates += 1
                return DUPLICATE
            return self._reject("event_id_conflict", f"{ev.event_id} was applied with other content")
        kind = ev.kind
        ms = epoch_ms(ev.occurred_at)
        if ev.reverses is None and (kind == "receipt" or (kind == "payment" and ev.commitment_id is None)):
            # Fast path for the bulk of the stream (_post inlined): one cash effect, no
            # commitment, and the journal entry encoded straight from a tuple in Journal's order.
            amt = ev.amount
            account = ev.account
            fy = ev.fiscal_year
            dc = amt if kind == "receipt" else -amt
            pk = (org, account, fy)
            pos = self.positions.get(pk)
            if pos is None:
                pos = self.positions[pk] = Position()
            pos.cash += dc
            pos.version += 1
            if ms > pos.last_event_ms:
                pos.last_event_ms = ms
            ch = self.changes
            rows = ch.index.get(pk)
            if rows is None:
                rows = ch.index[pk] = []
            rows.append((ms, ev.event_id, dc, 0))
            self.journal[key] = ch.journal[key] = _enc.encode(
                (raw, kind, account, fy, amt, ms, [(account, fy, dc, 0)], None, 0, None, None, source)
            )
            ch.applied += 1
            if ms > ch.last_event_ms:
                ch.last_event_ms = ms
            return APPLIED
        result = self._reversal(ev) if ev.reverses is not None else self._original(ev)
        if result.__class__ is Rejection:
            self.changes.rejected += 1
            return result  # type: ignore[return-value]
        effects, released = result  # type: ignore[misc]
        entry = Journal(raw, kind, ev.account, ev.fiscal_year, ev.amount, ms, effects,
                        ev.commitment_id, released, ev.reverses, None, source)
        self._post(org, ev.event_id, effects, ms, entry)
        return APPLIED

    def _reject(self, reason: str, detail: str) -> Rejection:
        self.changes.rejected += 1
        return Rejection(reason, detail)

    def _original(self, ev: Event) -> tuple[list[Effect], int] | Rejection:
        acc, fy, amt = ev.account, ev.fiscal_year, ev.amount
        kind = ev.kind
        if kind == "receipt":
            return [(acc, fy, amt, 0)], 0
        if kind == "transfer":
            assert ev.to_account is not None
            return [(acc, fy, -amt, 0), (ev.to_account, fy, amt, 0)], 0
        if kind == "commitment":
            ck = (ev.org_code, ev.commitment_id or "")
            if ck in self.commitments:
                return Rejection("commitment_id_reused", f"commitment {ev.commitment_id} exists")
            due = ev.due_date.isoformat() if ev.due_date else None
            self._put_commitment(ck, Commitment(acc, fy, amt, amt, due, ev.event_id))
            return [(acc, fy, 0, amt)], 0
        # payment or commitment_cancel
        if ev.commitment_id is None:  # a payment not against a commitment
            return [(acc, fy, -amt, 0)], 0
        ck = (ev.org_code, ev.commitment_id)
        c = self.commitments.get(ck)
        if c is None:
            return Rejection("unknown_commitment", f"no commitment {ev.commitment_id}")
        if c.account != acc or c.fiscal_year != fy:
            return Rejection(
                "commitment_mismatch",
                f"commitment {ev.commitment_id} is on {c.account}/{c.fiscal_year}",
            )
        released = min(amt, c.open)
        c.open -= released
        c.consumed = True
        self._put_commitment(ck, c)
        cash = -amt if kind == "payment" else 0
        return [(acc, fy, cash, -released)], released

    def _reversal(self, ev: Event) -> tuple[list[Effect], int] | Rejection:
        ok = (ev.org_code, ev.reverses or "")
        orig = self.entry(ok)
        if orig is None:
            return Rejection("unknown_reversal_target", f"no applied event {ev.reverses}")
        if orig.reversed_by is not None:
            return Rejection("already_reversed", f"{ev.reverses} was reversed by {orig.reversed_by}")
        if orig.reverses is not None:
            return Rejection("reversal_not_possible", f"{ev.reverses} is itself a reversal")
        if (orig.kind, orig.account, orig.amount) != (ev.kind, ev.account, ev.amount) or (
            ev.kind == "transfer" and orig.effects[1][0] != ev.to_account
        ) or (orig.commitment_id != ev.commitment_id):
            return Rejection(
                "reversal_mismatch",
                f"{ev.reverses} was {orig.kind} {orig.account} {orig.amount}",
            )
        released = 0
        if orig.commitment_id is not None:
            ck = (ev.org_code, orig.commitment_id)
            c = self.commitments.get(ck)
            if c is None:  # journal and commitments are written together; cannot happen
                return Rejection("reversal_not_possible", f"commitment {orig.commitment_id} missing")
            if orig.kind == "commitment":
                if c.consumed or c.reversed:
                    return Rejection(
                        "reversal_not_possible",
                        f"commitment {orig.commitment_id} was paid or cancelled; cancel it instead",
                    )
                c.open = 0
                c.reversed = True
            else:  # payment/cancel: give back what it released
                released = orig.released
                c.open += released
            self._put_commitment(ck, c)
        effects = [(acc, fy, -dc, -dm) for acc, fy, dc, dm in orig.effects]
        orig.reversed_by = ev.event_id
        self.journal[ok] = orig
        self.changes.journal[ok] = orig
        return effects, released

    def _put_commitment(self, ck: CommitKey, c: Commitment) -> None:
        self.commitments[ck] = c
        self.changes.commitments[ck] = c

    def _post(self, org: str, event_id: str, effects: list[Effect], ms: int, entry: Journal | bytes) -> None:
        ch = self.changes
        positions = self.positions
        index = ch.index
        for account, fy, dc, dm in effects:
            pk = (org, account, fy)
            pos = positions.get(pk)
            if pos is None:
                pos = positions[pk] = Position()
            pos.cash += dc
            pos.committed += dm
            pos.version += 1
            if ms > pos.last_event_ms:
                pos.last_event_ms = ms
            rows = index.get(pk)
            if rows is None:
                rows = index[pk] = []
            rows.append((ms, event_id, dc, dm))
        key = (org, event_id)
        self.journal[key] = entry
        ch.journal[key] = entry
        ch.applied += 1
        if ms > ch.last_event_ms:
            ch.last_event_ms = ms
