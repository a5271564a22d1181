"""Locust users and load shapes for cashpos (issue: 150,000 users and 600,000 transactions a day).

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000

``python -m loadtest.run`` starts a fresh stack and runs this for you. The plan (day type,
compression, scale, heavy day) comes from ``LOADTEST_*`` environment variables
(``loadtest.profile.Plan.from_env``) so that every Locust process (master and workers) reads the
same one; ``LOADTEST_SHAPE=heavy`` (or ``LOADTEST_MODE=heavy``) picks the heavy-day shape.

Users (each Locust user is one logged-in official or one source-system connection):

* ``FinanceDirector``: opens the dashboard (page, governments, its government, positions,
  alerts), holds its government's live stream ``/v1/stream?org=X&snapshot=1`` for the session
  (reading every frame, as the browser does) and looks at ``/v1/positions/{org}`` now and then.
  10 % watch the national view (``/v1/summary`` and the national stream) instead.
* ``IntegrationSystem``: an official's screen in another system asking for balances at a steady
  pace: ``/v1/positions/{org}/{account}``, ``/v1/positions/{org}``, ``/v1/summary`` (rarely).
* ``SourceSystem`` (fixed count): ``POST /v1/events`` with the simulator's events (all kinds, all
  243 governments), open loop: together they start ``Plan.tps(t)`` posts per second.

A spawned reader is mid-session; sessions end (and the user logs in again) at the hazard
``Plan.session_hazard``, so logins follow the real rate at any compression.

What is measured besides Locust's own request statistics (all in the CSV/HTML as custom types):

* ``FRESHNESS``: 1 in ``LOADTEST_PROBE_EVERY`` posts (those without preconditions: no reversal,
  no commitment follow-up) is probed: before posting, the prober opens the government's stream
  with a snapshot (the account's version v0); after the 202 it polls
  ``GET /v1/positions/{org}/{account}?fiscal_year=`` and reads the stream until the row shows
  version > v0 with ``last_event_at`` ≥ the event's ``occurred_at``. Two samples per probe:
  ``api`` and ``stream`` (ms from the 202). A probe that sees nothing in 30 s is a failure.
* ``LAG``: every 5 s, the sum of ``cashpos_consumer_lag_records`` from ``/metrics`` (the value is
  in records, not ms).
* ``STREAM`` (failures only): a held stream that the server ended or broke before the session
  did (response time = how long it was held). Logins, streams held to the end and
  frames read are counted in the per-process dumps (``counts``), not in Locust's statistics.

Access: every API call carries ``Authorization: Bearer <token>``. The tokens come from the JSON
file named by ``LOADTEST_TOKENS`` (``python -m loadtest.run`` provisions them and writes it; see
``loadtest.run.provision_tokens`` for the format): a director uses its government's
``finance_director`` token (the national view: the ``national`` token), an integration user the
``integration`` token, a source system the ``source`` token, the freshness probes read as the
government's director and the lag scraper reads ``/metrics`` with the ``national`` token. Many
simulated users share one token, so the tokens are made with a high rate limit.

With ``LOADTEST_OUT`` set, each process also writes merged-friendly latency histograms per
category (read, write, page, stream, freshness, lag) to ``$LOADTEST_OUT/raw/`` for run.py.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import random
import re
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Protocol, TypedDict

import gevent
import orjson
from gevent.pool import Group
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.contrib.fasthttp import FastHttpSession, FastResponse
from locust.runners import MasterRunner, WorkerRunner

from cashpos.refdata import governments
from cashpos.simulator import Simulator, annual_budgets
from loadtest.profile import Plan

PLAN = Plan.from_env()
if os.environ.get("LOADTEST_SHAPE") == "heavy" and PLAN.mode != "heavy":
    PLAN = PLAN.with_(mode="heavy")
OUT = os.environ.get("LOADTEST_OUT")
RUN_ID = os.environ.get("LOADTEST_RUN_ID") or time.strftime("lt%m%d%H%M%S")
PROCESSES = max(1, int(os.environ.get("LOADTEST_PROCESSES", "1")))
PROBE_EVERY = max(1, int(os.environ.get("LOADTEST_PROBE_EVERY", "50")))
PROBE_MAX_ACTIVE = int(os.environ.get("LOADTEST_PROBE_MAX_ACTIVE", "20"))
FRESHNESS_TIMEOUT_S = float(os.environ.get("LOADTEST_FRESHNESS_TIMEOUT_S", "30"))
SOURCE_USERS = int(os.environ.get("LOADTEST_SOURCE_USERS") or PLAN.source_users())
LAG_EVERY_S = 5.0
NATIONAL_SHARE = 0.10  # directors watching the national view rather than one government
DASHBOARD_COLD = 0.25  # sessions that load the page's assets too (empty browser cache)
LOOK_EVERY_S = 150.0  # a director's look at /v1/positions/{org}, on average
QUERY_EVERY_S = 30.0  # an integration user's balance query, on average
SUMMARY_SHARE = 0.02  # of integration queries
# Probability that a spawned user starts with a login (page load) rather than mid-session; the
# smoke run sets 1 so that a short run exercises every endpoint.
SPAWN_LOGIN = float(os.environ.get("LOADTEST_SPAWN_LOGIN", "0"))
MAX_INFLIGHT = int(os.environ.get("LOADTEST_MAX_INFLIGHT", "32"))  # posts per SourceSystem user


# -- access tokens -------------------------------------------------------------------------------


class Tokens(TypedDict):
    """The tokens file (``loadtest.run.provision_tokens``)."""

    national: str
    integration: str
    source: str
    directors: dict[str, str]  # org_code -> that government's finance_director token


def _load_tokens() -> Tokens:
    path = os.environ.get("LOADTEST_TOKENS")
    if not path:
        raise RuntimeError(
            "LOADTEST_TOKENS is not set: the API needs tokens. python -m loadtest.run "
            "provisions them (or give it --tokens FILE / --admin-token)"
        )
    d = orjson.loads(Path(path).read_bytes())
    missing = [k for k in ("national", "integration", "source", "directors") if not d.get(k)]
    if missing:
        raise RuntimeError(f"{path}: no {', '.join(missing)} token(s)")
    return d


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_TOKENS = _load_tokens()
NATIONAL_AUTH = _bearer(str(_TOKENS["national"]))
INTEGRATION_AUTH = _bearer(str(_TOKENS["integration"]))
SOURCE_AUTH = _bearer(str(_TOKENS["source"]))
_DIRECTOR_AUTH = {org: _bearer(tok) for org, tok in _TOKENS["directors"].items()}


def director_auth(org: str) -> dict[str, str]:
    """The header of the finance director of ``org``."""
    return _DIRECTOR_AUTH[org]


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


# -- clock --------------------------------------------------------------------------------------

_T0: float | None = None


def elapsed() -> float:
    return 0.0 if _T0 is None else time.monotonic() - _T0


# -- own histograms (exactly mergeable across processes; Locust's CSV is per name) ------------


def _bucket(ms: float) -> int:
    """Locust's rounding: 2 significant digits above 100 ms."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


