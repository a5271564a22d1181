"""The simulated users: officials reading their cash positions, and source systems posting.

Each Locust user is one logged-in official or one source-system connection:

* ``FinanceDirector``: opens the dashboard (page, governments, its government, positions,
  alerts), holds its government's live stream ``/v1/stream?org=X&snapshot=1`` for the session
  (reading every frame, as the browser does) and looks at ``/v1/positions/{org}`` now and then.
  10 % watch the national view (``/v1/summary`` and the national stream) instead.
* ``IntegrationSystem``: an official's screen in another system asking for balances at a steady
  pace: ``/v1/positions/{org}/{account}``, ``/v1/positions/{org}``, ``/v1/summary`` (rarely).
* ``SourceSystem`` (fixed count): ``POST /v1/events`` with the simulator's events (all kinds, all
  243 governments), open loop: together they start ``Plan.tps(t)`` posts per second; some of
  them are freshness probes (``loadtest.freshness``).

A spawned reader is mid-session; sessions end (and the user logs in again) at the hazard
``Plan.session_hazard``, so logins follow the real rate at any compression.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import random
import re
import time
from collections import deque
from typing import Protocol

import gevent
import orjson
from gevent.pool import Group
from locust import FastHttpUser, constant, task
from locust.contrib.fasthttp import FastHttpSession

from cashpos.refdata import governments
from cashpos.simulator import Simulator, annual_budgets
from loadtest.freshness import PROBES, probe, probeable
from loadtest.locust_env import (
    INTEGRATION_AUTH,
    MAX_INFLIGHT,
    NATIONAL_AUTH,
    PLAN,
    PROBE_EVERY,
    PROBE_MAX_ACTIVE,
    PROCESSES,
    RUN_ID,
    SOURCE_AUTH,
    SOURCE_USERS,
    SPAWN_LOGIN,
    director_auth,
)
from loadtest.recording import COUNTS, elapsed, fire, record
from loadtest.sse import SSE

NATIONAL_SHARE = 0.10  # directors watching the national view rather than one government
DASHBOARD_COLD = 0.25  # sessions that load the page's assets too (empty browser cache)
LOOK_EVERY_S = 150.0  # a director's look at /v1/positions/{org}, on average
QUERY_EVERY_S = 30.0  # an integration user's balance query, on average
SUMMARY_SHARE = 0.02  # of integration queries

# -- reference data -----------------------------------------------------------------------------

_GOVS = governments()
_ORGS = list(_GOVS)
_BUDGETS = annual_budgets()
# Officials (sessions) per government ~ budget**0.8, the simulator's activity weighting.
_ORG_CUM = list(itertools.accumulate(_BUDGETS[o] ** 0.8 for o in _ORGS))
_ACCOUNTS = {o: [a.code for a in g.accounts] for o, g in _GOVS.items()}


def pick_org() -> str:
    return _ORGS[bisect.bisect_right(_ORG_CUM, random.random() * _ORG_CUM[-1])]


def pick_account(org: str) -> str:
    if random.random() < 0.6:
        return "general"
    return random.choice(_ACCOUNTS[org])


# -- the source systems' events ------------------------------------------------------------------


class _EventSource:
    """One simulator per Locust process (own seed and id prefix: ids never collide), its
    simulated clock kept on the run's day clock when the pacing allows."""

    def __init__(self) -> None:
        rate, speed = PLAN.simulator_rate(PROCESSES)
        start = PLAN.start_datetime()
        self.pid = pid = os.getpid()
        self.sim = Simulator(
            seed=(pid * 7919 + time.time_ns()) % 2**31,
            start=start,
            speed=speed,
            rate=rate,
            id_prefix=f"{RUN_ID}-{pid}"[:40],
        )
        self.start_epoch = start.timestamp()
        self.buf: deque[bytes] = deque()

    def next(self) -> bytes:
        if len(self.buf) < 64:
            self.buf.extend(self.sim.until(self.start_epoch + elapsed() * PLAN.clock_speed, 256))
        if not self.buf:
            self.buf.extend(self.sim.next_batch(1))
        return self.buf.popleft()


_SOURCE: _EventSource | None = None


def event_source() -> _EventSource:
    global _SOURCE
    if _SOURCE is None or _SOURCE.pid != os.getpid():
        _SOURCE = _EventSource()  # created after a fork (locust --processes), never before
    return _SOURCE


