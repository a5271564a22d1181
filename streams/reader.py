"""Read a topic from the start to its end, with each record's coordinates.

The end is the high watermark that fetch responses report; ListOffsets is not used because
Tansu answers it wrongly for multi-record batches (see docs/design.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from cashpos.settings import Settings


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes


async def read_topics(
    settings: Settings, topics: list[str], idle_ms: int = 1500, timeout_s: float = 60.0
) -> list[Record]:
    """Every record of ``topics``; the end is reached once each partition's high watermark is
    known (from a fetch response) and consumed. A slow first fetch is waited for, up to
    ``timeout_s``: an empty answer is never mistaken for an empty topic."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_args(),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata for every topic
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=20_000)
            for recs in batch.values():
                out += [
                    Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value or b"") for r in recs
                ]
            done = True
            for tp in tps:
                hw = consumer.highwater(tp)
                done = done and hw is not None and await consumer.position(tp) >= hw
            if done:
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topics}: end not reached within {timeout_s}s ({len(out)} records read)")
    finally:
        await consumer.stop()
