"""The continuous reconciler's checkpoint: the reference fold's state and the offsets it has read
up to, in one file, so the two are always consistent.

Written atomically (a temporary file in the same directory, fsync, rename, fsync of the
directory): a crash leaves the previous checkpoint or the new one, never a part. The file is a
magic line, the header's length, the header and the body (both msgpack); the header is read
first, so a checkpoint of another format or contract version is discarded without decoding a
body it may not fit.

The reference's records are shared between its dictionaries (a commitment's record is in
``by_id`` and ``opened_by``; a reversal marks its target in place), so they are written once, as
rows in ``by_id``'s order, and every other dictionary names rows by their index. Events are
kept as their JSON (msgspec's, which keeps the time zone of ``occurred_at``) and decoded
strictly again on load. A field added to :class:`Reference` fails
``tests/test_reconcile_continuous.py`` until it is written here (and FORMAT_VERSION raised).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from reconcile.incremental import Incremental
from reconcile.reference import Accepted, PosKey
from streams.contract import CONTRACT_VERSION, Event, YearClose

MAGIC = b"cashpos-reconcile-checkpoint\n"
FORMAT_VERSION = 1
FILE_NAME = "checkpoint.bin"

# the fields of Reference (and Incremental) this module writes; a test holds it to the dataclass
WRITTEN = frozenset(
    {
        "log",  # compacted (empty) when written
        "by_id",
        "share",
        "open_total",
        "opened_by",
        "consumers",
        "carried_to",
        "lapsed",
        "orders",
        "orders_of",
        "schedule_log",
        "closed",
        "outcomes",  # compacted (empty) when written
        "max_bytes",
        "cash",
        "committed",
        "version",
        "applied",
        "duplicate",
        "rejected",
    }
)


class Header(msgspec.Struct, frozen=True):
    format: int
    contract: int
    namespace: str
    partitions: int
    written_ms: int
    records: int  # records folded since offset 0


class Row(msgspec.Struct, array_like=True):
    """One accepted record of ``by_id``: its side, its event (JSON) and what it did."""

    side: str
    close: bool  # the event is a fiscal_year_close
    event: bytes
    deltas: list[tuple[str, str, int, int, int]]  # org, account, fiscal year, cash, committed
    released: int
    reversed_by: str | None
    took: list[tuple[str, int]]
    executed: int


class Body(msgspec.Struct, array_like=True):
    offsets: list[tuple[str, int, int]]  # topic, partition, next offset
    max_bytes: int
    rows: list[Row]
    share: list[tuple[str, str, int, str, int]]  # org, account, fy, side, net cash of that side
    open_total: list[tuple[str, str, int, int]]
    opened_by: list[tuple[str, str, int]]  # org, commitment id, row
    consumers: list[tuple[str, str, list[int]]]
    carried_to: list[tuple[str, str, int]]
    lapsed: list[tuple[str, str]]
    orders: list[tuple[str, str, int]]  # org, order id, row
    orders_of: list[tuple[str, str, list[int]]]
    schedule_log: list[tuple[str, str, list[int]]]
    closed: list[tuple[str, str, int]]
    positions: list[tuple[str, str, int, int, int, int]]  # org, account, fy, cash, committed, version
    applied: int
    duplicate: int
    rejected: dict[str, int]


Offsets = dict[tuple[str, int], int]


@dataclass
class Checkpoint:
    header: Header
    ref: Incremental
    offsets: Offsets


class Discarded(Exception):
    """A checkpoint that cannot be resumed from (the message says why): re-fold from offset 0."""


_json = msgspec.json.Encoder()
_enc = msgspec.msgpack.Encoder().encode
_event = msgspec.json.Decoder(Event)
_close = msgspec.json.Decoder(YearClose)
_header = msgspec.msgpack.Decoder(Header)
_body = msgspec.msgpack.Decoder(Body)


def _pk(t: tuple[str, str, int, int, int] | tuple[str, str, int, int]) -> PosKey:
    return (t[0], t[1], t[2])


def _array(n: int) -> bytes:
    """A msgpack array's header (an array_like Struct is an array of its fields)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def encode_chunks(ref: Incremental, offsets: Offsets, header: Header) -> Iterator[bytes]:
    """The file's bytes for ``ref`` (compacted first) read up to ``offsets``, in pieces: exactly
    msgspec's encoding of the header and of a :class:`Body`, but each accepted record's row is
    encoded on its own as it is written, so writing a checkpoint holds no second copy of the
    state (built whole, the rows and the file's bytes took 1.4 KB per event more)."""
    ref.compact()
    head = _enc(header)
    yield MAGIC + len(head).to_bytes(4, "big") + head
    index: dict[int, int] = {}  # id(record) -> row

    def rows() -> Iterator[bytes]:
        yield _array(len(ref.by_id))
        out = []
        for i, ((_org, side, _id), rec) in enumerate(ref.by_id.items()):
            assert rec.lapse_of is None, "a lapse is never accepted by id"
            index[id(rec)] = i
            row = Row(
                side,
                isinstance(rec.event, YearClose),
                _json.encode(rec.event),
                [(*pk, dc, dm) for pk, dc, dm in rec.deltas],
                rec.released,
                rec.reversed_by,
                list(rec.took),
                rec.executed,
            )
            out.append(_enc(row))
            if len(out) == 10_000:
                yield b"".join(out)
                out = []
        yield b"".join(out)

    def many(d: dict[tuple[str, str], list[Accepted]]) -> list[tuple[str, str, list[int]]]:
        return [(a, b, [index[id(r)] for r in recs]) for (a, b), recs in d.items()]

    # Body's fields in its order (rows first of those naming rows: they fill ``index``)
    fields: dict[str, Callable[[], object]] = {
        "offsets": lambda: [(t, p, o) for (t, p), o in offsets.items()],
        "max_bytes": lambda: ref.max_bytes,
        "share": lambda: [(*pk, side, n) for (pk, side), n in ref.share.items()],
        "open_total": lambda: [(*pk, n) for pk, n in ref.open_total.items()],
        "opened_by": lambda: [(o, c, index[id(r)]) for (o, c), r in ref.opened_by.items()],
        "consumers": lambda: many(ref.consumers),
        "carried_to": lambda: [(o, c, fy) for (o, c), fy in ref.carried_to.items()],
        "lapsed": lambda: sorted(ref.lapsed),
        "orders": lambda: [(o, c, index[id(r)]) for (o, c), r in ref.orders.items()],
        "orders_of": lambda: many(ref.orders_of),
        "schedule_log": lambda: many(ref.schedule_log),
        "closed": lambda: [(o, s, y) for (o, s), y in ref.closed.items()],
        "positions": lambda: [
            (*pk, c, ref.committed[pk], ref.version.get(pk, 0)) for pk, c in ref.cash.items()
        ],
        "applied": lambda: ref.applied,
        "duplicate": lambda: ref.duplicate,
        "rejected": lambda: dict(ref.rejected),
    }
    assert set(fields) | {"rows"} == set(Body.__struct_fields__)
    yield _array(len(Body.__struct_fields__))
    for name in Body.__struct_fields__:
        if name == "rows":
            yield from rows()
        else:
            yield _enc(fields[name]())


