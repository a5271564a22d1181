"""The dead-letter record: why an input was refused, where it came from, its exact bytes.

Keyed by ``{topic}:{partition}:{offset}`` (the source coordinates), which makes the rare
re-send after a crash recognisable as the same dead letter.
"""

from __future__ import annotations

import base64
import time

import msgspec

from streams.contract import Rejection


class Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None


class DeadLetter(msgspec.Struct):
    reason: str
    detail: str
    source: Source
    value_b64: str  # the original message value, byte for byte
    worker: str
    dead_lettered_ms: int

    @classmethod
    def from_record(cls, rej: Rejection, topic: str, partition: int, record: object,
                    worker: str) -> DeadLetter:
        """``record``: anything with ``offset``, ``timestamp``, ``key`` and ``value``."""
        r = record
        key = r.key  # type: ignore[attr-defined]
        return cls(
            reason=rej.reason,
            detail=rej.detail,
            source=Source(
                topic, partition, r.offset, r.timestamp,  # type: ignore[attr-defined]
                key.decode("utf-8", "replace") if key is not None else None,
            ),
            value_b64=base64.b64encode(r.value or b"").decode(),  # type: ignore[attr-defined]
            worker=worker,
            dead_lettered_ms=int(time.time() * 1000),
        )

    def key(self) -> bytes:
        s = self.source
        return f"{s.topic}:{s.partition}:{s.offset}".encode()

    def value(self) -> bytes:
        return base64.b64decode(self.value_b64)

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        return msgspec.json.decode(raw, type=cls)
