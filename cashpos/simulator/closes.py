"""The fiscal-year close schedule: every government's close of each fiscal year at the end of
its 출납정리기한, mixed into the stream like a scheduled follow-up."""

from __future__ import annotations

import datetime as dt
from heapq import heappush
from typing import Any

from cashpos.calendar import KST, close_date
from cashpos.simulator.channels import N_GOVS
from streams.contract import year_close


class YearCloses:
    """The generator's fiscal-year closes (a mixin of :class:`Simulator`)."""

    _seq: int
    _closes_pending: int
    _followups: list[tuple[float, int, list[Any]]]
    _orgs: list[str]

    def _schedule_closes(self, start: dt.datetime) -> None:
        """Every government's close of each fiscal year whose 출납정리기한 ends after ``start``
        (for the next few years), at 00:00 KST on 21 January, in government order. The close's
        id is the same in every run (``close-{year}``): a re-run's close is a duplicate."""
        for year in range(start.year - 1, start.year + 4):
            d = close_date(year)
            at = dt.datetime(d.year, d.month, d.day, tzinfo=KST).timestamp()
            if at <= start.timestamp():
                continue
            for g in range(N_GOVS):
                self._seq += 1
                heappush(self._followups, (at, self._seq, [g, year]))
                self._closes_pending += 1

    def _close(self, g: int, year: int) -> bytes:
        self._closes_pending -= 1
        return year_close(self._orgs[g], year)  # as `cashpos close-year` sends it: one close only
