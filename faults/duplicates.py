"""Scenario 4: re-sent events and a replay from an old offset.

    python -m faults.duplicates --events 1000000 --seed 4

The clean stream is processed on one namespace. On another, the same stream goes out with 5 %
of its events sent a second time (same id, same bytes; each re-send a little later, at a random
place among the next ``--resend-window`` events), followed by a re-publication of 10,000
already-published events from early in the stream (new offsets, same ids and bytes). Required:
balances (cash, committed and version of every position) identical to the clean run's, the
duplicate counter (``cashpos_duplicates_dropped_total`` from the API's /metrics, summed over
the workers) equal to what was injected, and an exact reconciliation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from cashpos.embedded import Infra
from faults.common import (
    api_metric_totals,
    base_args,
    checksum,
    expected_view,
    log,
    prepared_stack,
    publish,
    reconcile_quiet,
    redis_view,
    rng,
    script_main,
    wait_until,
    workload,
)
from reconcile.reference import Reference
from streams.contract import side_of


def inject(
    raws: list[bytes], seed: int, share: float, replay: int, window: int
) -> tuple[list[bytes], int, int, int]:
    """The stream with re-sends and the replayed slice; (stream, re-sends, replay start, replayed)."""
    r = rng(seed, "duplicates")
    n = len(raws)
    picks = sorted(r.sample(range(n), int(n * share)))
    later: dict[int, list[bytes]] = {}
    for i in picks:
        later.setdefault(min(n - 1, i + r.randint(0, window)), []).append(raws[i])
    out: list[bytes] = []
    for i, raw in enumerate(raws):
        out.append(raw)
        out += later.get(i, [])
    start = min(n // 10, max(0, n - replay))
    replayed = raws[start : start + replay]
    return out + replayed, len(picks), start, len(replayed)


def _run_stream(
    infra: Infra, root: Path, raws: list[bytes], want: dict, partitions: int, timeout: float
) -> tuple[Any, dict, float, dict[str, float]]:
    with prepared_stack(infra, root, partitions) as s:
        s.start_worker("w1")
        s.start_api()
        s.wait_ready()
        t = time.monotonic()
        publish(s.settings, raws)  # while the worker folds
        wait_until(lambda: redis_view(s) == want, timeout, 0.2, "the positions to be exact")
        wall = time.monotonic() - t
        rec = reconcile_quiet(s, {"w1": s.root / "state-w1"}, published=len(raws))
        # the workers publish their metrics every second: wait until the counters settle
        want_seen = rec.applied + rec.duplicates + rec.dead_letters

        def settled() -> dict[str, float] | None:
            m = api_metric_totals(s)
            seen = (
                m.get("cashpos_events_applied_total", 0)
                + m.get("cashpos_duplicates_dropped_total", 0)
                + m.get("cashpos_events_deadlettered_total", 0)
            )
            return m if seen >= want_seen else None

        metrics = wait_until(settled, 30, 0.5, "the worker metrics to settle")
        return rec, redis_view(s), wall, metrics


def run(
    infra: Infra,
    root: Path,
    *,
    events: int,
    seed: int,
    partitions: int = 12,
    share: float = 0.05,
    replay: int = 10_000,
    window: int = 5_000,
    timeout: float = 1800,
) -> dict[str, Any]:
    problems: list[str] = []
    clean = workload(seed, events)
    dirty, resent, replay_start, replayed = inject(clean, seed, share, replay, window)
    want = expected_view(clean)
    # What the injection should count: a re-send of an event that was applied is a duplicate
    # (one whose original was refused is judged afresh). The simulator emits no refused events,
    # so this is every re-send; computed rather than assumed.
    ref = Reference()
    for raw in dirty:
        ref.feed(raw, side_of(orjson.loads(raw)["kind"]))
    expected_dups = ref.outcomes.count("duplicate")
    if expected_view(dirty) != want:
        problems.append("the reference fold itself differs between clean and dirty input")
    log(
        f"clean {len(clean)} events; with {resent} re-sends and {replayed} replayed from event "
        f"#{replay_start}: {len(dirty)} records, {expected_dups} duplicates expected"
    )

    log("clean run")
    rec_c, view_c, wall_c, _ = _run_stream(infra, root / "clean", clean, want, partitions, timeout)
    log("run with duplicates")
    rec_d, view_d, wall_d, m = _run_stream(infra, root / "dirty", dirty, want, partitions, timeout)
    problems += [f"clean: {p}" for p in rec_c.problems] + rec_d.problems
    dup_metric = int(m.get("cashpos_duplicates_dropped_total", -1))
    sum_c, sum_d = checksum(view_c), checksum(view_d)
    if sum_c != sum_d:
        problems.append("balances differ from the clean run")
    if dup_metric != resent + replayed:
        problems.append(f"duplicate counter {dup_metric} != injected {resent + replayed}")
    if rec_d.duplicates != resent + replayed or expected_dups != resent + replayed:
        problems.append(
            f"reconcile counts {rec_d.duplicates} duplicates, reference "
            f"{expected_dups}, injected {resent + replayed}"
        )
    return {
        "events": len(clean),
        "seed": seed,
        "partitions": partitions,
        "resent_same_bytes": resent,
        "replayed_from_old_offset": replayed,
        "replay_start_event": replay_start,
        "records_in": rec_d.records_in,
        "injected_duplicates": resent + replayed,
        "duplicates_metric": dup_metric,
        "duplicates_reconcile": rec_d.duplicates,
        "applied": rec_d.applied,
        "dead_letters": rec_d.dead_letters,
        "checksum_clean": sum_c,
        "checksum_with_duplicates": sum_d,
        "identical_to_clean": sum_c == sum_d,
        "clean_wall_s": round(wall_c, 1),
        "with_duplicates_wall_s": round(wall_d, 1),
        "diff_krw": rec_d.diff_krw,
        "clean_diff_krw": rec_c.diff_krw,
        "lagging": rec_d.lagging,
        "unseeded": rec_d.unseeded,
        "problems": problems,
    }


def main() -> int:
    ap = base_args(__doc__.split("\n\n")[0])
    ap.add_argument("--share", type=float, default=0.05, help="share of events re-sent")
    ap.add_argument("--replay", type=int, default=10_000, help="events re-published")
    args = ap.parse_args()
    return script_main("duplicates", args, run, share=args.share, replay=args.replay)


if __name__ == "__main__":
    sys.exit(main())
