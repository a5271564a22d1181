"""The fate of every submitted event, in Redis: what ``GET /v1/events/{org}/{id}`` answers.

This module owns the format. One hash per government and Korean day
(``RedisKeys.fates(org, day)``, kept ``retention_days``), whose fields are named by the
ledger's scoped id (``sid``: the side's tag and the event_id, ``state.ledger.scoped_id``):

* ``{sid}``: the processor's verdict, written after the batch's state write and its positions
  (a caller that sees ``applied`` then reads a position at least as new):
  ``applied`` with each effect and the position version it produced, ``dead_lettered`` with
  the reason and the record's coordinates, or ``duplicate`` (a copy of an event applied before
  this record's window: written only where the id has no verdict);
* ``s:{sid}``: the API's record of a submission (the content's digest, where it was
  published); the processor never writes it;
* ``c:{sid}``: a later copy with other content, refused as ``event_id_conflict``: the id's
  verdict stays the original's.

A reader looks at every day of the window and takes a verdict over a submission (the worker and
the API may file the same id under two days around midnight).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, get_args

import msgspec
import orjson
import redis.asyncio as aioredis

from cashpos.calendar import kst_day
from cashpos.names import RedisKeys, side_of_topic
from cashpos.refdata import governments
from state.ledger import LAPSE_TAG, Changes, Position, PosKey, side_scoped_id
from streams.contract import Id

APPLIED: Final = "applied"
DEAD_LETTERED: Final = "dead_lettered"
DUPLICATE: Final = "duplicate"
PENDING: Final = "pending"  # a submission without a verdict yet
MAX_ID_CHARS: Final[int] = get_args(Id)[1].max_length  # the contract's bound on an event_id
SUBMISSION: Final = "s:"
CONFLICT: Final = "c:"


def content_digest(event: msgspec.Struct) -> str:
    """The digest of an event's content, whatever its bytes' field order or spacing: two
    messages are the same event exactly when the ledger would call one a duplicate of the
    other (it compares decoded events)."""
    return hashlib.blake2b(msgspec.json.encode(event), digest_size=16).hexdigest()


def days_back(now_ms: int, retention_days: int) -> list[int]:
    """The days whose hashes hold the window, newest first."""
    today = kst_day(now_ms)
    return [today - i for i in range(retention_days + 1)]


# How a verdict is written (the Lua below): ``put`` overwrites (applied: final, and newer than
# whatever was there); ``dead`` fills a gap or replaces all but an applied verdict (an applied id
# stays applied whatever copy follows); ``copy`` only fills a gap.
PUT: Final = "p"
DEAD: Final = "d"
COPY: Final = "n"
_APPLIED_PREFIX: Final = b'{"v":"applied"'  # how orjson spells an applied verdict's start

_WRITE_LUA = """
local ttl = ARGV[1]
local i = 2
for k = 1, #KEYS do
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    local mode, f, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local cur = mode ~= 'p' and redis.call('HGET', KEYS[k], f)
    if mode == 'p' or not cur or (mode == 'd' and string.sub(cur, 1, {N}) ~= '{PREFIX}') then
      redis.call('HSET', KEYS[k], f, v)
    end
  end
  redis.call('EXPIRE', KEYS[k], ttl)
end
return 0
""".replace("{N}", str(len(_APPLIED_PREFIX))).replace("{PREFIX}", _APPLIED_PREFIX.decode())


@dataclass(slots=True)
class FateBatch:
    """One batch's verdicts: per government, ``(mode, field, value)`` in the order decided."""

    writes: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)

    def add(self, org: str, mode: str, name: str, value: bytes) -> None:
        self.writes.setdefault(org, []).append((mode, name, value))

    def extend(self, other: FateBatch) -> None:
        for org, items in other.writes.items():
            self.writes.setdefault(org, []).extend(items)

    def __bool__(self) -> bool:
        return bool(self.writes)


def applied_verdicts(
    changes: Changes,
    positions: dict[PosKey, Position],
    at_ms: int,
    skip: Iterable[str] = (),
    asked: Container[tuple[str, str]] | None = None,
) -> Iterator[tuple[str, str, bytes]]:
    """``(org, sid, verdict)`` for each event the batch applied, from its index rows: every
    effect with the version it produced (the rows of a position are in the order the versions
    were taken). Lapses (a close's own journal entries) are no submitted event."""
    skipped = set(skip)
    effects: dict[tuple[str, str], list[list[Any]]] = {}
    for pk, rows in changes.index.items():
        org, account, fy = pk
        if org in skipped:
            continue
        last = positions[pk].version
        n = len(rows)
        for j, (_ms, sid, dc, dm) in enumerate(rows):
            if sid.startswith(LAPSE_TAG) or (asked is not None and (org, sid) not in asked):
                continue
            effects.setdefault((org, sid), []).append([account, fy, dc, dm, last - (n - 1 - j)])
    for (org, sid), eff in effects.items():
        yield org, sid, orjson.dumps({"v": APPLIED, "effects": eff, "at": at_ms})


