"""The ledger's lean aiokafka records (streams.lean_records) against a real broker: the same
messages, offsets and positions as aiokafka's own ConsumerRecords, including a seek into the
middle of a batch and a max_records cut; other consumers in the process are untouched.
Fails if an aiokafka upgrade changes the fetcher internals the lean path relies on."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from cashpos.settings import Settings
from streams.lean_records import RAW, install
from streams.topics import ensure_topics


async def _consume(
    bootstrap: str, tps: list[TopicPartition], starts: dict[TopicPartition, int], n: int, raw: bool
) -> tuple[dict, dict]:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4096,  # several fetches per partition
        value_deserializer=RAW if raw else None,
    )
    await c.start()
    try:
        c.assign(tps)
        for tp in tps:
            c.seek(tp, starts[tp])
        got: dict[TopicPartition, list] = {tp: [] for tp in tps}
        while sum(map(len, got.values())) < n:
            batch = await c.getmany(timeout_ms=2000, max_records=37)  # cuts batches mid-way
            assert batch or sum(map(len, got.values())) < n, "no progress"
            for tp, records in batch.items():
                got[tp] += records
        positions = {tp: await c.position(tp) for tp in tps}
        return got, positions
    finally:
        await c.stop()


@pytest.mark.integration
def test_raw_consumer_sees_exactly_what_aiokafka_delivers(infra):
    install()
    install()  # idempotent
    ns = f"lean{uuid.uuid4().hex[:6]}"
    s = Settings(kafka_bootstrap=infra.bootstrap, redis_url=infra.redis_url, namespace=ns, partitions=3)
    asyncio.run(ensure_topics(s))
    topic = f"{ns}.events.revenue"
    tps = [TopicPartition(topic, p) for p in range(3)]

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, linger_ms=5)
        await p.start()
        try:
            futs = [
                await p.send(topic, b"v%05d" % i + b"x" * (i % 50), key=b"k%d" % (i % 7), partition=i % 3)
                for i in range(1500)
            ]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    asyncio.run(produce())
    starts = {tps[0]: 0, tps[1]: 123, tps[2]: 499}  # 123 and 499 fall inside produced batches
    n = 1500 - 123 - 499
    ref, ref_pos = asyncio.run(_consume(infra.bootstrap, tps, starts, n, raw=False))
    lean, lean_pos = asyncio.run(_consume(infra.bootstrap, tps, starts, n, raw=True))

    assert lean_pos == ref_pos == {tps[0]: 500, tps[1]: 500, tps[2]: 500}
    for tp in tps:
        assert all(isinstance(r, ConsumerRecord) for r in ref[tp])
        assert not any(isinstance(r, ConsumerRecord) for r in lean[tp])
        assert [(r.offset, r.timestamp, r.key, r.value) for r in lean[tp]] == [
            (r.offset, r.timestamp, r.key, r.value) for r in ref[tp]
        ]
        assert [r.offset for r in lean[tp]] == list(range(starts[tp], 500))
