"""Topic creation and the org_code -> partition mapping the producers use.

Both input topics are co-partitioned: same partition count, keyed by org_code with Kafka's
default (murmur2) partitioner, so one worker owns all of a government's events. Topics are
created with explicit configs (Tansu does not report defaults).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from cashpos.names import Topics
from cashpos.settings import Settings

log = logging.getLogger(__name__)

# The input topics are the book of record: keep them (retention -1) so a new owner of a
# partition can rebuild its state by re-folding them.
SOURCE_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1"}
DEADLETTER_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(90 * 24 * 3600 * 1000)}
ALERTS_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(400 * 24 * 3600 * 1000)}
# The audit log is append-only and kept; one partition gives it a single order.
AUDIT_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1"}


def partition_for(org_code: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for this key."""
    return (murmur2(org_code.encode()) & 0x7FFFFFFF) % partitions


async def ensure_topics(settings: Settings, attempts: int = 30) -> None:
    """Create the input, dead-letter, alerts and audit topics if absent (idempotent; waits for the broker)."""
    topics = Topics(settings.namespace)
    wanted = [
        NewTopic(t, settings.partitions, settings.replication_factor, topic_configs=SOURCE_CONFIG)
        for t in topics.sources
    ] + [
        NewTopic(
            topics.deadletter,
            settings.partitions,
            settings.replication_factor,
            topic_configs=DEADLETTER_CONFIG,
        ),
        NewTopic(
            topics.alerts, settings.partitions, settings.replication_factor, topic_configs=ALERTS_CONFIG
        ),
        NewTopic(topics.audit, 1, settings.replication_factor, topic_configs=AUDIT_CONFIG),
    ]
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(**settings.kafka_client_args())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            for topic in missing:  # one at a time: a concurrent creator must not skip the rest
                try:
                    await admin.create_topics([topic])
                    log.info("created topic %s", topic.name)
                except TopicAlreadyExistsError:
                    pass
            return
        except Exception as exc:  # broker not up yet
            if attempt == attempts - 1:
                raise
            log.info("waiting for broker %s: %r", settings.kafka_bootstrap, exc)
            await asyncio.sleep(1)
        finally:
            await admin.close()