class _Hist:
    __slots__ = ("buckets", "fail", "n")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.n = 0
        self.fail = 0

    def to_json(self) -> dict[str, object]:
        return {"n": self.n, "fail": self.fail, "buckets": {str(k): v for k, v in self.buckets.items()}}


_HIST: dict[str, _Hist] = {}
_LAG: list[tuple[float, float]] = []
_COUNTS: Counter[str] = Counter()


def _category(request_type: str, name: str) -> str | None:
    if request_type == "FRESHNESS":
        return "freshness_stream" if name.startswith("stream") else "freshness_api"
    if request_type == "LAG":
        return None
    if request_type == "STREAM":
        return "stream_hold"
    if name.startswith("probe"):
        return "probe"
    if name.startswith("/v1/stream"):
        return "stream_connect"
    if name.startswith("/dashboard"):
        return "page"
    if request_type == "POST":
        return "write"
    return "read"


@events.request.add_listener
def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    exception: BaseException | None = None,
    **_: object,
) -> None:
    if request_type == "LAG":
        _LAG.append((round(elapsed(), 1), response_time))
        return
    cat = _category(request_type, name)
    if cat is not None:
        _record(cat, response_time, exception is not None)
    if request_type == "POST" and exception is None:
        _COUNTS["accepted"] += 1


