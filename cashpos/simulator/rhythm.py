"""The calendar rhythm (KST): the hourly intensity of every channel over a year.

A non-homogeneous Poisson process with hourly intensity per channel: office hours 09-18 on
business days (lunch dip), ~3-5% of that at night/weekends and on Korean public holidays,
online tax payments 24/7 with a higher night floor; month-end and quarter-end peaks, tax
deadline month-ends, grants early in the month, the first business day of January (2 Jan)
spike, the 20-31 December rush. Each channel's profile is normalised to mean 1 over the year.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from cashpos.calendar import KST_OFFSET_SECONDS, is_business_day
from cashpos.simulator.channels import (
    C_COMMIT,
    C_CUST_IN,
    C_CUST_OUT,
    C_DIRECT,
    C_PAYROLL,
    C_TRANSFER,
    CHANNELS,
    N_CHANNELS,
    R_BOND,
    R_GRANT,
    R_NONTAX,
    R_SUBSIDY,
    R_TAX,
)

_KST_EPOCH_DAY: Final = dt.date(1970, 1, 1).toordinal()


def day_index(d: dt.date) -> int:
    """Days since 1970-01-01 (KST calendar)."""
    return d.toordinal() - _KST_EPOCH_DAY


def day_of(index: int) -> dt.date:
    return dt.date.fromordinal(index + _KST_EPOCH_DAY)


def day_start(index: int) -> float:
    """Epoch seconds of KST midnight of day ``index``."""
    return index * 86400.0 - KST_OFFSET_SECONDS


# Hour-of-day shapes (relative), business days.
_OFFICE = (
    0.02,
    0.015,
    0.01,
    0.01,
    0.01,
    0.02,
    0.05,
    0.12,
    0.45,
    1.0,
    1.3,
    1.25,
    0.65,
    1.1,
    1.3,
    1.3,
    1.2,
    1.0,
    0.45,
    0.15,
    0.08,
    0.05,
    0.04,
    0.03,
)
_ONLINE = (
    0.12,
    0.08,
    0.06,
    0.05,
    0.05,
    0.07,
    0.15,
    0.35,
    0.7,
    1.0,
    1.15,
    1.15,
    0.9,
    1.0,
    1.1,
    1.1,
    1.05,
    0.95,
    0.7,
    0.55,
    0.5,
    0.45,
    0.35,
    0.2,
)
_PAYROLL = (0, 0, 0, 0, 0, 0, 0, 0, 0.2, 1.0, 1.6, 1.2, 0.3, 0.6, 0.4, 0.2, 0.1, 0.05, 0, 0, 0, 0, 0, 0)
_OFF_DAY = {"office": 0.04, "online": 0.3, "payroll": 0.0}  # weekend/holiday vs business day


def _day_factors(d: dt.date, info: dict[str, Any]) -> list[float]:
    """Per-channel multiplier for one day (before hour shapes and yearly normalisation)."""
    f = [1.0] * N_CHANNELS
    m, day = d.month, d.day
    bday = info["bday"]
    if bday:
        from_end = info["bdays_to_month_end"]  # 0 = last business day of the month
        nth = info["nth_bday"]  # 1 = first business day of the month
        if from_end < 3:  # month-end execution and deadlines
            for c, x in (
                (C_COMMIT, 1.4),
                (C_DIRECT, 1.6),
                (C_TRANSFER, 1.5),
                (R_NONTAX, 1.3),
                (R_TAX, 2.0),
                (C_CUST_IN, 1.3),
                (C_CUST_OUT, 1.3),
            ):
                f[c] *= x
            if m in (1, 5, 6, 7, 9, 12) and from_end < 2:  # local tax due dates
                f[R_TAX] *= 2.5
        if m in (3, 6, 9, 12) and from_end < 5:  # quarter-end (early-execution targets)
            for c in (C_COMMIT, C_DIRECT, C_TRANSFER):
                f[c] *= 1.5
            f[R_BOND] *= 2.0
        f[R_GRANT] *= 4.0 if nth <= 5 else 0.3  # 교부세 early in the month
        if m in (1, 4, 7, 10) and nth <= 10:
            f[R_SUBSIDY] *= 2.0
        if m == 1 and nth == 1:  # year start (2 January)
            for c in range(N_CHANNELS):
                f[c] *= 2.5
            f[C_COMMIT] *= 1.6
            f[R_GRANT] *= 2.0
        if m == 12 and day >= 20:  # year-end rush
            for c, x in ((C_COMMIT, 2.2), (C_DIRECT, 2.0), (C_TRANSFER, 2.5), (R_SUBSIDY, 1.5)):
                f[c] *= x
        if m == 12:
            f[R_BOND] *= 3.0
    f[C_PAYROLL] = 1.0 if info["payroll"] else 0.0
    return f


class HourlyIntensity:
    """Hourly intensity table for one KST calendar year."""

    __slots__ = ("cum", "first_hour", "lam")

    def __init__(self, year: int, weights: list[float]) -> None:
        first = dt.date(year, 1, 1)
        n_days = (dt.date(year + 1, 1, 1) - first).days
        days = [first + dt.timedelta(days=i) for i in range(n_days)]
        bdays = [is_business_day(d) for d in days]
        infos: list[dict[str, Any]] = []
        by_month: dict[int, list[int]] = {}
        for i, d in enumerate(days):
            if bdays[i]:
                by_month.setdefault(d.month, []).append(i)
        payroll_days = set()
        for m in range(1, 13):
            i = (dt.date(year, m, 20) - first).days
            while i > 0 and not bdays[i]:
                i -= 1
            payroll_days.add(i)
        for i, d in enumerate(days):
            info: dict[str, Any] = {"bday": bdays[i], "payroll": i in payroll_days}
            if bdays[i]:
                month = by_month[d.month]
                k = month.index(i)
                info["nth_bday"] = k + 1
                info["bdays_to_month_end"] = len(month) - 1 - k
            infos.append(info)
        styles = [ch[1] for ch in CHANNELS]
        shapes = {"office": _OFFICE, "online": _ONLINE, "payroll": _PAYROLL}
        # raw[c][h] for every hour of the year, then normalise each channel to mean 1
        n_hours = n_days * 24
        raw = [[0.0] * n_hours for _ in range(N_CHANNELS)]
        for i, d in enumerate(days):
            f = _day_factors(d, infos[i])
            for c in range(N_CHANNELS):
                shape = shapes[styles[c]]
                scale = f[c] * (1.0 if bdays[i] else _OFF_DAY[styles[c]])
                if scale == 0.0:
                    continue
                row = raw[c]
                base = i * 24
                for h in range(24):
                    row[base + h] = scale * shape[h]
        for c in range(N_CHANNELS):
            total = sum(raw[c])
            scale_c = weights[c] * n_hours / total if total > 0 else 0.0
            raw[c] = [x * scale_c for x in raw[c]]
        self.first_hour = day_index(first) * 24
        self.lam: list[float] = []
        self.cum: list[list[float]] = []
        for h in range(n_hours):
            acc = 0.0
            cum = []
            for c in range(N_CHANNELS):
                acc += raw[c][h]
                cum.append(acc)
            self.lam.append(acc)  # events per simulated second in this hour
            self.cum.append(cum)


class HourInfo:
    __slots__ = ("day", "prefix", "window", "year")

    def __init__(self, hour: int) -> None:
        day = hour // 24
        d = day_of(day)
        self.prefix = f"{d.isoformat()}T{hour % 24:02d}:"
        self.year = d.year
        self.window = d.month == 1 and d.day <= 20  # prior-year processing open
        self.day = day
