"""Locust, headless, in its own process(es), and what it leaves in the report directory.

:func:`run_locust` runs ``locust -f loadtest/locustfile.py --headless`` with the plan in
``LOADTEST_*`` variables and prints a progress line now and then; Locust writes
``locust_stats.csv``, ``locust_stats_history.csv``, ``locust_failures.csv``,
``locust_exceptions.csv``, ``locust.html``, ``locust.log`` (and ``locust.stdout``), and each of its
processes ``raw/<role>-<pid>.json`` (``loadtest.recording``). The readers below turn those into
figures: :func:`merge_raw` (the categories' latency histograms, merged exactly over all processes,
lag samples, counts), :func:`locust_rows`, :func:`peak_users_seen` and :func:`timeline`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtest.console import log
from loadtest.monitor import Monitor
from loadtest.plan import Plan

ROOT = Path(__file__).resolve().parent.parent


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


# -- reading what Locust wrote ------------------------------------------------------------------


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
