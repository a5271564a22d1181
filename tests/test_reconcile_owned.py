"""R1: the reconciliation compares each state for the partitions its worker owns, against the
whole topics, and a state that stopped folding is reported behind, never exact.

The unit tests build states by hand (a fold of a prefix of each partition = a stuck worker);
the integration test stops a real worker, publishes more, and reconciles its state directory.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from cashpos.settings import Settings
from faults.common import expected_view, redis_view, wait_until, wait_up, workload
from reconcile.reference import Reference
from reconcile.run import check_state, owned_from_heartbeats, reconcile
from streams.contract import side_of
from streams.publisher import Publisher
from streams.reader import Record
from streams.topics import ensure_topics, partition_for
from tests.conftest import new_stack

N_PARTITIONS = 4
SETTINGS = Settings(partitions=N_PARTITIONS)


def _records(raws: list[bytes]) -> list[Record]:
    """The records a producer keyed by org_code would have written, offsets per partition."""
    next_offset: dict[tuple[str, int], int] = {}
    out = []
    for raw in raws:
        d = orjson.loads(raw)
        topic = f"ns.events.{side_of(d['kind'])}"
        tp = (topic, partition_for(d["org_code"], N_PARTITIONS))
        off = next_offset.get(tp, 0)
        next_offset[tp] = off + 1
        out.append(Record(tp[0], tp[1], off, 0, d["org_code"].encode(), raw))
    return out


def _state(records: list[Record], offsets: dict[tuple[str, int], int]):
    """A worker's state that folded each partition up to ``offsets`` (its stored offsets)."""
    ref = Reference()
    for r in sorted(records, key=lambda r: (r.partition, r.topic, r.offset)):
        if r.offset < offsets.get((r.topic, r.partition), 0):
            ref.feed(r.value, "revenue" if r.topic.endswith(".revenue") else "expenditure", r.key)
    versions = ref.versions()
    return {pk: (cash, committed, versions.get(pk, 0)) for pk, (cash, committed) in ref.positions().items()}


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return _records(workload(7, 3_000))


def _ends(records: list[Record]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
    return ends


def test_a_current_state_is_exact(records):
    ends = _ends(records)
    check, diffs = check_state(records, _state(records, ends), ends, {0, 1, 2, 3}, SETTINGS)
    assert (check.diff_krw, check.behind, diffs) == (0, 0, [])
    assert check.mode == "owned" and check.positions_checked > 100


def test_a_stuck_state_is_behind_not_exact(records):
    ends = _ends(records)
    stuck = dict(ends)
    stuck[("ns.events.revenue", 2)] -= 50  # stopped folding partition 2 fifty records ago
    state = _state(records, stuck)
    check, diffs = check_state(records, state, stuck, {0, 1, 2, 3}, SETTINGS)
    assert check.behind == 50
    # Consistent with what it folded (no difference), but not at the end of its topics: the
    # report is not ok (state_behind), where the stored-offset comparison alone passes it.
    assert check.diff_krw == 0 and diffs == []
    stored, _ = check_state(records, state, stuck, None, SETTINGS)
    assert stored.mode == "stored" and stored.behind is None and stored.diff_krw == 0
    # The other partitions alone are current.
    assert check_state(records, state, stuck, {0, 1, 3}, SETTINGS)[0].behind == 0


def test_only_owned_partitions_are_compared(records):
    """A worker keeps stale data for a partition it gave away: not compared, not behind."""
    ends = _ends(records)
    stale = {tp: (end if tp[1] != 1 else end // 2) for tp, end in ends.items()}
    state = _state(records, stale)
    assert check_state(records, state, stale, {0, 2, 3}, SETTINGS)[0].behind == 0
    behind = check_state(records, state, stale, {1}, SETTINGS)[0].behind
    assert behind is not None and behind > 0
    # A partition owned without any stored offset: all of it is behind.
    none = {tp: end for tp, end in ends.items() if tp[1] != 3}
    check = check_state(records, _state(records, none), none, {3}, SETTINGS)[0]
    assert check.behind == sum(end for tp, end in ends.items() if tp[1] == 3) > 0


def test_a_wrong_state_value_is_a_difference(records):
    ends = _ends(records)
    state = _state(records, ends)
    pk = next(iter(state))
    cash, committed, version = state[pk]
    state[pk] = (cash + 7, committed, version)
    check, diffs = check_state(records, state, ends, set(range(N_PARTITIONS)), SETTINGS)
    assert check.diff_krw == 7 and [(d.org_code, d.against) for d in diffs] == [(pk[0], "state")]
    assert (
        check_state(
            records,
            state,
            ends,
            {p for p in range(N_PARTITIONS) if p != partition_for(pk[0], N_PARTITIONS)},
            SETTINGS,
        )[0].diff_krw
        == 0
    )


@pytest.mark.integration
def test_a_stopped_worker_state_is_reported_behind(infra, tmp_path):
    s = new_stack(infra, tmp_path)
    raws = workload(8, 4_000)
    first, more = raws[:3_000], raws[3_000:]
    state_dir = s.root / "state-w1"

    async def publish(batch: list[bytes]) -> None:
        async with Publisher(s.settings) as pub:
            await pub.send_many(batch)

    try:
        asyncio.run(ensure_topics(s.settings))
        asyncio.run(publish(first))
        s.start_worker("w1")
        want = expected_view(first)
        wait_until(lambda: redis_view(s) == want, 90, 0.2, "the first events to be exact")
        s.stop("worker-w1")  # clean stop: the state is flushed, the worker folds no more
        asyncio.run(publish(more))

        rep = asyncio.run(reconcile(s.settings, publish=False, owned={state_dir: set(range(s.partitions))}))
        assert rep.state_behind == len(more) and not rep.ok
        assert [st.behind for st in rep.states] == [len(more)]
        assert rep.lagging > 0  # Redis is behind too, and says so
        # What R1 was about: compared at its own stored offsets, the stuck state looks exact.
        stored = asyncio.run(reconcile(s.settings, [state_dir], publish=False))
        assert stored.diff_krw == 0 and stored.state_behind == 0 and stored.states[0].behind is None
        with pytest.raises(ValueError, match="no live worker heartbeat"):
            asyncio.run(owned_from_heartbeats(s.settings, [state_dir], max_age_s=0.5))

        since = int(time.time() * 1000)
        s.start_worker("w1")
        wait_up(s, "w1", since)
        want = expected_view(raws)
        wait_until(lambda: redis_view(s) == want, 90, 0.2, "all events to be exact")
        owned = asyncio.run(owned_from_heartbeats(s.settings, [state_dir]))
        assert owned == {state_dir: set(range(s.partitions))}

        def caught_up():
            r = asyncio.run(reconcile(s.settings, publish=False, owned=owned))
            return r if r.state_behind == 0 else None

        rep = wait_until(caught_up, 30, 1.0, "the state to be flushed to the end")
        assert rep.ok and rep.diff_krw == 0 and rep.lagging == 0 and rep.unseeded == 0
        assert rep.records_in == len(raws) and rep.states[0].positions_checked > 0
    finally:
        s.stop_all()
