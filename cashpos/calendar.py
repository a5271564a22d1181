"""Korea's calendar for cashpos: Korea time, public holidays and business days, the fiscal year.

The one place these facts live; the event contract, the alert rules and the simulator use it.
Pure (no clock, no I/O).

- **Korea time** (KST) is UTC+9 all year (no daylight saving).
- **Business days**: Monday to Friday, not a public holiday. Fixed holidays, and the lunar ones
  (설날, 부처님오신날, 추석, with substitute days) for 2024–2030 from the official calendar; a
  year outside that range counts only the fixed ones.
- **The fiscal year** (회계연도) is the calendar year. Its books close on 31 December (출납폐쇄);
  cash processing of what it decided continues until 20 January (출납정리기한), so an event
  dated 1–20 January may belong to the previous fiscal year.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Final

KST: Final = dt.timezone(dt.timedelta(hours=9), "KST")
KST_OFFSET: Final = dt.timedelta(hours=9)
KST_OFFSET_SECONDS: Final = 9 * 3600
KST_OFFSET_MS: Final = KST_OFFSET_SECONDS * 1000
DAY_MS: Final = 86_400_000

# The last day of January on which the previous fiscal year still takes cash processing.
PRIOR_YEAR_LAST_JANUARY_DAY: Final = 20

_FIXED_HOLIDAYS: Final = {(1, 1), (3, 1), (5, 5), (6, 6), (8, 15), (10, 3), (10, 9), (12, 25)}
_LUNAR_HOLIDAYS: Final = {  # 설날, 부처님오신날, 추석 (+ substitute days), 2024-2030
    2024: ["02-09", "02-10", "02-11", "02-12", "05-15", "09-16", "09-17", "09-18"],
    2025: ["01-28", "01-29", "01-30", "05-06", "10-05", "10-06", "10-07", "10-08"],
    2026: ["02-16", "02-17", "02-18", "05-24", "05-25", "09-24", "09-25", "09-26"],
    2027: ["02-06", "02-07", "02-08", "02-09", "05-13", "09-14", "09-15", "09-16"],
    2028: ["01-25", "01-26", "01-27", "05-02", "10-02", "10-04", "10-05"],
    2029: ["02-12", "02-13", "02-14", "05-20", "05-21", "09-21", "09-22", "09-23", "09-24"],
    2030: ["02-02", "02-03", "02-04", "02-05", "05-09", "09-11", "09-12", "09-13"],
}


@cache
def holidays(year: int) -> frozenset[dt.date]:
    """Korea's public holidays of ``year``."""
    days = {dt.date(year, m, d) for m, d in _FIXED_HOLIDAYS}
    for md in _LUNAR_HOLIDAYS.get(year, ()):
        days.add(dt.date(year, int(md[:2]), int(md[3:])))
    return frozenset(days)


def is_business_day(d: dt.date) -> bool:
    return d.weekday() < 5 and d not in holidays(d.year)


def fiscal_years_for(occurred_at: dt.datetime) -> tuple[int, ...]:
    """Fiscal years an event at this instant may belong to (prior-year processing to 20 Jan).

    Raises OverflowError for an instant with no date in Korea time (year 1 east of UTC, year
    9999 west of it); the contract turns that into ``invalid_timestamp``."""
    if occurred_at.utcoffset() == KST_OFFSET:  # the norm: the local date is the Korean date
        y, m, d = occurred_at.year, occurred_at.month, occurred_at.day
    else:
        local = occurred_at.astimezone(KST)
        y, m, d = local.year, local.month, local.day
    return (y, y - 1) if m == 1 and d <= PRIOR_YEAR_LAST_JANUARY_DAY else (y,)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def utc_stamp(ms: int) -> str:
    """The one timestamp format cashpos writes (API bodies, topics, logs, audit): RFC 3339 in UTC,
    milliseconds, ``Z`` — e.g. ``2026-12-07T04:27:49.123Z``. Integer arithmetic: no float
    rounding at any epoch. Dates (``due_date``, ``projected_date``) are Korean calendar dates."""
    seconds, millis = divmod(ms, 1000)
    t = _EPOCH + dt.timedelta(seconds=seconds)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
