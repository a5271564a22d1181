"""Operate the dead-letter topic: list dead letters, re-publish selected ones after a fix."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from cashpos.names import Topics
from cashpos.settings import Settings
from streams.deadletter import DeadLetter
from streams.publisher import Publisher


async def read_all(settings: Settings, topic: str, idle_ms: int = 1500) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic, start to end. Ends when each partition reached the high
    watermark of its fetch responses (ListOffsets is not trusted: wrong on Tansu)."""
    consumer = AIOKafkaConsumer(**settings.kafka_client_args(), enable_auto_commit=False,
                                group_id=None)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[tuple[bytes | None, bytes]] = []
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=10000)
            for recs in batch.values():
                out += [(r.key, r.value) for r in recs]
            done = True
            for tp in tps:
                hw = consumer.highwater(tp)
                done = done and hw is not None and await consumer.position(tp) >= hw
            if done or not batch:
                return out
    finally:
        await consumer.stop()


async def list_deadletters(settings: Settings, reason: str | None = None, limit: int | None = None) -> list[DeadLetter]:
    records = await read_all(settings, Topics(settings.namespace).deadletter)
    seen: dict[bytes, DeadLetter] = {}  # keyed by source coordinates: a re-send is the same letter
    for key, value in records:
        d = DeadLetter.decode(value)
        if reason is None or d.reason == reason:
            seen[key or d.key()] = d
    out = sorted(seen.values(), key=lambda d: d.dead_lettered_ms)
    return out[-limit:] if limit else out


async def republish(settings: Settings, coords: list[str], fixed_file: str | None = None) -> int:
    """Publish the original bytes of the named dead letters again (or the corrected events of
    ``fixed_file``, one per named letter, in order); the processor validates them afresh."""
    letters = {d.key().decode(): d for d in await list_deadletters(settings)}
    unknown = [c for c in coords if c not in letters]
    if unknown:
        raise SystemExit(f"no dead letter at {', '.join(unknown)}")
    if fixed_file:
        with open(fixed_file, "rb") as f:
            bodies = [line.rstrip(b"\r\n") for line in f if line.strip()]
        if len(bodies) != len(coords):
            raise SystemExit(f"{fixed_file} has {len(bodies)} events for {len(coords)} dead letters")
    else:
        bodies = [letters[c].value() for c in coords]
    async with Publisher(settings) as pub:
        return await pub.send_many(bodies)