def encode(ref: Incremental, offsets: Offsets, header: Header) -> bytes:
    """The whole file's bytes (:func:`encode_chunks` joined)."""
    return b"".join(encode_chunks(ref, offsets, header))


def read_header(data: bytes) -> tuple[Header, int]:
    """The header and where the body starts; Discarded if the file is no checkpoint."""
    if not data.startswith(MAGIC):
        raise Discarded("not a checkpoint file")
    at = len(MAGIC)
    n = int.from_bytes(data[at : at + 4], "big")
    try:
        return _header.decode(data[at + 4 : at + 4 + n]), at + 4 + n
    except msgspec.DecodeError as exc:
        raise Discarded(f"unreadable header: {exc}") from exc


def decode(data: bytes, namespace: str, partitions: int) -> Checkpoint:
    """The checkpoint in ``data``; Discarded if it is of another format, contract version,
    namespace or partition count, or unreadable."""
    header, start = read_header(data)
    if header.format != FORMAT_VERSION:
        raise Discarded(f"checkpoint format {header.format}, this version reads {FORMAT_VERSION}")
    if header.contract != CONTRACT_VERSION:
        raise Discarded(f"event contract version {header.contract}, this version is {CONTRACT_VERSION}")
    if (header.namespace, header.partitions) != (namespace, partitions):
        raise Discarded(
            f"checkpoint of namespace {header.namespace!r} with {header.partitions} partitions, "
            f"not {namespace!r} with {partitions}"
        )
    try:
        body = _body.decode(data[start:])
        recs = [
            Accepted(
                _close.decode(row.event) if row.close else _event.decode(row.event),
                [((o, a, fy), dc, dm) for o, a, fy, dc, dm in row.deltas],
                row.released,
                row.reversed_by,
                took=list(row.took),
                executed=row.executed,
            )
            for row in body.rows
        ]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Discarded(f"unreadable body: {exc}") from exc
    ref = Incremental(max_bytes=body.max_bytes)
    ref.by_id = {(r.event.org_code, row.side, r.event.event_id): r for r, row in zip(recs, body.rows)}
    ref.share = {((o, a, fy), side): n for o, a, fy, side, n in body.share}
    ref.open_total = {_pk(t): t[3] for t in body.open_total}
    ref.opened_by = {(o, c): recs[i] for o, c, i in body.opened_by}
    ref.consumers = {(o, c): [recs[i] for i in ix] for o, c, ix in body.consumers}
    ref.carried_to = {(o, c): fy for o, c, fy in body.carried_to}
    ref.lapsed = {(o, c) for o, c in body.lapsed}
    ref.orders = {(o, c): recs[i] for o, c, i in body.orders}
    ref.orders_of = {(o, c): [recs[i] for i in ix] for o, c, ix in body.orders_of}
    ref.schedule_log = {(o, s): [recs[i] for i in ix] for o, s, ix in body.schedule_log}
    ref.closed = {(o, s): y for o, s, y in body.closed}
    for o, a, fy, cash, committed, version in body.positions:
        ref.cash[(o, a, fy)] = cash
        ref.committed[(o, a, fy)] = committed
        if version:
            ref.version[(o, a, fy)] = version
    ref.applied, ref.duplicate, ref.rejected = body.applied, body.duplicate, dict(body.rejected)
    return Checkpoint(header, ref, {(t, p): o for t, p, o in body.offsets})


def write(directory: Path, data: bytes | Iterable[bytes]) -> int:
    """Replace ``directory``'s checkpoint with ``data`` (or its pieces) atomically; returns its size."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / FILE_NAME
    tmp = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
    size = 0
    with open(tmp, "wb") as f:
        for chunk in [data] if isinstance(data, bytes) else data:
            size += f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)
    return size


def read(directory: Path) -> bytes | None:
    """The checkpoint file's bytes, or None when there is none."""
    try:
        return (directory / FILE_NAME).read_bytes()
    except FileNotFoundError:
        return None