def _record(cat: str, ms: float | None, failed: bool) -> None:
    h = _HIST.get(cat)
    if h is None:
        h = _HIST[cat] = _Hist()
    h.n += 1
    if failed:
        h.fail += 1
    elif ms is not None:
        h.buckets[_bucket(ms)] += 1


def _fire(request_type: str, name: str, ms: float, exc: BaseException | None = None, length: int = 0) -> None:
    events.request.fire(
        request_type=request_type,
        name=name,
        response_time=ms,
        response_length=length,
        exception=exc,
        context={},
    )


# -- server-sent events -------------------------------------------------------------------------


class SSE:
    """Frames of an open ``text/event-stream`` response (FastHttpSession, ``stream=True``).

    Never interrupted by a timeout (that would close the socket mid-line): the server sends a
    heartbeat every ~2 s, so a reader checks its deadlines between frames."""

    def __init__(self, response: FastResponse) -> None:
        self._r = response._response
        self._event = b""
        self._data: list[bytes] = []

    def next(self) -> tuple[str, bytes]:
        """The next frame as (event, data); raises EOFError when the stream ends."""
        r = self._r
        if r is None:
            raise EOFError("stream closed")
        while True:
            line = r.readline(b"\n")
            if not line:
                raise EOFError("stream ended")
            line = line.rstrip(b"\r\n")
            if not line:
                if self._data or self._event:
                    ev, data = self._event.decode() or "message", b"\n".join(self._data)
                    self._event, self._data = b"", []
                    return ev, data
                continue
            if line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()

    def close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            r.release()  # incomplete message: the pool closes the socket


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


# -- freshness probes ----------------------------------------------------------------------------

_PROBES = Group()


def _occurred_ms(s: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(s).timestamp() * 1000)


def _iso_ms(s: str | None) -> int:
    if not s:
        return 0
    from datetime import datetime

    return int(datetime.fromisoformat(s).timestamp() * 1000)  # "Z" too (Python 3.11)


def _row(rows: list[dict[str, Any]], account: str, fy: int) -> tuple[int, int]:
    """``rows``: the API's decoded JSON."""
    for r in rows:
        if r.get("account") == account and r.get("fiscal_year") == fy:
            return int(r.get("version") or 0), _iso_ms(r.get("last_event_at"))
    return 0, 0


def probeable(ev: dict[str, Any]) -> bool:
    """Events whose effect cannot legitimately be refused by the processor's stateful rules."""
    if ev.get("reverses"):
        return False
    kind = ev.get("kind")
    return not (kind == "commitment_cancel" or (kind == "payment" and ev.get("commitment_id")))


