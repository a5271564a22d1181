"""Issue 3, scenario 6 (CI size): three workers, 6 partitions; one is killed (kill -9) and later
added back while 40k events stream in (2,500/s for 16 s: killed at 4 s, added back at 9.6 s):
partitions move (heartbeats), each owner's state is exact for the partitions it owns, the final
positions are exact. CI uses a 2 s group session (product: 6 s) to keep the rebalances short.
Full size: ``python -m faults.scale_out``."""

from __future__ import annotations

import json

import pytest

from faults import scale_out

pytestmark = pytest.mark.integration


def test_kill_one_of_three_workers_then_add_one_back(infra, tmp_path):
    f = scale_out.run(
        infra,
        tmp_path,
        events=40_000,
        seed=6,
        rate=2_500,
        partitions=6,
        env={"CASHPOS_SESSION_TIMEOUT_MS": "2000", "CASHPOS_HEARTBEAT_MS": "500"},
        timeout=240,
    )
    print(json.dumps(f, default=str, indent=1))
    assert len(f["owners_start"]) == 3 and set(f["owners_after_kill"]) == {"w1", "w3"}
    assert set(f["owners_after_add"]) == {"w1", "w2", "w3"}
    assert f["diff_krw"] == 0 and f["state_diff_krw"] == 0
    assert f["state_positions_checked"] > 0
    assert f["lagging"] == 0 and f["unseeded"] == 0
    assert f["records_in"] == f["events"] == f["applied"] + f["duplicates"] + f["dead_letters"]
    assert not f["problems"], f["problems"]
