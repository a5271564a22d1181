"""Faust agent: keep the most recent dead letters in Redis for the API and dashboard."""

from __future__ import annotations

import redis.asyncio as aioredis

from cashpos.app import app, settings, topics
from cashpos.names import RedisKeys

KEEP = 1000
keys = RedisKeys(settings.namespace)
deadletter_topic = app.topic(topics.deadletter, value_serializer="raw", key_serializer="raw")
_redis = aioredis.from_url(settings.redis_url, socket_timeout=2)


@app.agent(deadletter_topic)
async def remember_deadletters(stream):  # type: ignore[no-untyped-def]
    async for batch in stream.take(500, within=0.5):
        async with _redis.pipeline(transaction=False) as pipe:
            pipe.lpush(keys.deadletters_recent, *batch)
            pipe.ltrim(keys.deadletters_recent, 0, KEEP - 1)
            await pipe.execute()
