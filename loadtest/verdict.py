"""Pass or fail: the run's figures against the thresholds, as ``summary.json`` holds them.

:func:`judge` takes the merged measurements (``loadtest.headless.merge_raw``), Locust's user
counts and the monitor's samples, checks them against ``THRESHOLDS`` ("full" or, with
``--smoke``, "smoke") and returns the summary: the checks, transactions, latency per category,
freshness, processor lag, users, the load generator's own counters and how the cores were shared.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import psutil

from loadtest.headless import peak_users_seen
from loadtest.plan import Plan

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

    def p99_below(name: str, c: dict[str, Any], limit: float) -> None:
        p99 = c.get("p99_ms")
        check(name, p99, limit, p99 is not None and p99 < limit, "ms")

    check("error rate", round(error_rate, 5), th["error_rate_max"], error_rate < th["error_rate_max"])
    p99_below("read latency p99", cat("read"), th["read_p99_ms_max"])
    p99_below("write latency p99 (POST /v1/events)", cat("write"), th["write_p99_ms_max"])
    ratio = accepted / expected_tx if expected_tx else 0.0
    check("accepted tx / planned tx", round(ratio, 4), th["tx_ratio_min"], ratio >= th["tx_ratio_min"])
    for key, c in (("api", fa), ("stream", fs)):
        p99_below(f"freshness p99 ({key})", c, th[f"freshness_{key}_p99_ms_max"])
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
