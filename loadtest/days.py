"""The day types the load test can play, and who logs in: the measured curves, no code.

``SESSION_HOURS``: the share of a business day's sessions starting in each KST hour;
``SESSION_CLASSES``: the two kinds of logged-in users (their share of the sessions and how long a
session lasts); ``DAY_TYPES``: each day type's volume (sessions, transactions) and its
transactions' hourly shares, measured from ``cashpos.simulator``'s calendar on a 2026 date.
``loadtest.profile`` turns them into curves (users and tx/s over the day), ``loadtest.plan`` into
a run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

DAY: Final = 86_400.0
HOUR: Final = 3_600.0

# Share of the day's sessions starting in each KST hour (business day): logins from 08:00, the
# morning peak, the lunch dip, the afternoon, a little overtime; night duty officers.
SESSION_HOURS: Final = (
    0.002,
    0.001,
    0.001,
    0.001,
    0.001,
    0.002,
    0.006,
    0.020,
    0.070,
    0.125,
    0.120,
    0.105,
    0.050,
    0.095,
    0.110,
    0.100,
    0.085,
    0.055,
    0.025,
    0.012,
    0.006,
    0.004,
    0.003,
    0.001,
)


@dataclass(frozen=True)
class SessionClass:
    name: str
    share: float  # of the day's sessions
    minutes: float  # mean session length

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0


SESSION_CLASSES: Final = (
    SessionClass("FinanceDirector", 0.20, 20.0),
    SessionClass("IntegrationSystem", 0.80, 5.0),
)


@dataclass(frozen=True)
class DayType:
    name: str
    date: dt.date  # the 2026 date the simulator's calendar was measured on
    label: str
    sessions: int
    transactions: int
    tx_hours: tuple[float, ...]  # share of the day's transactions per KST hour
    sim_day_factor: float  # the simulator's events on that date / its yearly mean per day


# tx_hours and sim_day_factor: measured from cashpos.simulator (seed 1, 90 days of warm-up,
# rate 0.3/s: ~35,000-80,000 events per date; ±2 % per hour). Transactions keep the simulator's
# volume relative to the payroll day (600,000); sessions are an estimate (more officials log in
# on closing days).
DAY_TYPES: Final = {
    d.name: d
    for d in (
        DayType(
            "payroll",
            dt.date(2026, 11, 20),
            "ordinary payroll day (the 20th, Friday)",
            150_000,
            600_000,
            (
                0.006,
                0.0045,
                0.003,
                0.0023,
                0.0024,
                0.0039,
                0.0083,
                0.0174,
                0.0392,
                0.0723,
                0.1,
                0.1037,
                0.0826,
                0.1037,
                0.0957,
                0.0885,
                0.0757,
                0.058,
                0.0371,
                0.0272,
                0.0232,
                0.02,
                0.0162,
                0.0091,
            ),
            1.3429,
        ),
        DayType(
            "ordinary",
            dt.date(2026, 11, 18),
            "ordinary business day (no payroll)",
            145_000,
            495_000,
            (
                0.0068,
                0.0051,
                0.0038,
                0.0026,
                0.0026,
                0.004,
                0.0095,
                0.0216,
                0.0471,
                0.0709,
                0.0883,
                0.0923,
                0.0724,
                0.0878,
                0.0905,
                0.0865,
                0.0781,
                0.0665,
                0.0453,
                0.0347,
                0.0272,
                0.0256,
                0.0195,
                0.0112,
            ),
            1.1071,
        ),
        DayType(
            "month_end",
            dt.date(2026, 11, 30),
            "month end (last business day, tax deadline)",
            170_000,
            775_000,
            (
                0.0075,
                0.0045,
                0.0035,
                0.0036,
                0.0031,
                0.004,
                0.0091,
                0.0221,
                0.0448,
                0.0762,
                0.0869,
                0.0859,
                0.0694,
                0.0833,
                0.0908,
                0.086,
                0.0813,
                0.068,
                0.0461,
                0.0341,
                0.029,
                0.0271,
                0.021,
                0.0126,
            ),
            1.7345,
        ),
        DayType(
            "jan2",
            dt.date(2026, 1, 2),
            "2 January (first business day, prior-year processing)",
            200_000,
            1_420_000,
            (
                0.0064,
                0.0042,
                0.0032,
                0.0025,
                0.0025,
                0.0036,
                0.0076,
                0.019,
                0.0424,
                0.0686,
                0.089,
                0.0918,
                0.0797,
                0.0982,
                0.0992,
                0.0931,
                0.08,
                0.0659,
                0.0403,
                0.0289,
                0.0252,
                0.0214,
                0.0172,
                0.0101,
            ),
            3.1783,
        ),
        DayType(
            "december",
            dt.date(2026, 12, 29),
            "December rush (year end, quarter and month end)",
            185_000,
            989_000,
            (
                0.0059,
                0.0045,
                0.003,
                0.0025,
                0.0026,
                0.0036,
                0.0084,
                0.0194,
                0.0441,
                0.074,
                0.0913,
                0.0929,
                0.0679,
                0.0865,
                0.0942,
                0.0922,
                0.0834,
                0.074,
                0.0452,
                0.0295,
                0.0249,
                0.0223,
                0.0177,
                0.01,
            ),
            2.2137,
        ),
    )
}
DEFAULT_DAY: Final = "payroll"
