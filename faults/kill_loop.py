"""Scenario 1: kill -9 the processor again and again during a replay; it restarts automatically.

    python -m faults.kill_loop --events 1000000 --seed 1            # replay of 1M events
    python -m faults.kill_loop --events 100000 --rate 4000 --kill-min 1 --kill-max 3 \
        --session-timeout-ms 2000 --flush-seconds 0.5                # the CI shape

The same input is processed twice, on two namespaces of one broker: fault-free, then with a
``kill -9`` of the worker every ``kill-min``..``kill-max`` seconds of it being up (owning its
partitions), each followed at once by a restart. Without ``--rate`` the events are all in the
topics before the worker starts (a replay); with it they are published at that pace while the
worker runs. Ends with the reconciliation (state = Redis = the reference fold, counts add up)
and compares wall times: fault-free vs with kills (must be at most ``--max-ratio``).
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

from cashpos.embedded import Infra
from faults.common import (
    Feeder,
    add_session_arg,
    base_args,
    expected_view,
    log,
    prepared_stack,
    publish,
    reconcile_quiet,
    redis_view,
    rng,
    script_main,
    session_env,
    versions_sum,
    wait_up,
    workload,
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _one_run(
    infra: Infra,
    root: Path,
    raws: list[bytes],
    want: dict,
    *,
    rate: float | None,
    partitions: int,
    env: dict[str, str],
    kill_every: tuple[float, float] | None,
    rnd: random.Random,
    timeout: float,
) -> dict[str, Any]:
    with prepared_stack(infra, root, partitions) as s:
        total = versions_sum(want)
        out: dict[str, Any] = {"problems": []}
        kills: list[dict[str, Any]] = []
        feeder: Feeder | None = None
        if rate:
            ms = _now_ms()
            s.start_worker("w1", **env)
            wait_up(s, "w1", ms)
            feeder = Feeder(s.settings, raws, rate)
            t0 = up = time.monotonic()
            feeder.start()
        else:
            out["publish_s"] = round(publish(s.settings, raws), 1)
            ms = _now_ms()
            t0 = time.monotonic()
            s.start_worker("w1", **env)
            up = wait_up(s, "w1", ms)
        out["first_up_s"] = round(up - t0, 1)

        def gap() -> float:  # up time before the next kill
            return rnd.uniform(*kill_every) if kill_every else math.inf

        next_kill = up + gap()
        last_applied = 0
        while True:
            view = redis_view(s)
            now = time.monotonic()
            if view == want:
                break
            if now - t0 > timeout:
                out["problems"].append(f"not exact after {timeout}s")
                break
            if now >= next_kill:
                applied = versions_sum(view)
                s.stop("worker-w1", kill=True)
                killed = time.monotonic()
                ms = _now_ms()
                s.start_worker("w1", **env)
                up = wait_up(s, "w1", ms)
                kills.append(
                    {
                        "at_s": round(killed - t0, 1),
                        "applied": applied,
                        "mid_stream": last_applied < applied < total,
                        "publishing": bool(feeder and not feeder.done),
                        "restart_s": round(up - killed, 1),
                    }
                )
                log(
                    f"kill -9 #{len(kills)} at {killed - t0:.1f}s, {applied}/{total} changes "
                    f"visible, up again after {up - killed:.1f}s"
                )
                last_applied = applied
                next_kill = up + gap()
                continue
            time.sleep(0.1)
        out["wall_s"] = round(time.monotonic() - t0, 1)
        if feeder is not None:
            feeder.wait()
        rec = reconcile_quiet(s, {"w1": s.root / "state-w1"}, published=len(raws))
        out["reconcile"] = rec.figures()
        out["problems"] += rec.problems
        out["kills"] = kills
        return out


def run(
    infra: Infra,
    root: Path,
    *,
    events: int,
    seed: int,
    rate: float | None = None,
    partitions: int = 12,
    kill_min: float = 5.0,
    kill_max: float = 15.0,
    env: dict[str, str] | None = None,
    min_kills: int = 1,
    max_ratio: float = 2.0,
    timeout: float = 3600,
) -> dict[str, Any]:
    env = env or {}
    raws = workload(seed, events)
    want = expected_view(raws)
    log(f"{len(raws)} events, {len(want)} positions expected")
    log("fault-free run")
    clean = _one_run(
        infra,
        root / "clean",
        raws,
        want,
        rate=rate,
        partitions=partitions,
        env=env,
        kill_every=None,
        rnd=rng(seed, "kills"),
        timeout=timeout,
    )
    log(f"fault-free: exact after {clean['wall_s']}s")
    log(f"run with kill -9 every {kill_min}-{kill_max}s of uptime")
    faulty = _one_run(
        infra,
        root / "kills",
        raws,
        want,
        rate=rate,
        partitions=partitions,
        env=env,
        kill_every=(kill_min, kill_max),
        rnd=rng(seed, "kills"),
        timeout=timeout,
    )
    kills = faulty["kills"]
    mid = sum(1 for k in kills if k["mid_stream"])
    ratio = round(faulty["wall_s"] / clean["wall_s"], 2)
    problems = [f"fault-free: {p}" for p in clean["problems"]] + faulty["problems"]
    if mid < min_kills:
        problems.append(f"only {mid} kills landed mid-stream (want >= {min_kills})")
    if ratio > max_ratio:
        problems.append(
            f"wall time {faulty['wall_s']}s with kills is {ratio}x the fault-free "
            f"{clean['wall_s']}s (limit {max_ratio}x)"
        )
    rec = faulty["reconcile"]
    return {
        "events": len(raws),
        "seed": seed,
        "partitions": partitions,
        "mode": f"paced {rate}/s" if rate else "replay (all published before the worker starts)",
        "kill_interval_s": f"{kill_min}-{kill_max} after the worker is up",
        "worker_env": env,
        "kills": len(kills),
        "kills_mid_stream": mid,
        "restart_s_mean": round(sum(k["restart_s"] for k in kills) / len(kills), 1) if kills else None,
        "restart_s_max": max((k["restart_s"] for k in kills), default=None),
        "fault_free_wall_s": clean["wall_s"],
        "with_kills_wall_s": faulty["wall_s"],
        "wall_ratio": ratio,
        "diff_krw": rec["diff_krw"],
        "fault_free_diff_krw": clean["reconcile"]["diff_krw"],
        "lagging": rec["lagging"],
        "unseeded": rec["unseeded"],
        "records_in": rec["records_in"],
        "applied": rec["applied"],
        "duplicates": rec["duplicates"],
        "dead_letters": rec["dead_letters"],
        "positions_checked": rec["positions_checked"],
        "kill_log": kills,
        "problems": problems,
    }


def main() -> int:
    ap = base_args(__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rate",
        type=float,
        default=None,
        help="publish at this many events/s while the worker runs (default: replay)",
    )
    ap.add_argument("--kill-min", type=float, default=5.0)
    ap.add_argument("--kill-max", type=float, default=15.0)
    ap.add_argument("--max-ratio", type=float, default=2.0)
    add_session_arg(ap)
    ap.add_argument(
        "--flush-seconds",
        type=float,
        default=None,
        help="the workers' CASHPOS_STATE_FLUSH_SECONDS (default: the product's)",
    )
    args = ap.parse_args()
    env = session_env(args)
    if args.flush_seconds:
        env["CASHPOS_STATE_FLUSH_SECONDS"] = str(args.flush_seconds)
    return script_main(
        "kill_loop",
        args,
        run,
        rate=args.rate,
        kill_min=args.kill_min,
        kill_max=args.kill_max,
        env=env,
        max_ratio=args.max_ratio,
    )


if __name__ == "__main__":
    sys.exit(main())
