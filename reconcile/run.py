"""`cashpos reconcile`: re-fold the raw topics independently and compare with Redis (and, given
state directories, with the processor's RocksDB state).

A position is compared exactly when the serving copy reflects the same number of events as the
re-fold (same version); a lower version is a lag, reported but not a difference. Reading Redis
*before* the topics guarantees the re-fold has seen at least what Redis reflects.

A state directory is compared in one of two ways:

* **owned** (``owned={dir: partitions}``, e.g. from the workers' heartbeats,
  :func:`owned_from_heartbeats`): only the partitions its worker owns, whatever stale data it
  keeps for partitions it gave away. Each is compared with the re-fold of the topic up to the
  state's stored offset (exact, versions included) and the records past that offset are counted
  as ``state_behind``: with ``state_behind == 0`` the state has been compared against the whole
  topics; a stuck or lagging owner shows as behind, never as exact.
* **stored** (no ``owned``): every partition the directory ever folded, each at its own stored
  offsets. Consistent, but it cannot tell a current owner from a stale or stuck one (R1 in
  docs/reliability.md); for a stopped worker whose ownership is unknown.

Only flushed data is visible beside a running worker (no WAL), so a live state is behind by up
to one flush interval.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec
import orjson
import redis.asyncio as aioredis
from rocksdict import AccessType, Options, Rdict

from cashpos.names import META_FIELD, RedisKeys, Topics, side_of_topic
from cashpos.refdata import governments
from cashpos.settings import Settings
from reconcile.reference import Reference
from state import layout
from state.projection import decode_position, parse_field
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


class StateCheck(msgspec.Struct):
    path: str
    mode: str  # "owned" | "stored"
    partitions: list[int]  # the partitions compared
    positions_checked: int
    diff_krw: int
    behind: int | None  # owned: records of its partitions not folded (flushed) yet; stored: None


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
    state_behind: int = 0  # records of owned partitions the compared states have not folded
    states: list[StateCheck] = []
    # "full": a re-fold from offset 0; "incremental": `cashpos reconcile --continuous`, which
    # read ``records_read`` records past its checkpoint (``records_in`` etc. count since offset 0)
    mode: str = "full"
    records_read: int = 0
    checkpoint_bytes: int = 0

    @property
    def ok(self) -> bool:
        """Exact: no difference, and every owned partition's state at the end of its topics."""
        return self.diff_krw == 0 and not self.differences and self.state_behind == 0


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
            account, fy = parse_field(f.decode())
            version, d = decode_position(v)
            view[(org, account, fy)] = (d["cash"], d["committed"], version)
    return view, unseeded


def _fold(
    records: list[Record], max_bytes: int, below: dict[tuple[str, int], int] | None = None
) -> Reference:
    ref = Reference(max_bytes=max_bytes)
    for rec in sorted(records, key=lambda r: (r.partition, r.topic, r.offset)):
        if below is not None and rec.offset >= below.get((rec.topic, rec.partition), 0):
            continue
        ref.feed_record(rec.value, side_of_topic(rec.topic), rec.key)
    return ref


def _state_view(path: Path) -> tuple[dict[PosKey, tuple[int, int, int]], dict[tuple[str, int], int]]:
    """Positions and next offsets from a worker's RocksDB, opened read-only beside the worker."""
    opts = Options(raw_mode=True)
    db = Rdict(str(path / "ledger"), opts, access_type=AccessType.read_only())
    try:
        pos: dict[PosKey, tuple[int, int, int]] = {}
        offsets: dict[tuple[str, int], int] = {}
        it = db.iter()
        it.seek(layout.OFFSET_TAG)
        while it.valid() and it.key().startswith(layout.OFFSET_TAG):
            offsets[layout.parse_offset_key(it.key())] = layout.decode_int(it.value())
            it.next()
        it.seek(layout.POSITION_TAG)
        while it.valid() and it.key().startswith(layout.POSITION_TAG):
            p = layout.decode_position(it.value())
            pos[layout.parse_position_key(it.key())] = (p.cash, p.committed, p.version)
            it.next()
        return pos, offsets
    finally:
        db.close()


def _compare(
    expected: dict[PosKey, tuple[int, int]],
    versions: dict[PosKey, int],
    actual: dict[PosKey, tuple[int, int, int]],
    against: str,
    lag_ok: bool,
) -> tuple[list[Difference], int, int]:
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
        diffs.append(
            Difference(
                pk[0], pk[1], pk[2], against, exp[0], exp[1], got[0] if got else None, got[1] if got else None
            )
        )
    return diffs, lagging, krw


