"""Consumer-group housekeeping: a restarted worker removes its own dead previous incarnation,
when that is safe, and a stuck group can be repaired.

After a ``kill -9`` the dead member stays in the group until its session expires, and a
restarted worker's join waits for it (on Tansu: join, a sync that fails when the session
expires, and a second join: ~11 s with a 6 s session instead of ~3 s). The restarted worker
knows that member is dead: it holds the lock of the state directory the member used (RocksDB
allows one writer), so it asks the coordinator to remove it (LeaveGroup on its behalf, as the
dead process would have on a clean stop) before joining.

**Only when the group is settled.** Tansu (0.6) removes a member that leaves while the group is
forming, but keeps it as the group's leader if it was one: the group then has a leader that is
no member, every other member's sync is refused ("rebalance in progress") and their joins go on
for ever — a worker killed 2.5–3.2 s after its start (elected leader, not yet synced) and
restarted never got partitions again. So the previous incarnation is removed only while the
group is in a state where no leader is pending (:data:`SAFE_TO_REMOVE`); otherwise it is left to
its session's expiry (the slow, always-correct path: ~11 s). :func:`repair_orphaned_leader`
fixes a group already in that state (the worker's assignment watchdog calls it).

A member is recognised by its client id, the worker id (``CASHPOS_WORKER_ID``, unique per
worker): brokers that report it in DescribeGroups are matched on it; Tansu reports it empty, and
then the member id is read, which Kafka and Tansu both form as ``{client_id}-{uuid4}``. A
broker that does neither only loses the shortcut: the join then waits for the session to expire.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import DescribeGroupsRequest
from aiokafka.protocol.group import (
    JoinGroupRequest,
    LeaveGroupRequest,
    ProtocolMetadata,
    SyncGroupRequest,
)

from cashpos.settings import Settings

log = logging.getLogger(__name__)

GROUP_COORDINATOR = 0  # FindCoordinator key type
MEMBER_ID_REQUIRED = 79  # JoinGroup: retry with the member id the coordinator handed out

# Group states (DescribeGroups) in which no elected leader is waiting to sync, so removing a
# member cannot leave the group with a leader that is not a member. Kafka: Empty,
# PreparingRebalance (joins being collected, no leader yet), Stable. Tansu 0.6 reports its
# "formed" group as Stable, a forming one without a leader as Assigning, and a forming one
# whose leader is elected as Unknown (not safe); CompletingRebalance (Kafka: leader elected,
# assignment pending) is treated as unsafe too.
SAFE_TO_REMOVE = frozenset({"Empty", "Stable", "PreparingRebalance", "Assigning"})


def member_client_id(member_id: str, client_id: str = "") -> str:
    """The client id of a group member: as reported, else from a ``{client_id}-{uuid}`` id."""
    if client_id:
        return client_id
    head, sep, tail = member_id[:-37], member_id[-37:-36], member_id[-36:]
    if sep != "-" or not head:
        return ""
    try:
        uuid.UUID(tail)
    except ValueError:
        return ""
    return head


@dataclass
class Removal:
    """What :func:`remove_previous_members` found and did."""

    state: str = ""
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # found, left to expire (group not settled)


async def _coordinator(settings: Settings, group: str, client_id: str) -> tuple[AIOKafkaClient, int]:
    client = AIOKafkaClient(**settings.kafka_client_args(), client_id=client_id)
    try:
        await client.bootstrap()
        node = await client.coordinator_lookup(GROUP_COORDINATOR, group)
    except BaseException:
        await client.close()
        raise
    return client, node


async def _describe(client: AIOKafkaClient, node: int, group: str) -> tuple[str, list[dict[str, object]]]:
    described = (await client.send(node, DescribeGroupsRequest([group]))).to_object()
    g = described["groups"][0]
    return str(g.get("state") or g.get("group_state") or ""), list(g["members"])


async def remove_previous_members(
    settings: Settings, group: str, client_id: str, keep: frozenset[str] = frozenset()
) -> Removal:
    """Remove every member of ``group`` whose client id is ``client_id`` (but those in
    ``keep``), if the group is in a state where that is safe (:data:`SAFE_TO_REMOVE`).

    Call only while holding what proves those members dead (the worker's state lock) and before
    this process joins. Errors are the caller's to log: the join works without this, only slower.
    """
    client, node = await _coordinator(settings, group, client_id)
    try:
        state, members = await _describe(client, node, group)
        out = Removal(state=state)
        ours = [
            str(m["member_id"])
            for m in members
            if member_client_id(str(m["member_id"]), str(m.get("client_id") or "")) == client_id
            and m["member_id"] not in keep
        ]
        if not ours:
            return out
        if state not in SAFE_TO_REMOVE:
            out.kept = ours
            return out
        for member_id in ours:
            resp = await client.send(node, LeaveGroupRequest(group, member_id))
            if resp.error_code == 0:
                out.removed.append(member_id)
            else:
                log.info("could not remove %s from %s: error %d", member_id, group, resp.error_code)
        return out
    finally:
        await client.close()


async def repair_orphaned_leader(
    settings: Settings, group: str, client_id: str, topics: list[str], protocol: str, session_timeout_ms: int
) -> str | None:
    """Give ``group`` a leader again if its leader is not a member (see the module docstring).

    A probe member joins (a JoinGroup answers with the leader's id) and leaves; when that
    leader is no member of the group, it joins under the leader's member id, which makes the
    broker take it for the leader again, syncs an empty assignment (the group is then formed,
    and a member leaving a formed group takes its leadership with it) and leaves. The members
    then rejoin and elect a real leader (measured on Tansu 0.6: ~11 s, then the next join
    elects its member). Returns the orphaned leader's id, or None when the group has a live
    leader (then the probe only joined and left, as a follower).
    A Kafka broker never has an orphaned leader and answers the probe like any member.
    """
    client, node = await _coordinator(settings, group, client_id)
    meta = ProtocolMetadata(0, topics, b"").encode()

    def join(member_id: str) -> JoinGroupRequest:
        return JoinGroupRequest(
            group, session_timeout_ms, session_timeout_ms, member_id, None, "consumer", [(protocol, meta)]
        )

    async def leave(member_id: str) -> None:
        await client.send(node, LeaveGroupRequest(group, member_id))

    try:
        resp = await client.send(node, join(""))
        probe = resp.member_id
        if resp.error_code == MEMBER_ID_REQUIRED:
            resp = await client.send(node, join(probe))
        if resp.error_code != 0:
            log.info("group repair: the probe's join was refused (error %d)", resp.error_code)
            if probe:
                await leave(probe)
            return None
        leader = resp.leader_id
        _state, members = await _describe(client, node, group)
        alive = {str(m["member_id"]) for m in members}
        if leader == probe:
            # elected itself: form the group (empty assignment) before leaving, so that it does
            # not leave an orphaned leader behind
            await client.send(
                node, SyncGroupRequest(group, resp.generation_id, probe, None, [(m, b"") for m in alive])
            )
            await leave(probe)
            return None
        await leave(probe)  # a follower leaving never orphans anything
        if not leader or leader in alive:
            return None
        # Tansu holds this join ~3 s and the sync ~5 s: a probe still in the group would miss
        # its session meanwhile and restart the rebalance, hence it left first. The sync may
        # answer "rebalance in progress" and still form the group; the leave then clears it.
        again = await client.send(node, join(leader))
        if again.error_code == 0 and again.leader_id == leader:
            await client.send(
                node,
                SyncGroupRequest(
                    group, again.generation_id, leader, None, [(str(m[0]), b"") for m in again.members]
                ),
            )
        await leave(leader)
        return leader
    finally:
        await client.close()
