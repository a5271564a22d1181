"""What a Locust process measures besides Locust's own statistics, for the runner to merge.

Every request (Locust's ``request`` event, :func:`on_request`) goes into a latency histogram of
its category (read, write, page, stream_connect, stream_hold, probe, freshness_api,
freshness_stream), bucketed as Locust rounds, so the processes' histograms merge exactly
(``loadtest.headless.merge_raw``); ``LAG`` samples (:func:`scrape_lag`, the processor lag from
``/metrics``) and counters (logins, frames read, the generator's own troubles) go beside them.
:func:`dump` writes them to ``$LOADTEST_OUT/raw/<role>-<pid>.json``. The clock
(:func:`elapsed`) starts at Locust's ``test_start``.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import gevent
import orjson
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadtest.locust_env import NATIONAL_AUTH, OUT, PROBE_EVERY, SOURCE_USERS

LAG_EVERY_S = 5.0

# -- clock --------------------------------------------------------------------------------------

_T0: float | None = None


def start_clock() -> None:
    global _T0
    _T0 = time.monotonic()


def elapsed() -> float:
    """Seconds since the test started (Locust's ``test_start``)."""
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
COUNTS: Counter[str] = Counter()


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


def on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    exception: BaseException | None = None,
    **_: object,
) -> None:
    """Locust's ``request`` event: every request and custom sample (FRESHNESS, LAG, STREAM)."""
    if request_type == "LAG":
        _LAG.append((round(elapsed(), 1), response_time))
        return
    cat = _category(request_type, name)
    if cat is not None:
        record(cat, response_time, exception is not None)
    if request_type == "POST" and exception is None:
        COUNTS["accepted"] += 1


def record(cat: str, ms: float | None, failed: bool) -> None:
    """One sample of ``cat`` in this process's histograms only (not in Locust's statistics)."""
    h = _HIST.get(cat)
    if h is None:
        h = _HIST[cat] = _Hist()
    h.n += 1
    if failed:
        h.fail += 1
    elif ms is not None:
        h.buckets[_bucket(ms)] += 1


def fire(request_type: str, name: str, ms: float, exc: BaseException | None = None, length: int = 0) -> None:
    """A custom sample, in Locust's statistics and (through :func:`on_request`) ours."""
    events.request.fire(
        request_type=request_type,
        name=name,
        response_time=ms,
        response_length=length,
        exception=exc,
        context={},
    )


# -- processor lag, and the dump for the runner ----------------------------------------------------

_LAG_RE = re.compile(rb"^cashpos_consumer_lag_records\{[^}]*\}\s+([0-9.eE+-]+)", re.MULTILINE)


def scrape_lag(host: str) -> None:
    """Every ``LAG_EVERY_S``, the processor lag from ``/metrics`` as a ``LAG`` sample."""
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
                fire("LAG", "cashpos_consumer_lag_records (value = records)", sum(values))
        except Exception as exc:  # noqa: BLE001 - whatever failed this scrape: record it, keep scraping
            fire("LAG", "cashpos_consumer_lag_records (value = records)", 0, exc)
        gevent.sleep(max(0.5, LAG_EVERY_S - (time.monotonic() - t)))


def dump(environment) -> None:
    """This process's measurements to ``$LOADTEST_OUT/raw/<role>-<pid>.json``."""
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
                "counts": dict(COUNTS),
                "source_users": SOURCE_USERS,
                "probe_every": PROBE_EVERY,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
