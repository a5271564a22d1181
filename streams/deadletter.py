"""The dead-letter record: why an input was refused, where it came from, its exact bytes.

Keyed by ``{topic}:{partition}:{offset}`` (the source coordinates), which makes the rare
re-send after a crash recognisable as the same dead letter.

A dead letter always fits the broker, whatever it refuses: the original value is kept whole up
to ``KEEP_VALUE_BYTES`` (twice the contract's largest event), and beyond that in part, with its
length and SHA-256 so the original can still be identified at its source; the key and the
detail are capped the same way. The encoded letter stays under ``MAX_LETTER_BYTES``, well
below Kafka's default 1 MB message limit.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Final

import msgspec

from streams.contract import Rejection
from streams.lean_records import RawRecord


class Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None


KEEP_VALUE_BYTES: Final = 16 * 1024
KEEP_KEY_CHARS: Final = 256
KEEP_DETAIL_CHARS: Final = 2000
MAX_LETTER_BYTES: Final = 64 * 1024  # the bound the caps above keep (tests/test_deadletter.py)


class DeadLetter(msgspec.Struct):
    reason: str
    detail: str
    source: Source
    value_b64: str  # the original message value, byte for byte (its first KEEP_VALUE_BYTES)
    worker: str
    dead_lettered_ms: int
    value_length: int = 0  # of the original value, in bytes
    value_sha256: str = ""  # of the original value, hex
    value_truncated: bool = False  # value_b64 holds only the first KEEP_VALUE_BYTES
    key_length: int | None = None  # of the original key, in bytes (``source.key`` is capped)

    @classmethod
    def from_record(
        cls, rej: Rejection, topic: str, partition: int, record: RawRecord, worker: str
    ) -> DeadLetter:
        """``record``: anything with ``offset``, ``timestamp``, ``key`` and ``value``."""
        r = record
        key = r.key
        value = r.value or b""
        truncated = len(value) > KEEP_VALUE_BYTES
        detail = rej.detail[:KEEP_DETAIL_CHARS]
        if truncated:
            detail += f" (value kept in part: the first {KEEP_VALUE_BYTES} of {len(value)} bytes)"
        return cls(
            reason=rej.reason,
            detail=detail,
            source=Source(
                topic,
                partition,
                r.offset,
                r.timestamp,
                key[:KEEP_KEY_CHARS].decode("utf-8", "replace") if key is not None else None,
            ),
            value_b64=base64.b64encode(value[:KEEP_VALUE_BYTES]).decode(),
            worker=worker,
            dead_lettered_ms=int(time.time() * 1000),
            value_length=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            value_truncated=truncated,
            key_length=None if key is None else len(key),
        )

    def key(self) -> bytes:
        s = self.source
        return f"{s.topic}:{s.partition}:{s.offset}".encode()

    def value(self) -> bytes:
        """The original value, or its first KEEP_VALUE_BYTES when ``value_truncated``."""
        return base64.b64decode(self.value_b64)

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        return msgspec.json.decode(raw, type=cls)
