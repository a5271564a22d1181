"""Topic creation and the org_code -> partition mapping the producers use.

Both input topics are co-partitioned: same partition count, keyed by org_code with Kafka's
default (murmur2) partitioner, so one worker owns all of a government's events. Topics are
created with explicit configs (Tansu does not report defaults). What each topic must be is
:func:`topic_specs`; ``streams.cluster_check`` compares the cluster's topics with it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2

from cashpos.names import Topics
from cashpos.settings import Settings

log = logging.getLogger(__name__)

# The input topics are the book of record: keep them (retention -1, by time and by size) so a
# new owner of a partition can rebuild its state by re-folding them.
SOURCE_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
DEADLETTER_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(90 * 24 * 3600 * 1000)}
ALERTS_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(400 * 24 * 3600 * 1000)}
# The audit log is append-only and kept; one partition gives it a single order.
AUDIT_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}

# What a topic is for, which decides what the check demands of it (streams.cluster_check).
INPUT, DEADLETTER, ALERTS, AUDIT = "input", "deadletter", "alerts", "audit"


@dataclass(frozen=True)
class TopicSpec:
    """A topic as cashpos creates it: its role, partition count and explicit configs."""

    name: str
    role: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> tuple[TopicSpec, ...]:
    """The namespace's topics, each as cashpos creates it."""
    topics = Topics(settings.namespace)
    n = settings.partitions
    return (
        *(TopicSpec(t, INPUT, n, SOURCE_CONFIG) for t in topics.sources),
        # The worker sends a dead letter to its source's partition number (agents/ledger.py).
        TopicSpec(topics.deadletter, DEADLETTER, n, DEADLETTER_CONFIG),
        TopicSpec(topics.alerts, ALERTS, n, ALERTS_CONFIG),
        TopicSpec(topics.audit, AUDIT, 1, AUDIT_CONFIG),
    )


def partition_for(org_code: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for this key."""
    return (murmur2(org_code.encode()) & 0x7FFFFFFF) % partitions


async def ensure_topics(settings: Settings, attempts: int = 30, *, strict: bool = False) -> None:
    """Create the input, dead-letter, alerts and audit topics if absent (idempotent; waits for the
    broker). Existing topics are left as they are: ``streams.cluster_check`` judges them.
    Raises ``streams.cluster_check.Refused`` rather than create topics with replication factor 1
    on an external cluster without CASHPOS_ALLOW_REPLICATION_FACTOR_ONE: when it would create one,
    or (``strict``: ``cashpos topics create``) whatever exists."""
    from streams.cluster_check import refuse_replication_factor_one

    specs = topic_specs(settings)
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(**settings.kafka_client_args())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [s for s in specs if s.name not in existing]
            if missing or strict:
                await refuse_replication_factor_one(settings, admin)
            for spec in missing:  # one at a time: a concurrent creator must not skip the rest
                new = NewTopic(
                    spec.name, spec.partitions, settings.replication_factor, topic_configs=spec.configs
                )
                try:
                    resp = await admin.create_topics([new])
                except TopicAlreadyExistsError:
                    continue
                # aiokafka returns the broker's refusal (e.g. more replicas than brokers) unraised.
                errors = [e for e in resp.to_object().get("topic_errors") or [] if e.get("error_code")]
                for e in errors:
                    if e["error_code"] != TopicAlreadyExistsError.errno:
                        why = e.get("error_message") or for_code(e["error_code"]).__name__
                        log.error("could not create topic %s: %s", spec.name, why)
                if not errors:
                    log.info("created topic %s", spec.name)
            return
        except Exception as exc:  # broker not up yet
            if attempt == attempts - 1 or _is_refusal(exc):
                raise
            log.info("waiting for broker %s: %r", settings.kafka_bootstrap, exc)
            await asyncio.sleep(1)
        finally:
            await admin.close()


def _is_refusal(exc: BaseException) -> bool:
    from streams.cluster_check import Refused

    return isinstance(exc, Refused)
