"""The RocksDB layout of a worker's state: every key tag, key builder, key parser and codec.

This module is the only place that spells a key of the store (``tests/test_format_owners.py``
checks it). ``state.store.Store`` owns the database handle; the alert book (``alerts.book``)
and ``cashpos reconcile`` (which opens a worker's store read-only) build and read keys and
values only through the functions here. The C kernel (``state/_kernel.c``) is given
``JOURNAL_PREFIX`` from Python.

Keys are a one byte tag and NUL-separated parts; the free-form id is always last, so keys are
unambiguous::

    p\\0{org}\\0{account}\\0{fy}                 -> [cash, committed, version, last_event_ms, received, ordered]
    j\\0{org}\\0{r|e}:{event_id}                -> Journal (what the event did, its raw bytes)
    j\\0{org}\\0l:{len(close_id)}:{close_id}:{commitment_id} -> Journal of a lapse at a close
    c\\0{org}\\0{commitment_id}                 -> Commitment
    w\\0{org}\\0{order_id}                      -> Order (a payment order, 지급명령)
    s\\0{org}\\0{schedule_id}                   -> Schedule (an expected receipt, 세입 예정)
    f\\0{org}\\0s\\0{day:06}                    -> Snapshot: the forecast made on that day (``state.forecast``)
    f\\0{org}\\0a                              -> Accuracy: the forecast against what happened
    i\\0{org}\\0{account}\\0{fy}\\0{day:06}\\0{seq:012}{run:05} -> [[occurred_ms, scoped id, cash delta, committed delta], ...]
                                             (a batch's run of rows of one event-time day, in application order)
    h\\0{org}\\0{account}\\0{fy}\\0{day:06}     -> DayFlows of that day (``state.history``)
    k\\0{org}\\0{account}\\0{fy}              -> Chain: the position's hash chains (``state.history``)
    o\\0{topic}\\0{partition}                   -> next offset to consume
    y\\0{org}\\0{revenue|expenditure}          -> the last fiscal year that side closed
    m\\0seq                                   -> sequence number of the last batch written
    m\\0layout                                -> LAYOUT: a store of another layout is rebuilt

Alert state (tag ``a``, written by ``alerts.book.AlertBook``; days are ``cashpos.calendar.kst_day``)::

    a\\0s\\0{org}\\0{account}\\0{fy}          -> PosRecord
    a\\0d\\0{org}\\0{account}\\0{fy}\\0{day:06} -> (outflow, net uncommitted flow) of one Korean day
    a\\0c\\0{org}\\0{commitment_id}          -> OpenCommitment (deleted when the commitment closes)
    a\\0m\\0{org}                            -> the open-commitment index of org is built
    a\\0g\\0{org}                            -> OrgRecord (stale-data alert)
    a\\0w\\0{worker_id}                      -> WorkerRecord (processor-lag alert)
    a\\0q\\0{org}\\0{alert_id}\\0{rev:06}      -> outbox: one alert change (JSON) not yet published

Values are msgpack (``encode_record``; the alert records' schemas are their ``msgspec`` structs
in ``alerts.model``), except offsets and the sequence number (decimal ASCII), the open-commitment
marker (``MARKER``) and the outbox (JSON).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from alerts.model import OpenCommitment, OrgRecord, PosRecord, WorkerRecord
from state.history import Chain, DayFlows
from state.ledger import Commitment, Journal, Order, Position, PosKey, Schedule

# 2: journal ids scoped by side, positions with `received`; 3: history; 4: the record timestamp in a
# journal entry's source and the known-at rows (`n`, `q`)
LAYOUT: Final = b"4"

POSITION_TAG: Final = b"p\0"
JOURNAL_PREFIX: Final = b"j\0"
COMMITMENT_TAG: Final = b"c\0"
ORDER_TAG: Final = b"w\0"
SCHEDULE_TAG: Final = b"s\0"
FORECAST_TAG: Final = b"f\0"
INDEX_TAG: Final = b"i\0"
FLOWS_TAG: Final = b"h\0"
CHAIN_TAG: Final = b"k\0"
KNOWN_TAG: Final = b"n\0"  # the known-at axis: rows per position, record-time day and batch
KNOWN_DAYS_TAG: Final = b"q\0"  # the known-at axis: (cash, committed, events) per position and day
RETIRED_TAG: Final = b"r\0"  # per government: the last fiscal year whose history is compacted
OFFSET_TAG: Final = b"o\0"
CLOSE_TAG: Final = b"y\0"
SEQ_KEY: Final = b"m\0seq"
LAYOUT_KEY: Final = b"m\0layout"

ALERT_TAG: Final = b"a\0"
OUTBOX_PREFIX: Final = b"a\0q\0"

_enc = msgspec.msgpack.Encoder()
encode_record = _enc.encode
_dec_journal = msgspec.msgpack.Decoder(Journal)
_dec_commit = msgspec.msgpack.Decoder(Commitment)
_dec_order = msgspec.msgpack.Decoder(Order)
_dec_schedule = msgspec.msgpack.Decoder(Schedule)
_dec_list = msgspec.msgpack.Decoder(list[int])
_dec_rows = msgspec.msgpack.Decoder(list[tuple[int, str, int, int]])
_dec_day = msgspec.msgpack.Decoder(tuple[int, int])
_dec_known = msgspec.msgpack.Decoder(list[tuple[int, int, int]])
_dec_sums = msgspec.msgpack.Decoder(tuple[int, int, int])
_dec_flows = msgspec.msgpack.Decoder(DayFlows)
_dec_chain = msgspec.msgpack.Decoder(Chain)
_dec_alert_pos = msgspec.msgpack.Decoder(PosRecord)
_dec_open = msgspec.msgpack.Decoder(OpenCommitment)
_dec_org = msgspec.msgpack.Decoder(OrgRecord)
_dec_worker = msgspec.msgpack.Decoder(WorkerRecord)
_enc_json = msgspec.json.Encoder()
_dec_json = msgspec.json.Decoder(dict[str, object])


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


# -- ledger records -------------------------------------------------------------------------------


def position_key(org: str, account: str, fy: int) -> bytes:
    return f"p\0{org}\0{account}\0{fy}".encode()


def positions_prefix(org: str | None = None) -> bytes:
    """Every position key (of ``org``, if given)."""
    return POSITION_TAG if org is None else f"p\0{org}\0".encode()


def parse_position_key(key: bytes) -> PosKey:
    _, org, account, fy = key.decode().split("\0")
    return (org, account, int(fy))


def encode_position(p: Position) -> bytes:
    if p.ordered:
        return _enc.encode((p.cash, p.committed, p.version, p.last_event_ms, p.received, p.ordered))
    return _enc.encode((p.cash, p.committed, p.version, p.last_event_ms, p.received))


def decode_position(raw: bytes) -> Position:
    return Position(*_dec_list.decode(raw))


def journal_key(org: str, sid: str) -> bytes:
    """The journal key of ``sid`` (``state.ledger.scoped_id``) of ``org``."""
    return f"j\0{org}\0{sid}".encode()


def journal_prefix(org: str) -> bytes:
    return f"j\0{org}\0".encode()


def journal_sid(key: bytes) -> str:
    """The scoped id of a journal key."""
    return key.decode().split("\0", 2)[2]


def decode_journal(raw: bytes) -> Journal:
    return _dec_journal.decode(raw)


def commitment_key(org: str, cid: str) -> bytes:
    return f"c\0{org}\0{cid}".encode()


def commitments_prefix(org: str) -> bytes:
    return f"c\0{org}\0".encode()


def commitment_id(key: bytes) -> str:
    """The commitment id of a commitment key."""
    return key.decode().split("\0", 2)[2]


def decode_commitment(raw: bytes) -> Commitment:
    return _dec_commit.decode(raw)


def order_key(org: str, oid: str) -> bytes:
    return f"w\0{org}\0{oid}".encode()


def orders_prefix(org: str) -> bytes:
    return f"w\0{org}\0".encode()


def decode_order(raw: bytes) -> Order:
    return _dec_order.decode(raw)


def schedule_key(org: str, sid: str) -> bytes:
    return f"s\0{org}\0{sid}".encode()


def schedules_prefix(org: str) -> bytes:
    return f"s\0{org}\0".encode()


def decode_schedule(raw: bytes) -> Schedule:
    return _dec_schedule.decode(raw)


def forecast_snapshot_key(org: str, day: int) -> bytes:
    return f"f\0{org}\0s\0{day:06}".encode()


def forecast_snapshots_prefix(org: str) -> bytes:
    return f"f\0{org}\0s\0".encode()


def forecast_accuracy_key(org: str) -> bytes:
    return f"f\0{org}\0a".encode()


def last_part(key: bytes) -> str:
    """The free-form id that ends a key (a commitment's, an order's, a schedule's)."""
    return key.decode().split("\0", 2)[2]


def close_key(org: str, side: str) -> bytes:
    """The last fiscal year a side of a government closed (``state.ledger.Ledger.closed``)."""
    return f"y\0{org}\0{side}".encode()


def closes_prefix(org: str) -> bytes:
    return f"y\0{org}\0".encode()


def close_side(key: bytes) -> str:
    return key.decode().split("\0", 2)[2]


def index_key(org: str, account: str, fy: int, day: int, seq: int, run: int = 0) -> bytes:
    """A batch's rows of a position on one day; ``run``: the n-th run of consecutive rows of one
    day in that batch (a batch whose rows go back and forth between days has several)."""
    return f"i\0{org}\0{account}\0{fy}\0{day:06d}\0{seq:012d}{run:05d}".encode()


def index_prefix(org: str, account: str, fy: int, day: int | None = None) -> bytes:
    """The rows of a position (of one event-time day, if given)."""
    if day is None:
        return f"i\0{org}\0{account}\0{fy}\0".encode()
    return f"i\0{org}\0{account}\0{fy}\0{day:06d}\0".encode()


def index_day(key: bytes) -> int:
    return int(key.split(b"\0")[4])


def index_seq(key: bytes) -> int:
    """Where an index block comes in the order applied: its batch's sequence number, then its run."""
    return int(key.split(b"\0")[5])


def flows_key(pk: PosKey, day: int) -> bytes:
    return f"h\0{pk[0]}\0{pk[1]}\0{pk[2]}\0{day:06d}".encode()


def flows_prefix(org: str, account: str | None = None, fy: int | None = None) -> bytes:
    """Daily flows of a government (of one account, of one of its fiscal years)."""
    parts = [org] + ([account] if account is not None else []) + ([str(fy)] if fy is not None else [])
    return FLOWS_TAG + "\0".join(parts).encode() + b"\0"


def parse_flows_key(key: bytes) -> tuple[PosKey, int]:
    _, org, account, fy, day = key.decode().split("\0")
    return (org, account, int(fy)), int(day)


def encode_flows(f: DayFlows) -> bytes:
    return _enc.encode(f)


def decode_flows(raw: bytes) -> DayFlows:
    return _dec_flows.decode(raw)


def chain_key(pk: PosKey) -> bytes:
    return f"k\0{pk[0]}\0{pk[1]}\0{pk[2]}".encode()


def chains_prefix(org: str) -> bytes:
    return f"k\0{org}\0".encode()


def parse_chain_key(key: bytes) -> PosKey:
    _, org, account, fy = key.decode().split("\0")
    return (org, account, int(fy))


def encode_chain(c: Chain) -> bytes:
    return _enc.encode(c)


def decode_chain(raw: bytes) -> Chain:
    return _dec_chain.decode(raw)


def decode_index(raw: bytes) -> list[tuple[int, str, int, int]]:
    return _dec_rows.decode(raw)


def known_key(pk: PosKey, day: int, seq: int) -> bytes:
    """A batch's known-at rows of a position on one Korean day of record time."""
    return f"n\0{pk[0]}\0{pk[1]}\0{pk[2]}\0{day:06d}\0{seq:012d}".encode()


def known_prefix(pk: PosKey, day: int) -> bytes:
    return f"n\0{pk[0]}\0{pk[1]}\0{pk[2]}\0{day:06d}\0".encode()


def encode_known(rows: list[tuple[int, int, int]]) -> bytes:
    return _enc.encode(rows)


def decode_known(raw: bytes) -> list[tuple[int, int, int]]:
    return _dec_known.decode(raw)


def known_day_key(pk: PosKey, day: int) -> bytes:
    return f"q\0{pk[0]}\0{pk[1]}\0{pk[2]}\0{day:06d}".encode()


def known_days_prefix(org: str) -> bytes:
    return f"q\0{org}\0".encode()


def parse_known_day_key(key: bytes) -> tuple[PosKey, int]:
    _, org, account, fy, day = key.decode().split("\0")
    return (org, account, int(fy)), int(day)


def encode_sums(sums: tuple[int, int, int]) -> bytes:
    """(cash, committed, events) of a position's known rows of one day."""
    return _enc.encode(sums)


def decode_sums(raw: bytes) -> tuple[int, int, int]:
    return _dec_sums.decode(raw)


def retired_key(org: str) -> bytes:
    return f"r\0{org}".encode()


def known_rows_prefix(pk: PosKey) -> bytes:
    """Every known-at row block of a position (all record-time days)."""
    return f"n\0{pk[0]}\0{pk[1]}\0{pk[2]}\0".encode()


def offset_key(topic: str, partition: int) -> bytes:
    return f"o\0{topic}\0{partition}".encode()


def parse_offset_key(key: bytes) -> tuple[str, int]:
    _, topic, part = key.decode().split("\0")
    return (topic, int(part))


def encode_int(n: int) -> bytes:
    """Offsets and the batch sequence number: decimal ASCII."""
    return str(n).encode()


def decode_int(raw: bytes) -> int:
    return int(raw)


# -- alert records (``alerts.book``) --------------------------------------------------------------

MARKER: Final = b"1"


def encode_alert_record(rec: PosRecord | OpenCommitment | OrgRecord | WorkerRecord) -> bytes:
    return _enc.encode(rec)


def decode_alert_pos(raw: bytes) -> PosRecord:
    return _dec_alert_pos.decode(raw)


def decode_open(raw: bytes) -> OpenCommitment:
    return _dec_open.decode(raw)


def decode_org_record(raw: bytes) -> OrgRecord:
    return _dec_org.decode(raw)


def decode_worker_record(raw: bytes) -> WorkerRecord:
    return _dec_worker.decode(raw)


def alert_pos_key(pk: PosKey) -> bytes:
    return f"a\0s\0{pk[0]}\0{pk[1]}\0{pk[2]}".encode()


def alert_pos_prefix(org: str) -> bytes:
    return f"a\0s\0{org}\0".encode()


def parse_alert_pos_key(key: bytes) -> PosKey:
    _, _, org, account, fy = key.decode().split("\0")
    return (org, account, int(fy))


def day_key(pk: PosKey, day: int) -> bytes:
    return f"a\0d\0{pk[0]}\0{pk[1]}\0{pk[2]}\0{day:06d}".encode()


def day_prefix(pk: PosKey) -> bytes:
    """Every day key of one position; ``day_start`` gives the first key of a day on."""
    return f"a\0d\0{pk[0]}\0{pk[1]}\0{pk[2]}\0".encode()


def day_start(prefix: bytes, day: int) -> bytes:
    return prefix + f"{day:06d}".encode()


def day_of_key(prefix: bytes, key: bytes) -> int:
    return int(key[len(prefix) :])


def encode_day(bucket: Sequence[int]) -> bytes:
    """A day's bucket: (outflow, net uncommitted flow)."""
    return _enc.encode(bucket)


def decode_day(raw: bytes) -> tuple[int, int]:
    return _dec_day.decode(raw)


def open_key(org: str, cid: str) -> bytes:
    return f"a\0c\0{org}\0{cid}".encode()


def open_prefix(org: str) -> bytes:
    return f"a\0c\0{org}\0".encode()


def open_cid(key: bytes) -> str:
    """The commitment id of an open-commitment key."""
    return key.decode().split("\0", 3)[3]


def marker_key(org: str) -> bytes:
    return f"a\0m\0{org}".encode()


def org_key(org: str) -> bytes:
    return f"a\0g\0{org}".encode()


def worker_key(worker_id: str) -> bytes:
    return f"a\0w\0{worker_id}".encode()


def outbox_key(org: str, alert_id: str, rev: int) -> bytes:
    return f"a\0q\0{org}\0{alert_id}\0{rev:06d}".encode()


def encode_outbox(change: Mapping[str, object]) -> bytes:
    """An outbox record: the alert change in its public JSON shape (``alerts.model.alert_dict``)."""
    return _enc_json.encode(change)


def decode_outbox(raw: bytes) -> dict[str, object]:
    return _dec_json.decode(raw)
