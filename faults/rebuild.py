"""Scenario 2: the processor's local state directory is deleted while it is stopped; on restart
it rebuilds by re-folding the topics (the book of record), to the same positions.

    python -m faults.rebuild --events 1000000 --seed 2

Publishes the history, lets one worker fold it, stops the worker and takes a checksum (sha256 of
the sorted (org, account, fiscal year, cash, committed, version) rows) of its state and of
Redis; deletes the state directory (``rm -rf``), starts the worker again, measures how long the
rebuild takes, and requires the rebuilt state's checksum to equal the one before, Redis to be
unchanged, and the reconciliation to be exact.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import redis

from cashpos.devstack import new_stack
from cashpos.embedded import Infra
from cashpos.names import RedisKeys
from faults.common import (
    base_args,
    checksum,
    expected_view,
    log,
    prepare,
    publish,
    reconcile_quiet,
    redis_view,
    script_main,
    state_view,
    wait_until,
    wait_up,
    worker_metric_totals,
    workload,
)

B1 = "FileNotFoundError"  # bug B1 (fixed in 4be382a): no start without the state directory


def _caught_up(stack: Any, worker: str, records: int) -> bool:
    m = worker_metric_totals(stack).get(worker, {})
    seen = (
        m.get("cashpos_events_applied_total", 0)
        + m.get("cashpos_duplicates_dropped_total", 0)
        + m.get("cashpos_events_deadlettered_total", 0)
    )
    return seen >= records and m.get("cashpos_consumer_lag_records", 1) == 0


def _drop_serving_copy(s: Any) -> int:
    """Delete this namespace's positions from Redis (what a restart or FLUSHALL does to them)."""
    r = redis.Redis.from_url(s.infra.redis_url)
    try:
        names = list(r.scan_iter(match=RedisKeys(s.namespace).positions("*"), count=1000))
        return int(r.delete(*names)) if names else 0
    finally:
        r.close()


def _judge_answers(answers: list[Any], want: dict) -> tuple[int, int, list[str]]:
    """Every 200 answer during the rebuild must show the final figures: the whole history was
    folded and committed before, so anything else is a balance moved back."""
    by_org: dict[str, dict] = {}
    for pk, v in want.items():
        by_org.setdefault(pk[0], {})[pk] = v
    ok = bad = 0
    examples: list[str] = []
    for _, org, code, rows, _ in answers:
        if code != 200:
            continue
        got = {(org, a, fy): (c, m, v) for a, fy, c, m, v in rows}
        if got == by_org.get(org, {}):
            ok += 1
        else:
            bad += 1
            if len(examples) < 3:
                cash = sum(c for c, _, _ in got.values())
                final = sum(c for c, _, _ in by_org.get(org, {}).values())
                examples.append(
                    f"{org}: {len(got)} positions, cash {cash} (final: "
                    f"{len(by_org.get(org, {}))} positions, cash {final})"
                )
    return ok, bad, examples


