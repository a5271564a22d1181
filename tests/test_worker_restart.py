"""B3: a worker joins one consumer group (the ledger's), lists dead letters in Redis from the
ledger batch, and after ``kill -9`` a restart removes its dead previous incarnation from the
group instead of waiting for that member's session to expire (~4 s instead of ~12-16 s)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from cashpos.dlq import list_deadletters
from cashpos.names import RedisKeys, Topics
from faults.common import wait_until, wait_up
from streams.deadletter import DeadLetter
from streams.groups import member_client_id
from streams.publisher import Publisher
from streams.topics import ensure_topics
from tests.conftest import new_stack
from tests.events import event

pytestmark = pytest.mark.integration

BAD = [b'{"event_id": "x", "amount": 1.5}', event("bad-amount", "receipt", 0)]


def test_member_client_id() -> None:
    uid = "91b086c0-892b-491b-9205-cdf6011a92d5"
    assert member_client_id(f"w1-{uid}") == "w1"
    assert member_client_id(f"w1-x-{uid}") == "w1-x"
    assert member_client_id(f"w10-{uid}") == "w10"
    assert member_client_id("w1") == "" and member_client_id(f"-{uid}") == ""
    assert member_client_id(f"w1-{uid}", "reported") == "reported"


async def _groups(settings) -> list[str]:
    admin = AIOKafkaAdminClient(**settings.kafka_client_args())
    await admin.start()
    try:
        return sorted(
            g[0] for g in await admin.list_consumer_groups() if g[0].startswith(f"{settings.namespace}-")
        )
    finally:
        await admin.close()


def test_dead_letters_listed_one_group_fast_restart(infra, tmp_path):
    s = new_stack(infra, tmp_path)
    keys = RedisKeys(s.namespace)
    r = redis.Redis.from_url(infra.redis_url)

    async def publish(raws: list[bytes]) -> None:
        async with Publisher(s.settings) as pub:
            await pub.send_many(raws)

    try:
        asyncio.run(ensure_topics(s.settings))
        asyncio.run(publish([event("ok-1", "receipt", 1_000), *BAD]))
        since = int(time.time() * 1000)
        s.start_worker("w1")
        wait_up(s, "w1", since, timeout=60)
        # The dead letters reach the recent list the API serves, from the ledger's batch.
        recent = wait_until(
            lambda: (
                len(r.lrange(keys.deadletters_recent, 0, -1)) >= 2
                and r.lrange(keys.deadletters_recent, 0, -1)
            ),
            30,
            0.2,
            "the recent list",
        )
        listed = [DeadLetter.decode(x) for x in recent]
        assert sorted(d.value() for d in listed) == sorted(BAD)
        on_topic = asyncio.run(list_deadletters(s.settings))
        assert sorted(d.key() for d in listed) == sorted(d.key() for d in on_topic)
        # The worker's only consumer group is the ledger's (no Faust group to join first).
        assert asyncio.run(_groups(s.settings)) == [Topics(s.namespace).ledger_group]

        s.stop("worker-w1", kill=True)
        killed = time.monotonic()
        since = int(time.time() * 1000)
        s.start_worker("w1")
        up = wait_up(s, "w1", since, timeout=60)
        log = s.log("worker-w1")
        assert "removed this worker's previous incarnation from the group" in log, log[-3000:]
        # ~4 s here (a 6 s session: Tansu delays a join by 3 s); ~12 s when the dead member
        # had to expire first, ~16 s with Faust's own group before it.
        assert up - killed < 10, up - killed
    finally:
        r.close()
        s.stop_all()
