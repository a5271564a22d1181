"""Issue 3, scenario 2 (CI size): the processor's state directory is deleted while it is
stopped; the restarted worker rebuilds it from the topics to the same checksum.

Full size: ``python -m faults.rebuild --events 1000000``. Also guards two bugs these scenarios
found (docs/reliability.md): B1, a worker did not start when its state directory did not exist
(fixed in 4be382a); B2, a rebuilding worker seeded an empty Redis with its partial state, so the
API answered 200 with zeros / old figures instead of 503 (fixed in 29ed32d).
"""

from __future__ import annotations

import json
import time

import pytest

from faults import rebuild
from faults.common import heartbeats, prepare
from tests.conftest import new_stack

pytestmark = pytest.mark.integration


def test_deleted_state_is_rebuilt_to_the_same_checksum(infra, tmp_path):
    # CI size: 50k events, still folded in several batches (at most 20k records each) both times
    f = rebuild.run(infra, tmp_path, events=50_000, seed=2, partitions=4, timeout=240)
    print(json.dumps(f, default=str, indent=1))
    assert f["checksum_equal"] and f["redis_checksum_equal"], f
    assert f["diff_krw"] == 0 and f["lagging"] == 0 and f["unseeded"] == 0
    assert f["records_in"] == f["events"] == f["applied"] + f["duplicates"] + f["dead_letters"]
    assert not f["problems"], f["problems"]


def test_worker_starts_without_its_state_directory(infra, tmp_path):
    s = new_stack(infra, tmp_path, 2)
    prepare(s)
    ms = int(time.time() * 1000)
    p = s.start_worker("w1")  # CASHPOS_STATE_DIR does not exist yet
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert p.poll() is None, s.log("worker-w1")[-2000:]
            b = heartbeats(s).get("w1")
            if b and b["heartbeat_ms"] > ms and b["partitions"]:
                return
            time.sleep(0.2)
        pytest.fail("the worker did not come up")
    finally:
        s.stop_all()


def test_rebuild_with_empty_redis_never_serves_partial_figures(infra, tmp_path):
    f = rebuild.run(infra, tmp_path, events=20_000, seed=22, partitions=4, empty_redis=True, timeout=240)
    print(json.dumps(f, default=str, indent=1))
    assert f["diff_krw"] == 0 and f["checksum_equal"]
    assert f["api_status"].get(503, 0) > 0  # the API was asked during the rebuild
    assert f["api_200_not_final"] == 0, [p for p in f["problems"] if p.startswith("B2:")]
    assert not f["problems"], f["problems"]
