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
* **As known at an instant** (the second time axis): what cashpos knew then — every row whose
  event's *record timestamp* (when its topic accepted it, part of the log, so the same on every
  replay) is at or before the instant, whatever its event time. Kept per position and Korean day
  of record time (``KnownRow`` rows, ``DayTotals`` of them): a late event changes as-of answers
  for the instants after its event time, and known-at answers only from its arrival on.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from cashpos.calendar import DAY_MS, KST_OFFSET_MS, kst_day
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
    # A memo, in no sum: of the receipts, those that realised an expected receipt (named its
    # schedule). The forecast learns from the others only (``state.forecast_learn.day_flow``).
    receipts_scheduled: int = 0

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
    schedule_id: str | None = None


_category = msgspec.json.Decoder(_Category).decode
_enc = msgspec.msgpack.Encoder().encode


class _Entry(msgspec.Struct, array_like=True, forbid_unknown_fields=False):
    """The leading fields of a stored ``Journal`` up to its source (what the history needs;
    decoded alone, the fields it does not read left raw)."""

    raw: bytes
    kind: str
    account: str
    fiscal_year: int
    amount: msgspec.Raw = msgspec.Raw(b"\x00")
    occurred_ms: msgspec.Raw = msgspec.Raw(b"\x00")
    effects: msgspec.Raw = msgspec.Raw(b"\x90")
    commitment_id: msgspec.Raw = msgspec.Raw(b"\xc0")
    released: msgspec.Raw = msgspec.Raw(b"\x00")
    reverses: msgspec.Raw = msgspec.Raw(b"\xc0")
    reversed_by: msgspec.Raw = msgspec.Raw(b"\xc0")
    source: tuple[str, int, int, int] | None = None


# One row of the known-at axis: (record timestamp ms, cash delta, committed delta).
KnownRow = tuple[int, int, int]


def recorded_ms(source: tuple[str, int, int, int] | None, occurred_ms: int) -> int:
    """When cashpos could first know an event: its record's timestamp; without one (an event
    folded outside a topic, or a record with none, -1), its event time."""
    if source is None or source[3] < 0:
        return occurred_ms
    return source[3]


_entry = msgspec.msgpack.Decoder(_Entry).decode
_FIELDS: Final = DayFlows.__struct_fields__
_COL: Final = {name: i for i, name in enumerate(_FIELDS)}
_RECEIPTS: Final = {c: _COL[f"receipts_{c}"] for c in CATEGORIES}
_I = _COL  # shorter below


def _columns(entry: _Entry | Journal, account: str, fy: int, dc: int, dm: int) -> tuple[tuple[int, int], ...]:
    """The columns one effect of an entry lands in, with their amounts (``events`` aside)."""
    kind = entry.kind
    if kind == "receipt":
        head = _category(entry.raw) if entry.raw else _Category()
        col = _RECEIPTS.get(head.category or "", _I["receipts_other"])
        if head.schedule_id is not None:
            return ((col, dc), (_I["receipts_scheduled"], dc))
        return ((col, dc),)
    if kind == "payment":
        return ((_I["payments"], -dc), (_I["committed_paid"], -dm))
    if kind == "transfer":  # the paying account is the entry's; the other is to_account
        return ((_I["transfers_out"], -dc),) if account == entry.account else ((_I["transfers_in"], dc),)
    if kind == "commitment":
        return ((_I["committed_opened"], dm),)
    if kind == "commitment_cancel":
        return ((_I["committed_cancelled"], -dm),)
    if kind == "commitment_carry_forward":
        if fy == entry.fiscal_year:
            return ((_I["committed_carried_out"], -dm),)
        return ((_I["committed_carried_in"], dm),)
    if kind == CLOSE_KIND:
        return ((_I["carried_out"], -dc),) if dc < 0 else ((_I["carried_in"], dc),)
    if kind == "lapse":
        return ((_I["committed_lapsed"], -dm),)
    return ((_I["other_cash"], dc), (_I["other_committed"], dm))


def classify(entry: Journal) -> Iterator[tuple[str, int, DayFlows]]:
    """``(account, fiscal_year, flows)`` for each effect of an applied entry."""
    for account, fy, dc, dm in entry.effects:
        cols = [0] * len(_FIELDS)
        cols[_I["events"]] = 1
        for i, amount in _columns(entry, account, fy, dc, dm):
            cols[i] += amount
        yield account, fy, DayFlows(*cols)


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


