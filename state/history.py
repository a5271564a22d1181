"""Every figure's past, pure (no I/O, no clock): daily flows, the hash chain, as-of sums.

Derived from what a batch applied (``state.ledger.Changes``), in the batch's atomic write
(``agents/history.py`` wires it), so it is exactly-once and the same on any worker after any
rebuild:

* **Daily flows** (``DayFlows``): per position and Korean day of *event time*, the statement's
  columns. Every effect of every applied event lands in exactly one column, so
  ``cash_delta`` and ``committed_delta`` are the position's change that day, to the won
  (``closing - opening``, tested).
* **The hash chain** (``Chain``): per position and side, over its applied events in the order the
  side's topic partition delivered them (the only order that does not depend on how the two
  input topics interleave): ``link = BLAKE2b-256(prev ‖ msgpack(sid, occurred_ms, cash,
  committed) ‖ BLAKE2b-256(raw))`` from 32 zero bytes; the position's head is
  ``BLAKE2b-256("cashpos-chain-v1" ‖ revenue link ‖ expenditure link)``. A lapse (the close's
  entry for a commitment) belongs to the expenditure side and has no raw bytes.
* **As of an instant**: the days before it from the daily flows, the day itself from its rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from cashpos.calendar import kst_day
from cashpos.names import CLOSE_KIND, EXPENDITURE, REVENUE
from state.ledger import REVENUE_TAG, Changes, EventKey, Journal, PosKey

CATEGORIES: Final = ("local_tax", "non_tax", "grant", "subsidy", "bond", "other")
CHAIN_DOMAIN: Final = b"cashpos-chain-v1"
ZERO: Final = bytes(32)


class DayFlows(msgspec.Struct, array_like=True):
    """One position's flows on one Korean day (event time), integer KRW. Signs: every column
    counts in its own direction (payments and transfers out are positive outflows); a reversal
    nets against the column of what it reverses."""

    events: int = 0
    receipts_local_tax: int = 0
    receipts_non_tax: int = 0
    receipts_grant: int = 0
    receipts_subsidy: int = 0
    receipts_bond: int = 0
    receipts_other: int = 0
    payments: int = 0
    transfers_in: int = 0
    transfers_out: int = 0
    carried_in: int = 0  # cash carried from the previous fiscal year at its close
    carried_out: int = 0  # cash carried into the next fiscal year at this year's close
    committed_opened: int = 0
    committed_paid: int = 0  # released by payments
    committed_cancelled: int = 0
    committed_lapsed: int = 0  # open at the year's close
    committed_carried_in: int = 0  # 이월: a commitment carried from the previous year
    committed_carried_out: int = 0
    other_cash: int = 0  # a kind this module does not know (none today): kept, never lost
    other_committed: int = 0

    @property
    def receipts(self) -> int:
        return (
            self.receipts_local_tax
            + self.receipts_non_tax
            + self.receipts_grant
            + self.receipts_subsidy
            + self.receipts_bond
            + self.receipts_other
        )

    @property
    def cash_delta(self) -> int:
        return (
            self.receipts
            + self.transfers_in
            + self.carried_in
            - self.payments
            - self.transfers_out
            - self.carried_out
            + self.other_cash
        )

    @property
    def committed_delta(self) -> int:
        return (
            self.committed_opened
            + self.committed_carried_in
            - self.committed_paid
            - self.committed_cancelled
            - self.committed_lapsed
            - self.committed_carried_out
            + self.other_committed
        )

    def add(self, other: DayFlows) -> None:
        for name in self.__struct_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class _Category(msgspec.Struct):
    category: str | None = None


_category = msgspec.json.Decoder(_Category).decode
_journal = msgspec.msgpack.Decoder(Journal).decode
_enc = msgspec.msgpack.Encoder().encode


def journal_entry(entry: Journal | bytes) -> Journal:
    return entry if isinstance(entry, Journal) else _journal(entry)


def classify(entry: Journal) -> Iterator[tuple[str, int, DayFlows]]:
    """``(account, fiscal_year, flows)`` for each effect of an applied entry."""
    kind = entry.kind
    for i, (account, fy, dc, dm) in enumerate(entry.effects):
        f = DayFlows(events=1)
        if kind == "receipt":
            cat = _category(entry.raw).category if entry.raw else None
            name = f"receipts_{cat}" if cat in CATEGORIES else "receipts_other"
            setattr(f, name, dc)
        elif kind == "payment":
            f.payments, f.committed_paid = -dc, -dm
        elif kind == "transfer":
            if i == 0:  # the contract's order: the paying account, then to_account
                f.transfers_out = -dc
            else:
                f.transfers_in = dc
        elif kind == "commitment":
            f.committed_opened = dm
        elif kind == "commitment_cancel":
            f.committed_cancelled = -dm
        elif kind == "commitment_carry_forward":
            if fy == entry.fiscal_year:
                f.committed_carried_out = -dm
            else:
                f.committed_carried_in = dm
        elif kind == CLOSE_KIND:
            if dc < 0:
                f.carried_out = -dc
            else:
                f.carried_in = dc
        elif kind == "lapse":
            f.committed_lapsed = -dm
        else:
            f.other_cash, f.other_committed = dc, dm
        yield account, fy, f


def side_of_sid(sid: str) -> str:
    """The side whose chain a journal name belongs to (a lapse: the expenditure side's close)."""
    return REVENUE if sid.startswith(REVENUE_TAG) else EXPENDITURE


def link(prev: bytes, sid: str, ms: int, dc: int, dm: int, raw: bytes) -> bytes:
    digest = hashlib.blake2b(raw, digest_size=32).digest()
    return hashlib.blake2b(prev + _enc((sid, ms, dc, dm)) + digest, digest_size=32).digest()


class Chain(msgspec.Struct, array_like=True):
    """A position's two chains: the last link and the number of links, per side."""

    revenue: bytes = ZERO
    expenditure: bytes = ZERO
    revenue_events: int = 0
    expenditure_events: int = 0

    def extend(self, sid: str, ms: int, dc: int, dm: int, raw: bytes) -> bytes:
        """Add one row; returns its side's new link (the running hash after it)."""
        if side_of_sid(sid) == REVENUE:
            self.revenue = link(self.revenue, sid, ms, dc, dm, raw)
            self.revenue_events += 1
            return self.revenue
        self.expenditure = link(self.expenditure, sid, ms, dc, dm, raw)
        self.expenditure_events += 1
        return self.expenditure

    @property
    def head(self) -> str:
        return hashlib.blake2b(CHAIN_DOMAIN + self.revenue + self.expenditure, digest_size=32).hexdigest()


def applied_entries(changes: Changes) -> dict[EventKey, Journal]:
    """The journal entries a batch applied, decoded. The batch's journal also holds older
    entries it rewrote (an original marked reversed): they have no row in the batch's index,
    and their flows and links were counted when they were applied."""
    applied = {(pk[0], row[1]) for pk, rows in changes.index.items() for row in rows}
    return {key: journal_entry(v) for key, v in changes.journal.items() if key in applied}


def batch_flows(entries: Mapping[EventKey, Journal]) -> dict[tuple[PosKey, int], DayFlows]:
    """The flows of a batch's applied entries, per (position, event-time day)."""
    out: dict[tuple[PosKey, int], DayFlows] = {}
    for (org, _sid), entry in entries.items():
        day = kst_day(entry.occurred_ms)
        for account, fy, f in classify(entry):
            k = ((org, account, fy), day)
            cur = out.get(k)
            if cur is None:
                out[k] = f
            else:
                cur.add(f)
    return out


def chain_rows(
    changes: Changes, chains: Mapping[PosKey, Chain], entries: Mapping[EventKey, Journal]
) -> dict[PosKey, Chain]:
    """The chains of the positions a batch changed, after it: each position's rows appended to
    its chain (within a side, the rows are in the topic's offset order)."""
    out: dict[PosKey, Chain] = {}
    for pk, rows in changes.index.items():
        org = pk[0]
        c = chains.get(pk)
        c = Chain() if c is None else msgspec.structs.replace(c)
        for ms, sid, dc, dm in rows:
            c.extend(sid, ms, dc, dm, entries[(org, sid)].raw)
        out[pk] = c
    return out


# -- reading the history back -------------------------------------------------------------------


def as_of(
    days: Iterable[tuple[int, DayFlows]], rows_of_day: Iterable[tuple[int, str, int, int]], at_ms: int
) -> tuple[int, int, int]:
    """``(cash, committed, events)`` of a position as of ``at_ms`` (event time, inclusive):
    ``days`` its flows of the days before ``kst_day(at_ms)``, ``rows_of_day`` the rows of that day."""
    day = kst_day(at_ms)
    cash = committed = events = 0
    for d, f in days:
        if d < day:
            cash += f.cash_delta
            committed += f.committed_delta
            events += f.events
    for ms, _sid, dc, dm in rows_of_day:
        if ms <= at_ms:
            cash += dc
            committed += dm
            events += 1
    return cash, committed, events


# -- statements -----------------------------------------------------------------------------------

STATEMENT_COLUMNS: Final = (
    "opening_cash",
    *(f"receipts_{c}" for c in CATEGORIES),
    "payments",
    "transfers_in",
    "transfers_out",
    "carried_in",
    "carried_out",
    "other_cash",
    "closing_cash",
    "opening_committed",
    "committed_opened",
    "committed_paid",
    "committed_cancelled",
    "committed_lapsed",
    "committed_carried_in",
    "committed_carried_out",
    "other_committed",
    "closing_committed",
    "closing_available",
    "events",
)


def statement_rows(
    flows: Iterable[tuple[PosKey, int, DayFlows]], first_day: int, last_day: int
) -> list[tuple[int, PosKey, dict[str, int]]]:
    """The daily statement of positions: ``(day, position, columns)`` for each day of
    ``first_day..last_day`` on which the position exists (it has had an event by then), in day
    then position order. ``flows`` in key order (position, then day): every day from the first,
    for the openings. Each row balances: opening + flows = closing, to the won."""
    by_pk: dict[PosKey, list[tuple[int, DayFlows]]] = {}
    for pk, day, f in flows:
        by_pk.setdefault(pk, []).append((day, f))
    out: list[tuple[int, PosKey, dict[str, int]]] = []
    for pk, days in by_pk.items():
        cash = committed = 0
        started = False
        it = iter(days)
        nxt = next(it, None)
        for day in range(min(first_day, days[0][0]), last_day + 1):
            f = DayFlows()
            if nxt is not None and nxt[0] == day:
                f = nxt[1]
                nxt = next(it, None)
                started = True
            opening_cash, opening_committed = cash, committed
            cash += f.cash_delta
            committed += f.committed_delta
            if day < first_day or not started:
                continue
            row = {"opening_cash": opening_cash, "opening_committed": opening_committed}
            row |= {name: getattr(f, name) for name in DayFlows.__struct_fields__}
            row |= {
                "closing_cash": cash,
                "closing_committed": committed,
                "closing_available": cash - committed,
            }
            out.append((day, pk, {c: row[c] for c in STATEMENT_COLUMNS}))
    out.sort(key=lambda r: (r[0], r[1]))
    return out


# -- the events behind a figure ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One event's row in a position's history, in the listing's order."""

    ms: int
    sid: str
    cash: int  # its effect on this position
    committed: int
    cash_after: int  # the running balance after it, in this order
    committed_after: int
    link: bytes  # its side's chain link after it (the running hash)


def listing(rows: Iterable[tuple[int, str, int, int]], raw_of: Callable[[str], bytes]) -> list[Line]:
    """A position's rows (as stored: day, then batch, each in application order) as the events
    behind its figure: in event time, ties by side then by the side's own order (the order of
    its topic), so the list is the same whatever the interleaving; each with the running balance
    and its side's chain link (computed in the side's order from the start)."""
    chain = Chain()
    seq = {REVENUE: 0, EXPENDITURE: 0}
    # every row with its link, in each side's order (the stored order within a side)
    linked: list[tuple[int, int, int, str, int, int, bytes]] = []
    for ms, sid, dc, dm in rows:
        side = side_of_sid(sid)
        seq[side] += 1
        link_after = chain.extend(sid, ms, dc, dm, raw_of(sid))
        linked.append((ms, 0 if side == REVENUE else 1, seq[side], sid, dc, dm, link_after))
    linked.sort(key=lambda r: (r[0], r[1], r[2]))
    out: list[Line] = []
    cash = committed = 0
    for ms, _side, _seq, sid, dc, dm, lk in linked:
        cash += dc
        committed += dm
        out.append(Line(ms, sid, dc, dm, cash, committed, lk))
    return out
