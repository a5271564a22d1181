"""`cashpos verify ORG ACCOUNT FY`: a position's hash-chain head re-computed from the input topics
alone, against the head the service reports (the API, or a worker's state directory).

The topics are read from offset 0 (both input topics' partition of ORG) and folded by the
independent reference fold (``reconcile.reference``, no code shared with ``state.ledger``); the
rows each applied event gives a position are derived from the reference's decisions, and the
chain is hashed here again from its documented definition (``state/history.py``, docs/design.md):
per position and side, in the order of the side's topic partition,
``link = BLAKE2b-256(prev ‖ msgpack((sid, occurred_ms, cash, committed)) ‖ BLAKE2b-256(raw))``
from 32 zero bytes; head = ``BLAKE2b-256("cashpos-chain-v1" ‖ revenue link ‖ expenditure link)``.
Hashed here, not by ``state.history.Chain``: a fault in the service's hashing then shows as a
mismatch instead of being repeated.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from cashpos.names import EXPENDITURE, REVENUE, Topics, side_of_topic
from cashpos.settings import Settings
from reconcile.reference import Reference
from state.history import CHAIN_DOMAIN
from state.ledger import lapse_id, side_scoped_id
from streams.contract import Event, epoch_ms, side_of
from streams.reader import Record
from streams.topics import partition_for

PosKey = tuple[str, str, int]
_msgpack = msgspec.msgpack.Encoder().encode

MATCH, MISMATCH, UNAVAILABLE, BEHIND = 0, 1, 2, 3  # exit codes of `cashpos verify`


@dataclass(frozen=True, slots=True)
class Row:
    """One applied event's effect on one position, as the chain hashes it."""

    sid: str  # the journal's name: side tag + event_id, or a lapse's name
    ms: int  # occurred_at, epoch ms
    cash: int
    committed: int
    raw: bytes  # the record's value exactly as read (b"" for a lapse)


@dataclass
class Chains:
    """A position's rows per side, in each side's topic order."""

    revenue: list[Row] = field(default_factory=list)
    expenditure: list[Row] = field(default_factory=list)

    @property
    def events(self) -> int:
        return len(self.revenue) + len(self.expenditure)


def _links(rows: Iterable[Row]) -> bytes:
    prev = bytes(32)
    for r in rows:
        digest = hashlib.blake2b(r.raw, digest_size=32).digest()
        prev = hashlib.blake2b(
            prev + _msgpack((r.sid, r.ms, r.cash, r.committed)) + digest, digest_size=32
        ).digest()
    return prev


def head(c: Chains) -> tuple[str, str, str]:
    """(head, revenue link, expenditure link), hex."""
    rev, exp = _links(c.revenue), _links(c.expenditure)
    return hashlib.blake2b(CHAIN_DOMAIN + rev + exp, digest_size=32).hexdigest(), rev.hex(), exp.hex()


def position_rows(records: Iterable[Record], org: str, max_bytes: int = 8192) -> dict[PosKey, Chains]:
    """The chain rows of every position of ``org`` from ``records`` (input-topic records, each
    topic's in offset order; how the two topics interleave does not matter: no verdict of one
    side depends on the other's events)."""
    ref = Reference(max_bytes=max_bytes)
    out: dict[PosKey, Chains] = {}

    def add(pk: PosKey, side: str, row: Row) -> None:
        c = out.setdefault(pk, Chains())
        (c.revenue if side == REVENUE else c.expenditure).append(row)

    for rec in records:
        side = side_of_topic(rec.topic)
        n = len(ref.log)
        if ref.feed_record(rec.value, side, rec.key) != "applied":
            continue
        first, *lapses = ref.log[n:]
        ev = first.event
        if ev.org_code != org:
            continue
        ms = epoch_ms(ev.occurred_at)
        # a close's lapses (expenditure side, its commitments in id order) precede the close's
        # own rows, as the service applies them
        for lapse in lapses:
            for pk, dc, dm in lapse.deltas:
                add(pk, EXPENDITURE, Row(lapse_id(ev.event_id, lapse.lapse_of or ""), ms, dc, dm, b""))
        ev_side = side_of(ev.kind) if isinstance(ev, Event) else side  # a close: its topic's
        sid = side_scoped_id(ev_side, ev.event_id)
        for pk, dc, dm in first.deltas:
            add(pk, ev_side, Row(sid, ms, dc, dm, rec.value))
    return out