# -- users ----------------------------------------------------------------------------------------


class _ApiUser(FastHttpUser):
    """What every simulated user's HTTP client does: no pause between tasks (each task paces
    itself), the same timeouts, one retry."""

    abstract = True
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0
    max_retries = 1  # a keep-alive connection the server just closed (as browsers/clients retry)


class _Authed(Protocol):
    """A user with its session's token."""

    client: FastHttpSession
    auth: dict[str, str]


def _why(body: str) -> str:
    """An error body in short: a problem's ``reason: detail`` (every API error), else its start."""
    try:
        p = orjson.loads(body)
        return f"{p['reason']}: {p['detail']}"[:160]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:120]


def get(user: _Authed, url: str, name: str | None = None, ok404: bool = False) -> int:
    """GET with the user's token (``user.auth``), recording the status and the start of the body
    of any error (a 503 says why)."""
    with user.client.get(url, name=name or url, headers=user.auth, catch_response=True) as r:
        code = r.status_code
        if code == 200 or (ok404 and code == 404):
            r.success()
        else:
            r.failure(f"{code}: {_why(r.text or '') if code else repr(getattr(r, 'error', None))}")
        return code


def _session_over(cls: str, dt_: float) -> bool:
    """Whether the session ends within the last ``dt_`` seconds (hazard λ/users, see profile)."""
    return random.random() < 1.0 - math.exp(-PLAN.session_hazard(cls, elapsed()) * dt_)


class FinanceDirector(_ApiUser):
    """A finance director (or treasury official) with the dashboard open. A spawned user is
    already mid-session (it opens its stream); later sessions start with a login: the page."""

    weight = PLAN.weights()["FinanceDirector"]
    concurrency = 4
    _assets: list[str] | None = None

    def on_start(self) -> None:
        self._logged_in = random.random() < SPAWN_LOGIN
        self.auth = NATIONAL_AUTH

    def _page(self, org: str | None) -> None:
        with self.client.get("/dashboard/", name="/dashboard/", catch_response=True) as r:
            html = r.text if r.status_code == 200 else None
        if html and random.random() < DASHBOARD_COLD:
            if FinanceDirector._assets is None:
                FinanceDirector._assets = [
                    u for u in re.findall(r'(?:src|href)="([^"#:]+)"', html) if not u.startswith("/")
                ]
            for a in FinanceDirector._assets:
                get(self, f"/dashboard/{a}", "/dashboard/[static]")
        get(self, "/v1/governments")
        if org is None:
            get(self, "/v1/summary")
        else:
            get(self, f"/v1/governments/{org}", "/v1/governments/[org]")
            get(self, f"/v1/positions/{org}", "/v1/positions/[org]")
            get(self, f"/v1/alerts?org={org}", "/v1/alerts?org=[org]", ok404=True)  # 404: "no alerts"

    @task
    def session(self) -> None:
        org = None if random.random() < NATIONAL_SHARE else pick_org()
        self.auth = NATIONAL_AUTH if org is None else director_auth(org)  # this session's official
        if self._logged_in:  # a new login; the first session of a spawned user is under way
            COUNTS["sessions_FinanceDirector"] += 1
            self._page(org)
        self._logged_in = True
        url = "/v1/stream?snapshot=1" + (f"&org={org}" if org else "")
        name = "/v1/stream?org=[org]" if org else "/v1/stream (national)"
        resp = self.client.get(url, stream=True, name=name, headers=self.auth)
        if resp.status_code != 200:
            gevent.sleep(random.uniform(1, 3))  # the browser's retry
            return
        sse = SSE(resp)
        opened = last = time.monotonic()
        next_look = opened + random.expovariate(1 / LOOK_EVERY_S)
        frames = 0
        try:
            while True:
                sse.next()  # a frame at least every ~2 s (heartbeat)
                frames += 1
                COUNTS["stream_frames"] += 1
                now = time.monotonic()
                if _session_over("FinanceDirector", now - last):
                    break
                last = now
                if now >= next_look:
                    if org:
                        get(self, f"/v1/positions/{org}", "/v1/positions/[org]")
                    else:
                        get(self, "/v1/summary")
                    next_look = time.monotonic() + random.expovariate(1 / LOOK_EVERY_S)
            record("stream_hold", (time.monotonic() - opened) * 1000, False)  # not in Locust's stats
        except EOFError as exc:  # the server ended the stream before the session did
            fire("STREAM", f"{name} held", (time.monotonic() - opened) * 1000, exc, frames)
        except Exception as exc:  # noqa: BLE001 - a network error while holding it: record it, go on
            fire("STREAM", f"{name} held", (time.monotonic() - opened) * 1000, exc, frames)
            gevent.sleep(1)
        finally:
            sse.close()


