"""Issue 19, item 1 (CI size): a takeover catches up from a warm standby, not from offset 0.

Three workers, 6 partitions (session 2 s as in the other fault tests). A history is published
and folded; each worker also keeps warm, in its own store, the partitions it would get if any
one other worker died (``agents.standby``). Then events stream in and w2 is killed (kill -9):
its partitions move to w1 and w3, whose logs must show them resumed from the standby's stored
offsets (past the history, not 0) and named as warm; the positions end exact, and each owner's
state is exact for the partitions it owns (``reconcile_quiet``).
"""

from __future__ import annotations

import ast
import datetime as dt
import re
import time

import pytest

from faults.common import (
    Feeder,
    expected_view,
    live_owners,
    prepared_stack,
    publish,
    reconcile_quiet,
    redis_view,
    wait_until,
    worker_metric_totals,
    workload,
)

pytestmark = pytest.mark.integration

ENV = {"CASHPOS_SESSION_TIMEOUT_MS": "2000", "CASHPOS_HEARTBEAT_MS": "500"}
_ASSIGNED = re.compile(
    r'"ts":"([^"]+)".*assigned \[.*?\] resuming at (\{.*?\}) '
    r"\(group committed .*?; warm standby of partitions (\[.*?\])\)"
)


def _assignments(log: str, since: float) -> list[tuple[dict[str, int], list[int]]]:
    """(resumed offsets, warm partitions) of each assignment logged after ``since`` (epoch s)."""
    out = []
    for m in _ASSIGNED.finditer(log):
        if dt.datetime.fromisoformat(m.group(1)).timestamp() >= since:
            out.append((ast.literal_eval(m.group(2)), ast.literal_eval(m.group(3))))
    return out


def _covering(owners: dict[str, set[int]], workers: set[str], n: int) -> bool:
    parts = sorted(p for ps in owners.values() for p in ps)
    return set(owners) == workers and parts == list(range(n))


def test_takeover_resumes_from_the_standby(infra, tmp_path):
    n = 6
    history, stream = 6_000, 2_000
    raws = workload(19, history + stream)
    with prepared_stack(infra, tmp_path, n) as s:
        publish(s.settings, raws[:history])
        all3 = {"w1", "w2", "w3"}
        for w in sorted(all3):
            s.start_worker(w, **ENV)
        wait_until(
            lambda: _covering(live_owners(s), all3, n), 120, 0.2, "three workers to share the partitions"
        )
        owners = live_owners(s)
        want_history = expected_view(raws[:history])
        wait_until(lambda: redis_view(s) == want_history, 120, 0.2, "the history to be folded")

        def warm() -> bool:
            m = worker_metric_totals(s)
            return all(
                m.get(w, {}).get("cashpos_standby_partitions", 0) > 0
                and m[w].get("cashpos_standby_lag_records", 1) == 0
                for w in all3
            )

        wait_until(warm, 120, 0.2, "the standbys to be warm")
        feeder = Feeder(s.settings, raws[history:], rate=500)
        feeder.start()
        time.sleep(1.0)
        killed = time.time()
        s.stop("worker-w2", kill=True)
        wait_until(lambda: _covering(live_owners(s), {"w1", "w3"}, n), 120, 0.1, "w1 and w3 to take over")
        feeder.wait(120)
        want = expected_view(raws)
        try:
            wait_until(lambda: redis_view(s) == want, 120, 0.2, "the positions to be exact")
        except TimeoutError:
            got = redis_view(s)
            diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
            print("differences (got, want):", dict(list(diff.items())[:20]), len(diff))
            print("owners:", live_owners(s))
            raise
        owned = live_owners(s)
        rec = reconcile_quiet(s, {w: s.root / f"state-{w}" for w in owned}, published=len(raws), owned=owned)
        assert not rec.problems, rec.problems
        assert rec.diff_krw == 0 and rec.state_diff_krw == 0

        moved = owners["w2"]
        for w in ("w1", "w3"):
            gained = owned[w] - owners[w]
            assert gained <= moved
            for p in gained:  # the assignment that first gave it p: the takeover
                resumed, warm_parts = next(
                    (r, wp) for r, wp in _assignments(s.log(f"worker-{w}"), killed) if p in _parts(r)
                )
                assert p in warm_parts, (w, p, warm_parts)
                for tp, offset in resumed.items():
                    if int(tp.rsplit(":", 1)[1]) == p:
                        assert offset > 0, (w, tp, resumed)  # the standby's offsets, not 0


def _parts(resumed: dict[str, int]) -> set[int]:
    return {int(tp.rsplit(":", 1)[1]) for tp in resumed}
