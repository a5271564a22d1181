"""Consumer-group housekeeping: a restarted worker removes its own dead previous incarnation.

After a ``kill -9`` the dead member stays in the group until its session expires, and a
restarted worker's join waits for it (on Tansu: join, a sync that fails when the session
expires, and a second join: ~11 s with a 6 s session instead of ~3 s). The restarted worker
knows that member is dead: it holds the lock of the state directory the member used (RocksDB
allows one writer), so it asks the coordinator to remove it (LeaveGroup on its behalf, as the
dead process would have on a clean stop) before joining.

A member is recognised by its client id, the worker id (``CASHPOS_WORKER_ID``, unique per
worker): brokers that report it in DescribeGroups are matched on it; Tansu reports it empty, and
then the member id is read, which Kafka and Tansu both form as ``{client_id}-{uuid4}``. A
broker that does neither only loses the shortcut: the join then waits for the session to expire.
"""

from __future__ import annotations

import logging
import uuid

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import DescribeGroupsRequest
from aiokafka.protocol.group import LeaveGroupRequest

from cashpos.settings import Settings

log = logging.getLogger(__name__)

GROUP_COORDINATOR = 0  # FindCoordinator key type


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


async def remove_previous_members(settings: Settings, group: str, client_id: str) -> list[str]:
    """Remove every member of ``group`` whose client id is ``client_id``; returns their ids.

    Call only while holding what proves those members dead (the worker's state lock) and before
    this process joins. Errors are the caller's to log: the join works without this, only slower.
    """
    client = AIOKafkaClient(**settings.kafka_client_args(), client_id=client_id)  # type: ignore[arg-type]
    try:
        await client.bootstrap()
        node = await client.coordinator_lookup(GROUP_COORDINATOR, group)
        described = (await client.send(node, DescribeGroupsRequest([group]))).to_object()
        removed = []
        for g in described["groups"]:
            for m in g["members"]:
                if member_client_id(m["member_id"], m.get("client_id", "")) != client_id:
                    continue
                resp = await client.send(node, LeaveGroupRequest(group, m["member_id"]))
                if resp.error_code == 0:
                    removed.append(m["member_id"])
                else:
                    log.info("could not remove %s from %s: error %d", m["member_id"], group,
                             resp.error_code)
        return removed
    finally:
        await client.close()