class IntegrationSystem(_ApiUser):
    """An official's screen in another system (e-hojo, ...) asking the API for balances at a
    steady pace (~2 a minute). A spawned user is mid-session: its first query comes after a
    random part of the pause."""

    weight = PLAN.weights()["IntegrationSystem"]
    concurrency = 2

    def on_start(self) -> None:
        self._logged_in = random.random() < SPAWN_LOGIN
        self.auth = INTEGRATION_AUTH
        if not self._logged_in:
            gevent.sleep(random.uniform(0, QUERY_EVERY_S))

    @task
    def session(self) -> None:
        if self._logged_in:
            COUNTS["sessions_IntegrationSystem"] += 1
        self._logged_in = True
        org = pick_org()
        while True:
            x = random.random()
            if x < SUMMARY_SHARE:
                get(self, "/v1/summary")
            elif x < 0.30:
                get(self, f"/v1/positions/{org}", "/v1/positions/[org]")
            else:
                get(self, f"/v1/positions/{org}/{pick_account(org)}", "/v1/positions/[org]/[account]")
            pause = random.uniform(0.5, 1.5) * QUERY_EVERY_S
            while pause > 0:  # the session may end during the pause (checked every <= 5 s)
                step = min(pause, 5.0)
                gevent.sleep(step)
                pause -= step
                if _session_over("IntegrationSystem", step):
                    return  # logout; the next session starts with a query at once


class SourceSystem(_ApiUser):
    """A source system (tax, non-tax, e-hojo, bank gateway ...) posting events. Open loop: the
    ``fixed_count`` users together start ``PLAN.tps(t)`` posts per second whatever the response
    times (up to ``MAX_INFLIGHT`` outstanding each), as transactions arrive independently."""

    fixed_count = SOURCE_USERS
    weight = 1
    concurrency = MAX_INFLIGHT + 8

    def on_start(self) -> None:
        self.auth = SOURCE_AUTH
        self._due: float | None = None
        self._n = random.randrange(PROBE_EVERY)
        self._inflight = Group()

    def on_stop(self) -> None:
        self._inflight.kill(block=False)

    def post(self, raw: bytes) -> float | None:
        """POST one event; the monotonic time of the 202, or None."""
        with self.client.post(
            "/v1/events",
            name="/v1/events",
            data=raw,  # type: ignore[arg-type]  # locust: str | dict; bytes go as is
            headers={"Content-Type": "application/json", **SOURCE_AUTH},
            catch_response=True,
        ) as r:
            if r.status_code == 202:
                return time.monotonic()
            r.failure(
                f"{r.status_code}: {(r.text or '')[:120] if r.status_code else repr(getattr(r, 'error', None))}"
            )
            return None

    @task
    def send(self) -> None:
        rate = PLAN.tps(elapsed()) / max(1, SOURCE_USERS)
        now = time.monotonic()
        if rate <= 0:
            gevent.sleep(0.5)
            self._due = None
            return
        interval = 1.0 / rate
        if self._due is None:
            self._due = now + random.uniform(0, min(interval, 5.0))
        if self._due > now:
            gevent.sleep(min(self._due - now, 1.0))  # re-read the rate at least every second
            if time.monotonic() < self._due:
                return
        self._due += interval
        if time.monotonic() - self._due > 2.0:  # the generator itself fell behind: no bursts
            COUNTS["tx_skipped_generator_behind"] += 1
            self._due = time.monotonic()
        raw = event_source().next()
        self._n += 1
        if self._n % PROBE_EVERY == 0:
            ev = orjson.loads(raw)
            if probeable(ev) and len(PROBES) < PROBE_MAX_ACTIVE:
                PROBES.spawn(probe, self, raw, ev)
                return
            self._n -= 1  # probe the next eligible one instead
        if len(self._inflight) < MAX_INFLIGHT:
            self._inflight.spawn(self.post, raw)
        else:
            COUNTS["tx_posted_blocking"] += 1  # back-pressure: the API is very slow
            self.post(raw)
