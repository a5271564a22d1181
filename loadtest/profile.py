"""The load model of a cashpos business day: pure functions, no Locust, no I/O.

A day of the national service is **150,000 user sessions** of officials (almost all of them
readers) and **600,000 transactions** (events posted by the source systems), on an ordinary
payroll day (the 20th). Everything the Locust shapes do is derived here, so that a unit test can
integrate it (``tests/test_loadtest_smoke.py``) and ``python -m loadtest.profile`` can print it.

Sessions → concurrent users (Little's law)
------------------------------------------
Sessions *start* at a rate that follows office hours (``SESSION_HOURS``: the share of the day's
sessions starting in each KST hour). A session of class *k* lasts ``W_k`` on average; the number
of users of class *k* logged in at time *t* is the number of sessions started in the last ``W_k``:

    users_k(t) = ∫_{t-W_k}^{t} λ_k(s) ds        (λ_k = sessions/s of class k)

which, for a slowly varying λ, is the familiar ``sessions/hour × average session length (h)``.
Integrating it over the day gives back ``sessions_k × W_k``, i.e. the day's sessions.
Each Locust user is one logged-in official; it runs sessions back to back, so the Locust user
count *is* the concurrency, and a spawn rate only follows d users/dt (see ``Plan.spawn_rate``).
A spawned user starts in the middle of a session (its dashboard already open: it only opens its
stream); sessions end - and the user logs in again, loading the page - at the hazard
λ_k(t)/users_k(t) (``Plan.session_hazard``), so logins happen at the real rate λ(t) however fast
the compressed curve ramps.

=====================  ========  ===========  =======================================
class                  sessions  mean length  what a session does
=====================  ========  ===========  =======================================
``FinanceDirector``    20 %      20 min       dashboard page, its government's live
                                              stream held for the session, a look at
                                              ``/v1/positions/{org}`` every ~2.5 min
``IntegrationSystem``  80 %      5 min        an official's screen in another system
                                              (e-hojo, …) asking for balances every
                                              ~30 s: ``/v1/positions/{org}[/{account}]``,
                                              ``/v1/summary`` now and then
=====================  ========  ===========  =======================================

On the default day the busiest hour (09–10) starts 18,750 sessions: ~1,250 directors and ~1,250
integration users logged in at 10:00, ~2,500 concurrent users (see ``python -m loadtest.profile``).

Transactions → transactions/s
-----------------------------
``tx/s(t) = transactions × tx_hours[hour(t)] / 3600``. The hourly shares of each day type are
measured from ``cashpos.simulator`` (its calendar: online tax payments around the clock, office
hours, the payroll batch on the 20th, month end, the 2 January spike, the December rush) on a
concrete 2026 date with 90 days of warm-up, so the posted bodies and the pacing agree. The
default day peaks at 11–12 and 13–14 with 10.4 % of the day each: 62,200 tx/h = 17.3 tx/s.
The other day types keep the simulator's volume relative to the payroll day.

Compression and scale
---------------------
``--compress N`` plays the day's *curve* N times faster: every wall second is N seconds of the
day, and at each moment the run carries that moment's **real** concurrency and tx/s (a time
lapse: a 30-minute run at N=48 shows the whole day, including the busiest hour at its real
intensity, and carries 1/N of the day's volume). ``user_scale`` / ``tx_scale`` shrink the
intensity for small machines (the smoke test). The *heavy day* holds 10× the busiest hour's
concurrency and tx/s (after a linear ramp).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Final

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


def _norm(xs: tuple[float, ...]) -> tuple[float, ...]:
    s = sum(xs)
    return tuple(x / s for x in xs)


def _prefix(shares: tuple[float, ...]) -> tuple[float, ...]:
    out = [0.0]
    for x in shares:
        out.append(out[-1] + x)
    return tuple(out)


_SESSION_SHARES: Final = _norm(SESSION_HOURS)
_SESSION_CUM: Final = _prefix(_SESSION_SHARES)


def _cum_share(cum: tuple[float, ...], shares: tuple[float, ...], t: float) -> float:
    """Share of the day accumulated by day-second ``t`` (0 ≤ t ≤ 86,400), piecewise linear."""
    t = min(max(t, 0.0), DAY)
    h = min(int(t // HOUR), 23)
    return cum[h] + shares[h] * (t - h * HOUR) / HOUR


# -- sessions -----------------------------------------------------------------------------------


def session_rate(day: DayType, cls: SessionClass, t: float) -> float:
    """Sessions of ``cls`` starting per second at day-second ``t``."""
    h = int((t % DAY) // HOUR)
    return day.sessions * cls.share * _SESSION_SHARES[h] / HOUR


def sessions_between(day: DayType, cls: SessionClass, t0: float, t1: float) -> float:
    """Sessions of ``cls`` started in [t0, t1] (day-seconds; the previous day is the same)."""
    if t1 < t0:
        return 0.0
    total = day.sessions * cls.share

    def cum(t: float) -> float:  # sessions since the start of "day 0", t may be negative
        k = math.floor(t / DAY)
        return k * total + total * _cum_share(_SESSION_CUM, _SESSION_SHARES, t - k * DAY)

    return cum(t1) - cum(t0)


def concurrent(day: DayType, cls: SessionClass, t: float) -> float:
    """Users of ``cls`` logged in at day-second ``t``: sessions started in the last W."""
    return sessions_between(day, cls, t - cls.seconds, t)


# -- transactions ---------------------------------------------------------------------------


def tx_rate(day: DayType, t: float) -> float:
    """Transactions per second at day-second ``t`` (real time)."""
    h = int((t % DAY) // HOUR)
    return day.transactions * _norm(day.tx_hours)[h] / HOUR


def tx_between(day: DayType, t0: float, t1: float) -> float:
    """Transactions in [t0, t1] (day-seconds within one day)."""
    shares = _norm(day.tx_hours)
    cum = _prefix(shares)
    return day.transactions * (_cum_share(cum, shares, t1) - _cum_share(cum, shares, t0))


def peak(day: DayType, step: float = 60.0) -> tuple[float, dict[str, float]]:
    """The day-second of the highest total concurrency, and the users per class then."""
    best_t, best = 0.0, -1.0
    t = 0.0
    while t < DAY:
        total = sum(concurrent(day, c, t) for c in SESSION_CLASSES)
        if total > best:
            best_t, best = t, total
        t += step
    return best_t, {c.name: concurrent(day, c, best_t) for c in SESSION_CLASSES}


def peak_tx_hour(day: DayType) -> int:
    shares = day.tx_hours
    return max(range(24), key=lambda h: shares[h])


# -- a run ----------------------------------------------------------------------------------


def _env(name: str, default: str) -> str:
    return os.environ.get(f"LOADTEST_{name}", default) or default


@dataclass(frozen=True)
class Plan:
    """What one run asks for, as functions of the run time ``t`` (wall seconds since start).

    ``mode="day"``: the day type's curve from ``start_h`` to ``end_h`` (KST), compressed by
    ``compress``. ``mode="heavy"``: ``heavy_factor`` × the busiest hour's concurrency and tx/s,
    reached by a linear ramp of ``ramp_s`` and held for ``hold_s``."""

    day_type: str = DEFAULT_DAY
    mode: str = "day"
    compress: float = 48.0
    user_scale: float = 1.0
    tx_scale: float = 1.0
    start_h: float = 0.0
    end_h: float = 24.0
    heavy_factor: float = 10.0
    ramp_s: float = 60.0
    hold_s: float = 900.0
    _cache: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.day_type not in DAY_TYPES:
            raise ValueError(f"day type must be one of {', '.join(DAY_TYPES)}")
        if self.mode not in ("day", "heavy"):
            raise ValueError("mode must be day or heavy")
        if not (0 <= self.start_h < self.end_h <= 24):
            raise ValueError("window must satisfy 0 <= start < end <= 24")
        if self.compress <= 0 or self.user_scale < 0 or self.tx_scale < 0:
            raise ValueError("compress must be > 0 and scales >= 0")

    @property
    def day(self) -> DayType:
        return DAY_TYPES[self.day_type]

    # -- time -------------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        if self.mode == "heavy":
            return self.ramp_s + self.hold_s
        return (self.end_h - self.start_h) * HOUR / self.compress

    @property
    def clock_speed(self) -> float:
        """Day-seconds per wall second."""
        return self.compress if self.mode == "day" else 1.0

    @property
    def start_day_s(self) -> float:
        """Day-second (KST) at run time 0."""
        if self.mode == "heavy":
            return peak_tx_hour(self.day) * HOUR
        return self.start_h * HOUR

    def day_time(self, t: float) -> float:
        return self.start_day_s + t * self.clock_speed

    def start_datetime(self) -> dt.datetime:
        """KST wall-clock datetime of the simulated day at run time 0."""
        from zoneinfo import ZoneInfo

        d = self.day.date
        return dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo("Asia/Seoul")) + dt.timedelta(
            seconds=self.start_day_s
        )

    def _ramp(self, t: float) -> float:
        if self.ramp_s <= 0:
            return 1.0
        return min(1.0, max(0.0, t / self.ramp_s))

    # -- users ------------------------------------------------------------------------------

    def _peak(self) -> tuple[float, dict[str, float]]:
        p = self._cache.get("peak")
        if p is None:
            p = self._cache["peak"] = peak(self.day)
        return p

    def users(self, t: float) -> dict[str, float]:
        """Concurrent users per class (fractional; the shape rounds the total)."""
        if self.mode == "heavy":
            f = self.heavy_factor * self.user_scale * self._ramp(t)
            return {k: v * f for k, v in self._peak()[1].items()}
        s = self.day_time(t)
        return {c.name: concurrent(self.day, c, s) * self.user_scale for c in SESSION_CLASSES}

    def session_hazard(self, cls: str, t: float) -> float:
        """Per-user probability per wall second that a session of ``cls`` ends (and the user
        logs in anew): λ_k / users_k at the moment the run is showing. Locust users appear and
        disappear with the curve (a compressed ramp spawns them N times faster than officials
        log in), so users start *mid-session* and logins happen at this hazard instead: the run
        then sees the real login rate λ(t) at every moment, at any compression (at N=1 in a
        steady state it is 1/W, the mean session length)."""
        c = next(x for x in SESSION_CLASSES if x.name == cls)
        s = self._peak()[0] if self.mode == "heavy" else self.day_time(t)
        u = concurrent(self.day, c, s)
        return session_rate(self.day, c, s) / u if u > 0 else 1.0 / c.seconds

    def logins(self, t0: float = 0.0, t1: float | None = None) -> float:
        """Sessions (logins) the run should start between run times t0 and t1 (all classes)."""
        t1 = self.duration_s if t1 is None else min(t1, self.duration_s)
        n, step, t = 0.0, 1.0, max(0.0, t0)
        while t < t1:
            dt_ = min(step, t1 - t)
            users = self.users(t + dt_ / 2)
            n += sum(self.session_hazard(k, t + dt_ / 2) * v for k, v in users.items()) * dt_
            t += dt_
        return n

    def total_users(self, t: float) -> int:
        return round(sum(self.users(t).values()))

    def weights(self) -> dict[str, int]:
        """Locust weights: the share of each class in the concurrency (constant over the day,
        as every class follows the same session curve), in percent."""
        conc = {c.name: c.share * c.seconds for c in SESSION_CLASSES}
        total = sum(conc.values())
        return {k: max(1, round(100 * v / total)) for k, v in conc.items()}

    def peak_users(self) -> float:
        if self.mode == "heavy":
            return sum(self.users(self.duration_s).values())
        t, best = 0.0, 0.0
        while t <= self.duration_s:
            best = max(best, sum(self.users(t).values()))
            t += max(1.0, self.duration_s / 2000)
        return best

    def spawn_rate(self, t: float, tick: float = 1.0) -> float:
        """Users per second Locust needs to follow the curve over the next tick (× 1.5, at
        least 1): d users/dt on the wall clock."""
        du = abs(sum(self.users(t + tick).values()) - sum(self.users(t).values())) / tick
        return max(1.0, 1.5 * du)

    # -- transactions ------------------------------------------------------------------------

    def tps(self, t: float) -> float:
        """Target transactions per wall second at run time ``t``."""
        if t < 0 or t > self.duration_s:
            return 0.0
        if self.mode == "heavy":
            peak_rate = tx_rate(self.day, self.start_day_s)
            return peak_rate * self.heavy_factor * self.tx_scale * self._ramp(t)
        return tx_rate(self.day, self.day_time(t)) * self.tx_scale

    def expected_tx(self, t0: float = 0.0, t1: float | None = None) -> float:
        """The number of transactions the plan asks for between run times t0 and t1."""
        t1 = self.duration_s if t1 is None else min(t1, self.duration_s)
        t0 = max(0.0, t0)
        if t1 <= t0:
            return 0.0
        if self.mode == "heavy":
            full = tx_rate(self.day, self.start_day_s) * self.heavy_factor * self.tx_scale

            def area(t: float) -> float:  # ∫_0^t ramp
                if self.ramp_s <= 0 or t >= self.ramp_s:
                    return (self.ramp_s / 2 if self.ramp_s > 0 else 0.0) + (t - max(self.ramp_s, 0))
                return t * t / (2 * self.ramp_s)

            return full * (area(t1) - area(t0))
        # a day-second interval maps to 1/compress wall seconds: the real count / compress
        return tx_between(self.day, self.day_time(t0), self.day_time(t1)) * self.tx_scale / self.compress

    def peak_tps(self) -> float:
        if self.mode == "heavy":
            return self.tps(self.duration_s)
        t, best = 0.0, 0.0
        while t <= self.duration_s:
            best = max(best, self.tps(t))
            t += max(0.5, self.duration_s / 4000)
        return best

    def source_users(self) -> int:
        """SourceSystem users (fixed): enough that none has to post more than ~4 tx/s (each POST
        waits for acks=all), at least 4 (tax, non-tax, e-hojo, bank gateway...)."""
        return max(4, math.ceil(self.peak_tps() / 4.0))

    def simulator_rate(self, processes: int = 1) -> tuple[float, float]:
        """(rate, speed) for a per-process ``cashpos.simulator.Simulator`` whose simulated clock
        keeps pace with the run's day clock while the run posts ``tps(t)``: the simulator emits
        rate/speed × its calendar profile events per simulated second, its profile averages
        ``sim_day_factor`` over this date, and the run posts tps/clock_speed per day-second."""
        day = self.day
        if self.mode == "heavy":
            m = self.heavy_factor * self.tx_scale
        else:
            m = self.tx_scale
        per_sim_s = day.transactions * m / (self.clock_speed * DAY * day.sim_day_factor)
        per_sim_s /= max(1, processes)
        speed = self.clock_speed
        return max(per_sim_s * speed, 1e-6), speed

    # -- environment (how run.py hands the plan to every Locust process) ---------------------

    def to_env(self) -> dict[str, str]:
        return {
            "LOADTEST_DAY_TYPE": self.day_type,
            "LOADTEST_MODE": self.mode,
            "LOADTEST_COMPRESS": repr(self.compress),
            "LOADTEST_USER_SCALE": repr(self.user_scale),
            "LOADTEST_TX_SCALE": repr(self.tx_scale),
            "LOADTEST_WINDOW": f"{self.start_h:g}-{self.end_h:g}",
            "LOADTEST_HEAVY_FACTOR": repr(self.heavy_factor),
            "LOADTEST_RAMP_S": repr(self.ramp_s),
            "LOADTEST_HOLD_S": repr(self.hold_s),
        }

    @classmethod
    def from_env(cls) -> Plan:
        start, _, end = _env("WINDOW", "0-24").partition("-")
        return cls(
            day_type=_env("DAY_TYPE", DEFAULT_DAY),
            mode=_env("MODE", "day"),
            compress=float(_env("COMPRESS", "48")),
            user_scale=float(_env("USER_SCALE", "1")),
            tx_scale=float(_env("TX_SCALE", "1")),
            start_h=float(start),
            end_h=float(end or 24),
            heavy_factor=float(_env("HEAVY_FACTOR", "10")),
            ramp_s=float(_env("RAMP_S", "60")),
            hold_s=float(_env("HOLD_S", "900")),
        )

    def with_(self, **kw: Any) -> Plan:
        return replace(self, _cache={}, **kw)

    def describe(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "day_type": self.day_type,
            "day_label": self.day.label,
            "date": self.day.date.isoformat(),
            "compress": self.compress if self.mode == "day" else None,
            "window_kst": f"{self.start_h:g}-{self.end_h:g}h"
            if self.mode == "day"
            else f"{peak_tx_hour(self.day)}h (busiest hour) x{self.heavy_factor:g}",
            "user_scale": self.user_scale,
            "tx_scale": self.tx_scale,
            "duration_s": round(self.duration_s, 1),
            "peak_users": round(self.peak_users()),
            "peak_tps": round(self.peak_tps(), 2),
            "expected_tx": round(self.expected_tx()),
            "expected_logins": round(self.logins()),
            "day_sessions": self.day.sessions,
            "day_transactions": self.day.transactions,
            "weights": self.weights(),
        }


def table(day_type: str = DEFAULT_DAY) -> str:
    """Hour by hour: sessions started, concurrent users at the half hour, transactions."""
    day = DAY_TYPES[day_type]
    lines = [
        (
            f"{day.name}: {day.label}, {day.date} - {day.sessions:,} sessions, "
            f"{day.transactions:,} transactions"
        ),
        "hour   sessions/h   directors  integration  users   tx/h     tx/s",
    ]
    tot_s = tot_tx = 0.0
    for h in range(24):
        t0, t1 = h * HOUR, (h + 1) * HOUR
        s = sum(sessions_between(day, c, t0, t1) for c in SESSION_CLASSES)
        mid = t0 + 1800
        d, i = (concurrent(day, c, mid) for c in SESSION_CLASSES)
        tx = tx_between(day, t0, t1)
        tot_s += s
        tot_tx += tx
        lines.append(
            f"{h:02d}-{h + 1:02d}  {s:10,.0f}  {d:10,.0f}  {i:11,.0f}  {d + i:6,.0f}"
            f"  {tx:7,.0f}  {tx / HOUR:6.2f}"
        )
    t, users = peak(day)
    lines.append(f"total  {tot_s:10,.0f}  {'':10}  {'':11}  {'':6}  {tot_tx:7,.0f}")
    lines.append(
        f"peak concurrency {sum(users.values()):,.0f} at {int(t // 3600):02d}:"
        f"{int(t % 3600 // 60):02d} ({', '.join(f'{k} {v:,.0f}' for k, v in users.items())}); "
        f"busiest tx hour {peak_tx_hour(day):02d}h: {tx_rate(day, peak_tx_hour(day) * HOUR):.1f} tx/s; "
        f"heavy day (x10): {10 * sum(users.values()):,.0f} users, "
        f"{10 * tx_rate(day, peak_tx_hour(day) * HOUR):.0f} tx/s"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DAY))