def event_address(key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
    """``(org_code, event_id)`` of a refused record, where it names them well enough to be
    asked for (its key, the contract's org_code, and an event_id string in its JSON)."""
    if key is None or value is None:
        return None
    try:
        org = key.decode()
        doc = orjson.loads(value)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    eid = doc.get("event_id") if isinstance(doc, dict) else None
    if not isinstance(eid, str) or not 0 < len(eid) <= MAX_ID_CHARS or org not in governments():
        return None
    return org, eid


def wanted(topic: str, key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
    """``(org, sid)`` of a record that asks for its fate (``FATE_HEADER``), if it names one."""
    where = event_address(key, value)
    return None if where is None else (where[0], side_scoped_id(side_of_topic(topic), where[1]))


def batch_fates(
    changes: Changes,
    positions: dict[PosKey, Position],
    dead: Iterable[tuple[str, str, str, int, int, bytes | None, bytes | None]],
    now_ms: int,
    skip: Iterable[str] = (),
    asked: Container[tuple[str, str]] | None = None,
) -> FateBatch:
    """The verdicts of one folded batch: its dead letters (``reason, detail, topic, partition,
    offset, key, value``: every one), then its applied events and dropped copies — those
    ``asked`` for (``(org, sid)`` of the records with ``FATE_HEADER``; None: all). ``skip``:
    governments whose verdicts were written before (a partition re-folded by its new owner)."""
    skipped = set(skip)
    out = FateBatch()
    for reason, detail, topic, partition, offset, key, value in dead:
        where = event_address(key, value)
        if where is None or where[0] in skipped:
            continue
        org, eid = where
        sid = side_scoped_id(side_of_topic(topic), eid)
        verdict = dead_verdict(reason, detail, topic, partition, offset, now_ms)
        if reason == "event_id_conflict":
            out.add(org, PUT, CONFLICT + sid, verdict)
        else:
            out.add(org, DEAD, sid, verdict)
    for org, sid, verdict in applied_verdicts(changes, positions, now_ms, skipped, asked):
        out.add(org, PUT, sid, verdict)
    for org, sid, source in changes.copies:
        if org not in skipped and source is not None and (asked is None or (org, sid) in asked):
            out.add(org, COPY, sid, duplicate_verdict(*source[:3], now_ms))
    return out


def dead_verdict(reason: str, detail: str, topic: str, partition: int, offset: int, at_ms: int) -> bytes:
    return orjson.dumps(
        {
            "v": DEAD_LETTERED,
            "reason": reason,
            "detail": detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "at": at_ms,
        }
    )


def duplicate_verdict(topic: str, partition: int, offset: int, at_ms: int) -> bytes:
    return orjson.dumps(
        {"v": DUPLICATE, "topic": topic, "partition": partition, "offset": offset, "at": at_ms}
    )


def submission(digest: str, topic: str, partition: int, offset: int, at_ms: int) -> bytes:
    return orjson.dumps(
        {"digest": digest, "topic": topic, "partition": partition, "offset": offset, "at": at_ms}
    )


@dataclass(frozen=True, slots=True)
class Fate:
    """What Redis knows of one scoped id: the verdict, the API's submission, a refused copy."""

    verdict: dict[str, Any] | None
    submitted: dict[str, Any] | None
    conflict: dict[str, Any] | None

    @property
    def status(self) -> str | None:
        if self.verdict is not None:
            return str(self.verdict["v"])
        return PENDING if self.submitted is not None else None

    @property
    def digest(self) -> str | None:
        return None if self.submitted is None else str(self.submitted["digest"])


class FateStore:
    """The worker's writes and the API's reads of the fates (one Redis round trip each)."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, retention_days: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_days = retention_days
        self.ttl = (retention_days + 1) * 86_400
        self._write = redis.register_script(_WRITE_LUA)

    async def write(self, batch: FateBatch, now_ms: int) -> None:
        """One script call: every government's verdicts of the batch, in order."""
        if not batch:
            return
        day = kst_day(now_ms)
        keys: list[str] = []
        argv: list[bytes | str | int] = [self.ttl]
        for org, items in batch.writes.items():
            keys.append(self.keys.fates(org, day))
            argv.append(len(items))
            for mode, name, value in items:
                argv += [mode, name, value]
        await self._write(keys=keys, args=argv)

    async def submit(self, org: str, sid: str, record: bytes, now_ms: int) -> None:
        key = self.keys.fates(org, kst_day(now_ms))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(key, SUBMISSION + sid, record)
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def read(self, org: str, sids: list[str], now_ms: int) -> dict[str, Fate]:
        """Each scoped id's fate across the window's days (newest verdict first)."""
        fields = [f for sid in sids for f in (sid, SUBMISSION + sid, CONFLICT + sid)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in days_back(now_ms, self.retention_days):
                pipe.hmget(self.keys.fates(org, day), fields)
            per_day = await pipe.execute()
        out: dict[str, Fate] = {}
        for i, sid in enumerate(sids):
            found: list[dict[str, Any] | None] = [None, None, None]
            # newest first; an applied verdict on any day wins (an applied id stays applied)
            for values in per_day:
                for k in range(3):
                    raw = values[3 * i + k]
                    if raw is None:
                        continue
                    if found[k] is None or (k == 0 and raw.startswith(_APPLIED_PREFIX)):
                        found[k] = orjson.loads(raw)
            out[sid] = Fate(found[0], found[1], found[2])
        return out
