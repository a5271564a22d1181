"""The load shapes: how many users Locust runs at each second (the plan's curve).

Locust uses the non-abstract shape of the locustfile: the one ``LOADTEST_MODE`` selects.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtest.locust_env import PLAN, SOURCE_USERS
from loadtest.plan import Plan


class _PlanShape(LoadTestShape):
    abstract = True  # the shapes below are the ones Locust may pick
    plan: Plan

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.plan.duration_s:
            return None
        target = self.plan.total_users(t) + SOURCE_USERS
        # follow the curve (d users/dt x 1.5) and close any gap (start, slow spawning) in ~2 s
        gap = abs(target - self.get_current_user_count()) / 2.0
        return target, max(self.plan.spawn_rate(t), gap)


class BusinessDayShape(_PlanShape):
    """The day type's curve, compressed: concurrent users (Little's law on the session curve)
    plus the fixed SourceSystem users; tx/s is paced by the SourceSystem users themselves."""

    abstract = PLAN.mode != "day"
    plan = PLAN if PLAN.mode == "day" else PLAN.with_(mode="day")


class HeavyDayShape(_PlanShape):
    """10x the busiest hour (concurrency and tx/s) after a linear ramp, held for hold_s."""

    abstract = PLAN.mode != "heavy"
    plan = PLAN if PLAN.mode == "heavy" else PLAN.with_(mode="heavy")
