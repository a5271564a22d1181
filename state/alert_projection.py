"""Alerts in Redis, the serving copy (written by the workers, read and acknowledged by the API).

* ``keys.alerts_open``: hash id -> ``{rev}|{json}`` of raised/acknowledged alerts;
* ``keys.alerts_recent`` + ``keys.alerts_recent_order``: resolved alerts, the newest
  ``recent_keep`` of them (older ones are dropped with their acknowledgement);
* ``keys.alerts_acks``: hash id -> ``{"by", "at_ms"}``, the first acknowledgement (HSETNX).

Writes are version-guarded like positions: a change replaces the stored alert only with a higher
``rev``, so a replayed or late write can never move an alert back. The acknowledgement is kept
apart from the worker's record and merged on read, so a worker rewriting (or resolving) an alert
can never lose it.

The threshold overrides (``PUT /v1/thresholds``) are a hash ``keys.thresholds`` of JSON
``alerts.config.Override`` by ``state.projection.override_field``; ``decode_overrides`` reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import orjson
import redis.asyncio as aioredis

from alerts.config import Override
from cashpos.calendar import utc_stamp
from cashpos.names import RedisKeys
from state.projection import encode_value, lua_version, parse_override_field, value_json, value_version

_WRITE = """
local keep = tonumber(ARGV[1])
local i = 2
while i <= #ARGV do
  local id, rev, resolved, val, score = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1', ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local cur = redis.call('HGET', KEYS[1], id)
  if not cur then cur = redis.call('HGET', KEYS[2], id) end
  local cur_rev = -1
  if cur then cur_rev = {VERSION_CUR} end
  if rev > cur_rev then
    if resolved then
      redis.call('HDEL', KEYS[1], id)
      redis.call('HSET', KEYS[2], id, val)
      redis.call('ZADD', KEYS[3], score, id)
    else
      redis.call('HSET', KEYS[1], id, val)
    end
  end
end
local n = redis.call('ZCARD', KEYS[3])
if n > keep then
  local old = redis.call('ZRANGE', KEYS[3], 0, n - keep - 1)
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[4], id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - keep - 1)
end
return 0
""".replace("{VERSION_CUR}", lua_version("cur"))


def _decode(raw: bytes) -> dict[str, object]:
    return value_json(raw)


def merge_ack(alert: dict[str, object], ack: Mapping[str, Any] | None) -> dict[str, object]:
    """Apply a stored acknowledgement to an alert dict (state ``raised`` -> ``acknowledged``)."""
    if ack is None or alert.get("acknowledged_by"):
        return alert
    alert["acknowledged_by"] = ack.get("by")
    alert["acknowledged_ms"] = ack.get("at_ms")
    alert["acknowledged_at"] = utc_stamp(int(ack.get("at_ms") or 0))
    if alert.get("state") == "raised":
        alert["state"] = "acknowledged"
    return alert


class AlertProjection:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, recent_keep: int = 2000) -> None:
        self.redis = redis
        self.keys = keys
        self.recent_keep = recent_keep
        self._write = redis.register_script(_WRITE)

    async def write(self, alerts: Iterable[Mapping[str, Any]]) -> None:
        """Store alert changes (dicts in the public shape, with ``id``, ``rev``, ``state``)."""
        argv: list[bytes | str | int] = [self.recent_keep]
        for a in alerts:
            resolved = a.get("state") == "resolved"
            score = int(a.get("resolved_ms") or a.get("raised_ms") or 0)
            rev = int(a["rev"])
            argv += [str(a["id"]), rev, "1" if resolved else "0", encode_value(rev, orjson.dumps(a)), score]
        if len(argv) > 1:
            k = self.keys
            await self._write(
                keys=[k.alerts_open, k.alerts_recent, k.alerts_recent_order, k.alerts_acks], args=argv
            )

    async def revs(self, ids: list[str]) -> dict[str, int]:
        """The stored revision of each of ``ids`` that the serving copy holds (open or recent)."""
        out: dict[str, int] = {}
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(self.keys.alerts_open, chunk)
                pipe.hmget(self.keys.alerts_recent, chunk)
                opened, recent = await pipe.execute()
            for aid, a, b in zip(chunk, opened, recent):
                raw = a if a is not None else b
                if raw is not None:
                    out[aid] = value_version(raw)
        return out

    async def acks(self, ids: list[str]) -> dict[str, dict[str, object]]:
        if not ids:
            return {}
        out: dict[str, dict[str, object]] = {}
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            for aid, raw in zip(chunk, await self.redis.hmget(self.keys.alerts_acks, chunk)):
                if raw is not None:
                    out[aid] = orjson.loads(raw)
        return out

    async def list(self, open_: bool = True, resolved: bool = False) -> list[dict[str, object]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hvals(self.keys.alerts_open) if open_ else pipe.echo("")
            pipe.hvals(self.keys.alerts_recent) if resolved else pipe.echo("")
            pipe.hgetall(self.keys.alerts_acks)
            opened, done, acks = await pipe.execute()
        acks = {k.decode(): orjson.loads(v) for k, v in acks.items()}
        out = []
        for raw in (opened or []) + (done or []):
            a = _decode(raw)
            out.append(merge_ack(a, acks.get(str(a["id"]))))
        return out

    async def get(self, alert_id: str) -> dict[str, object] | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.alerts_open, alert_id)
            pipe.hget(self.keys.alerts_recent, alert_id)
            pipe.hget(self.keys.alerts_acks, alert_id)
            opened, done, ack = await pipe.execute()
        raw = opened or done
        if raw is None:
            return None
        return merge_ack(_decode(raw), orjson.loads(ack) if ack else None)

    async def acknowledge(self, alert_id: str, by: str, at_ms: int) -> tuple[str, dict[str, object] | None]:
        """Record the first acknowledgement of an open alert. Returns (outcome, alert):
        ``acknowledged`` (recorded now), ``already`` (an earlier one stands), ``resolved``
        (the alert is closed: nothing recorded) or ``unknown``."""
        raw = await self.redis.hget(self.keys.alerts_open, alert_id)
        if raw is None:
            done = await self.get(alert_id)
            return ("resolved", done) if done is not None else ("unknown", None)
        created = await self.redis.hsetnx(
            self.keys.alerts_acks, alert_id, orjson.dumps({"by": by, "at_ms": at_ms})
        )
        alert = await self.get(alert_id)
        return ("acknowledged" if created else "already"), alert

    async def unacknowledge(self, alert_id: str) -> None:
        """Undo an acknowledgement that could not be published."""
        await self.redis.hdel(self.keys.alerts_acks, alert_id)


def decode_overrides(raw: Mapping[bytes | str, bytes | str]) -> dict[tuple[str, str], Override]:
    """The thresholds hash, decoded: (org, account or ``*``) -> override; invalid entries are
    skipped."""
    out: dict[tuple[str, str], Override] = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else k
        try:
            out[parse_override_field(key)] = msgspec.json.decode(v, type=Override)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
    return out
