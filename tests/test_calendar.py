"""The one calendar module: Korea time, business days and the fiscal year's January window."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from cashpos.calendar import (
    KST,
    date_day,
    day_date,
    day_start_ms,
    fiscal_years_for,
    holidays,
    is_business_day,
    kst_day,
    office_minutes_between,
    year_end_day,
)

ROOT = Path(__file__).resolve().parent.parent


def test_korea_time_and_the_holidays_are_defined_once() -> None:
    spelt = re.compile(r"timedelta\(hours=9\)|_(?:LUNAR|FIXED)_HOLIDAYS\s*[:=]")
    places = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if ".venv" not in p.parts and "tests" not in p.parts and spelt.search(p.read_text())
    ]
    assert places == ["cashpos/calendar.py"]


def test_business_days() -> None:
    assert is_business_day(dt.date(2026, 12, 7))  # a Monday
    assert not is_business_day(dt.date(2026, 12, 5))  # Saturday
    assert not is_business_day(dt.date(2026, 12, 25))  # Christmas
    assert not is_business_day(dt.date(2026, 9, 25))  # 추석
    assert dt.date(2027, 2, 8) in holidays(2027)  # 설날


@pytest.mark.parametrize(
    ("at", "years"),
    [
        ("2027-01-20T23:59:59.999+09:00", (2027, 2026)),  # the last instant of prior-year processing
        ("2027-01-21T00:00:00+09:00", (2027,)),
        ("2027-01-20T15:00:00Z", (2027,)),  # already 21 January in Korea
        ("2026-12-31T15:00:00Z", (2027, 2026)),  # New Year in Korea
        ("2026-12-31T23:59:59+09:00", (2026,)),
    ],
)
def test_the_fiscal_years_an_instant_may_belong_to(at: str, years: tuple[int, ...]) -> None:
    assert fiscal_years_for(dt.datetime.fromisoformat(at)) == years


def test_an_instant_with_no_korean_date_raises_overflow() -> None:
    with pytest.raises(OverflowError):
        fiscal_years_for(dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC))
    assert KST.utcoffset(None) == dt.timedelta(hours=9)


def kst_ms(s: str) -> int:
    return int(dt.datetime.fromisoformat(s + "+09:00").timestamp() * 1000)


def test_korean_days_as_integers() -> None:
    june1 = date_day(dt.date(2026, 6, 1))
    assert kst_day(kst_ms("2026-06-01T00:00")) == kst_day(kst_ms("2026-06-01T23:59")) == june1
    assert kst_day(kst_ms("2026-06-01T00:00") - 1) == june1 - 1  # the last instant of 31 May in Korea
    assert day_date(date_day(dt.date(2026, 6, 1))) == dt.date(2026, 6, 1)
    assert day_start_ms(date_day(dt.date(2026, 6, 1))) == kst_ms("2026-06-01T00:00")
    assert day_date(year_end_day(2026)) == dt.date(2026, 12, 31)


def test_office_minutes_skip_nights_weekends_and_holidays() -> None:
    assert office_minutes_between(kst_ms("2026-11-20T17:00"), kst_ms("2026-11-23T09:30")) == 90  # Fri -> Mon
    assert office_minutes_between(kst_ms("2026-11-23T08:00"), kst_ms("2026-11-23T19:00")) == 540
    # 추석 2026: 24-26 September (Thu-Sat)
    assert office_minutes_between(kst_ms("2026-09-23T17:00"), kst_ms("2026-09-28T09:30")) == 90
    assert office_minutes_between(kst_ms("2026-11-23T10:00"), kst_ms("2026-11-23T10:00")) == 0


def test_a_command_line_time_keeps_its_offset_or_is_read_in_korea() -> None:
    from cashpos.calendar import KST, korea_time

    assert korea_time("2027-01-20T09:00") == dt.datetime(2027, 1, 20, 9, 0, tzinfo=KST)
    assert korea_time("2027-01-20T09:00Z") == dt.datetime(2027, 1, 20, 18, 0, tzinfo=KST)
    assert korea_time("2026-12-20").utcoffset() == dt.timedelta(hours=9)
