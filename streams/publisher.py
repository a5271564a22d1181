"""Publish events to the right topic (by kind), keyed by org_code. Used by `cashpos publish`,
the simulator, the ingest gateway and the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Self

import orjson
from aiokafka import AIOKafkaProducer

from cashpos.names import Topics
from cashpos.settings import Settings


def route(topics: Topics, raw: bytes) -> tuple[tuple[str, ...], bytes | None]:
    """Topics and key for one serialized event (a year's close goes to both input topics).
    Unparseable input still gets published (to the expenditure topic, unkeyed) so that the
    processor dead-letters it with a reason."""
    try:
        obj = orjson.loads(raw)
        kind = obj.get("kind") if isinstance(obj, dict) else None
        org = obj.get("org_code") if isinstance(obj, dict) else None
    except orjson.JSONDecodeError:
        kind, org = None, None
    dest = topics.for_record(kind) if isinstance(kind, str) else (topics.expenditure,)
    return dest, org.encode() if isinstance(org, str) else None


class Publisher:
    def __init__(self, settings: Settings, *, linger_ms: int = 5) -> None:
        self.topics = Topics(settings.namespace)
        self.producer = AIOKafkaProducer(
            **settings.kafka_client_args(),
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
        )

    async def __aenter__(self) -> Self:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, raw: bytes) -> tuple[str, int, int]:
        """Publish one event and wait for acks=all; returns (topic, partition, offset)."""
        dest, key = route(self.topics, raw)
        for topic in dest:
            md = await self.producer.send_and_wait(topic, raw, key=key)
        return md.topic, md.partition, md.offset

    async def send_many(self, raws: Iterable[bytes] | AsyncIterator[bytes], window: int = 20000) -> int:
        """Publish many events, pipelined (not awaiting each), all acknowledged on return."""
        pending: list[asyncio.Future[object]] = []
        n = 0

        async def flush() -> None:
            await asyncio.gather(*pending)
            pending.clear()

        async def one(raw: bytes) -> None:
            nonlocal n
            dest, key = route(self.topics, raw)
            for topic in dest:
                pending.append(await self.producer.send(topic, raw, key=key))
            n += 1
            if len(pending) >= window:
                await flush()

        if hasattr(raws, "__aiter__"):
            async for raw in raws:
                await one(raw)
        else:
            for raw in raws:
                await one(raw)
        await flush()
        return n
