"""Scenario 6: three workers in one consumer group; one is killed, later one is added back.

    python -m faults.scale_out --events 1000000 --seed 6 --rate 10000

Three ledger workers (distinct CASHPOS_WORKER_ID, CASHPOS_STATE_DIR, CASHPOS_WORKER_WEB_PORT)
share the input's ``--partitions`` (at least 6) while events stream in at ``--rate``. At 25 % of
the stream worker w2 is killed (``kill -9``): its partitions must move to w1 and w3 (seen in
their heartbeats in Redis ``{ns}:freshness``), which rebuild them by re-folding. At 60 % w2 is
started again on its old state directory: partitions move again, and w2 resumes the ones it had
from its own stored offsets. Required: the final positions exact, and each worker's state exact
for exactly the partitions it owns at the end (a worker that lost a partition keeps stale data
for it), with every partition owned once.
"""

from __future__ import annotations

import asyncio
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
    live_owners,
    log,
    prepared_stack,
    reconcile_quiet,
    redis_view,
    script_main,
    session_env,
    wait_until,
    workload,
)
from reconcile.run import reconcile


def _covering(owners: dict[str, set[int]], workers: set[str], n: int) -> bool:
    if set(owners) != workers or any(not p for p in owners.values()):
        return False
    parts = [p for ps in owners.values() for p in ps]
    return sorted(parts) == list(range(n))


def run(
    infra: Infra,
    root: Path,
    *,
    events: int,
    seed: int,
    rate: float,
    partitions: int = 6,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    if partitions < 6:
        raise ValueError("scale-out runs with at least 6 partitions")
    env = env or {}
    problems: list[str] = []
    with prepared_stack(infra, root, partitions) as s:
        raws = workload(seed, events)
        want = expected_view(raws)
        dirs = {w: s.root / f"state-{w}" for w in ("w1", "w2", "w3")}
        all3 = {"w1", "w2", "w3"}
        for w in sorted(all3):
            s.start_worker(w, **env)
        t = time.monotonic()
        wait_until(
            lambda: _covering(live_owners(s), all3, partitions),
            120,
            0.2,
            "three workers to share the partitions",
        )
        owners_start = live_owners(s)
        log(f"three workers up after {time.monotonic() - t:.1f}s: {owners_start}")
        duration = len(raws) / rate
        feeder = Feeder(s.settings, raws, rate)
        t0 = time.monotonic()
        feeder.start()

        time.sleep(max(0.0, t0 + 0.25 * duration - time.monotonic()))
        s.stop("worker-w2", kill=True)
        killed = time.monotonic()
        # w2's heartbeat stops; it drops out of live_owners after 2.5 s
        wait_until(
            lambda: _covering(live_owners(s), {"w1", "w3"}, partitions),
            120,
            0.1,
            "w1 and w3 to take over w2's partitions",
        )
        takeover_s = time.monotonic() - killed
        owners_after_kill = live_owners(s)
        log(
            f"kill -9 w2 at {killed - t0:.1f}s; w1 and w3 own everything after {takeover_s:.1f}s: "
            f"{owners_after_kill}"
        )
        moved = {p: w for w, ps in owners_after_kill.items() for p in ps if p in owners_start["w2"]}
        if sorted(moved) != sorted(owners_start["w2"]):
            problems.append(f"w2's partitions {owners_start['w2']} did not all move: {owners_after_kill}")

        time.sleep(max(0.0, t0 + 0.6 * duration - time.monotonic()))
        added = time.monotonic()
        s.start_worker("w2", **env)  # back, on its old state directory
        wait_until(
            lambda: _covering(live_owners(s), all3, partitions), 120, 0.1, "w2 to get partitions again"
        )
        rejoin_s = time.monotonic() - added
        owners_after_add = live_owners(s)
        log(f"w2 added back at {added - t0:.1f}s; three owners after {rejoin_s:.1f}s: {owners_after_add}")
        if owners_after_add == owners_after_kill:
            problems.append("no partition moved when w2 came back")

        feeder.wait(timeout)
        wait_until(lambda: redis_view(s) == want, timeout, 0.2, "the positions to be exact")
        exact_s = time.monotonic() - t0
        owned = live_owners(s)
        if owned != owners_after_add:
            problems.append(f"ownership changed again by the end: {owned}")
        rec = reconcile_quiet(s, {w: dirs[w] for w in owned}, published=len(raws), owned=owned)
        problems += rec.problems
        # For the record: reconcile.run over all three directories as they are (each compared
        # at its own stored offsets, stale partitions included).
        plain = asyncio.run(reconcile(s.settings, list(dirs.values()), publish=False))
        return {
            "events": len(raws),
            "seed": seed,
            "partitions": partitions,
            "rate": rate,
            "worker_env": env,
            "owners_start": {w: sorted(p) for w, p in sorted(owners_start.items())},
            "w2_killed_at_s": round(killed - t0, 1),
            "takeover_s": round(takeover_s, 1),
            "owners_after_kill": {w: sorted(p) for w, p in sorted(owners_after_kill.items())},
            "w2_added_at_s": round(added - t0, 1),
            "rejoin_s": round(rejoin_s, 1),
            "owners_after_add": {w: sorted(p) for w, p in sorted(owners_after_add.items())},
            "exact_after_s": round(exact_s, 1),
            "diff_krw": rec.diff_krw,
            "state_diff_krw": rec.state_diff_krw,
            "state_positions_checked": rec.state_positions,
            "lagging": rec.lagging,
            "unseeded": rec.unseeded,
            "records_in": rec.records_in,
            "applied": rec.applied,
            "duplicates": rec.duplicates,
            "dead_letters": rec.dead_letters,
            "reconcile_all_dirs_as_stored_diff_krw": plain.diff_krw,
            "problems": problems,
        }


def main() -> int:
    ap = base_args(__doc__.split("\n\n")[0])
    ap.set_defaults(partitions=6)
    ap.add_argument("--rate", type=float, default=10_000, help="events per second")
    add_session_arg(ap)
    args = ap.parse_args()
    env = session_env(args)
    return script_main("scale_out", args, run, rate=args.rate, env=env)


if __name__ == "__main__":
    sys.exit(main())
