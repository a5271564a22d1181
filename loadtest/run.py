"""Run a load test against a fresh embedded stack and judge it.

    python -m loadtest.run --compress 48            # the payroll day in 30 minutes (make loadtest)
    python -m loadtest.run --compress 288           # the same day in 5 minutes
    python -m loadtest.run --smoke                  # 60 s, small, for CI (make loadtest-smoke)
    python -m loadtest.run --heavy --scale 0.1      # 10x the busiest hour (scaled to the machine)
    python -m loadtest.run --day-type jan2 --compress 96
    python -m loadtest.run --host http://api:8000   # an existing deployment (no stack started)

Steps: start the development stack (``cashpos.devstack``: Tansu + redis-server with the service
accounts ``cashpos run`` makes, so the worker and the API connect as their own ACL users, + one
ledger worker + the API; fresh namespace, logs and state under ``var/loadtest/<run>/``), provision
the access tokens the simulated users carry (one finance director per government, a national, an
integration and a source token, with a high rate limit since many simulated users share each),
wait for ``/readyz`` and ``/v1/summary``, publish the simulator's opening balances and wait until
the API shows them, run Locust headless in its own process(es) while sampling CPU and memory of
every process, then write ``artifacts/loadtest/<run>/``:
``locust_*.csv``, ``locust.html``, ``monitor.csv``, ``summary.json`` and ``summary.md``. Exits 1
when a threshold fails, 2 when the run itself could not be done.

Against ``--host`` (an existing deployment) the tokens are made through the admin API with
``--admin-token`` (or ``CASHPOS_ADMIN_TOKEN``; they expire after a day and are revoked after the
run), or read from ``--tokens FILE`` (the format of :func:`provision_tokens`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from cashpos.devstack import Stack, new_stack
from cashpos.embedded import Infra, start_infra
from loadtest.profile import DAY_TYPES, DEFAULT_DAY, Plan

ROOT = Path(__file__).resolve().parent.parent

# Pass/fail thresholds. "full": what officials and source systems must get on a production-like
# machine. "smoke": a shared 2-core CI runner where Locust, the API, the worker, the broker and
# Redis compete for the same cores (and other jobs may run) - generous, it catches breakage.
THRESHOLDS: dict[str, dict[str, float]] = {
    "full": {
        "error_rate_max": 0.01,  # failed requests / requests (reads, writes, page, streams)
        "read_p99_ms_max": 200,  # GET /v1/positions..., /v1/summary, /v1/governments...
        "write_p99_ms_max": 1000,  # POST /v1/events (202 after acks=all)
        "tx_ratio_min": 0.95,  # accepted transactions / what the plan asked for
        "freshness_api_p99_ms_max": 2000,  # 202 -> visible through GET
        "freshness_stream_p99_ms_max": 2000,  # 202 -> visible on the SSE stream
        "freshness_timeout_rate_max": 0.01,
        "freshness_samples_min": 5,
        "lag_seconds_max": 5.0,  # max consumer lag, in seconds of peak traffic (>= 100 records)
        "users_ratio_min": 0.95,  # the load generator reached the planned concurrency
    },
    "smoke": {
        "error_rate_max": 0.01,
        "read_p99_ms_max": 1000,
        "write_p99_ms_max": 2000,
        "tx_ratio_min": 0.90,
        "freshness_api_p99_ms_max": 5000,
        "freshness_stream_p99_ms_max": 5000,
        "freshness_timeout_rate_max": 0.05,
        "freshness_samples_min": 5,
        "lag_seconds_max": 10.0,
        "users_ratio_min": 0.90,
    },
}


# Many simulated users share one token (every director of a government, every source system):
# the tokens' rate limit must not be what the load test measures.
TOKEN_RATE_PER_S = 100_000


def log(msg: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the stack --------------------------------------------------------------------------------------


def start_stack(root: Path, namespace: str, partitions: int, cpus: set[int] | None) -> Stack:
    """The development stack (cashpos.devstack) for one run: Tansu, redis-server, one ledger
    worker and the API, with its logs and state in ``root``, pinned to ``cpus``; stop it with
    ``stop_stack``."""
    infra = start_infra(root)
    stack = None
    try:
        for svc in (infra.kafka, infra.redis):
            if cpus and svc is not None:
                os.sched_setaffinity(svc.proc.pid, cpus)
        stack = new_stack(
            infra,
            root,
            partitions,
            namespace=namespace,
            cwd=ROOT,
            cpus=cpus,
            # thousands of simulated dashboards share one token per role and government
            extra_env={"CASHPOS_LOG_LEVEL": "WARNING", "CASHPOS_MAX_STREAMS_PER_TOKEN": "100000"},
            token_args={"expires_days": 1, "rate_per_s": TOKEN_RATE_PER_S},
        )
        stack.start_worker("w1")
        stack.start_api()
    except BaseException:
        stop_stack(stack, infra)
        raise
    return stack


def stop_stack(stack: Stack | None, infra: Infra) -> None:
    if stack is not None:
        stack.stop_all()
    infra.stop()


def stack_pids(stack: Stack) -> dict[str, int]:
    """The processes the monitor samples, by component."""
    services = {
        name: svc.proc.pid
        for name, svc in (("tansu", stack.infra.kafka), ("redis", stack.infra.redis))
        if svc is not None
    }
    return {**services, "worker": stack.procs["worker-w1"].pid, "api": stack.procs["api"].pid}


# -- access tokens ----------------------------------------------------------------------------------


def provision_tokens(create: Callable[[str, list[str], str], str], run_id: str) -> dict[str, Any]:
    """The tokens the simulated users carry, made with ``create(role, orgs, name) -> token``:

    ``{"national": t, "integration": t, "source": t, "directors": {org: t, ...}}``: the national
    view and the /metrics scrape; one integration system serving every government; every source
    system (one gateway, all governments); the finance director of each of the 243 governments."""
    from cashpos.refdata import governments

    orgs = list(governments())
    return {
        "national": create("national", [], f"loadtest {run_id} national"),
        "integration": create("integration", orgs, f"loadtest {run_id} integration"),
        "source": create("source", orgs, f"loadtest {run_id} source"),
        "directors": {o: create("finance_director", [o], f"loadtest {run_id} director {o}") for o in orgs},
    }


class ApiTokens:
    """Provision through an existing deployment's admin API (``POST /v1/tokens``); the tokens
    expire after a day and :meth:`revoke` revokes them after the run."""

    def __init__(self, host: str, admin_token: str) -> None:
        self.client = httpx.Client(
            base_url=host, timeout=10, headers={"Authorization": f"Bearer {admin_token}"}
        )
        self.ids: list[str] = []

    def _call(self, method: str, url: str, json: dict[str, Any] | None = None) -> httpx.Response:
        for _ in range(60):
            r = self.client.request(method, url, json=json)
            if r.status_code != 429:  # the admin token's own rate limit: wait and go on
                return r
            time.sleep(float(r.headers.get("retry-after", "1")))
        return r

    def create(self, role: str, orgs: list[str], name: str) -> str:
        r = self._call(
            "POST",
            "/v1/tokens",
            json={
                "role": role,
                "orgs": orgs,
                "name": name,
                "expires_days": 1,
                "rate_per_s": TOKEN_RATE_PER_S,
            },
        )
        if r.status_code != 201:
            raise RuntimeError(f"POST /v1/tokens ({role}) answered {r.status_code}: {r.text[:200]}")
        body = r.json()
        self.ids.append(body["id"])
        return str(body["token"])

    def revoke(self) -> None:
        for i in self.ids:
            try:
                self._call("DELETE", f"/v1/tokens/{i}")
            except httpx.HTTPError as exc:
                log(f"could not revoke token {i}: {exc!r}")
        self.client.close()


def write_tokens(path: Path, tokens: dict[str, Any]) -> None:
    """The tokens for the Locust processes: a secret file (0600), never in the reports."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(tokens))


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['national']}"}


