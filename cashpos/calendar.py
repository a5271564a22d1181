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


def korea_time(iso: str) -> dt.datetime:
    """An ISO 8601 instant from a command line: with its offset as given, or, without one, in
    Korea time."""
    at = dt.datetime.fromisoformat(iso)
    return at if at.tzinfo is not None else at.replace(tzinfo=KST)


def korean_date(at: dt.datetime) -> dt.date:
    """The date in Korea at this instant. Raises OverflowError for an instant with no date in
    Korea time (year 1 east of UTC, year 9999 west of it)."""
    if at.utcoffset() == KST_OFFSET:  # the norm: the local date is the Korean date
        return at.date()
    return at.astimezone(KST).date()


def fiscal_years_for(occurred_at: dt.datetime) -> tuple[int, ...]:
    """Fiscal years an event at this instant may belong to (prior-year processing to 20 Jan).

    Raises OverflowError like ``korean_date``; the contract turns that into ``invalid_timestamp``."""
    d = korean_date(occurred_at)
    y = d.year
    return (y, y - 1) if d.month == 1 and d.day <= PRIOR_YEAR_LAST_JANUARY_DAY else (y,)


def close_date(fiscal_year: int) -> dt.date:
    """The first Korean date on which ``fiscal_year`` may be closed: the day after its
    출납정리기한 (20 January of the next year)."""
    return dt.date(fiscal_year + 1, 1, PRIOR_YEAR_LAST_JANUARY_DAY + 1)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def utc_stamp(ms: int) -> str:
    """The one timestamp format cashpos writes (API bodies, topics, logs, audit): RFC 3339 in UTC,
    milliseconds, ``Z`` — e.g. ``2026-12-07T04:27:49.123Z``. Integer arithmetic: no float
    rounding at any epoch. Dates (``due_date``, ``projected_date``) are Korean calendar dates."""
    seconds, millis = divmod(ms, 1000)
    t = _EPOCH + dt.timedelta(seconds=seconds)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


# -- Korean days as integers (the alert rules' clocks) --------------------------------------------

_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()
OFFICE_OPEN_MS: Final = 9 * 3_600_000  # office hours: 09:00-18:00 KST on business days
OFFICE_CLOSE_MS: Final = 18 * 3_600_000


def kst_day(ms: int) -> int:
    """The Korean calendar day of an epoch-ms instant, as days since 1970-01-01."""
    return (ms + KST_OFFSET_MS) // DAY_MS


def day_date(day: int) -> dt.date:
    """The date of a ``kst_day``."""
    return dt.date.fromordinal(day + _EPOCH_ORDINAL)


def date_day(d: dt.date) -> int:
    """The ``kst_day`` of a Korean date."""
    return d.toordinal() - _EPOCH_ORDINAL


def day_start_ms(day: int) -> int:
    """The first instant (epoch ms) of a ``kst_day``: its 00:00 KST."""
    return day * DAY_MS - KST_OFFSET_MS


def year_end_day(fiscal_year: int) -> int:
    """The ``kst_day`` of 31 December of ``fiscal_year``, when its books close."""
    return date_day(dt.date(fiscal_year, 12, 31))


def office_minutes_between(start_ms: int, end_ms: int, max_days: int = 31) -> int:
    """Minutes of [start, end) in office hours (09:00-18:00 KST on business days). Looks back
    at most ``max_days`` days."""
    if end_ms <= start_ms:
        return 0
    start_ms = max(start_ms, end_ms - max_days * DAY_MS)
    total = 0
    for day in range(kst_day(start_ms), kst_day(end_ms) + 1):
        if not is_business_day(day_date(day)):
            continue
        lo = day_start_ms(day)
        a, b = max(lo + OFFICE_OPEN_MS, start_ms), min(lo + OFFICE_CLOSE_MS, end_ms)
        if b > a:
            total += b - a
    return total // 60_000
