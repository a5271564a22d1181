"""One run's plan: what the load generator must do at each wall second of the run.

A :class:`Plan` is the day type's curve (``loadtest.profile``) as seen by one run: played from
``start_h`` to ``end_h`` KST, compressed ``compress`` times and scaled (``mode="day"``), or the
heavy day, ``heavy_factor`` × the busiest hour after a linear ramp (``mode="heavy"``). Locust's
shapes and source systems ask it for users and tx/s at run time ``t``; the runner asks it what to
expect (transactions, logins, peak users). It travels to every Locust process as ``LOADTEST_*``
variables (:meth:`Plan.to_env`, :meth:`Plan.from_env`). Pure: no Locust, no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from loadtest.days import DAY, DAY_TYPES, DEFAULT_DAY, HOUR, SESSION_CLASSES, DayType
from loadtest.profile import concurrent, peak, peak_tx_hour, session_rate, tx_between, tx_rate


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
