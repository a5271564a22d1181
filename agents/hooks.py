"""What the ledger worker (``agents.ledger``) hands the hooks that run inside its batch (e.g.
alerting, ``agents.alerting``): a narrow view of one batch and of the worker's services, never
the worker itself.

A hook's state is written in the same atomic write as the balances it derives from, so a crash
can neither lose nor repeat its effects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from state.history import Chain, DayFlows
from state.ledger import Changes, Commitment, Order, Position, PosKey, Schedule

# The governments whose partition has not caught up yet, given the backlog (records left to
# read on either input topic) a hook tolerates: see ``LedgerWorker.unsettled``.
Unsettled = Callable[[int], Container[str]]


@dataclass(frozen=True, slots=True)
class FoldContext:
    """One batch as a hook sees it in ``after_fold``: under the worker's lock, after the fold,
    before the batch's one atomic write."""

    changes: Changes  # what the batch changed; the positions it touched are ``changes.index``
    positions: Mapping[PosKey, Position]  # every owned position, after the batch
    now_ms: int  # the batch's wall clock (event time is in the changes: occurred_at per row)
    unsettled: Unsettled
    is_replay: Callable[[str, int, int], bool]  # (topic, partition, offset) processed before by the group
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)

    def write(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Add records (keys of ``state.layout``) to the batch's one atomic write; an empty
        value deletes its key."""
        for k, v in records:
            if v:
                self.puts.append((k, v))
            else:
                self.deletes.append(k)


class HookStore(Protocol):
    """The worker's store as a hook may use it (``state.store.Store``)."""

    seq: int  # the last batch written (the batch in ``after_fold`` will be ``seq + 1``)

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]: ...

    def get(self, key: bytes) -> bytes | None: ...

    def chains(self, org: str) -> dict[PosKey, Chain]: ...

    def commitments(self, org: str) -> Iterator[tuple[str, Commitment]]: ...

    def orders(self, org: str) -> Iterator[tuple[str, Order]]: ...

    def schedules(self, org: str) -> Iterator[tuple[str, Schedule]]: ...

    def closes(self, org: str) -> dict[str, int]: ...

    def flows(
        self, org: str, account: str | None = None, fy: int | None = None
    ) -> Iterator[tuple[PosKey, int, DayFlows]]: ...

    def known_days(self, org: str) -> Iterator[tuple[PosKey, int, tuple[int, int, int]]]: ...

    def write(self, records: Iterable[tuple[bytes, bytes]]) -> None: ...

    def delete(self, keys: Iterable[bytes]) -> None: ...

    def flush(self, wait: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class HookHost:
    """The worker's services, for a hook's work outside ``after_fold`` (given on assignment)."""

    store: HookStore
    redis: aioredis.Redis
    producer: AIOKafkaProducer
    positions: Mapping[PosKey, Position]  # every owned position (the ledger's, live)
    exclusive: asyncio.Lock  # held while a batch runs: take it to change what a batch reads
    owned_orgs: Callable[[], Sequence[str]]
    records_behind: Callable[[], int]  # the consumer's lag: records left to the high watermarks
    unsettled: Unsettled


class BatchHook(Protocol):
    """Derived processing inside the ledger's batch."""

    async def on_assigned(self, host: HookHost, orgs: list[str]) -> None:
        """``orgs``: the governments newly owned (their positions are loaded)."""
        ...

    def on_revoked(self, orgs: set[str]) -> None: ...

    def after_fold(self, batch: FoldContext) -> None:
        """Update from the batch; add the records to write with it (``batch.write``)."""
        ...

    async def after_commit(self) -> None:
        """Publish what after_fold produced (topics, Redis), after the state write."""
        ...

    async def housekeeping(self) -> None:
        """Once a second, outside a batch."""
        ...

    async def stop(self) -> None:
        """The worker stops: finish what is in flight."""
        ...
