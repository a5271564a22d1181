"""Issue 3, scenario 4 (CI size): 5 % of 100k events re-sent (same id, same bytes) and 10k
events re-published from an old offset: the balances are identical to the clean run's and the
duplicate counter equals what was injected. Full size: ``python -m faults.duplicates``."""

from __future__ import annotations

import json

import pytest

from faults import duplicates

pytestmark = pytest.mark.integration


def test_resends_and_replay_from_old_offset(infra, tmp_path):
    f = duplicates.run(infra, tmp_path, events=100_000, seed=4, partitions=4, timeout=240)
    print(json.dumps(f, default=str, indent=1))
    assert f["identical_to_clean"], f
    assert f["injected_duplicates"] == 5_000 + 10_000
    assert f["duplicates_metric"] == f["duplicates_reconcile"] == f["injected_duplicates"]
    assert f["diff_krw"] == 0 and f["lagging"] == 0 and f["unseeded"] == 0
    assert f["records_in"] == f["applied"] + f["duplicates_reconcile"] + f["dead_letters"]
    assert not f["problems"], f["problems"]