def probe(user: SourceSystem, raw: bytes, ev: dict[str, Any]) -> None:
    """Post ``raw`` (``ev``: it decoded) and measure when its effect is visible through the API
    and the stream."""
    org, account, fy = str(ev["org_code"]), str(ev["account"]), int(ev["fiscal_year"])
    ours = _occurred_ms(str(ev["occurred_at"]))
    client = user.client
    auth = director_auth(org)  # what the government's own director sees
    sse: SSE | None = None
    poller: gevent.Greenlet | None = None
    api_name, stream_name = "api: 202 -> GET shows it", "stream: 202 -> SSE frame shows it"
    try:
        resp = client.get(
            f"/v1/stream?org={org}&snapshot=1", stream=True, headers=auth, name="probe: /v1/stream?org=[org]"
        )
        if resp.status_code != 200:
            _COUNTS["probe_stream_failed"] += 1
            user.post(raw)  # still a transaction
            return
        sse = SSE(resp)
        v0 = None
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:  # the first frame after `retry:` is the snapshot
            kind, data = sse.next()
            if kind == "snapshot":
                body = orjson.loads(data)["governments"].get(org)
                v0 = _row(body["accounts"], account, fy)[0] if body else 0
                break
        if v0 is None:
            _COUNTS["probe_no_snapshot"] += 1
            user.post(raw)
            return
        accepted_at = user.post(raw)
        if accepted_at is None:
            return
        t_end = accepted_at + FRESHNESS_TIMEOUT_S

        def poll() -> None:
            n = 0
            while time.monotonic() < t_end:
                r = client.get(
                    f"/v1/positions/{org}/{account}?fiscal_year={fy}",
                    headers=auth,
                    name="probe: /v1/positions/[org]/[account]",
                )
                if r.status_code == 200:
                    v, last = _row(orjson.loads(r.content)["fiscal_years"], account, fy)
                    if v > v0 and last >= ours:
                        _fire("FRESHNESS", api_name, (time.monotonic() - accepted_at) * 1000)
                        return
                n += 1
                gevent.sleep(0.05 if n < 40 else 0.25)
            _fire(
                "FRESHNESS",
                api_name,
                FRESHNESS_TIMEOUT_S * 1000,
                TimeoutError(f"not visible through the API in {FRESHNESS_TIMEOUT_S:g}s"),
            )

        poller = gevent.spawn(poll)
        seen = False
        while time.monotonic() < t_end:  # heartbeats (~2 s) bound the wait past t_end
            kind, data = sse.next()
            if kind not in ("positions", "snapshot"):
                continue
            body = orjson.loads(data)["governments"].get(org)
            if body:
                v, last = _row(body["accounts"], account, fy)
                if v > v0 and last >= ours:
                    _fire("FRESHNESS", stream_name, (time.monotonic() - accepted_at) * 1000)
                    seen = True
                    break
        if not seen:
            _fire(
                "FRESHNESS",
                stream_name,
                FRESHNESS_TIMEOUT_S * 1000,
                TimeoutError(f"not on the stream in {FRESHNESS_TIMEOUT_S:g}s"),
            )
        sse.close()
        sse = None
        poller.join()
        poller = None
    except EOFError as exc:  # the server ended the probe's stream
        _fire("FRESHNESS", stream_name, 0, exc)
    finally:
        if sse is not None:
            sse.close()
        if poller is not None:
            poller.kill(block=False)


# -- users ----------------------------------------------------------------------------------------


class _Authed(Protocol):
    """A user with its session's token."""

    client: FastHttpSession
    auth: dict[str, str]


def get(user: _Authed, url: str, name: str | None = None, ok404: bool = False) -> int:
    """GET with the user's token (``user.auth``), recording the status and the start of the body
    of any error (a 503 says why)."""
    with user.client.get(url, name=name or url, headers=user.auth, catch_response=True) as r:
        code = r.status_code
        if code == 200 or (ok404 and code == 404):
            r.success()
        else:
            r.failure(f"{code}: {(r.text or '')[:120] if code else repr(getattr(r, 'error', None))}")
        return code


def _session_over(cls: str, dt_: float) -> bool:
    """Whether the session ends within the last ``dt_`` seconds (hazard λ/users, see profile)."""
    return random.random() < 1.0 - math.exp(-PLAN.session_hazard(cls, elapsed()) * dt_)


class FinanceDirector(FastHttpUser):
    """A finance director (or treasury official) with the dashboard open. A spawned user is
    already mid-session (it opens its stream); later sessions start with a login: the page."""

    weight = PLAN.weights()["FinanceDirector"]
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0
    max_retries = 1  # a keep-alive connection the server just closed (as browsers/clients retry)
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
            _COUNTS["sessions_FinanceDirector"] += 1
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
                _COUNTS["stream_frames"] += 1
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
            _record("stream_hold", (time.monotonic() - opened) * 1000, False)  # not in Locust's stats
        except EOFError as exc:  # the server ended the stream before the session did
            _fire("STREAM", f"{name} held", (time.monotonic() - opened) * 1000, exc, frames)
        except Exception as exc:  # noqa: BLE001 - a network error while holding it: record it, go on
            _fire("STREAM", f"{name} held", (time.monotonic() - opened) * 1000, exc, frames)
            gevent.sleep(1)
        finally:
            sse.close()


class IntegrationSystem(FastHttpUser):
    """An official's screen in another system (e-hojo, ...) asking the API for balances at a
    steady pace (~2 a minute). A spawned user is mid-session: its first query comes after a
    random part of the pause."""

    weight = PLAN.weights()["IntegrationSystem"]
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0
    max_retries = 1  # a keep-alive connection the server just closed (as browsers/clients retry)
    concurrency = 2

    def on_start(self) -> None:
        self._logged_in = random.random() < SPAWN_LOGIN
        self.auth = INTEGRATION_AUTH
        if not self._logged_in:
            gevent.sleep(random.uniform(0, QUERY_EVERY_S))

    @task
    def session(self) -> None:
        if self._logged_in:
            _COUNTS["sessions_IntegrationSystem"] += 1
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