def topic_ends(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """The next offset after the last record of each (topic, partition) read."""
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        k = (r.topic, r.partition)
        if r.offset >= ends.get(k, 0):
            ends[k] = r.offset + 1
    return ends


def behind(
    ends: Mapping[tuple[str, int], int], offsets: Mapping[tuple[str, int], int], partitions: Iterable[int]
) -> dict[tuple[str, int], int]:
    """Records of ``partitions`` past a state's stored next offsets, per (topic, partition)."""
    parts = set(partitions)
    out = {}
    for (topic, p), end in ends.items():
        if p in parts and end > offsets.get((topic, p), 0):
            out[(topic, p)] = end - offsets.get((topic, p), 0)
    return out


def check_state(
    records: list[Record],
    state: dict[PosKey, tuple[int, int, int]],
    offsets: dict[tuple[str, int], int],
    partitions: Iterable[int] | None,
    settings: Settings,
    path: str = "",
) -> tuple[StateCheck, list[Difference]]:
    """One state directory's positions and stored offsets against the records of the topics.

    ``partitions``: the partitions its worker owns (owned mode), or None (stored mode: the
    partitions it has offsets for)."""
    n = settings.partitions
    mode = "stored" if partitions is None else "owned"
    parts = {p for (_, p) in offsets} if partitions is None else set(partitions)
    at = _fold(records, settings.max_event_bytes, offsets)
    exp = {pk: v for pk, v in at.positions().items() if partition_for(pk[0], n) in parts}
    act = {pk: v for pk, v in state.items() if partition_for(pk[0], n) in parts}
    diffs, _, krw = _compare(exp, at.versions(), act, "state", lag_ok=False)
    late = None if partitions is None else sum(behind(topic_ends(records), offsets, parts).values())
    return StateCheck(path, mode, sorted(parts), len(set(exp) | set(act)), krw, late), diffs


async def owned_from_heartbeats(
    settings: Settings, state_dirs: Iterable[Path], max_age_s: float = 5.0
) -> dict[Path, set[int]]:
    """The partitions each state directory's worker owns now, from the workers' heartbeats
    (Redis ``{ns}:freshness``, written every second with the worker's state directory).
    Raises ValueError for a directory without a live heartbeat (worker stopped or unknown)."""
    r = aioredis.from_url(settings.redis_url, socket_timeout=5)
    try:
        beats = await r.hgetall(RedisKeys(settings.namespace).freshness)
    finally:
        await r.aclose()
    now_ms = time.time() * 1000
    live: dict[Path, set[int]] = {}
    for raw in beats.values():
        b = orjson.loads(raw)
        if (
            isinstance(b, dict)
            and b.get("state_dir")
            and now_ms - b.get("heartbeat_ms", 0) < max_age_s * 1000
        ):
            live[Path(b["state_dir"]).resolve()] = set(b.get("partitions", []))
    out: dict[Path, set[int]] = {}
    missing = []
    for d in state_dirs:
        parts = live.get(Path(d).resolve())
        if parts is None:
            missing.append(str(d))
        else:
            out[Path(d)] = parts
    if missing:
        raise ValueError(f"no live worker heartbeat (younger than {max_age_s}s) for {', '.join(missing)}")
    return out


async def reconcile(
    settings: Settings,
    state_dirs: list[Path] | None = None,
    publish: bool = True,
    owned: Mapping[Path, Iterable[int]] | None = None,
) -> Report:
    """Redis and the state directories against a re-fold of the topics.

    ``owned``: the partitions each state directory's worker owns (owned mode, see the module's
    doc); its directories are compared as well as ``state_dirs``, which are then optional. A
    directory in ``state_dirs`` but not in ``owned`` is compared as stored."""
    t0 = time.perf_counter()
    owned = {Path(d): set(ps) for d, ps in (owned or {}).items()}
    dirs = list(dict.fromkeys([*map(Path, state_dirs or []), *owned]))
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
        states = []
        for d in dirs:
            state, offsets = _state_view(d)
            sc, sd = check_state(records, state, offsets, owned.get(d), settings, str(d))
            states.append(sc)
            diffs += sd
            krw += sc.diff_krw
            checked += sc.positions_checked
        counts = ref.counts()
        rejected = counts["rejected"]
        report = Report(
            finished_ms=int(time.time() * 1000),
            seconds=round(time.perf_counter() - t0, 3),
            records_in=len(records),
            applied=counts["applied"],
            duplicates=counts["duplicate"],
            dead_letters=sum(rejected.values()),
            positions_checked=checked,
            lagging=lagging,
            unseeded=unseeded,
            diff_krw=krw,
            differences=diffs[:100],
            state_behind=sum(sc.behind or 0 for sc in states),
            states=states,
            records_read=len(records),
        )
        if publish:
            await r.set(keys.reconciliation, msgspec.json.encode(report))
        return report
    finally:
        await r.aclose()
