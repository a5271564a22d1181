"""Project positions into Redis, the serving copy the API reads.

Values are absolute and version-guarded (a field is only replaced by a higher version), written
in one pipelined Lua call per batch, after the RocksDB write. A government's hash is only
trusted by the API when it carries the ``_meta`` field, which only a full seed sets: after a
FLUSHALL or a restart of Redis the projection notices the missing marker and re-seeds that
government from state, and until then the API answers 503 instead of a wrong number.

This module owns the serving copy's value format, ``{version}|{json}`` (positions here, alerts
in ``state.alert_projection``), and the fields ``{account}|{fiscal_year}`` (positions) and
``{org}|{account}`` (threshold overrides): every reader (the API, ``cashpos reconcile``, the
workers) decodes through ``decode_position``/``decode_value``/``parse_field``/
``parse_override_field``, and the Lua scripts read a version through ``lua_version``. The
marker field's name is ``cashpos.names.META_FIELD``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis

from cashpos.names import META_FIELD, RedisKeys
from state.ledger import Position, PosKey

# The Redis list of recent dead letters (the API's /v1/deadletters) keeps this many, newest
# first; the dead-letter topic is the complete record (``cashpos dlq``).
RECENT_DEADLETTERS = 1000
# A write encoded by ``Projection.prepare`` for ``Projection.send``: the script's keys and argv.
Prepared = tuple[list[str], list[bytes | str | int]]


def lua_version(var: str) -> str:
    """A Lua expression: the version of the value held in the Lua variable ``var``."""
    return f"tonumber(string.match({var}, '^(%d+)|'))"


# ARGV layout: now_ms, worker, then per key: seed(0/1), meta json, n, n x (field, value).
# Returns the keys that need a full seed (no marker field and not seeded in this call).
_LUA = (
    """
