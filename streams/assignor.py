"""Where a partition goes when its owner dies, and so which partitions a worker keeps warm.

The ledger group uses aiokafka's ``RangePartitionAssignor`` (it keeps partition p of both input
topics on one member: co-partitioning). Range is deterministic: members in order, each a
contiguous block of partitions, the first ``P mod M`` one larger. So every worker can compute
where each partition would go if any one other member left, and keep exactly those partitions
warm in its own store (``agents.standby``): a standby replica per partition, placed where the
assignor will put it (Kafka Streams' ``num.standby.replicas = 1``, without a new assignor).

The members' order is read off the current assignment (their heartbeats): Range gives the
first member in order the lowest block, so ordering members by their lowest partition restores
it; members without partitions come last (Range gives them nothing only at the end).

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def range_assignment(members: Sequence[str], partitions: int) -> dict[str, set[int]]:
    """What aiokafka's ``RangePartitionAssignor`` gives ``members`` (already in its order)
    of one topic with ``partitions`` partitions."""
    out: dict[str, set[int]] = {m: set() for m in members}
    if not members:
        return out
    per, extra = divmod(partitions, len(members))
    start = 0
    for i, m in enumerate(members):
        n = per + (1 if i < extra else 0)
        out[m] = set(range(start, start + n))
        start += n
    return out


def member_order(owners: Mapping[str, set[int]]) -> list[str]:
    """The members in the assignor's order, read off its current assignment."""
    with_parts = sorted((min(ps), m) for m, ps in owners.items() if ps)
    without = sorted(m for m, ps in owners.items() if not ps)
    return [m for _, m in with_parts] + without


def standby_partitions(me: str, owners: Mapping[str, set[int]], partitions: int) -> set[int]:
    """The partitions ``me`` would be given if any one other member left, and does not own
    now: where each partition goes when its owner dies (one standby copy of each moving
    partition; ``owners`` must include ``me``)."""
    order = member_order(owners)
    if me not in order:
        return set()
    mine = owners.get(me, set())
    out: set[int] = set()
    for gone in order:
        if gone == me:
            continue
        rest = [m for m in order if m != gone]
        out |= range_assignment(rest, partitions)[me]
    return out - mine
