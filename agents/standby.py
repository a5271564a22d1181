"""Standby replicas: the partitions this worker would get if another worker died, kept warm in
its own store, so that a takeover catches up from the standby's offsets instead of offset 0.

Which partitions: ``streams.assignor.standby_partitions`` over the workers' heartbeats (the
group's Range assignment, read from Redis ``{ns}:freshness``), minus what this worker owns.
How: a consumer of its own (manual assignment, no group) reads them from the offsets stored in
this worker's state and folds them exactly as the owner does (``state.partition``), with the
store-writing hooks (history: daily flows and hash chains; forecast: snapshots and accuracy)
in the same one atomic write as the balances and the next offsets. It publishes nothing: no
serving copy, no dead letters, no verdicts, no alerts (the owner does all that; on takeover the
alert rules load the open alerts the previous owner published).

Promotion: the group assigns a partition to this worker; ``LedgerWorker.on_assigned`` first
``claim``s it (the standby waits for its batch in flight, then lets go), then seeks to the store's
next offsets, which are the standby's. One writer per partition and store at any time; the
offsets stay in the same write as what they cover: the exactly-once effect holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.hooks import BatchHook, FoldContext, HookHost
from cashpos.metrics import ProcessorMetrics
from cashpos.names import RedisKeys, Topics, side_of_topic
from cashpos.refdata import governments
from cashpos.settings import Settings
from state.ledger import Ledger
from state.partition import fold_partition
from state.store import Store
from streams.assignor import standby_partitions
from streams.lean_records import RAW, RawRecord
from streams.topics import partition_for

log = logging.getLogger("cashpos.standby")

REFRESH_S = 1.0  # how often the standby set is recomputed from the heartbeats
LINGER_S = 15.0  # a partition no longer wanted is stood by for this long still (a rebalance's views pass)
IDLE_S = 0.2  # the wait when there is nothing to stand by for


class Standby:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: ProcessorMetrics,
        redis: aioredis.Redis,
        producer: AIOKafkaProducer,
        hooks: Sequence[BatchHook],
        owner_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.owner_busy = owner_busy  # the worker's own partitions are catching up: they go first
        self.store = store
        self.metrics = metrics
        self.redis = redis
        self.topics = Topics(settings.namespace)
        self.keys = RedisKeys(settings.namespace)
        self.side = {t: side_of_topic(t) for t in self.topics.sources}
        self.ledger = store.attach(Ledger())  # the standby orgs' positions; the owner's are apart
        self.hooks = list(hooks)  # their own instances: only their store records are used
        self.host = HookHost(
            store,
            redis,
            producer,
            self.ledger.positions,
            asyncio.Lock(),
            self.orgs,
            lambda: 0,
            lambda _backlog: frozenset(self.orgs()),
        )
        self.partitions = settings.partitions
        self.org_partition = {org: partition_for(org, self.partitions) for org in governments()}
        self.next_offsets: dict[TopicPartition, int] = {}
        self.claimed: set[int] = set()  # owned by this worker (the group's): never stood by for
        self._last_owned: set[int] = set()  # what it owned before a rebalance took everything
        self._unwanted_since: dict[int, float] = {}  # standby partitions the rule no longer names
        self.failed: set[int] = set()  # a fold raised: left to the owner's poison containment
        self.consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # one batch, claim or reassignment at a time
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._refreshed = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, partitions: int) -> None:
        self.partitions = partitions
        self.org_partition = {org: partition_for(org, partitions) for org in governments()}
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        async with self._lock:
            if self.consumer is not None:
                await self.consumer.stop()
                self.consumer = None

    def orgs(self) -> list[str]:
        parts = {tp.partition for tp in self.next_offsets}
        return [o for o, p in self.org_partition.items() if p in parts]

    def stood_by(self) -> set[int]:
        return {tp.partition for tp in self.next_offsets}

    # -- the owner's side ---------------------------------------------------------------------

    async def claim(self, parts: set[int]) -> dict[int, int]:
        """The group gave ``parts`` to this worker: stop standing by for them (after the batch
        in flight). Returns, per partition that was warm, the records the standby had folded
        up to (the lower of its two topics' next offsets), for the log."""
        async with self._lock:
            self.claimed |= parts
            self._last_owned = set(self.claimed)
            warm = {
                p: min(nxt for tp, nxt in self.next_offsets.items() if tp.partition == p)
                for p in parts & self.stood_by()
            }
            if warm:
                await self._assign(self.stood_by() - parts)
            return warm

    async def unclaim(self, parts: set[int]) -> None:
        """The group took ``parts`` from this worker: they may be stood by for again."""
        async with self._lock:
            self.claimed -= parts

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        s = self.settings
        while not self._stopping:
            try:
                if time.monotonic() - self._refreshed >= REFRESH_S:
                    self._refreshed = time.monotonic()
                    await self._refresh()
                consumer = self.consumer
                # a takeover's catch-up comes first: a new standby set after a rebalance may
                # start from offset 0 (O(history)) and would take the cores from it
                if consumer is None or not self.next_offsets or self.owner_busy():
                    await asyncio.sleep(IDLE_S)
                    continue
                batch = await consumer.getmany(timeout_ms=200, max_records=s.batch_max_records)
                if batch:
                    async with self._lock:
                        self._fold(batch)
                    await asyncio.sleep(0)  # let the owner's batch and heartbeats run
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a standby never stops the worker
                log.warning("standby: %r; retrying", exc)
                await asyncio.sleep(1.0)

    async def _refresh(self) -> None:
        """Recompute the standby set from the workers' heartbeats and follow it."""
        owners = await self._owners()
        if owners is None:
            return
        async with self._lock:
            # between a rebalance's revocation and its assignment this worker owns nothing: the
            # rule is computed as it stood before (the partitions it stands by for stay warm)
            owners[self.settings.worker_id] = set(self.claimed or self._last_owned)
            want = standby_partitions(self.settings.worker_id, owners, self.partitions)
            # a partition leaves the standby only once no longer named for a while: heartbeats
            # lag a rebalance, and the dead member's stays live until its age runs out
            now = time.monotonic()
            have = self.stood_by()
            for p in have - want:
                self._unwanted_since.setdefault(p, now)
            for p in want | (set(self._unwanted_since) - have):
                self._unwanted_since.pop(p, None)
            want |= {p for p in have if now - self._unwanted_since.get(p, now) < LINGER_S}
            want -= self.claimed | self.failed
            if want != have:
                await self._assign(want)
            if self.consumer is not None:
                lag = 0
                for tp, nxt in self.next_offsets.items():
                    hw = self.consumer.highwater(tp)
                    lag += 1 if hw is None else max(0, hw - nxt)  # not fetched yet: behind
                self.metrics.standby_lag.set(lag)

    async def _owners(self) -> dict[str, set[int]] | None:
        """The live workers' partitions, from their heartbeats (``LedgerWorker.housekeeping``)."""
        try:
            raw: dict[Any, Any] = await self.redis.hgetall(self.keys.freshness)
        except Exception as exc:  # noqa: BLE001 - Redis down: keep the current set
            log.debug("standby: heartbeats unreadable: %r", exc)
            return None
        now_ms = int(time.time() * 1000)
        max_age_ms = self.settings.session_timeout_ms + 2_000
        owners: dict[str, set[int]] = {}
        for k, v in raw.items():
            try:
                beat = orjson.loads(v)
                if now_ms - int(beat["heartbeat_ms"]) <= max_age_ms:
                    owners[k.decode() if isinstance(k, bytes) else str(k)] = {
                        int(p) for p in beat["partitions"]
                    }
            except (ValueError, KeyError, TypeError):
                continue
        return owners

    async def _assign(self, parts: set[int]) -> None:
        """Stand by for exactly ``parts`` (under the lock): drop the others' orgs, load the new
        ones' from the store and read them from the store's next offsets."""
        before = self.stood_by()
        gone = before - parts
        new = parts - before
        if gone:
            orgs = {o for o, p in self.org_partition.items() if p in gone}
            for pk in [pk for pk in self.ledger.positions if pk[0] in orgs]:
                del self.ledger.positions[pk]
            for closed in self.ledger.closed.values():
                for org in orgs:
                    closed.pop(org, None)
            for hook in self.hooks:
                hook.on_revoked(orgs)
            self.next_offsets = {tp: n for tp, n in self.next_offsets.items() if tp.partition not in gone}
        tps = [TopicPartition(t, p) for p in sorted(parts) for t in self.topics.sources]
        if self.consumer is None and tps:
            self.consumer = self._new_consumer()
            await self.consumer.start()
        if self.consumer is not None:
            self.consumer.assign(tps)
            for tp in tps:
                if tp.partition in new:
                    self.next_offsets[tp] = self.store.next_offset(tp.topic, tp.partition) or 0
                self.consumer.seek(tp, self.next_offsets[tp])
        if new:
            orgs_new = [o for o, p in self.org_partition.items() if p in new]
            for org in orgs_new:
                self.store.load(self.ledger, org)
            for hook in self.hooks:
                await hook.on_assigned(self.host, orgs_new)
        self.metrics.standby_partitions.set(len(parts))
        if gone or new:
            log.info(
                "standby for partitions %s (from %s)",
                sorted(parts),
                {
                    f"{tp.topic}:{tp.partition}": n
                    for tp, n in self.next_offsets.items()
                    if tp.partition in new
                },
            )

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **s.kafka_client_args(),
            group_id=None,  # manual assignment: the group's members are the owners
            client_id=f"{s.worker_id}-standby",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            fetch_max_wait_ms=100,  # warm, not fresh: fewer idle fetches on a shared broker
            value_deserializer=RAW,
        )

    # -- one batch ------------------------------------------------------------------------------

    def _fold(self, batch: dict[TopicPartition, list[RawRecord]]) -> None:
        """Fold one batch of standby records and write it with its offsets (one atomic write)."""
        ledger = self.ledger
        offsets: dict[tuple[str, int], int] = {}
        folded = 0
        try:
            for tp, records in batch.items():
                start = self.next_offsets.get(tp)
                if start is None or not records:  # no longer stood by for
                    continue
                todo = [r for r in records if r.offset >= start] if records[0].offset < start else records
                if todo:
                    fold_partition(
                        ledger,
                        todo,
                        tp.topic,
                        tp.partition,
                        self.side[tp.topic],
                        self.org_partition,
                        self.settings.max_event_bytes,
                    )
                    folded += len(todo)
                offsets[(tp.topic, tp.partition)] = max(start, records[-1].offset + 1)
            changes = ledger.take_changes()
            ctx = FoldContext(
                changes,
                ledger.positions,
                int(time.time() * 1000),
                lambda _backlog: frozenset(),
                lambda _t, _p, _o: True,  # nothing the standby produces is published
            )
            for hook in self.hooks:
                hook.after_fold(ctx)
        except Exception as exc:  # noqa: BLE001 - the owner isolates poison records; not the standby
            parts = {tp.partition for tp in batch}
            log.warning("standby fold failed (%r): partitions %s left to their owner", exc, sorted(parts))
            ledger.take_changes()
            self._clear_batch()
            self._drop_now(parts)
            return
        self.store.commit(changes, ledger.positions, offsets, ctx.puts, ctx.deletes)
        self._clear_batch()
        for (topic, part), nxt in offsets.items():
            self.next_offsets[TopicPartition(topic, part)] = nxt
        if folded:
            self.metrics.standby_records.inc(folded)

    def _clear_batch(self) -> None:
        ledger = self.ledger
        ledger.journal.clear()
        ledger.commitments.clear()
        ledger.orders.clear()
        ledger.schedules.clear()

    def _drop_now(self, parts: set[int]) -> None:
        """After a failed fold: forget every standby partition in memory (the batch may have
        changed any of them there; the store has only whole batches); the next refresh takes
        the others up again from the store, ``parts`` no more."""
        orgs = set(self.orgs())
        for hook in self.hooks:
            hook.on_revoked(orgs)
        self.next_offsets = {}
        self.ledger.positions.clear()
        for closed in self.ledger.closed.values():
            closed.clear()
        self.failed |= parts
        self._refreshed = 0.0


def standby_hooks(settings: Settings, owner_hooks: Sequence[BatchHook]) -> list[BatchHook]:
    """Fresh instances of the hooks whose records are part of the state (their store writes
    must be in the standby's store exactly as in an owner's): history always, forecast when the
    owner runs it. Alerting is not among them (on takeover it loads the published open alerts)."""
    from agents.forecast import ForecastHook
    from agents.history import HistoryHook

    hooks: list[BatchHook] = [HistoryHook(settings.history_online_years)]
    if any(isinstance(h, ForecastHook) for h in owner_hooks):
        hooks.append(ForecastHook(settings))
    return hooks
