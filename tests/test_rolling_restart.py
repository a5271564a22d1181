"""A rolling restart loses and doubles nothing (issue #19, item 5): three workers under a steady
stream of events are restarted one after the other with SIGTERM (graceful: each commits, leaves
the group and exits cleanly), each waited back before the next; then every position in Redis
(cash, committed and its version, the number of events that changed it: a doubled event shows)
equals an independent fold of what was published (``reconcile.reference``), and the closing
reconciliation of ``faults.common`` holds (each owner's state exact, every record applied, a
duplicate or a dead letter exactly once).

Printed: events, each restart's durations (SIGTERM to exit, to the worker owning partitions
again), and per partition the time from the SIGTERM until a live worker's heartbeat lists it
again (its assignment; what it re-folds before it is current is item 1's subject)."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from cashpos.embedded import Infra
from faults.common import (
    Feeder,
    expected_view,
    heartbeats,
    live_owners,
    prepared_stack,
    reconcile_quiet,
    redis_view,
    versions_sum,
    wait_until,
    workload,
)

pytestmark = pytest.mark.integration

WORKERS = ("w1", "w2", "w3")
PARTITIONS = 6
EVENTS = 36_000
RATE = 1_300  # events/s: ~28 s, room for three restarts of ~8 s (the rest goes out at once)
ENV = {"CASHPOS_SESSION_TIMEOUT_MS": "2000", "CASHPOS_HEARTBEAT_MS": "500"}  # as the other CI faults


def _covering(owners: dict[str, set[int]]) -> bool:
    parts = sorted(p for ps in owners.values() for p in ps)
    return set(owners) == set(WORKERS) and all(owners.values()) and parts == list(range(PARTITIONS))


def _restart(s: Any, w: str) -> dict[str, Any]:
    """SIGTERM ``w``, start it again on its state, wait until it owns partitions; the figures."""
    before = live_owners(s)[w]
    p = s.procs[f"worker-{w}"]
    t0 = time.monotonic()
    t0_ms = int(time.time() * 1000)
    p.send_signal(signal.SIGTERM)
    served: dict[int, float] = {}  # partition of w -> seconds until another live worker lists it
    while p.poll() is None:
        assert time.monotonic() - t0 < 30, f"{w} still running 30 s after SIGTERM"
        time.sleep(0.05)
    stopped = time.monotonic() - t0
    log = s.log(f"worker-{w}")
    assert p.returncode in (0, -signal.SIGTERM), (w, p.returncode, log[-3000:])
    assert "Traceback" not in log, log[-3000:]
    restarted_ms = int(time.time() * 1000)
    again = s.start_worker(w, **ENV)  # on its own state directory: resumes from its stored offsets
    up = None
    while up is None or len(served) < len(before):
        now = time.monotonic() - t0
        assert again.poll() is None, s.log(f"worker-{w}")[-3000:]
        assert now < 90, f"{w} not back 90 s after SIGTERM ({served}, up {up})"
        for wid, beat in heartbeats(s).items():
            # w's own last beats while it stopped still list its partitions: not served
            if beat.get("heartbeat_ms", 0) <= (restarted_ms if wid == w else t0_ms):
                continue
            for part in set(beat.get("partitions", [])) & before:
                served.setdefault(part, round(now, 2))
            if wid == w and beat.get("partitions") and up is None:
                up = now
        time.sleep(0.05)
    wait_until(lambda: _covering(live_owners(s)), 60, 0.1, f"three owners after {w}'s restart")
    return {
        "worker": w,
        "partitions_before": sorted(before),
        "exit_code": p.returncode,
        "sigterm_to_exit_s": round(stopped, 2),
        "sigterm_to_owning_again_s": round(up, 2),
        "sigterm_to_three_owners_s": round(time.monotonic() - t0, 2),
        "partition_served_again_s": dict(sorted(served.items())),
        "owners_after": {k: sorted(v) for k, v in sorted(live_owners(s).items())},
    }


def test_rolling_restart_of_three_workers_loses_and_doubles_nothing(infra: Infra, tmp_path: Path) -> None:
    t_start = time.monotonic()
    with prepared_stack(infra, tmp_path, PARTITIONS) as s:
        raws = workload(11, EVENTS)
        want = expected_view(raws)
        for w in WORKERS:
            s.start_worker(w, **ENV)
        wait_until(lambda: _covering(live_owners(s)), 120, 0.2, "three workers to share the partitions")
        feeder = Feeder(s.settings, raws, RATE)
        t0 = time.monotonic()
        feeder.start()
        # the stream is flowing and folded before the first restart
        wait_until(lambda: versions_sum(redis_view(s)) >= 1_000, 60, 0.2, "the first events folded")
        restarts = []
        for w in WORKERS:
            at = round(time.monotonic() - t0, 1)
            sent = feeder.sent
            assert not feeder.done, f"the stream ended before {w}'s restart ({sent} sent)"
            restarts.append({"at_s": at, "published_before": sent, **_restart(s, w)})
        streaming_after = not feeder.done
        # the stream has done its part (events arriving during every restart): the rest of it
        # goes out as fast as the broker takes it (Feeder paces each chunk by sent / rate)
        feeder.rate = math.inf
        feeder.wait(300)
        stream_s = (feeder.finished_at or time.monotonic()) - t0
        wait_until(lambda: redis_view(s) == want, 120, 0.2, "the positions in Redis to equal the reference")
        exact_s = time.monotonic() - t0
        got = redis_view(s)
        owned = live_owners(s)
        rec = reconcile_quiet(s, {w: s.root / f"state-{w}" for w in owned}, published=len(raws), owned=owned)
        figures = {
            "events": len(raws),
            "rate": RATE,
            "partitions": PARTITIONS,
            "stream_s": round(stream_s, 1),
            "still_streaming_after_last_restart": streaming_after,
            "restarts": restarts,
            "exact_after_s": round(exact_s, 1),
            "positions": len(got),
            "versions_sum": versions_sum(got),
            "reconcile": rec.outcome(),
            "test_s": round(time.monotonic() - t_start, 1),
        }
        print("rolling restart " + json.dumps(figures, indent=1))
        assert got == want
        assert versions_sum(got) == versions_sum(want) > 0
        assert rec.records_in == len(raws) == rec.applied + rec.duplicates + rec.dead_letters
        assert rec.diff_krw == 0 and rec.lagging == 0 and rec.unseeded == 0
        assert not rec.problems, rec.problems
        assert all(r["exit_code"] in (0, -signal.SIGTERM) for r in restarts)
