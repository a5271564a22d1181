"""The load model of a cashpos business day: pure functions, no Locust, no I/O.

A day of the national service is **150,000 user sessions** of officials (almost all of them
readers) and **600,000 transactions** (events posted by the source systems), on an ordinary
payroll day (the 20th). Everything the Locust shapes do is derived here (the curves over the day,
from the measured shares in ``loadtest.days``) and in ``loadtest.plan`` (one run of them), so that
a unit test can integrate it (``tests/test_loadtest_smoke.py``) and ``python -m loadtest.profile``
can print it.

Sessions → concurrent users (Little's law)
------------------------------------------
Sessions *start* at a rate that follows office hours (``SESSION_HOURS``: the share of the day's
sessions starting in each KST hour). A session of class *k* lasts ``W_k`` on average; the number
of users of class *k* logged in at time *t* is the number of sessions started in the last ``W_k``:

    users_k(t) = ∫_{t-W_k}^{t} λ_k(s) ds        (λ_k = sessions/s of class k)

which, for a slowly varying λ, is the familiar ``sessions/hour × average session length (h)``.
Integrating it over the day gives back ``sessions_k × W_k``, i.e. the day's sessions.
Each Locust user is one logged-in official; it runs sessions back to back, so the Locust user
count *is* the concurrency, and a spawn rate only follows d users/dt (see ``loadtest.plan.Plan.spawn_rate``).
A spawned user starts in the middle of a session (its dashboard already open: it only opens its
stream); sessions end - and the user logs in again, loading the page - at the hazard
λ_k(t)/users_k(t) (``loadtest.plan.Plan.session_hazard``), so logins happen at the real rate λ(t) however fast
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

import math
from typing import Final

from loadtest.days import (
    DAY,
    DAY_TYPES,
    DEFAULT_DAY,
    HOUR,
    SESSION_CLASSES,
    SESSION_HOURS,
    DayType,
    SessionClass,
)


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
