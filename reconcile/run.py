"""`cashpos reconcile`: re-fold the raw topics independently and compare with Redis (and, given
state directories, with the processor's RocksDB state).

A position is compared exactly when the serving copy reflects the same number of events as the
re-fold (same version); a lower version is a lag, reported but not a difference. Reading Redis
*before* the topics guarantees the re-fold has seen at least what Redis reflects.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import orjson
import redis.asyncio as aioredis
from rocksdict import AccessType, Options, Rdict

from cashpos.names import META_FIELD, RedisKeys, Topics
from cashpos.refdata import governments
from cashpos.settings import Settings
from reconcile.reference import Reference
from streams.reader import Record, read_topics
from streams.topics import partition_for

PosKey = tuple[str, str, int]


class Difference(msgspec.Struct):
    org_code: str
    account: str
    fiscal_year: int
    against: str  # "redis" | "state"
    expected_cash: int
    expected_committed: int
    actual_cash: int | None
    actual_committed: int | None


class Report(msgspec.Struct):
    finished_ms: int
    seconds: float
    records_in: int
    applied: int
    duplicates: int
    dead_letters: int
    positions_checked: int
    lagging: int
    unseeded: int
    diff_krw: int
    differences: list[Difference]

    @property
    def ok(self) -> bool:
        return self.diff_krw == 0 and not self.differences


async def _redis_view(r: aioredis.Redis, keys: RedisKeys) -> tuple[dict[PosKey, tuple[int, int, int]], int]:
    view: dict[PosKey, tuple[int, int, int]] = {}
    unseeded = 0
    async with r.pipeline(transaction=False) as pipe:
        for org in governments():
            pipe.hgetall(keys.positions(org))
        hashes = await pipe.execute()
    for org, h in zip(governments(), hashes):
        if META_FIELD.encode() not in h:
            unseeded += 1
            continue
        for f, v in h.items():
            if f == META_FIELD.encode():
                continue
            account, _, fy = f.decode().partition("|")
            version, _, body = v.partition(b"|")
            d = orjson.loads(body)
            view[(org, account, int(fy))] = (d["cash"], d["committed"], int(version))
    return view, unseeded


def _fold(records: list[Record], max_bytes: int, below: dict[tuple[str, int], int] | None = None) -> Reference:
    ref = Reference(max_bytes=max_bytes)
    for rec in sorted(records, key=lambda r: (r.partition, r.topic, r.offset)):
        if below is not None and rec.offset >= below.get((rec.topic, rec.partition), 0):
            continue
        side = "revenue" if rec.topic.endswith(".revenue") else "expenditure"
        ref.feed(rec.value, side, rec.key)
    return ref


def _state_view(path: Path) -> tuple[dict[PosKey, tuple[int, int, int]], dict[tuple[str, int], int]]:
    """Positions and next offsets from a worker's RocksDB, opened read-only beside the worker."""
    opts = Options(raw_mode=True)
    db = Rdict(str(path / "ledger"), opts, access_type=AccessType.read_only())
    try:
        pos: dict[PosKey, tuple[int, int, int]] = {}
        offsets: dict[tuple[str, int], int] = {}
        it = db.iter()
        it.seek(b"o\0")
        while it.valid() and it.key().startswith(b"o\0"):
            _, topic, part = it.key().decode().split("\0")
            offsets[(topic, int(part))] = int(it.value())
            it.next()
        it.seek(b"p\0")
        while it.valid() and it.key().startswith(b"p\0"):
            _, org, account, fy = it.key().decode().split("\0")
            cash, committed, version, _ = msgspec.msgpack.decode(it.value())
            pos[(org, account, int(fy))] = (cash, committed, version)
            it.next()
        return pos, offsets
    finally:
        db.close()


def _compare(expected: dict[PosKey, tuple[int, int]], versions: dict[PosKey, int],
             actual: dict[PosKey, tuple[int, int, int]], against: str,
             lag_ok: bool) -> tuple[list[Difference], int, int]:
    diffs: list[Difference] = []
    lagging = 0
    krw = 0
    for pk in set(expected) | set(actual):
        exp = expected.get(pk, (0, 0))
        ver = versions.get(pk, 0)
        got = actual.get(pk)
        if got is not None and got[2] == ver:
            if (got[0], got[1]) == exp:
                continue
        elif lag_ok and (got is None or got[2] < ver):
            lagging += 1
            continue
        krw += abs(exp[0] - (got[0] if got else 0)) + abs(exp[1] - (got[1] if got else 0))
        diffs.append(Difference(pk[0], pk[1], pk[2], against, exp[0], exp[1],
                                got[0] if got else None, got[1] if got else None))
    return diffs, lagging, krw


async def reconcile(settings: Settings, state_dirs: list[Path] | None = None,
                    publish: bool = True) -> Report:
    t0 = time.perf_counter()
    keys = RedisKeys(settings.namespace)
    topics = Topics(settings.namespace)
    r = aioredis.from_url(settings.redis_url, socket_timeout=5)
    try:
        redis_view, unseeded = await _redis_view(r, keys)
        records = await read_topics(settings, list(topics.sources))
        ref = _fold(records, settings.max_event_bytes)
        expected, versions = ref.positions(), ref.versions()
        diffs, lagging, krw = _compare(expected, versions, redis_view, "redis", lag_ok=True)
        checked = len(set(expected) | set(redis_view))
        for d in state_dirs or []:
            state, offsets = _state_view(d)
            at = _fold(records, settings.max_event_bytes, offsets)
            owned = {p for (_, p) in offsets}
            n = settings.partitions
            exp = {pk: v for pk, v in at.positions().items() if partition_for(pk[0], n) in owned}
            vers = at.versions()
            sd, _, sk = _compare(exp, vers, state, "state", lag_ok=False)
            diffs += sd
            krw += sk
            checked += len(exp)
        counts = ref.counts()
        rejected = counts["rejected"]
        report = Report(
            finished_ms=int(time.time() * 1000), seconds=round(time.perf_counter() - t0, 3),
            records_in=len(records), applied=int(counts["applied"]),  # type: ignore[call-overload]
            duplicates=int(counts["duplicate"]),  # type: ignore[call-overload]
            dead_letters=sum(rejected.values()),  # type: ignore[union-attr]
            positions_checked=checked, lagging=lagging, unseeded=unseeded, diff_krw=krw,
            differences=diffs[:100],
        )
        if publish:
            await r.set(keys.reconciliation, msgspec.json.encode(report))
        return report
    finally:
        await r.aclose()

