"""RocksDB store of the ledger: positions, journal, commitments, time index and source offsets.

Each batch is one WriteBatch holding every changed record *and* the next source offset of each
partition it consumed, so the state on disk always equals the fold of exactly the events below
those offsets. The key layout and the codecs of every record are ``state.layout``'s (the only
module that spells them); ``Store`` owns the database: nobody else reads or writes ``db``
(``scan``, ``write`` and ``delete`` serve the alert book).

The journal's ids are scoped by side (``state.ledger.scoped_id``: ``r:`` revenue, ``e:``
expenditure). The state is derived from the input topics, the book of record: a store written
in another layout is deleted on open and the worker re-folds its partitions from the topics.

Durability: the write-ahead log is off. RocksDB applies a WriteBatch to one memtable atomically
and flushes whole memtables, so after a kill -9 the store reopens at the last flushed batch
boundary — balances and offsets together — and the worker replays from there (the same
trade Flink and Kafka Streams make). ``flush`` is called every few seconds to bound that replay.
The WAL would cost about 0.9 µs per event, most of the budget of a 100k events/s worker.

The ``i`` blocks (one per position and batch, not per event, to keep the hot path cheap) list
every change to a position, so a balance as of any instant is a prefix sum over them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

from cashpos.calendar import kst_day
from state import layout as L
from state.history import Chain, DayFlows
from state.layout import LAYOUT
from state.layout import journal_key as _journal_key  # the name the differential test uses
from state.ledger import (
    Changes,
    CommitKey,
    Commitment,
    EventKey,
    Journal,
    Ledger,
    Order,
    OrderKey,
    Position,
    PosKey,
    Schedule,
    ScheduleKey,
)
from state.native import kernel

__all__ = ["LAYOUT", "Store"]

log = logging.getLogger(__name__)
_SEQ = L.SEQ_KEY
_LAYOUT = L.LAYOUT_KEY
_JOURNAL_PREFIX = L.JOURNAL_PREFIX
_commit_key = L.commitment_key
_offset_key = L.offset_key


class Store:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        table = BlockBasedOptions()
        table.set_bloom_filter(10, False)  # most journal lookups are misses (new event ids)
        table.set_block_cache(Cache(256 * 1024 * 1024))
        opts.set_block_based_table_factory(table)
        # A bloom filter in the memtables too (WAL off: the recent journal lives there until a
        # flush): a multi-get of new ids then skips the skiplist search (preload −0.6 µs/event).
        opts.set_memtable_whole_key_filtering(True)
        opts.set_memtable_prefix_bloom_ratio(0.02)
        self.db = Rdict(str(path / "ledger"), opts)
        if self.db.get(_SEQ) is not None and self.db.get(_LAYOUT) != LAYOUT:
            log.warning(
                "state in %s has layout %r, not %r: deleting it, the partitions are "
                "re-folded from the topics",
                path,
                self.db.get(_LAYOUT),
                LAYOUT,
            )
            self.db.close()
            Rdict.destroy(str(path / "ledger"), opts)
            self.db = Rdict(str(path / "ledger"), opts)
        self.db[_LAYOUT] = LAYOUT
        wo = WriteOptions()
        wo.disable_wal = True  # type: ignore[method-assign,assignment]  # rocksdict.pyi: a method; it is a property
        self.db.set_write_options(wo)
        raw = self.db.get(_SEQ)
        self.seq = 0 if raw is None else L.decode_int(raw)

    def flush(self, wait: bool = False) -> None:
        """Persist everything written so far (bounds the replay after a crash)."""
        self.db.flush(wait)

    def close(self) -> None:
        self.db.flush(True)
        self.db.close()

    # -- reads --------------------------------------------------------------------------------

    def next_offset(self, topic: str, partition: int) -> int | None:
        raw = self.db.get(_offset_key(topic, partition))
        return None if raw is None else L.decode_int(raw)

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every key starting with ``prefix``, in key order, from ``start``
        (a key at or after ``prefix``) if given."""
        it = self.db.iter()
        it.seek(start or prefix)
        while it.valid():
            k = it.key()
            if not k.startswith(prefix):
                break
            yield k, it.value()
            it.next()

    _scan = scan

    def positions(self, org: str) -> dict[PosKey, Position]:
        out: dict[PosKey, Position] = {}
        for k, v in self.scan(L.positions_prefix(org)):
            out[L.parse_position_key(k)] = L.decode_position(v)
        return out

    def journal(self, org: str, sid: str) -> Journal | None:
        """The journal entry of ``sid`` (``state.ledger.scoped_id``)."""
        raw = self.db.get(_journal_key(org, sid))
        return None if raw is None else L.decode_journal(raw)

    def journal_entries(self, org: str) -> Iterator[tuple[str, Journal]]:
        for k, v in self.scan(L.journal_prefix(org)):
            yield L.journal_sid(k), L.decode_journal(v)

    def commitments(self, org: str) -> Iterator[tuple[str, Commitment]]:
        """Every commitment of ``org`` (the fold's ``scan_commitments``, for a year's close)."""
        for k, v in self.scan(L.commitments_prefix(org)):
            yield L.commitment_id(k), L.decode_commitment(v)

    def closes(self, org: str) -> dict[str, int]:
        """The last fiscal year each side of ``org`` closed: side -> year."""
        return {L.close_side(k): L.decode_int(v) for k, v in self.scan(L.closes_prefix(org))}

    def load(self, ledger: Ledger, org: str) -> None:
        """Put what the fold keeps in memory of ``org`` (positions, closed years) into ``ledger``."""
        ledger.positions.update(self.positions(org))
        for side, year in self.closes(org).items():
            ledger.closed[side][org] = year

    def commitment(self, org: str, cid: str) -> Commitment | None:
        raw = self.db.get(_commit_key(org, cid))
        return None if raw is None else L.decode_commitment(raw)

    def index(self, org: str, account: str, fy: int) -> list[tuple[int, str, int, int]]:
        """Every change to one position: (occurred_ms, event_id, cash delta, committed delta),
        in time order (ties in the order applied)."""
        rows: list[tuple[int, str, int, int]] = []
        for _, v in self.scan(L.index_prefix(org, account, fy)):
            rows += L.decode_index(v)
        rows.sort(key=lambda r: r[0])  # stable: applied order within the same instant
        return rows

    def rows_applied(self, pk: PosKey) -> list[tuple[int, str, int, int]]:
        """Every change to one position in the order applied (batch by batch): within a side,
        the order of its topic (``state.history.listing`` and the chains rely on it)."""
        blocks = sorted(
            ((L.index_seq(k), i, v) for i, (k, v) in enumerate(self.scan(L.index_prefix(*pk)))),
            key=lambda b: (b[0], b[1]),
        )
        rows: list[tuple[int, str, int, int]] = []
        for _, _, v in blocks:
            rows += L.decode_index(v)
        return rows

    def rows_of_day(self, pk: PosKey, day: int) -> list[tuple[int, str, int, int]]:
        """One position's rows of one event-time day, in the order applied."""
        rows: list[tuple[int, str, int, int]] = []
        for _, v in self.scan(L.index_prefix(pk[0], pk[1], pk[2], day)):
            rows += L.decode_index(v)
        return rows

    def flows(
        self, org: str, account: str | None = None, fy: int | None = None
    ) -> Iterator[tuple[PosKey, int, DayFlows]]:
        """Daily flows (``state.history.DayFlows``) of a government, in key order (position, day)."""
        for k, v in self.scan(L.flows_prefix(org, account, fy)):
            pk, day = L.parse_flows_key(k)
            yield pk, day, L.decode_flows(v)

    def known_days(self, org: str) -> Iterator[tuple[PosKey, int, tuple[int, int, int]]]:
        """The known-at axis's (cash, committed, events) per position and record-time day."""
        for k, v in self.scan(L.known_days_prefix(org)):
            pk, day = L.parse_known_day_key(k)
            yield pk, day, L.decode_sums(v)

    def known_rows_of_day(self, pk: PosKey, day: int) -> list[tuple[int, int, int]]:
        """One position's known-at rows of one record-time day: (recorded ms, cash, committed)."""
        rows: list[tuple[int, int, int]] = []
        for _, v in self.scan(L.known_prefix(pk, day)):
            rows += L.decode_known(v)
        return rows

    def chains(self, org: str) -> dict[PosKey, Chain]:
        return {L.parse_chain_key(k): L.decode_chain(v) for k, v in self.scan(L.chains_prefix(org))}

    def get(self, key: bytes) -> bytes | None:
        """One record as stored (a hook's point read)."""
        raw: bytes | None = self.db.get(key)
        return raw

    def journal_bytes(self, key: EventKey) -> bytes | None:
        """A journal entry as stored (the fold's ``load_journal``): one point read (once per
        event). Against a multi-get of the batch's keys it measured cheaper on a young store and
        equal on a grown one (docs/benchmarks.md)."""
        return self.db.get(_journal_key(key[0], key[1]))

    def commitment_at(self, key: CommitKey) -> Commitment | None:
        """A commitment (the fold's ``load_commitment``)."""
        raw = self.db.get(_commit_key(*key))
        return None if raw is None else L.decode_commitment(raw)

    def order_at(self, key: OrderKey) -> Order | None:
        """A payment order (the fold's ``load_order``)."""
        raw = self.db.get(L.order_key(*key))
        return None if raw is None else L.decode_order(raw)

    def schedule_at(self, key: ScheduleKey) -> Schedule | None:
        """An expected receipt's schedule (the fold's ``load_schedule``)."""
        raw = self.db.get(L.schedule_key(*key))
        return None if raw is None else L.decode_schedule(raw)

    def orders(self, org: str) -> Iterator[tuple[str, Order]]:
        """Every payment order of ``org`` (open or not), by order id."""
        for k, v in self.scan(L.orders_prefix(org)):
            yield L.last_part(k), L.decode_order(v)

    def schedules(self, org: str) -> Iterator[tuple[str, Schedule]]:
        """Every expected receipt's schedule of ``org``, by schedule id."""
        for k, v in self.scan(L.schedules_prefix(org)):
            yield L.last_part(k), L.decode_schedule(v)

    def attach(self, ledger: Ledger) -> Ledger:
        """Let the fold look up what its dicts lack in this store."""
        ledger.load_journal = self.journal_bytes
        ledger.load_commitment = self.commitment_at
        ledger.load_order = self.order_at
        ledger.load_schedule = self.schedule_at
        ledger.journal_source = (self.db.get, _JOURNAL_PREFIX)
        ledger.scan_commitments = self.commitments
        return ledger

    # -- the one write per batch ----------------------------------------------------------------

    def commit(
        self,
        changes: Changes,
        positions: dict[PosKey, Position],
        offsets: dict[tuple[str, int], int],
        extra: Iterable[tuple[bytes, bytes]] = (),
        deletes: Iterable[bytes] = (),
    ) -> None:
        """Write one batch atomically. ``extra`` are further records (e.g. alert state) that
        must land in the same write as the balances they derive from; ``deletes``, keys of such
        records that go with it."""
        wb = WriteBatch(raw_mode=True)
        put = wb.put
        enc = L.encode_record
        seq = self.seq + 1
        for pk, rows in changes.index.items():
            org, account, fy = pk
            p = positions[pk]
            put(L.position_key(org, account, fy), L.encode_position(p))
            first = kst_day(rows[0][0])
            if all(kst_day(r[0]) == first for r in rows):  # nearly always: one day a batch
                put(L.index_key(org, account, fy, first, seq), enc(rows))
                continue
            # runs of one day each, numbered: the blocks keep the order the rows were applied in
            run: list[tuple[int, str, int, int]] = []
            n = 0
            for r in rows:
                if run and kst_day(r[0]) != kst_day(run[0][0]):
                    put(L.index_key(org, account, fy, kst_day(run[0][0]), seq, n), enc(run))
                    run, n = [], n + 1
                run.append(r)
            put(L.index_key(org, account, fy, kst_day(run[0][0]), seq, n), enc(run))
        if kernel is not None:  # the same loop in C, keys built without f-strings
            kernel.put_journal(put, changes.journal, _JOURNAL_PREFIX, enc)
        else:
            for (org, eid), entry in changes.journal.items():
                put(_journal_key(org, eid), entry if entry.__class__ is bytes else enc(entry))
        for (org, cid), c in changes.commitments.items():
            put(_commit_key(org, cid), enc(c))
        for (org, oid), o in changes.orders.items():
            put(L.order_key(org, oid), enc(o))
        for (org, sid), sch in changes.schedules.items():
            put(L.schedule_key(org, sid), enc(sch))
        for (org, side), year in changes.closed.items():
            put(L.close_key(org, side), L.encode_int(year))
        for (topic, partition), nxt in offsets.items():
            put(_offset_key(topic, partition), L.encode_int(nxt))
        for k, v in extra:
            put(k, v)
        for k in deletes:
            wb.delete(k)
        put(_SEQ, L.encode_int(seq))
        self.db.write(wb)
        self.seq = seq

    # -- records outside a batch (the alert book's) -----------------------------------------------

    def write(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Put ``records`` in one atomic write (records of ``state.layout``, e.g. alert state
        produced outside a batch)."""
        wb = WriteBatch(raw_mode=True)
        for k, v in records:
            wb.put(k, v)
        self.db.write(wb)

    def delete(self, keys: Iterable[bytes]) -> None:
        """Delete ``keys`` in one atomic write."""
        wb = WriteBatch(raw_mode=True)
        for k in keys:
            wb.delete(k)
        self.db.write(wb)
