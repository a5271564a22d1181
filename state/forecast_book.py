"""What the forecast needs to know of each owned government, kept current batch by batch: pure,
no I/O (the worker's hook, ``agents.forecast``, loads it from the store and feeds it the fold's
changes).

Per government: the open commitments' parts not yet ordered, the open payment orders and the
open expected receipts, each by account (``state.ledger``'s ``Commitment``, ``Order`` and
``Schedule`` are the truth; this is their forecast view, replaced whole when the fold changes
one). ``inputs`` builds one account's ``state.forecast.Inputs`` from it and the positions: an
account is all its fiscal years still open (between 1 January and the close, two), as the
alert rules judge it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from cashpos.calendar import date_day
from state.forecast import (
    Band,
    Crossing,
    DayFlow,
    ExpectedReceipt,
    Flow,
    Forecast,
    Inputs,
    OpenCommitment,
    Order,
    first_crossing,
)
from state.ledger import Changes, Commitment, Position, PosKey, Schedule
from state.ledger import Order as LedgerOrder

View = OpenCommitment | Order | ExpectedReceipt
Known = dict[str, tuple[str, int, View]]  # id -> (account, fiscal year, the forecast's view of it)


def _day(iso: str | None) -> int | None:
    return None if iso is None else date_day(dt.date.fromisoformat(iso))


def commitment_view(cid: str, c: Commitment) -> OpenCommitment | None:
    """An open commitment's part not yet ordered, or None when nothing of it is left to order."""
    rest = c.open - c.ordered
    return OpenCommitment(cid, rest, c.fiscal_year, _day(c.due_date)) if rest > 0 else None


def order_view(oid: str, o: LedgerOrder) -> Order | None:
    if o.open <= 0 or o.reversed:
        return None
    day = _day(o.pay_date)
    assert day is not None
    return Order(oid, o.open, day)


def schedule_view(sid: str, s: Schedule) -> ExpectedReceipt | None:
    if not s.revisions or s.open <= 0:
        return None
    _eid, _amount, date, certainty = s.revisions[-1]
    day = _day(date)
    assert day is not None
    return ExpectedReceipt(sid, s.open, day, certainty, s.category)


@dataclass(slots=True)
class OrgBook:
    """One government's open known flows, by id: (account, fiscal year, view)."""

    commitments: Known = field(default_factory=dict)
    orders: Known = field(default_factory=dict)
    schedules: Known = field(default_factory=dict)


