"""Issue 3, scenario 5 (CI size): a malformed message after every 5k of 50k events (the
rotation's first ten): no stall over 1 s, each one exactly once on the dead-letter topic, exact
balances.
Full size: ``python -m faults.malformed``."""

from __future__ import annotations

import json

import pytest

from faults import malformed


@pytest.mark.integration
def test_malformed_every_5k_events(infra, tmp_path):
    f = malformed.run(
        infra, tmp_path, events=50_000, seed=5, rate=5_000, every=5_000, partitions=4, timeout=240
    )
    print(json.dumps(f, default=str, indent=1))
    assert f["malformed"] == 10
    assert f["deadletters_listed"] == f["deadletter_topic_records"] == f["malformed"]
    assert "event_id_conflict" in f["reasons"]
    assert f["max_processor_stall_s"] <= 1.0, f
    assert f["batches_by_duration"]["over_1.0s"] == 0 and f["max_deadletter_latency_s"] < 1.0
    assert f["diff_krw"] == 0 and f["lagging"] == 0 and f["unseeded"] == 0
    assert f["records_in"] == f["events"] + f["malformed"]
    assert f["dead_letters"] == f["malformed"]
    assert not f["problems"], f["problems"]


def test_every_malformed_variant_is_refused_with_its_reason():
    from collections import Counter

    from cashpos.names import Topics
    from faults.common import workload
    from reconcile.reference import Reference
    from streams.publisher import route

    good = workload(5, 3_000)
    raws, bad = malformed.inject(good, 200)
    ref = Reference()
    for raw in raws:
        (topic,), key = route(Topics("t"), raw)
        ref.feed(raw, "revenue" if topic.endswith(".revenue") else "expenditure", key)
    reasons = Counter(ref.counts()["rejected"])
    assert sum(reasons.values()) == len(bad) == len(good) // 200 >= 17
    assert set(reasons) == {
        "not_json",
        "invalid_amount",
        "event_id_conflict",
        "unknown_field",
        "naive_timestamp",
        "empty",
        "not_utf8",
        "unknown_government",
        "unknown_account",
        "invalid_kind",
        "missing_field",
        "fiscal_year_mismatch",
        "not_object",
        "oversized",
        "invalid_timestamp",
        "duplicate_key",
    }
    ci = malformed.inject(good[:2_000], 200)[1]  # the CI run's ten, in order
    ci_ref = Reference()
    for raw in ci:
        (topic,), key = route(Topics("t"), raw)
        ci_ref.feed(raw, "revenue" if topic.endswith(".revenue") else "expenditure", key)
    assert {"oversized", "invalid_timestamp", "duplicate_key"} <= set(ci_ref.counts()["rejected"])
