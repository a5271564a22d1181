"""aiokafka batches without a ConsumerRecord per message, for the ledger's hot path.

aiokafka's C parser yields one record object per message; the fetcher then wraps each in a
``ConsumerRecord`` dataclass through three Python calls (a generator step, ``__next__`` and
``_consumer_record``): about 1 µs per message, a tenth of a 100k events/s worker's budget.
A consumer created with ``value_deserializer=RAW`` gets the parser's records as they are:
``offset``, ``timestamp``, ``key`` and ``value`` (bytes), but no ``topic`` or ``partition`` —
``getmany`` already groups them by ``TopicPartition``. Every other consumer in the process is
untouched.

This reaches into aiokafka's fetcher (``PartitionRecords``), so pyproject pins aiokafka exactly
and ``tests/test_lean_records.py`` fails if an upgrade changes what is relied on here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.consumer import fetcher as _fetcher


class RawRecord(Protocol):
    """What a RAW consumer's ``getmany`` returns per message."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(slots=True)
class LeanRecord:
    """A ``RawRecord`` made by hand (tests, benchmarks): what the lean fetcher hands the worker."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


def RAW(value: bytes | None) -> bytes | None:  # upper case: a marker, used like a constant
    """The value deserializer that selects lean records (never called by the fetcher)."""
    return value


_Original = _fetcher.PartitionRecords


class _LeanPartitionRecords(_fetcher.PartitionRecords):  # the same class as _Original
    next_fetch_offset: int  # set by aiokafka's __init__

    def __iter__(self) -> Any:
        # FetchResult.getall loops ``for msg in partition_records``: hand it the generator
        # itself, so each message costs one generator step instead of three Python calls.
        return self._records_iterator if self._records_iterator is not None else iter(())

    def _consumer_record(self, tp: Any, record: Any) -> Any:
        return record

    def _unpack_records(self) -> Any:
        if self._isolation_level == _fetcher.READ_COMMITTED:  # aborted transactions: aiokafka's own logic
            yield from super()._unpack_records()
            return
        records = self._records
        check_crcs = self._check_crcs
        while records.has_next():
            batch = records.next_batch()
            if check_crcs and not batch.validate_crc():
                raise _fetcher.Errors.CorruptRecordException(f"Invalid CRC - {self._tp}")
            if not batch.is_control_batch:
                for record in batch:
                    offset = record.offset
                    if offset >= self.next_fetch_offset:  # older ones: a compressed set's head
                        self.next_fetch_offset = offset + 1
                        yield record
            self.next_fetch_offset = batch.next_offset


def _partition_records(
    tp: Any,
    records: Any,
    aborted: Any,
    fetch_offset: int,
    key_deserializer: Any,
    value_deserializer: Any,
    *rest: Any,
) -> Any:
    cls = _LeanPartitionRecords if value_deserializer is RAW else _Original
    return cls(tp, records, aborted, fetch_offset, key_deserializer, value_deserializer, *rest)


def install() -> None:
    """Route RAW consumers' fetches through the lean records (idempotent)."""
    _fetcher.PartitionRecords = _partition_records