@dataclass(slots=True)
class ForecastBook:
    orgs: dict[str, OrgBook] = field(default_factory=dict)
    # org -> account -> its positions' keys (built from the positions on first use, then kept
    # from each batch's changed positions): an account's inputs without a scan of every position
    keys: dict[str, dict[str, set[PosKey]]] = field(default_factory=dict)

    def load(
        self,
        org: str,
        commitments: Iterable[tuple[str, Commitment]],
        orders: Iterable[tuple[str, LedgerOrder]],
        schedules: Iterable[tuple[str, Schedule]],
    ) -> None:
        """A government's book from the store's records (on assignment)."""
        book = self.orgs[org] = OrgBook()
        self.keys.pop(org, None)
        for cid, c in commitments:
            _put(book.commitments, cid, c.account, c.fiscal_year, commitment_view(cid, c))
        for oid, o in orders:
            _put(book.orders, oid, o.account, o.fiscal_year, order_view(oid, o))
        for sid, s in schedules:
            _put(book.schedules, sid, s.account, s.fiscal_year, schedule_view(sid, s))

    def drop(self, orgs: Iterable[str]) -> None:
        for org in orgs:
            self.orgs.pop(org, None)
            self.keys.pop(org, None)

    def apply(self, changes: Changes) -> set[tuple[str, str]]:
        """Take a batch's changed commitments, orders and schedules; returns the (government,
        account) pairs whose forecast may have changed (those of the changed positions too)."""
        touched = {(org, acc) for org, acc, _fy in changes.index}
        for pk in changes.index:
            idx = self.keys.get(pk[0])
            if idx is not None:
                idx.setdefault(pk[1], set()).add(pk)
        for (org, cid), c in changes.commitments.items():
            book = self.orgs.get(org)
            if book is not None:
                old = book.commitments.get(cid)
                _put(book.commitments, cid, c.account, c.fiscal_year, commitment_view(cid, c))
                touched.add((org, c.account))
                if old is not None:
                    touched.add((org, old[0]))
        for (org, oid), o in changes.orders.items():
            book = self.orgs.get(org)
            if book is not None:
                _put(book.orders, oid, o.account, o.fiscal_year, order_view(oid, o))
                touched.add((org, o.account))
        for (org, sid), s in changes.schedules.items():
            book = self.orgs.get(org)
            if book is not None:
                _put(book.schedules, sid, s.account, s.fiscal_year, schedule_view(sid, s))
                touched.add((org, s.account))
        return {t for t in touched if t[0] in self.orgs}

    def inputs(
        self,
        org: str,
        account: str,
        positions: Mapping[PosKey, Position],
        closed: int,
        history: Sequence[DayFlow] = (),
        history_from: int | None = None,
    ) -> Inputs:
        """One account's inputs: its fiscal years after ``closed`` (the last year the
        government closed) added up, with their open known flows."""
        book = self.orgs.get(org) or OrgBook()
        cash = committed = ordered = 0
        for pk in self._index(org, positions).get(account, ()):
            p = positions.get(pk)
            if p is not None and pk[2] > closed:
                cash += p.cash
                committed += p.committed
                ordered += p.ordered

        def of(items: Known) -> list[View]:
            return [v for _id, (acc, fy, v) in sorted(items.items()) if acc == account and fy > closed]

        return Inputs(
            cash,
            committed,
            ordered,
            orders=tuple(v for v in of(book.orders) if isinstance(v, Order)),
            commitments=tuple(v for v in of(book.commitments) if isinstance(v, OpenCommitment)),
            receipts=tuple(v for v in of(book.schedules) if isinstance(v, ExpectedReceipt)),
            history=tuple(history),
            history_from=history_from,
            account=account,
        )

    def accounts(self, org: str, positions: Iterable[PosKey], closed: int) -> list[str]:
        """The accounts of ``org`` with a position of an open year or an open known flow."""
        out = {acc for acc, pks in self._index(org, positions).items() if any(pk[2] > closed for pk in pks)}
        book = self.orgs.get(org)
        if book is not None:
            for items in (book.commitments, book.orders, book.schedules):
                out |= {acc for acc, fy, _v in items.values() if fy > closed}
        return sorted(out)

    def version(self, org: str, positions: Mapping[PosKey, Position]) -> int:
        """The sum of the government's positions' versions: grows with every change of them."""
        return sum(
            p.version
            for pks in self._index(org, positions).values()
            for pk in pks
            if (p := positions.get(pk)) is not None
        )

    def _index(self, org: str, positions: Iterable[PosKey]) -> dict[str, set[PosKey]]:
        idx = self.keys.get(org)
        if idx is None:
            idx = self.keys[org] = {}
            for pk in positions:
                if pk[0] == org:
                    idx.setdefault(pk[1], set()).add(pk)
        return idx


def _put(items: Known, key: str, account: str, fy: int, view: View | None) -> None:
    if view is None:
        items.pop(key, None)
    else:
        items[key] = (account, fy, view)


def rebase(f: Forecast, cash: int, committed: int) -> Forecast:
    """``f`` for the same flows from another position now: every band moves by the change of
    cash (available: of cash less committed), the crossings are found again. The flows do not
    depend on the position (learned ones on the history, the pace on the known flows), so a
    batch that moved only cash needs no new forecast (O(horizon) instead of the engine's run)."""
    dc, da = cash - f.cash, (cash - committed) - (f.cash - f.committed)
    if not dc and not da:
        return f

    def moved(b: Band) -> Band:
        return Band(tuple(v + dc for v in b.cash), tuple(v + da for v in b.available))

    confirmed, expected = moved(f.confirmed), moved(f.expected)
    flows = f.flows

    def cash_of(x: Flow) -> int:
        return x.cash

    def avail_of(x: Flow) -> int:
        return x.available

    def cross(values: tuple[int, ...], thr: int | None, delta: Callable[[Flow], int]) -> Crossing | None:
        return None if thr is None else first_crossing(values, thr, f.today, flows, delta)

    return msgspec.structs.replace(
        f,
        cash=cash,
        committed=committed,
        confirmed=confirmed,
        expected=expected,
        cash_below_zero=cross(expected.cash, 0, cash_of),
        cash_below_floor=cross(expected.cash, f.floor, cash_of),
        available_below_zero=cross(expected.available, 0, avail_of),
        available_below_floor=cross(expected.available, f.floor, avail_of),
    )