local meta_field = '{META_FIELD}'
local out = {}
local i = 3
for k = 1, #KEYS do
  local key = KEYS[k]
  local seed = ARGV[i] == '1'
  local meta = ARGV[i + 1]
  local n = tonumber(ARGV[i + 2])
  i = i + 3
  if seed or redis.call('HEXISTS', key, meta_field) == 1 then
    for j = 1, n do
      local f, v = ARGV[i], ARGV[i + 1]
      local cur = redis.call('HGET', key, f)
      if (not cur) or {VERSION_CUR} < {VERSION_V} then
        redis.call('HSET', key, f, v)
      end
      i = i + 2
    end
    redis.call('HSET', key, meta_field, meta)
  else
    out[#out + 1] = key
    i = i + 2 * n
  end
end
return out
""".replace("{META_FIELD}", META_FIELD)
    .replace("{VERSION_CUR}", lua_version("cur"))
    .replace("{VERSION_V}", lua_version("v"))
)


# The 1-based positions in KEYS of the hashes without the marker field ARGV[1].
_UNSEEDED_LUA = """
local out = {}
for i = 1, #KEYS do
  if redis.call('HEXISTS', KEYS[i], ARGV[1]) == 0 then
    out[#out + 1] = i
  end
end
return out
"""


def encode_value(version: int, body: bytes) -> bytes:
    """A serving-copy value: ``{version}|{json}`` (``body``: the JSON)."""
    return b"%d|%s" % (version, body)


def decode_value(raw: bytes) -> tuple[int, Any]:
    """The version and the decoded JSON of a serving-copy value."""
    version, _, body = raw.partition(b"|")
    return int(version), orjson.loads(body)


def value_version(raw: bytes) -> int:
    """The version of a serving-copy value."""
    return int(raw.partition(b"|")[0])


def value_body(raw: bytes) -> bytes:
    """The JSON of a serving-copy value, as stored (not decoded)."""
    return raw.partition(b"|")[2]


def value_json(raw: bytes) -> Any:
    """The decoded JSON of a serving-copy value (its version not read)."""
    return orjson.loads(raw.partition(b"|")[2])


def encode_position(p: Position) -> bytes:
    """``ordered`` (open payment orders) only when some are open: a reader takes none as 0."""
    d = {"cash": p.cash, "committed": p.committed, "last_event_ms": p.last_event_ms}
    if p.ordered:
        d["ordered"] = p.ordered
    return encode_value(p.version, orjson.dumps(d))


def decode_position(raw: bytes) -> tuple[int, dict[str, int]]:
    return decode_value(raw)


def field_name(account: str, fiscal_year: int) -> str:
    return f"{account}|{fiscal_year}"


def parse_field(field: str) -> tuple[str, int]:
    """The account and fiscal year of a position field (not the marker field)."""
    account, _, fy = field.partition("|")
    return account, int(fy)


def override_field(org: str, account: str) -> str:
    """The field of the thresholds hash (``RedisKeys.thresholds``) holding the override of one
    account (``*``: every account of the government)."""
    return f"{org}|{account}"


def parse_override_field(field: str) -> tuple[str, str]:
    """The government and account (or ``*``) of a thresholds field."""
    org, _, account = field.partition("|")
    return org, account


class Projection:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, worker_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.worker_id = worker_id
        self._script = redis.register_script(_LUA)
        self._unseeded = redis.register_script(_UNSEEDED_LUA)

    async def write(
        self,
        positions: dict[PosKey, Position],
        changed: Iterable[PosKey],
        seed_orgs: Iterable[str] = (),
        last_event_ms: int = 0,
        closed: Mapping[str, Mapping[str, int]] | None = None,
    ) -> list[str]:
        """Write changed positions (and every position of ``seed_orgs``) in one call.

        Returns the org codes whose hash lacked the marker and still needs a seed.
        """
        return await self.send(self.prepare(positions, changed, seed_orgs, last_event_ms, closed))

    def prepare(
        self,
        positions: dict[PosKey, Position],
        changed: Iterable[PosKey],
        seed_orgs: Iterable[str] = (),
        last_event_ms: int = 0,
        closed: Mapping[str, Mapping[str, int]] | None = None,
    ) -> Prepared | None:
        """The values of ``write`` encoded now, to be sent later (``send``): the positions keep
        changing after this returns, the call carries the values of this instant. ``closed``:
        the ledger's closed years (side -> org -> year); the marker of a government carries the
        last year both sides closed (``closed``: its positions up to that year are final)."""
        by_org: dict[str, list[PosKey]] = {}
        for pk in changed:
            by_org.setdefault(pk[0], []).append(pk)
        seeds = set(seed_orgs)
        if seeds:
            for pk in positions:
                if pk[0] in seeds:
                    by_org.setdefault(pk[0], []).append(pk)
            for org in seeds:
                by_org.setdefault(org, [])
        if not by_org:
            return None
        now = int(time.time() * 1000)
        keys: list[str] = []
        argv: list[bytes | str | int] = [now, self.worker_id]
        base = {"written_ms": now, "last_event_ms": last_event_ms, "worker": self.worker_id}
        meta = orjson.dumps(base)
        sides = list(closed.values()) if closed else []
        for org, pks in by_org.items():
            keys.append(self.keys.positions(org))
            years = [side.get(org, 0) for side in sides]
            final = min(years) if years else 0
            argv += [
                "1" if org in seeds else "0",
                orjson.dumps({**base, "closed": final}) if final else meta,
                len(pks),
            ]
            for pk in pks:
                argv += [field_name(pk[1], pk[2]), encode_position(positions[pk])]
        return keys, argv

    async def send(self, prepared: Prepared | None) -> list[str]:
        """Send what ``prepare`` encoded; the org codes still needing a seed."""
        if prepared is None:
            return []
        keys, argv = prepared
        missing = await self._script(keys=keys, args=argv)
        prefix = len(self.keys.lua_positions_prefix)
        return [(m.decode() if isinstance(m, bytes) else m)[prefix:] for m in missing]

    async def unseeded(self, orgs: list[str]) -> list[str]:
        """Governments (of ``orgs``) whose serving copy is missing its marker: one script call
        (asked every second for all 243; as 243 pipelined HEXISTS it cost ≈ 1 % of a busy
        worker's CPU in the client)."""
        if not orgs:
            return []
        missing = await self._unseeded(keys=[self.keys.positions(org) for org in orgs], args=[META_FIELD])
        return [orgs[int(i) - 1] for i in missing]

    async def notify(self, orgs: Iterable[str], last_event_ms: int) -> None:
        payload = orjson.dumps(
            {"orgs": sorted(set(orgs)), "last_event_ms": last_event_ms, "written_ms": int(time.time() * 1000)}
        )
        await self.redis.publish(self.keys.updates_channel, payload)

    async def remember_deadletters(self, letters: list[bytes], keep: int = RECENT_DEADLETTERS) -> None:
        """Prepend encoded dead letters (in production order) to the capped recent list."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self.keys.deadletters_recent, *letters)
            pipe.ltrim(self.keys.deadletters_recent, 0, keep - 1)
            await pipe.execute()
