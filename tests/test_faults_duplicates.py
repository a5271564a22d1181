"""Issue 3, scenario 4 (CI size): 5 % of 50k events re-sent (same id, same bytes) and 5k events
re-published from an old offset (from event 5,000, past the opening balances): the balances are
identical to the clean run's and the duplicate counter equals what was injected.
Full size: ``python -m faults.duplicates``."""

from __future__ import annotations

import json

import pytest

from faults import duplicates

pytestmark = pytest.mark.integration


def test_resends_and_replay_from_old_offset(infra, tmp_path):
    f = duplicates.run(infra, tmp_path, events=50_000, seed=4, partitions=4, replay=5_000, timeout=240)
    print(json.dumps(f, default=str, indent=1))
    assert f["identical_to_clean"], f
    assert f["replay_start_event"] == 5_000 and f["injected_duplicates"] == 2_500 + 5_000
    assert f["duplicates_metric"] == f["duplicates_reconcile"] == f["injected_duplicates"]
    assert f["diff_krw"] == 0 and f["lagging"] == 0 and f["unseeded"] == 0
    assert f["records_in"] == f["applied"] + f["duplicates_reconcile"] + f["dead_letters"]
    assert not f["problems"], f["problems"]