def batch_history(
    changes: Changes,
    chains: Mapping[PosKey, Chain],
    known: dict[tuple[PosKey, int], list[KnownRow]] | None = None,
) -> tuple[dict[tuple[PosKey, int], DayFlows], dict[PosKey, Chain]]:
    """What a batch adds to the history, in one pass over its index rows (one row per effect, a
    position's rows in the order applied): the flows per (position, event-time day), and the
    chains of the positions it changed, after it. Each entry is decoded once (its leading
    fields); a row's day is its event's. With ``known``, also each row on the known-at axis,
    per (position, Korean day of its record timestamp)."""
    entries: dict[EventKey, _Entry | Journal] = {}
    journal = changes.journal
    n = len(_FIELDS)
    events = _I["events"]
    blake2b, enc, rtag = hashlib.blake2b, _enc, REVENUE_TAG[0]
    acc: dict[tuple[PosKey, int], list[int]] = {}
    out: dict[PosKey, Chain] = {}
    for pk, rows in changes.index.items():
        org, account, fy = pk
        c = chains.get(pk)
        c = Chain() if c is None else msgspec.structs.replace(c)
        cols_day = -1
        cols: list[int] = []
        for ms, sid, dc, dm in rows:
            key = (org, sid)
            entry = entries.get(key)
            if entry is None:
                stored = journal[key]
                entry = entries[key] = _entry(stored) if isinstance(stored, bytes) else stored
            if known is not None:
                src = entry.source
                rec = ms if src is None or src[3] < 0 else src[3]  # recorded_ms, inlined
                kd = known.get((pk, (rec + KST_OFFSET_MS) // DAY_MS))
                if kd is None:
                    kd = known[(pk, (rec + KST_OFFSET_MS) // DAY_MS)] = []
                kd.append((rec, dc, dm))
            day = (ms + KST_OFFSET_MS) // DAY_MS  # kst_day, inlined
            if day != cols_day:  # a position's rows are nearly always one day's
                cols_day = day
                found = acc.get((pk, day))
                if found is None:
                    found = acc[(pk, day)] = [0] * n
                cols = found
            cols[events] += 1
            for i, amount in _columns(entry, account, fy, dc, dm):
                cols[i] += amount
            # Chain.extend inlined (a third of the history's cost per event)
            digest = blake2b(entry.raw, digest_size=32).digest()
            if sid[0] == rtag:
                c.revenue = blake2b(c.revenue + enc((sid, ms, dc, dm)) + digest, digest_size=32).digest()
                c.revenue_events += 1
            else:
                c.expenditure = blake2b(
                    c.expenditure + enc((sid, ms, dc, dm)) + digest, digest_size=32
                ).digest()
                c.expenditure_events += 1
        out[pk] = c
    return {k: DayFlows(*v) for k, v in acc.items()}, out


# -- reading the history back -------------------------------------------------------------------


def known_at(
    days: Iterable[tuple[int, tuple[int, int, int]]], rows_of_day: Iterable[KnownRow], at_ms: int
) -> tuple[int, int, int]:
    """``(cash, committed, events)`` of a position as known at ``at_ms`` (record time,
    inclusive): ``days`` its (cash, committed, events) per record day, ``rows_of_day`` the known
    rows of ``kst_day(at_ms)``. The reference the worker's ``DayTotals`` path is tested against."""
    day = kst_day(at_ms)
    cash = committed = events = 0
    for d, (dc, dm, n) in days:
        if d < day:
            cash, committed, events = cash + dc, committed + dm, events + n
    for rec, dc, dm in rows_of_day:
        if rec <= at_ms:
            cash, committed, events = cash + dc, committed + dm, events + 1
    return cash, committed, events


def known_sums(rows: Iterable[KnownRow]) -> tuple[int, int, int]:
    """A day's known rows summed: (cash, committed, events)."""
    cash = committed = events = 0
    for _rec, dc, dm in rows:
        cash, committed, events = cash + dc, committed + dm, events + 1
    return cash, committed, events


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


class DayTotals:
    """One government's daily (cash, committed, events) deltas per position, with prefix sums
    made on demand: an as-of is then one bisection per position plus that day's rows, instead of
    every day's flows decoded (a worker keeps these for the governments asked about)."""

    def __init__(self, flows: Iterable[tuple[PosKey, int, DayFlows]] = ()) -> None:
        self.days: dict[PosKey, dict[int, list[int]]] = {}
        self._prefix: dict[PosKey, tuple[list[int], list[tuple[int, int, int]]]] = {}
        for pk, day, f in flows:
            self.add(pk, day, f)

    @classmethod
    def of_sums(cls, sums: Iterable[tuple[PosKey, int, tuple[int, int, int]]]) -> DayTotals:
        """From (cash, committed, events) per position and day (the known-at axis's days)."""
        t = cls()
        for pk, day, (dc, dm, n) in sums:
            t.add_sums(pk, day, dc, dm, n)
        return t

    def add(self, pk: PosKey, day: int, f: DayFlows) -> None:
        self.add_sums(pk, day, f.cash_delta, f.committed_delta, f.events)

    def add_sums(self, pk: PosKey, day: int, dc: int, dm: int, n: int) -> None:
        cur = self.days.setdefault(pk, {}).setdefault(day, [0, 0, 0])
        cur[0] += dc
        cur[1] += dm
        cur[2] += n
        self._prefix.pop(pk, None)

    def before(self, pk: PosKey, day: int) -> tuple[int, int, int]:
        """(cash, committed, events) of the position's days before ``day``."""
        prefix = self._prefix.get(pk)
        if prefix is None:
            days = sorted(self.days.get(pk, {}).items())
            sums: list[tuple[int, int, int]] = []
            c = m = n = 0
            for _, (dc, dm, dn) in days:
                c, m, n = c + dc, m + dm, n + dn
                sums.append((c, m, n))
            prefix = self._prefix[pk] = ([d for d, _ in days], sums)
        keys, sums = prefix
        i = bisect_left(keys, day)
        return sums[i - 1] if i else (0, 0, 0)