class SourceSystem(FastHttpUser):
    """A source system (tax, non-tax, e-hojo, bank gateway ...) posting events. Open loop: the
    ``fixed_count`` users together start ``PLAN.tps(t)`` posts per second whatever the response
    times (up to ``MAX_INFLIGHT`` outstanding each), as transactions arrive independently."""

    fixed_count = SOURCE_USERS
    weight = 1
    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0
    max_retries = 1  # a keep-alive connection the server just closed (as browsers/clients retry)
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
            _COUNTS["tx_skipped_generator_behind"] += 1
            self._due = time.monotonic()
        raw = event_source().next()
        self._n += 1
        if self._n % PROBE_EVERY == 0:
            ev = orjson.loads(raw)
            if probeable(ev) and len(_PROBES) < PROBE_MAX_ACTIVE:
                _PROBES.spawn(probe, self, raw, ev)
                return
            self._n -= 1  # probe the next eligible one instead
        if len(self._inflight) < MAX_INFLIGHT:
            self._inflight.spawn(self.post, raw)
        else:
            _COUNTS["tx_posted_blocking"] += 1  # back-pressure: the API is very slow
            self.post(raw)


# -- processor lag and bookkeeping ---------------------------------------------------------------

_LAG_RE = re.compile(rb"^cashpos_consumer_lag_records\{[^}]*\}\s+([0-9.eE+-]+)", re.MULTILINE)


def _scrape_lag(host: str) -> None:
    from geventhttpclient import URL, HTTPClient

    url = URL(host.rstrip("/") + "/metrics")
    http = HTTPClient.from_url(url, connection_timeout=5, network_timeout=5)
    while True:
        t = time.monotonic()
        try:
            r = http.get(url.request_uri, headers=NATIONAL_AUTH)  # /metrics: operations
            body = r.read()
            if r.status_code != 200:
                raise RuntimeError(f"/metrics answered {r.status_code}: {body[:120]!r}")
            values = [float(v) for v in _LAG_RE.findall(body)]
            if values:
                _fire("LAG", "cashpos_consumer_lag_records (value = records)", sum(values))
        except Exception as exc:  # noqa: BLE001 - whatever failed this scrape: record it, keep scraping
            _fire("LAG", "cashpos_consumer_lag_records (value = records)", 0, exc)
        gevent.sleep(max(0.5, LAG_EVERY_S - (time.monotonic() - t)))


_LAG_GREENLET: gevent.Greenlet | None = None


@events.test_start.add_listener
def _on_test_start(environment, **_: object) -> None:
    global _T0, _LAG_GREENLET
    _T0 = time.monotonic()
    if not isinstance(environment.runner, WorkerRunner) and environment.host:
        _LAG_GREENLET = gevent.spawn(_scrape_lag, environment.host)


def _dump(environment) -> None:
    if not OUT:
        return
    role = (
        "master"
        if isinstance(environment.runner, MasterRunner)
        else "worker"
        if isinstance(environment.runner, WorkerRunner)
        else "local"
    )
    raw = Path(OUT) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{role}-{os.getpid()}.json").write_bytes(
        orjson.dumps(
            {
                "role": role,
                "pid": os.getpid(),
                "elapsed_s": round(elapsed(), 1),
                "hist": {k: v.to_json() for k, v in _HIST.items()},
                "lag": _LAG,
                "counts": dict(_COUNTS),
                "source_users": SOURCE_USERS,
                "probe_every": PROBE_EVERY,
            },
            option=orjson.OPT_INDENT_2,
        )
    )


@events.test_stop.add_listener
def _on_test_stop(environment, **_: object) -> None:
    if _LAG_GREENLET is not None:
        _LAG_GREENLET.kill(block=False)
    _PROBES.kill(block=False)
    _dump(environment)


@events.quitting.add_listener
def _on_quitting(environment, **_: object) -> None:
    _dump(environment)


# -- shapes (Locust uses the first non-abstract one: the one LOADTEST_MODE selects) --------------


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