def publish_opening(stack: Stack, plan: Plan, run_id: str) -> tuple[int, int]:
    """The simulator's opening balances (one receipt per government and account, dated just
    before the run's simulated start): (events, total KRW)."""
    import orjson

    from cashpos.simulator import Simulator
    from streams.publisher import Publisher

    sim = Simulator(seed=0, start=plan.start_datetime(), id_prefix=f"{run_id}-o")
    raws = sim.opening_balances()
    total = sum(orjson.loads(r)["amount"] for r in raws)

    async def main() -> int:
        async with Publisher(stack.settings) as pub:
            return await pub.send_many(raws)

    n = asyncio.run(main())
    return n, total


def wait_cash(api: str, expected: int, headers: dict[str, str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    cash = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{api}/v1/summary", headers=headers, timeout=10)  # a national token
            if r.status_code == 200:
                cash = r.json()["national"]["cash"]
                if cash == expected:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"opening balances not visible: national cash {cash} != {expected}")


# -- CPU and memory of every process -------------------------------------------------------------


class Monitor(threading.Thread):
    """Samples CPU (cores used) and RSS of each component every ``every`` seconds."""

    def __init__(self, groups: dict[str, int], path: Path, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.groups = dict(groups)
        self.path = path
        self.every = every
        self.stop_event = threading.Event()
        self.rows: list[dict[str, float]] = []
        self._procs: dict[int, psutil.Process] = {}
        self.latest: dict[str, float] = {}

    def add(self, name: str, pid: int) -> None:
        self.groups[name] = pid

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = self._procs.get(pid) or psutil.Process(pid)
            self._procs[pid] = root
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _sample(self) -> tuple[dict[str, float], dict[str, float]]:
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        for name, pid in list(self.groups.items()):
            c = r = 0.0
            for p in self._tree(pid):
                try:
                    t = p.cpu_times()
                    c += t.user + t.system
                    r += p.memory_info().rss
                except psutil.Error:
                    pass
            cpu[name], rss[name] = c, r / 2**20
        return cpu, rss

    def run(self) -> None:
        t_prev = time.monotonic()
        cpu_prev, _ = self._sample()
        sys_prev = psutil.cpu_times()
        t0 = t_prev
        while not self.stop_event.wait(self.every):
            t = time.monotonic()
            cpu, rss = self._sample()
            sys_now = psutil.cpu_times()
            dt = max(1e-6, t - t_prev)
            row: dict[str, float] = {"t": round(t - t0, 1)}
            ours = 0.0
            for name in list(self.groups):
                cores = max(0.0, (cpu.get(name, 0) - cpu_prev.get(name, 0)) / dt)
                ours += cores
                row[f"{name}_cores"] = round(cores, 3)
                row[f"{name}_rss_mb"] = round(rss.get(name, 0), 1)
            busy = (_busy(sys_now) - _busy(sys_prev)) / dt
            row["machine_busy_cores"] = round(busy, 3)
            row["other_cores"] = round(max(0.0, busy - ours), 3)
            self.rows.append(row)
            self.latest = row
            t_prev, cpu_prev, sys_prev = t, cpu, sys_now

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
        if self.rows:
            keys = list(self.rows[-1])
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                w.writeheader()
                w.writerows(self.rows)


def _busy(t: psutil._common.scputimes) -> float:
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


# -- Locust -----------------------------------------------------------------------------------------


def run_locust(
    args: argparse.Namespace,
    plan: Plan,
    host: str,
    out: Path,
    run_id: str,
    monitor: Monitor | None,
    locust_cpus: set[int] | None,
    tokens_file: Path,
) -> int:
    env = {
        **os.environ,
        **plan.to_env(),
        "LOADTEST_OUT": str(out),
        "LOADTEST_RUN_ID": run_id,
        "LOADTEST_TOKENS": str(tokens_file),
        "LOADTEST_PROCESSES": str(args.locust_processes),
        "LOADTEST_PROBE_EVERY": str(args.probe_every),
        "LOADTEST_SPAWN_LOGIN": str(args.spawn_login),
        "LOADTEST_SOURCE_USERS": str(args.source_users or plan.source_users()),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--html",
        str(out / "locust.html"),
        "--logfile",
        str(out / "locust.log"),
        "--loglevel",
        "INFO",
        "--exit-code-on-error",
        "0",
        "--only-summary",
    ]
    if args.locust_processes > 1:
        cmd += ["--processes", str(args.locust_processes)]
    log("locust: " + " ".join(cmd[2:]))
    with open(out / "locust.stdout", "wb") as so:
        p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=so, stderr=subprocess.STDOUT)
    if locust_cpus:
        os.sched_setaffinity(p.pid, locust_cpus)  # before it starts its worker processes
    if monitor is not None:
        monitor.add("locust", p.pid)
    deadline = time.monotonic() + plan.duration_s + 180
    last_print = 0.0
    t0 = time.monotonic()
    while p.poll() is None:
        if time.monotonic() > deadline:
            log("locust overran its plan by 180 s: stopping it")
            p.send_signal(signal.SIGINT)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
            break
        if time.monotonic() - last_print >= args.progress_every:
            last_print = time.monotonic()
            log(progress(out, monitor, time.monotonic() - t0, plan))
        time.sleep(1)
    return p.wait()


def progress(out: Path, monitor: Monitor | None, t: float, plan: Plan) -> str:
    bits = [
        f"t={t:4.0f}s/{plan.duration_s:.0f}s",
        f"plan users={plan.total_users(t)}",
        f"tx/s={plan.tps(t):.1f}",
    ]
    hist = out / "locust_stats_history.csv"
    if hist.exists():
        try:
            last = None
            with open(hist, newline="") as f:
                for row in csv.DictReader(f):
                    if row.get("Name") == "Aggregated":
                        last = row
            if last:
                bits += [
                    f"users={last['User Count']}",
                    f"req/s={float(last['Requests/s']):.1f}",
                    f"fail/s={float(last['Failures/s']):.2f}",
                ]
        except (OSError, ValueError, KeyError):
            pass
    if monitor is not None and monitor.latest:
        m = monitor.latest
        if "tansu_rss_mb" in m:
            bits.append(f"tansu_rss={m['tansu_rss_mb']:.0f}MB")
        cores = ", ".join(
            f"{k[:-6]} {v:.2f}" for k, v in m.items() if k.endswith("_cores") and k != "machine_busy_cores"
        )
        bits.append(f"cores: {cores}")
    return "  ".join(bits)


# -- judging --------------------------------------------------------------------------------------


def _percentile(buckets: dict[str, int], q: float) -> float | None:
    items = sorted((float(k), v) for k, v in buckets.items())
    n = sum(v for _, v in items)
    if n == 0:
        return None
    target = q * n
    acc = 0
    for k, v in items:
        acc += v
        if acc >= target:
            return k
    return items[-1][0]


def merge_raw(out: Path) -> dict[str, Any]:
    hist: dict[str, dict[str, Any]] = {}
    lag: list[tuple[float, float]] = []
    counts: dict[str, int] = {}
    for f in sorted((out / "raw").glob("*.json")):
        d = json.loads(f.read_text())
        for cat, h in d.get("hist", {}).items():
            m = hist.setdefault(cat, {"n": 0, "fail": 0, "buckets": {}})
            m["n"] += h["n"]
            m["fail"] += h["fail"]
            b = m["buckets"]
            for k, v in h["buckets"].items():
                b[k] = b.get(k, 0) + v
        lag += [tuple(x) for x in d.get("lag", [])]
        for k, v in d.get("counts", {}).items():
            counts[k] = counts.get(k, 0) + v
    cats = {}
    for cat, h in hist.items():
        b = h["buckets"]
        cats[cat] = {
            "requests": h["n"],
            "failures": h["fail"],
            **{f"p{int(q * 100) if q < 0.999 else 99.9}_ms": _percentile(b, q) for q in (0.5, 0.95, 0.99)},
            "max_ms": max((float(k) for k in b), default=None),
        }
    return {"categories": cats, "lag": sorted(lag), "counts": counts}


def locust_rows(out: Path) -> list[dict[str, str]]:
    path = out / "locust_stats.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def peak_users_seen(out: Path) -> int:
    path = out / "locust_stats_history.csv"
    best = 0
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    best = max(best, int(row["User Count"]))
                except (KeyError, ValueError):
                    pass
    return best


def timeline(
    out: Path, plan: Plan, monitor_rows: list[dict[str, float]], points: int = 16
) -> list[dict[str, Any]]:
    """The run at ~``points`` moments: simulated KST time, users, req/s, and the current (last
    ~10 s) p95 of an account read and of a post, with what the stack and the machine used."""
    path = out / "locust_stats_history.csv"
    if not path.exists():
        return []
    by_ts: dict[int, dict[str, dict[str, str]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                by_ts.setdefault(int(row["Timestamp"]), {})[row["Name"]] = row
            except (KeyError, ValueError):
                continue
    if not by_ts:
        return []
    stamps = sorted(by_ts)
    t0 = stamps[0]
    step = max(1, len(stamps) // points)
    out_rows = []

    def p95(rows: dict[str, dict[str, str]], name: str) -> str:
        v = rows.get(name, {}).get("95%", "N/A")
        return "-" if v in ("N/A", "") else v

    for ts in stamps[step - 1 :: step]:
        rows = by_ts[ts]
        agg = rows.get("Aggregated", {})
        t = ts - t0
        day_s = plan.day_time(t)
        mon = min(monitor_rows, key=lambda r: abs(float(r["t"]) - t)) if monitor_rows else {}

        out_rows.append(
            {
                "t_s": t,
                "kst": f"{int(day_s // 3600) % 24:02d}:{int(day_s % 3600 // 60):02d}",
                "users": int(agg.get("User Count") or 0),
                "req_per_s": round(float(agg.get("Requests/s") or 0), 1),
                "fail_per_s": round(float(agg.get("Failures/s") or 0), 2),
                "account_read_p95_ms": p95(rows, "/v1/positions/[org]/[account]"),
                "post_p95_ms": p95(rows, "/v1/events"),
                "api_cores": mon.get("api_cores"),
                "other_cores": mon.get("other_cores"),
            }
        )
    return out_rows


def scrape_metrics(api: str, headers: dict[str, str]) -> dict[str, float]:
    """A few totals from /metrics at the end of the run."""
    want = (
        "cashpos_events_applied_total",
        "cashpos_events_deadlettered_total",
        "cashpos_duplicates_dropped_total",
        "cashpos_api_events_ingested_total",
        "cashpos_api_events_rejected_total",
        "cashpos_consumer_lag_records",
        "cashpos_api_sse_connections",
    )
    out: dict[str, float] = {}
    try:
        r = httpx.get(f"{api}/metrics", headers=headers, timeout=10)  # a national token: operations
    except httpx.HTTPError:
        return out
    if r.status_code != 200:
        log(f"/metrics answered {r.status_code}: {r.text[:200]}")
        return out
    text = r.text
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in want:
            try:
                v = float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
            key = name
            if name == "cashpos_events_deadlettered_total" and 'reason="' in line:
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                key = f"{name}[{reason}]"
            out[key] = out.get(key, 0) + v
    return out


def judge(
    plan: Plan,
    args: argparse.Namespace,
    out: Path,
    merged: dict[str, Any],
    monitor_rows: list[dict[str, float]],
    run_s: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    th = THRESHOLDS["smoke" if args.smoke else "full"]
    cats: dict[str, dict[str, Any]] = merged["categories"]

    def cat(name: str) -> dict[str, Any]:
        return cats.get(name, {"requests": 0, "failures": 0})

    user_cats = ("read", "write", "page", "stream_connect", "stream_hold", "probe")
    requests = sum(int(cat(c)["requests"]) for c in user_cats)
    failures = sum(int(cat(c)["failures"]) for c in user_cats)
    error_rate = failures / requests if requests else 1.0
    accepted = int(cat("write")["requests"]) - int(cat("write")["failures"])
    expected_tx = plan.expected_tx()
    fa, fs = cat("freshness_api"), cat("freshness_stream")
    f_n = int(fa["requests"]) + int(fs["requests"])
    f_fail = int(fa["failures"]) + int(fs["failures"])
    lag = merged["lag"]
    lag_max = max((v for _, v in lag), default=None)
    lag_bound = max(100.0, th["lag_seconds_max"] * plan.peak_tps())
    planned_peak_users = plan.peak_users() + (args.source_users or plan.source_users())
    seen_users = peak_users_seen(out)

    checks: list[dict[str, Any]] = []

    def check(name: str, value: object, limit: float, ok: bool, unit: str = "") -> None:
        checks.append({"check": name, "value": value, "limit": limit, "unit": unit, "pass": bool(ok)})

    check("error rate", round(error_rate, 5), th["error_rate_max"], error_rate < th["error_rate_max"])
    rp99 = cat("read").get("p99_ms")
    check(
        "read latency p99",
        rp99,
        th["read_p99_ms_max"],
        rp99 is not None and rp99 < th["read_p99_ms_max"],
        "ms",
    )
    wp99 = cat("write").get("p99_ms")
    check(
        "write latency p99 (POST /v1/events)",
        wp99,
        th["write_p99_ms_max"],
        wp99 is not None and wp99 < th["write_p99_ms_max"],
        "ms",
    )
    ratio = accepted / expected_tx if expected_tx else 0.0
    check("accepted tx / planned tx", round(ratio, 4), th["tx_ratio_min"], ratio >= th["tx_ratio_min"])
    for key, c in (("api", fa), ("stream", fs)):
        p99 = c.get("p99_ms")
        lim = th[f"freshness_{key}_p99_ms_max"]
        check(f"freshness p99 ({key})", p99, lim, p99 is not None and p99 < lim, "ms")
    t_rate = f_fail / f_n if f_n else 1.0
    check(
        "freshness probes not seen in 30 s",
        round(t_rate, 4),
        th["freshness_timeout_rate_max"],
        t_rate <= th["freshness_timeout_rate_max"],
    )
    check("freshness samples", f_n, th["freshness_samples_min"], f_n >= th["freshness_samples_min"])
    check(
        "processor lag max",
        lag_max,
        round(lag_bound),
        lag_max is not None and lag_max <= lag_bound,
        "records",
    )
    u_ratio = seen_users / planned_peak_users if planned_peak_users else 0.0
    check(
        "peak users reached / planned",
        round(u_ratio, 3),
        th["users_ratio_min"],
        u_ratio >= th["users_ratio_min"],
    )

    # how the cores were shared, over the Locust run
    comps = sorted(
        {k[:-6] for r in monitor_rows for k in r if k.endswith("_cores") and k != "machine_busy_cores"}
    )
    cpu: dict[str, dict[str, float]] = {}
    for comp in comps:
        vals = [float(r.get(f"{comp}_cores", 0)) for r in monitor_rows]
        rss = [float(r[f"{comp}_rss_mb"]) for r in monitor_rows if float(r.get(f"{comp}_rss_mb") or 0) > 0]
        cpu[comp] = {
            "mean_cores": round(sum(vals) / len(vals), 3) if vals else 0.0,
            "max_cores": round(max(vals), 3) if vals else 0.0,
            **({"rss_mb_start": rss[0], "rss_mb_end": rss[-1], "rss_mb_max": max(rss)} if rss else {}),
        }
    busy = [float(r.get("machine_busy_cores", 0)) for r in monitor_rows]
    cpu["machine"] = {
        "cores": psutil.cpu_count() or 0,
        "mean_busy_cores": round(sum(busy) / len(busy), 3) if busy else 0.0,
        "max_busy_cores": round(max(busy), 3) if busy else 0.0,
    }

    counts: dict[str, int] = merged["counts"]
    return {
        "passed": all(c["pass"] for c in checks),
        "profile": "smoke" if args.smoke else "full",
        "plan": plan.describe(),
        "run_seconds": round(run_s, 1),
        "checks": checks,
        "requests": requests,
        "failures": failures,
        "error_rate": round(error_rate, 5),
        "transactions": {
            "accepted": accepted,
            "planned": round(expected_tx),
            "accepted_per_s": round(accepted / run_s, 2) if run_s else None,
            "planned_per_s": round(expected_tx / plan.duration_s, 2),
            "planned_peak_per_s": round(plan.peak_tps(), 2),
        },
        "latency_ms": cats,
        "freshness": {"api": fa, "stream": fs},
        "lag_records": {
            "max": lag_max,
            "samples": len(lag),
            "bound": round(lag_bound),
            "last": lag[-1][1] if lag else None,
        },
        "users": {
            "planned_peak": round(planned_peak_users),
            "seen_peak": seen_users,
            "logins": {k[9:]: v for k, v in counts.items() if k.startswith("sessions_")},
            "logins_planned": round(plan.logins()),
            "streams_held_to_session_end": int(cat("stream_hold")["requests"])
            - int(cat("stream_hold")["failures"]),
            "stream_frames_read": counts.get("stream_frames", 0),
        },
        "generator": {k: v for k, v in counts.items() if k.startswith(("tx_", "probe_"))},
        "cpu": cpu,
        **extra,
    }


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1 else f"{v:,.1f}".rstrip("0").rstrip(".")
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_markdown(s: dict[str, Any], rows: list[dict[str, str]], path: Path) -> str:
    plan = s["plan"]
    L: list[str] = []
    L.append(f"# cashpos load test: {'PASS' if s['passed'] else 'FAIL'} ({s['profile']} thresholds)")
    L.append("")
    p = plan
    if p["mode"] == "day":
        L.append(
            f"**{p['day_label']}** ({p['date']}), {p['window_kst']} KST compressed {p['compress']:g}x "
            f"into {p['duration_s']:g} s; user scale {p['user_scale']:g}, tx scale {p['tx_scale']:g}. "
            f"The day: {p['day_sessions']:,} sessions, {p['day_transactions']:,} transactions."
        )
    else:
        L.append(
            f"**Heavy day**: {p['window_kst']} of the {p['day_label']} ({p['date']}), "
            f"{p['duration_s']:g} s; user scale {p['user_scale']:g}, tx scale {p['tx_scale']:g}."
        )
    L.append(
        f"Planned: peak {p['peak_users']:,} concurrent users (+ source systems), peak "
        f"{p['peak_tps']:g} tx/s, {p['expected_tx']:,} transactions. Weights {p['weights']}."
    )
    L.append("")
    L.append("| check | value | limit | |")
    L.append("|---|---|---|---|")
    for c in s["checks"]:
        L.append(
            f"| {c['check']} | {_fmt(c['value'])} {c['unit']} | {_fmt(c['limit'])} | "
            f"{'ok' if c['pass'] else '**FAIL**'} |"
        )
    L.append("")
    tx = s["transactions"]
    u = s["users"]
    L.append(
        f"- transactions accepted: {tx['accepted']:,} of {tx['planned']:,} planned "
        f"({_fmt(tx['accepted_per_s'])} /s over the run, plan {_fmt(tx['planned_per_s'])} /s, "
        f"peak {_fmt(tx['planned_peak_per_s'])} /s)"
    )
    L.append(f"- requests {s['requests']:,}, failures {s['failures']:,} (error rate {_fmt(s['error_rate'])})")
    L.append(
        f"- users: peak {u['seen_peak']:,} of {u['planned_peak']:,} planned; logins (new sessions) "
        f"{u['logins']} of ~{u['logins_planned']:,} planned; streams held to the session's end "
        f"{u['streams_held_to_session_end']:,}, stream frames read {u['stream_frames_read']:,}"
    )
    if s.get("generator"):
        L.append(
            f"- load generator: {s['generator']} (tx_skipped: Locust fell behind its schedule; "
            "tx_posted_blocking: a source user already had its maximum of posts in flight)"
        )
    lag = s["lag_records"]
    L.append(
        f"- processor lag (records): max {_fmt(lag['max'])}, last {_fmt(lag['last'])}, "
        f"{lag['samples']} samples (bound {lag['bound']})"
    )
    if s.get("metrics"):
        L.append(f"- /metrics at the end: {s['metrics']}")
    L.append("")
    L.append("## Latency by category (ms, merged over all Locust processes)")
    L.append("")
    L.append("| category | requests | failures | p50 | p95 | p99 | max |")
    L.append("|---|---|---|---|---|---|---|")
    for k, c in sorted(s["latency_ms"].items()):
        L.append(
            f"| {k} | {c['requests']:,} | {c['failures']:,} | {_fmt(c.get('p50_ms'))} | "
            f"{_fmt(c.get('p95_ms'))} | {_fmt(c.get('p99_ms'))} | {_fmt(c.get('max_ms'))} |"
        )
    L.append("")
    L.append("`stream_hold` counts held streams (no latency), `probe` the freshness probes' own requests.")
    L.append("")
    if s.get("timeline"):
        L.append("## Over the run (p95 over the last ~10 s; cores from monitor.csv)")
        L.append("")
        L.append(
            "| run s | KST | users | req/s | fail/s | account read p95 | post p95 | api cores | other cores |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|")
        for r in s["timeline"]:
            L.append(
                f"| {r['t_s']} | {r['kst']} | {r['users']:,} | {r['req_per_s']} | {r['fail_per_s']} | "
                f"{r['account_read_p95_ms']} | {r['post_p95_ms']} | {_fmt(r['api_cores'])} | "
                f"{_fmt(r['other_cores'])} |"
            )
        L.append("")
    L.append("## Per endpoint (Locust's statistics)")
    L.append("")
    L.append("| type | name | requests | failures | p50 | p95 | p99 | max | req/s |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        L.append(
            f"| {r['Type']} | {r['Name']} | {r['Request Count']} | {r['Failure Count']} | "
            f"{r['50%']} | {r['95%']} | {r['99%']} | {_fmt(float(r['Max Response Time'] or 0))} | "
            f"{float(r['Requests/s'] or 0):.2f} |"
        )
    L.append("")
    L.append(
        "LAG rows are in records, not ms; the Aggregated row mixes in FRESHNESS and LAG samples "
        "(use the categories above)."
    )
    L.append("")
    L.append("## How the cores were shared")
    L.append("")
    cpu = s["cpu"]
    m = cpu.get("machine", {})
    L.append(
        f"{m.get('cores')} cores; the machine was busy {_fmt(m.get('mean_busy_cores'))} cores on average "
        f"(max {_fmt(m.get('max_busy_cores'))}). Mean / max cores and memory per component:"
    )
    L.append("")
    L.append("| component | mean cores | max cores | RSS start MB | RSS end MB | RSS max MB |")
    L.append("|---|---|---|---|---|---|")
    for k, v in cpu.items():
        if k == "machine":
            continue
        L.append(
            f"| {k} | {_fmt(v['mean_cores'])} | {_fmt(v['max_cores'])} | {_fmt(v.get('rss_mb_start'))} | "
            f"{_fmt(v.get('rss_mb_end'))} | {_fmt(v.get('rss_mb_max'))} |"
        )
    L.append("")
    L.append(str(s.get("cpu_note", "")))
    if s.get("tansu_note"):
        L.append("")
        L.append(str(s["tansu_note"]))
    L.append("")
    text = "\n".join(L) + "\n"
    path.write_text(text)
    return text


# -- main ---------------------------------------------------------------------------------------


def _cpus(spec: str | None) -> set[int] | None:
    if not spec:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--compress", type=float, default=48.0, help="play the day N times faster (48: 24 h in 30 min) [48]"
    )
    ap.add_argument(
        "--day-type",
        choices=sorted(DAY_TYPES),
        default=DEFAULT_DAY,
        help="payroll (default, the 20th), ordinary, month_end, jan2, december",
    )
    ap.add_argument("--window", default=None, help="KST hours of the day to play, e.g. 8-19 [0-24]")
    ap.add_argument("--heavy", action="store_true", help="10x the busiest hour instead of the day")
    ap.add_argument("--heavy-factor", type=float, default=10.0)
    ap.add_argument("--ramp", type=float, default=None, help="heavy: ramp seconds [60; smoke 10]")
    ap.add_argument("--hold", type=float, default=None, help="heavy: hold seconds [900; smoke 50]")
    ap.add_argument("--scale", type=float, default=None, help="sets --user-scale and --tx-scale")
    ap.add_argument("--user-scale", type=float, default=None, help="x concurrent users [1]")
    ap.add_argument("--tx-scale", type=float, default=None, help="x transactions/s [1]")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="60 s: 09-10h at 60x (or a 60 s heavy plateau), small, CI thresholds",
    )
    ap.add_argument(
        "--locust-processes",
        type=int,
        default=1,
        help="Locust processes (>1: master + N workers via --processes) [1]",
    )
    ap.add_argument("--source-users", type=int, default=0, help="SourceSystem users [from the plan]")
    ap.add_argument("--probe-every", type=int, default=None, help="probe 1 in N posts [50; smoke 10]")
    ap.add_argument(
        "--spawn-login",
        type=float,
        default=None,
        help="share of spawned users that start with a login instead of mid-session [0; smoke 1]",
    )
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--host", default=None, help="test this API instead of starting a stack")
    ap.add_argument(
        "--admin-token",
        default=os.environ.get("CASHPOS_ADMIN_TOKEN"),
        help="with --host: an admin token to create the run's tokens through the API "
        "(revoked after the run) [$CASHPOS_ADMIN_TOKEN]",
    )
    ap.add_argument(
        "--tokens",
        type=Path,
        default=None,
        help="with --host: a JSON file of ready-made tokens (national, integration, "
        "source, directors: {org: token}) instead of --admin-token",
    )
    ap.add_argument("--out", type=Path, default=None, help="report directory [artifacts/loadtest/<run>]")
    ap.add_argument("--locust-cpus", default=None, help="pin Locust to these CPUs, e.g. 1")
    ap.add_argument("--stack-cpus", default=None, help="pin the stack to these CPUs, e.g. 0")
    ap.add_argument("--keep-state", action="store_true", help="keep var/loadtest/<run>/ state")
    ap.add_argument("--progress-every", type=float, default=30.0)
    return ap.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    us = args.user_scale if args.user_scale is not None else args.scale
    ts = args.tx_scale if args.tx_scale is not None else args.scale
    if args.smoke:
        if args.heavy:  # 10x the busiest hour, scaled to ~50 users and ~9 tx/s, 60 s
            plan = Plan(
                day_type=args.day_type,
                mode="heavy",
                heavy_factor=args.heavy_factor,
                user_scale=0.002 if us is None else us,
                tx_scale=0.05 if ts is None else ts,
                ramp_s=10.0 if args.ramp is None else args.ramp,
                hold_s=50.0 if args.hold is None else args.hold,
            )
        else:  # the morning peak (09-10 KST) at 60x: ~50 users and ~6-8 tx/s for 60 s
            start, _, end = (args.window or "9-10").partition("-")
            plan = Plan(
                day_type=args.day_type,
                compress=60.0 * (float(end) - float(start)),
                start_h=float(start),
                end_h=float(end),
                user_scale=0.02 if us is None else us,
                tx_scale=0.5 if ts is None else ts,
            )
        if args.probe_every is None:
            args.probe_every = 10
        if args.spawn_login is None:
            args.spawn_login = 1.0
        return plan
    if args.spawn_login is None:
        args.spawn_login = 0.0
    if args.probe_every is None:
        args.probe_every = 50
    if args.heavy:
        return Plan(
            day_type=args.day_type,
            mode="heavy",
            heavy_factor=args.heavy_factor,
            user_scale=1.0 if us is None else us,
            tx_scale=1.0 if ts is None else ts,
            ramp_s=60.0 if args.ramp is None else args.ramp,
            hold_s=900.0 if args.hold is None else args.hold,
        )
    start, _, end = (args.window or "0-24").partition("-")
    return Plan(
        day_type=args.day_type,
        compress=args.compress,
        start_h=float(start),
        end_h=float(end),
        user_scale=1.0 if us is None else us,
        tx_scale=1.0 if ts is None else ts,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = build_plan(args)
    run_id = time.strftime("lt%m%d%H%M%S")
    out = (args.out or ROOT / "artifacts" / "loadtest" / time.strftime("%Y%m%dT%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    var = ROOT / "var" / "loadtest" / run_id
    d = plan.describe()
    log(f"plan: {json.dumps(d, ensure_ascii=False)}")
    log(f"reports in {out}")
    stack: Stack | None = None
    headers: dict[str, str] = {}  # a national token's, for the harness
    monitor: Monitor | None = None
    api_tokens: ApiTokens | None = None
    given = args.tokens.resolve() if args.host and args.tokens else None  # ready-made tokens
    tokens_file = given or var / "tokens.json"
    extra: dict[str, Any] = {"run_id": run_id, "reports": str(out)}
    try:
        if args.host:
            host = args.host.rstrip("/")
            if given is None:
                if not args.admin_token:
                    log("--host needs --admin-token (or CASHPOS_ADMIN_TOKEN) or --tokens FILE")
                    return 2
                api_tokens = ApiTokens(host, args.admin_token)
                write_tokens(tokens_file, provision_tokens(api_tokens.create, run_id))
                log(f"{len(api_tokens.ids)} tokens made through {host}/v1/tokens")
            monitor = Monitor({}, out / "monitor.csv")
            extra["stack"] = f"external: {host} (no stack started, no opening balances)"
        else:
            log(f"starting the stack in {var} (namespace {run_id})")
            stack = start_stack(var, run_id, args.partitions, _cpus(args.stack_cpus))
            tokens = provision_tokens(stack.token, run_id)
            write_tokens(tokens_file, tokens)
            headers = _bearer(tokens)
            stack.wait_ready(180, token=str(tokens["national"]))
            n, total = publish_opening(stack, plan, run_id)
            wait_cash(stack.api, total, headers)
            log(f"stack ready at {stack.api}; {n:,} opening balances visible ({total:,} KRW)")
            host = stack.api
            monitor = Monitor(stack_pids(stack), out / "monitor.csv")
            extra["stack"] = (
                f"embedded: Tansu (memory) + redis-server + 1 ledger worker + 1 API "
                f"process, {args.partitions} partitions, namespace {run_id}, logs {var}"
            )
        monitor.start()
        t0 = time.monotonic()
        rc = run_locust(args, plan, host, out, run_id, monitor, _cpus(args.locust_cpus), tokens_file)
        run_s = time.monotonic() - t0
        time.sleep(1)
        monitor.stop()
        log(f"locust exited with {rc} after {run_s:.0f}s")
        if stack is not None:
            extra["metrics"] = scrape_metrics(stack.api, headers)
        merged = merge_raw(out)
        if not merged["categories"]:
            log("no measurements were written (see locust.log / locust.stdout)")
            return 2
        extra["cpu_note"] = cpu_note(args, monitor.rows)
        tansu = [r["tansu_rss_mb"] for r in monitor.rows if float(r.get("tansu_rss_mb") or 0) > 0]
        if tansu:
            accepted = merged["categories"].get("write", {}).get("requests", 0)
            extra["tansu_note"] = (
                f"Tansu RSS {tansu[0]:.0f} MB -> {tansu[-1]:.0f} MB (max {max(tansu):.0f} MB) over "
                f"{accepted:,} posts; Tansu's in-memory storage never frees memory, so a long or "
                f"repeated run needs a fresh broker (run.py starts one per run)."
            )
        extra["timeline"] = timeline(out, plan, monitor.rows)
        summary = judge(plan, args, out, merged, monitor.rows, run_s, extra)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        text = write_markdown(summary, locust_rows(out), out / "summary.md")
        print(text, flush=True)
        log(f"{'PASS' if summary['passed'] else 'FAIL'}: {out / 'summary.md'}")
        return 0 if summary["passed"] else 1
    except Exception as exc:  # noqa: BLE001 - any failure of the run is its exit code 2, reported
        log(f"run failed: {exc!r}")
        if monitor is not None and monitor.is_alive():
            monitor.stop()
        return 2
    finally:
        if api_tokens is not None:
            api_tokens.revoke()
        if given is None:
            tokens_file.unlink(missing_ok=True)  # the secrets are of no use after the run
        if stack is not None:
            stop_stack(stack, stack.infra)
            if not args.keep_state:
                shutil.rmtree(var / "state-w1", ignore_errors=True)


def cpu_note(args: argparse.Namespace, rows: list[dict[str, float]]) -> str:
    if not rows:
        return ""
    mean = {
        k[:-6]: sum(float(r.get(k, 0)) for r in rows) / len(rows)
        for k in rows[-1]
        if k.endswith("_cores") and k != "machine_busy_cores"
    }
    locust = mean.pop("locust", 0.0)
    other = mean.pop("other", 0.0)
    stack = sum(mean.values())
    pin = (
        f"Locust pinned to CPU {args.locust_cpus}, the stack to CPU {args.stack_cpus}. "
        if args.locust_cpus or args.stack_cpus
        else "No pinning: the kernel shared the cores between all processes. "
    )
    return (
        f"{pin}Locust ({args.locust_processes} process{'es' if args.locust_processes > 1 else ''}) "
        f"used {locust:.2f} cores on average, the stack {stack:.2f} "
        f"({', '.join(f'{k} {v:.2f}' for k, v in sorted(mean.items(), key=lambda kv: -kv[1]))}), "
        f"other processes on the machine {other:.2f}. Latencies include any CPU contention "
        f"between the load generator and the system under test."
    )


if __name__ == "__main__":
    sys.exit(main())