def expected(
    records: Iterable[Record], org: str, account: str, fy: int, max_bytes: int = 8192
) -> tuple[tuple[str, str, str] | None, int]:
    """The head (with both links) one position's chain has after ``records``, and its number of
    rows; None when no applied event touched it."""
    c = position_rows(records, org, max_bytes).get((org, account, fy))
    return (None, 0) if c is None else (head(c), c.events)


async def read_partition(settings: Settings, org: str, timeout_s: float = 60.0) -> list[Record]:
    """Every record of both input topics' partition of ``org``, from offset 0 to the end (the
    high watermark a fetch reports; ListOffsets is avoided as in ``streams.reader``): revenue's
    in offset order, then expenditure's."""
    topics = Topics(settings.namespace)
    p = partition_for(org, settings.partitions)
    tps = [TopicPartition(topics.revenue, p), TopicPartition(topics.expenditure, p)]
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_args(),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        got: dict[str, list[Record]] = {tp.topic: [] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for tp, recs in batch.items():
                got[tp.topic] += [
                    Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value or b"") for r in recs
                ]
            done = True
            for tp in tps:
                hw = consumer.highwater(tp)
                done = done and hw is not None and await consumer.position(tp) >= hw
            if done:
                return [r for t in (topics.revenue, topics.expenditure) for r in got[t]]
            if time.monotonic() > deadline:
                raise TimeoutError(f"partition {p}: end not reached within {timeout_s}s")
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Reported:
    """The head the service reports for a position, and how many rows its chain holds (None:
    not said)."""

    head: str | None
    revenue: str | None = None
    expenditure: str | None = None
    events: int | None = None
    where: str = ""


def api_head(api: str, token: str, org: str, account: str, fy: int, timeout: float = 20.0) -> Reported:
    """``GET /v1/positions/{org}/{account}/events?fiscal_year=&limit=1``'s chain; retried while
    the API answers 503 (no caught-up owner), up to ``timeout`` seconds. Raises RuntimeError
    with the last answer otherwise."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api, timeout=10, trust_env=False) as c:
        while True:
            r = c.get(
                f"/v1/positions/{org}/{account}/events",
                params={"fiscal_year": fy, "limit": 1},
                headers={"Authorization": f"Bearer {token}"},
            )
            if r.status_code == 200:
                body = r.json()
                ch = body.get("chain") or {}
                return Reported(ch.get("head"), ch.get("revenue"), ch.get("expenditure"), body["total"], api)
            if r.status_code != 503 or time.monotonic() > deadline:
                raise RuntimeError(f"{api} answered {r.status_code}: {r.text[:300]}")
            time.sleep(0.5)


def state_head(state_dir: Path, org: str, account: str, fy: int) -> Reported:
    """The chain a worker's state directory holds (opened read-only beside the worker: only
    flushed data is visible). A worker that gave the partition away keeps a stale chain: ask
    the owning worker's directory."""
    from rocksdict import AccessType, Options, Rdict

    from state import layout

    db = Rdict(str(state_dir / "ledger"), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        raw = db.get(layout.chain_key((org, account, fy)))
    finally:
        db.close()
    if raw is None:
        return Reported(None, events=0, where=str(state_dir))
    c = layout.decode_chain(raw)
    return Reported(
        c.head, c.revenue.hex(), c.expenditure.hex(), c.revenue_events + c.expenditure_events, str(state_dir)
    )


def default_api(settings: Settings) -> str:
    """The API's address from its settings (a wildcard bind is reached on the loopback)."""
    host = settings.api_host if settings.api_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.api_port}"


def judge(want: tuple[str, str, str] | None, rows: int, got: Reported) -> tuple[int, list[str]]:
    """The exit code and the verdict's lines: MATCH, BEHIND (the reported chain holds fewer
    rows than the topics give: its worker has not folded them all yet) or MISMATCH (naming the
    side whose link differs)."""
    if got.head == (want[0] if want else None):
        return MATCH, ["MATCH"]
    if got.events is not None and got.events < rows:
        return BEHIND, [f"BEHIND: the reported chain holds {got.events} of {rows} rows"]
    lines = []
    if want is not None:
        for side, mine, theirs in (
            ("revenue", want[1], got.revenue),
            ("expenditure", want[2], got.expenditure),
        ):
            if theirs is not None and mine != theirs:
                lines.append(f"  the {side} link differs: topics {mine}, reported {theirs}")
    return MISMATCH, [*lines, "MISMATCH"]