def run(
    infra: Infra,
    root: Path,
    *,
    events: int,
    seed: int,
    partitions: int = 12,
    empty_redis: bool = False,
    timeout: float = 1800,
) -> dict[str, Any]:
    """``empty_redis``: Redis also lost the serving copy while the worker was stopped (restart,
    FLUSHALL); the API is polled during the rebuild and must never answer with anything but the
    final figures (503 until then)."""
    from faults.redis_outage import Poller, poller_headers

    s = new_stack(infra, root, partitions)
    prepare(s)
    problems: list[str] = []
    raws = workload(seed, events)
    want = expected_view(raws)
    state_dir = s.root / "state-w1"
    poller = Poller(s.api, interval=0.01, headers=poller_headers(s))
    extra: dict[str, Any] = {}
    try:
        log(f"publishing a history of {len(raws)} events")
        publish_s = publish(s.settings, raws)
        t = time.monotonic()
        s.start_worker("w1")
        if empty_redis:
            s.start_api()
        wait_until(lambda: redis_view(s) == want, timeout, 0.2, "the first fold")
        first_fold_s = time.monotonic() - t
        before_rec = reconcile_quiet(s, {"w1": state_dir}, published=len(raws))
        problems += [f"before: {p}" for p in before_rec.problems]
        s.stop("worker-w1")  # stopped (SIGTERM); the state is on disk
        state_before, offsets_before = state_view(state_dir)
        sum_state_before = checksum(state_before)
        sum_redis_before = checksum(redis_view(s))
        if sum_state_before != sum_redis_before:
            problems.append("before: state and Redis checksums differ")
        size_mb = sum(f.stat().st_size for f in state_dir.rglob("*") if f.is_file()) / 2**20
        log(f"state {size_mb:.0f} MB, checksum {sum_state_before[:16]}; deleting {state_dir}")

        shutil.rmtree(state_dir)
        if empty_redis:
            extra["serving_hashes_dropped"] = _drop_serving_copy(s)
            poller.start()
        t_restart = time.monotonic()
        ms = int(time.time() * 1000)
        p = s.start_worker("w1")  # the operator's restart, no directory prepared
        time.sleep(0.5)
        try:
            up = wait_up(s, "w1", ms, timeout=60)
        except RuntimeError:
            if p.poll() is not None and B1 in s.log("worker-w1"):
                problems.append(
                    "B1: the worker does not start when its state directory is "
                    "missing (FileNotFoundError creating the Faust datadir)"
                )
                s.procs.pop("worker-w1", None)
                t_restart = time.monotonic()
                ms = int(time.time() * 1000)
                (s.root / "state-w1").mkdir(parents=True)  # to measure the rebuild anyway
                s.start_worker("w1")
                up = wait_up(s, "w1", ms, timeout=60)
            else:
                raise
        wait_until(lambda: _caught_up(s, "w1", len(raws)), timeout, 0.1, "the rebuild")
        rebuilt = time.monotonic()
        if empty_redis:
            wait_until(lambda: redis_view(s) == want, timeout, 0.2, "Redis to be complete again")
            extra["serving_copy_complete_s"] = round(time.monotonic() - t_restart, 1)
            time.sleep(0.5)
            poller.stop.set()
            poller.join(10)
            ok, bad, examples = _judge_answers(poller.answers, want)
            codes: dict[int, int] = {}
            for a in poller.answers:
                codes[a[2]] = codes.get(a[2], 0) + 1
            extra.update(api_status=codes, api_200_final=ok, api_200_not_final=bad)
            if bad:
                problems.append(
                    f"B2: {bad} answers during the rebuild were 200 with figures "
                    f"other than the final ones (not marked stale), e.g. {examples}"
                )
        m = worker_metric_totals(s)["w1"]
        busy = m.get("cashpos_batch_duration_seconds_sum", 0.0)
        rec = reconcile_quiet(s, {"w1": state_dir}, published=len(raws))
        problems += rec.problems
        state_after, offsets_after = state_view(state_dir)
        sum_state_after = checksum(state_after)
        sum_redis_after = checksum(redis_view(s))
        if sum_state_after != sum_state_before:
            problems.append(f"rebuilt state checksum {sum_state_after} != {sum_state_before}")
        if sum_redis_after != sum_redis_before:
            problems.append("Redis changed during the rebuild")
        if offsets_after != offsets_before:
            problems.append(f"offsets differ after the rebuild: {offsets_after} vs {offsets_before}")
        return {
            "events": len(raws),
            "seed": seed,
            "partitions": partitions,
            "publish_s": round(publish_s, 1),
            "first_fold_s": round(first_fold_s, 1),
            "state_mb": round(size_mb, 1),
            "positions": len(state_after),
            "checksum_before": sum_state_before,
            "checksum_after": sum_state_after,
            "checksum_equal": sum_state_after == sum_state_before,
            "redis_checksum_equal": sum_redis_after == sum_redis_before == sum_state_before,
            "restart_to_up_s": round(up - t_restart, 1),
            "rebuild_s": round(rebuilt - t_restart, 1),
            "rebuild_fold_busy_s": round(busy, 1),
            "rebuild_events_per_s": round(len(raws) / (rebuilt - up)) if rebuilt > up else None,
            **rec.outcome(),
            **extra,
            "problems": problems,
        }
    finally:
        poller.stop.set()
        s.stop_all()


def main() -> int:
    ap = base_args(__doc__.split("\n\n")[0])
    ap.add_argument(
        "--empty-redis",
        action="store_true",
        help="Redis loses the serving copy too; poll the API during the rebuild",
    )
    args = ap.parse_args()
    return script_main("rebuild", args, run, empty_redis=args.empty_redis)


if __name__ == "__main__":
    sys.exit(main())
