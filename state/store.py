"""RocksDB store of the ledger: positions, journal, commitments, time index and source offsets.

Each batch is one WriteBatch holding every changed record *and* the next source offset of each
partition it consumed, so the state on disk always equals the fold of exactly the events below
those offsets. Key layout (one byte tag, NUL-separated; the free-form id is always last, so keys
are unambiguous):

    p\0{org}\0{account}\0{fy}                 -> [cash, committed, version, last_event_ms]
    j\0{org}\0{event_id}                      -> Journal (what the event did, its raw bytes)
    c\0{org}\0{commitment_id}                 -> Commitment
    i\0{org}\0{account}\0{fy}\0{ms:013}\0{id} -> [cash delta, committed delta]  (as-of queries)
    o\0{topic}\0{partition}                   -> next offset to consume
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec
from rocksdict import Options, Rdict, WriteBatch

from state.ledger import Changes, Commitment, CommitKey, EventKey, Journal, Ledger, PosKey, Position

_enc = msgspec.msgpack.Encoder()
_dec_journal = msgspec.msgpack.Decoder(Journal)
_dec_commit = msgspec.msgpack.Decoder(Commitment)
_dec_list = msgspec.msgpack.Decoder(list[int])


def _pos_key(org: str, account: str, fy: int) -> bytes:
    return f"p\0{org}\0{account}\0{fy}".encode()


def _journal_key(org: str, event_id: str) -> bytes:
    return f"j\0{org}\0{event_id}".encode()


def _commit_key(org: str, cid: str) -> bytes:
    return f"c\0{org}\0{cid}".encode()


def _offset_key(topic: str, partition: int) -> bytes:
    return f"o\0{topic}\0{partition}".encode()


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Store:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(str(path / "ledger"), opts)

    def close(self) -> None:
        self.db.close()

    # -- reads --------------------------------------------------------------------------------

    def next_offset(self, topic: str, partition: int) -> int | None:
        raw = self.db.get(_offset_key(topic, partition))
        return None if raw is None else int(raw)

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(prefix)
        end = _prefix_end(prefix)
        while it.valid():
            k = it.key()
            if k >= end:
                break
            yield k, it.value()
            it.next()

    def positions(self, org: str) -> dict[PosKey, Position]:
        out: dict[PosKey, Position] = {}
        for k, v in self._scan(f"p\0{org}\0".encode()):
            _, o, account, fy = k.decode().split("\0")
            cash, committed, version, last = _dec_list.decode(v)
            out[(o, account, int(fy))] = Position(cash, committed, version, last)
        return out

    def journal(self, org: str, event_id: str) -> Journal | None:
        raw = self.db.get(_journal_key(org, event_id))
        return None if raw is None else _dec_journal.decode(raw)

    def journal_entries(self, org: str) -> Iterator[tuple[str, Journal]]:
        for k, v in self._scan(f"j\0{org}\0".encode()):
            yield k.decode().split("\0", 2)[2], _dec_journal.decode(v)

    def commitment(self, org: str, cid: str) -> Commitment | None:
        raw = self.db.get(_commit_key(org, cid))
        return None if raw is None else _dec_commit.decode(raw)

    def index(self, org: str, account: str, fy: int) -> Iterator[tuple[int, str, int, int]]:
        """(occurred_ms, event_id, cash delta, committed delta) in time order."""
        for k, v in self._scan(f"i\0{org}\0{account}\0{fy}\0".encode()):
            parts = k.decode().split("\0", 5)
            dc, dm = _dec_list.decode(v)
            yield int(parts[4]), parts[5], dc, dm

    def preload(self, ledger: Ledger, ev_keys: Iterable[EventKey], c_keys: Iterable[CommitKey]) -> None:
        """Load what a batch may read into the fold's dicts (one multi-get each)."""
        ek = [k for k in ev_keys if k not in ledger.journal]
        if ek:
            for k, raw in zip(ek, self.db[[_journal_key(*k) for k in ek]]):
                if raw is not None:
                    ledger.journal[k] = _dec_journal.decode(raw)
        ck = [k for k in c_keys if k not in ledger.commitments]
        if ck:
            for k, raw in zip(ck, self.db[[_commit_key(*k) for k in ck]]):
                if raw is not None:
                    ledger.commitments[k] = _dec_commit.decode(raw)

    # -- the one write per batch ----------------------------------------------------------------

    def commit(
        self,
        changes: Changes,
        positions: dict[PosKey, Position],
        offsets: dict[tuple[str, int], int],
    ) -> None:
        wb = WriteBatch(raw_mode=True)
        put = wb.put
        for pk in changes.positions:
            p = positions[pk]
            put(_pos_key(*pk), _enc.encode((p.cash, p.committed, p.version, p.last_event_ms)))
        for (org, eid), entry in changes.journal.items():
            put(_journal_key(org, eid), _enc.encode(entry))
        for (org, cid), c in changes.commitments.items():
            put(_commit_key(org, cid), _enc.encode(c))
        for org, account, fy, ms, eid, dc, dm in changes.index:
            put(f"i\0{org}\0{account}\0{fy}\0{ms:013d}\0{eid}".encode(), _enc.encode((dc, dm)))
        for (topic, partition), nxt in offsets.items():
            put(_offset_key(topic, partition), str(nxt).encode())
        self.db.write(wb)
