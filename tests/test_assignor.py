"""streams.assignor: where partitions go when a member leaves, and which a worker keeps warm.

Properties (hypothesis): ``range_assignment`` is aiokafka's RangePartitionAssignor (differential,
both input topics: co-partitioned); the members' order is read back off an assignment; every
partition that moves when any one member leaves lands on a member that stood by for it (a warm
takeover for every single failure); nothing stood by for is owned or never moves there; the
standby copies are one per moving partition and member, no more than the partitions moved.
"""

from __future__ import annotations

from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from hypothesis import given
from hypothesis import strategies as st

from streams.assignor import member_order, range_assignment, standby_partitions

TOPICS = ("rev", "exp")

members_st = st.lists(
    st.text(alphabet="abcdefgw0123456789-", min_size=1, max_size=8), min_size=1, max_size=14, unique=True
)
partitions_st = st.integers(min_value=1, max_value=24)


class _Cluster:
    def __init__(self, n: int) -> None:
        self.n = n

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return set(range(self.n))


@given(members_st, partitions_st)
def test_range_assignment_is_aiokafkas_for_both_topics(members, n):
    meta = {m: ConsumerProtocolMemberMetadata(0, list(TOPICS), b"") for m in members}
    got = RangePartitionAssignor.assign(_Cluster(n), meta)  # a stand-in: the one method assign calls
    ours = range_assignment(sorted(members), n)
    for m in members:
        per_topic = dict(got[m].assignment)
        for t in TOPICS:
            assert set(per_topic.get(t, [])) == ours[m]  # partition p of both topics: one member


@given(members_st, partitions_st)
def test_member_order_is_read_back_off_an_assignment(members, n):
    order = sorted(members)
    owners = range_assignment(order, n)
    got = member_order(owners)
    with_parts = [m for m in order if owners[m]]
    assert got[: len(with_parts)] == with_parts
    # members without partitions give the same assignment in any order (they are last, all empty)
    assert range_assignment(got, n) == owners


@given(members_st, partitions_st)
def test_every_move_on_a_single_failure_lands_on_a_standby(members, n):
    order = sorted(members)
    owners = range_assignment(order, n)
    standby = {m: standby_partitions(m, owners, n) for m in order}
    moved_to: dict[str, set[int]] = {m: set() for m in order}
    for gone in order:
        after = range_assignment([m for m in order if m != gone], n)
        for m, parts in after.items():
            new = parts - owners[m]
            assert new <= standby[m], (gone, m, new, standby[m])
            moved_to[m] |= new
    for m in order:
        assert not standby[m] & owners[m]  # never a standby of what it owns
        assert standby[m] == moved_to[m]  # and only of what can come to it


@given(members_st, partitions_st)
def test_standby_copies_are_few(members, n):
    order = sorted(members)
    owners = range_assignment(order, n)
    copies = sum(len(standby_partitions(m, owners, n)) for m in order)
    # each partition moves to at most one member per member that can leave; with members
    # holding at least one partition each, the copies are at most twice the partitions
    assert copies <= 2 * n
    if len(order) == 1:
        assert copies == 0  # a single worker has nowhere to fail over to


def test_three_workers_twelve_partitions():
    owners = {"w1": set(range(4)), "w2": set(range(4, 8)), "w3": set(range(8, 12))}
    assert standby_partitions("w1", owners, 12) == {4, 5}
    assert standby_partitions("w2", owners, 12) == {0, 1, 2, 3, 8, 9, 10, 11}
    assert standby_partitions("w3", owners, 12) == {6, 7}


def test_a_member_missing_from_the_heartbeats_stands_by_for_nothing():
    assert standby_partitions("w9", {"w1": {0, 1}}, 2) == set()
