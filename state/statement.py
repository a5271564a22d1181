"""A government's daily statement, its accounts summed: one row per day, kept current (pure).

The finance office's daily report is the government's, not 85 positions' (``statement_rows``
gives those): per Korean day of event time, the same columns as an account's row, each the sum
over the government's positions (of one fiscal year, or of every fiscal year open that day: the
bank balance is one, the split by year is accounting). A year is then 365 rows, not 25,068.

``GovernmentDays`` keeps, per fiscal year and day, the positions' flows summed; the owning
worker updates it from each batch's changed (position, day) flows (``state.history.
batch_history``), the way ``DayTotals`` is kept, so a statement never re-reads or re-sums the
positions. The rows it made are kept too, each valid until a flow lands on its day or an earlier
one (a late event changes its day's flows and every later opening and closing): with a live
stream only today's row is made again, and a late event re-makes the days from its own on.

Rows are the position rows' semantics summed: a row for each day from the first day any of the
summed positions had an event (a position not yet begun adds zeros), opening + flows = closing
to the won, ``closing_available = closing_cash - closing_committed``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Final

import msgspec

from state.history import STATEMENT_COLUMNS, DayFlows
from state.ledger import PosKey

ALL_YEARS: Final = 0  # the key of every fiscal year summed (no fiscal year is 0)
FLOW_COLUMNS: Final = DayFlows.__struct_fields__

Row = dict[str, int]


class _Year:
    """One key's (a fiscal year's, or all years') summed flows per day, with what was made from
    them: the closings after each day with flows (prefix sums) and the rows asked for."""

    __slots__ = ("closings", "days", "rows", "sorted_days")

    def __init__(self) -> None:
        self.days: dict[int, DayFlows] = {}
        self.sorted_days: list[int] | None = None  # None: to be made again
        self.closings: list[tuple[int, int]] = []  # (cash, committed) after each of sorted_days
        # day -> its row (up to the last day with flows), valid while no flow lands on or before it
        self.rows: dict[int, Row] = {}

    def add(self, day: int, f: DayFlows) -> None:
        cur = self.days.get(day)
        if cur is None:
            self.days[day] = msgspec.structs.replace(f)  # a copy: the caller's stays its own
            self.sorted_days = None
        else:
            cur.add(f)
            if self.sorted_days is not None:
                self._closings_from(bisect_left(self.sorted_days, day))
        if self.rows:
            # this day's row and every later one (their openings) are no longer right
            self.rows = {d: r for d, r in self.rows.items() if d < day}

    def _closings_from(self, i: int) -> None:
        days = self.sorted_days
        assert days is not None
        cash, committed = self.closings[i - 1] if i else (0, 0)
        for j in range(i, len(days)):
            f = self.days[days[j]]
            cash += f.cash_delta
            committed += f.committed_delta
            self.closings[j] = (cash, committed)

    def _index(self) -> list[int]:
        if self.sorted_days is None:
            self.sorted_days = sorted(self.days)
            self.closings = [(0, 0)] * len(self.sorted_days)
            self._closings_from(0)
        return self.sorted_days

    def closing_before(self, day: int) -> tuple[int, int]:
        """(cash, committed) at the end of the day before ``day``."""
        days = self._index()
        i = bisect_left(days, day)
        return self.closings[i - 1] if i else (0, 0)

    def statement(self, first: int, last: int) -> list[tuple[int, Row]]:
        days = self._index()
        if not days or last < days[0]:
            return []
        start = max(first, days[0])
        out: list[tuple[int, Row]] = []
        kept = self.rows
        empty = DayFlows()
        cash, committed = self.closing_before(start)
        final = days[-1]
        for day in range(start, min(last, final) + 1):
            row = kept.get(day)
            if row is None:
                row = kept[day] = make_row(cash, committed, self.days.get(day, empty))
            cash, committed = row["closing_cash"], row["closing_committed"]
            out.append((day, row))
        if last > final:  # the days after the last with flows: one quiet row, the same for each
            cash, committed = self.closings[-1]
            quiet = make_row(cash, committed, empty)
            out += [(day, quiet) for day in range(max(start, final + 1), last + 1)]
        return out


def make_row(opening_cash: int, opening_committed: int, f: DayFlows) -> Row:
    """One day's row from its opening and its flows, in ``STATEMENT_COLUMNS`` order."""
    cash = opening_cash + f.cash_delta
    committed = opening_committed + f.committed_delta
    cols: Row = {"opening_cash": opening_cash, "opening_committed": opening_committed}
    cols |= {name: getattr(f, name) for name in FLOW_COLUMNS}
    cols |= {"closing_cash": cash, "closing_committed": committed, "closing_available": cash - committed}
    return {c: cols[c] for c in STATEMENT_COLUMNS}


class GovernmentDays:
    """One government's daily flows summed over its positions, per fiscal year and in all."""

    def __init__(self, flows: Iterable[tuple[PosKey, int, DayFlows]] = ()) -> None:
        self._years: dict[int, _Year] = {}
        for pk, day, f in flows:
            self.add(pk, day, f)

    def add(self, pk: PosKey, day: int, f: DayFlows) -> None:
        """A position's flows on a day (a batch's part of them: they add up)."""
        for key in (pk[2], ALL_YEARS):
            year = self._years.get(key)
            if year is None:
                year = self._years[key] = _Year()
            year.add(day, f)

    @property
    def fiscal_years(self) -> list[int]:
        return sorted(k for k in self._years if k != ALL_YEARS)

    def rows(self, first: int, last: int, fiscal_year: int | None = None) -> list[tuple[int, Row]]:
        """``(day, columns)`` for each day of ``first..last`` from the first day with flows of
        the fiscal year (``None``: of any year, all summed). The rows are kept: do not change
        them."""
        year = self._years.get(ALL_YEARS if fiscal_year is None else fiscal_year)
        return [] if year is None else year.statement(first, last)
