"""The ledger worker: a batch consumer that folds events into positions.

Hot path per poll: aiokafka's parsed records as they are (streams.lean_records); per partition,
strict decode + contract checks + the fold (state.partition: the C kernel for the common event,
the pure fold of state.ledger for the rest, with a point read for each journal entry and
commitment the batch refers to); dead letters, one atomic RocksDB write (changes + next
offsets), then one Redis call and a Kafka commit, both sent while the next batch is folded. No
per-event framework work.
Dead letters go to the dead-letter topic (the record) and, once acknowledged, to the Redis list
of recent ones the API shows.

Exactly-once effect under at-least-once delivery: the state stores the next offset of each
partition in the same write as the balances; on assignment the worker seeks to it, and records
below it are skipped. A worker taking over a partition resumes from the offsets its store holds:
those of its standby replica (``agents.standby``: the partitions it would get if another worker
died, kept warm), or, with no state for it, from the start (the input topics are the book of
record); dead letters are not re-sent for records the group had already committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import defaultdict, deque
from collections.abc import Container, Iterable, Sequence

import orjson
import redis.asyncio as aioredis
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from prometheus_client import generate_latest

from agents.history import HistoryHook
from agents.hooks import BatchHook, FoldContext, HookHost
from agents.standby import Standby, standby_hooks
from cashpos.metrics import ProcessorMetrics
from cashpos.names import FATE_HEADER, RedisKeys, Topics, side_of_topic
from cashpos.refdata import governments
from cashpos.settings import Settings
from state.fate_projection import FateBatch, FateStore, batch_fates, wanted
from state.history import Chain
from state.ledger import Changes, Ledger, PosKey
from state.partition import fold_partition
from state.projection import RECENT_DEADLETTERS, Prepared, Projection
from state.store import Store
from streams.contract import Rejection
from streams.deadletter import DeadLetter
from streams.groups import remove_previous_members, repair_orphaned_leader
from streams.lean_records import RAW, RawRecord
from streams.lean_records import install as install_lean_records
from streams.topics import partition_for
from streams.watchdog import AssignmentWatchdog, WatchedConsumer

log = logging.getLogger("cashpos.ledger")

_Work = list[tuple[TopicPartition, list[RawRecord]]]  # a batch: records to fold, per partition
_Dead = list[tuple[Rejection, TopicPartition, RawRecord]]
CATCHING_UP_RECORDS = 5_000  # a partition this far behind serves stale figures (~1 s at peak)
UNSENT_FATES_MAX = 1_000_000  # verdicts held while Redis is down (~200 MB at most); then counted, dropped


def _asked(topic: str, r: RawRecord) -> tuple[str, str] | None:
    """The (org, scoped id) of a record whose producer asked for its fate (``FATE_HEADER``)."""
    if not any(name == FATE_HEADER for name, _ in r.headers):
        return None
    return wanted(topic, r.key, r.value)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: LedgerWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.on_assigned(assigned)


class LedgerWorker:
    def __init__(
        self, settings: Settings, metrics: ProcessorMetrics | None = None, hooks: Sequence[BatchHook] = ()
    ) -> None:
        self.settings = settings
        self.history = HistoryHook(settings.history_online_years)  # its web server answers from it
        self.hooks: list[BatchHook] = [self.history, *hooks]
        self.web_address: str | None = None  # where its web server answers (published in its heartbeat)
        self.topics = Topics(settings.namespace)
        self.keys = RedisKeys(settings.namespace)
        self.metrics = metrics or ProcessorMetrics()
        self.side = {t: side_of_topic(t) for t in self.topics.sources}
        self.store = Store(settings.state_dir)
        self._state_dir = str(settings.state_dir.resolve())
        self.ledger = self.store.attach(Ledger())
        self.next_offsets: dict[TopicPartition, int] = {}
        self.replay_until: dict[TopicPartition, int] = {}  # group-committed offsets at assignment
        self._settle_at: dict[TopicPartition, int] = {}  # first high watermark seen since assignment
        self._host: HookHost | None = None  # what the hooks see of this worker
        self.owned_orgs: list[str] = []
        self.org_partition: dict[str, int] = {}
        self.pending_seed: set[str] = set()
        # acknowledged dead letters not yet in the Redis recent list (Redis down)
        self.recent_dead: deque[bytes] = deque(maxlen=RECENT_DEADLETTERS)
        self.redis_ok = True
        self._lock = asyncio.Lock()
        self._stopping = False
        self._last_housekeeping = 0.0
        self._last_flush = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.redis: aioredis.Redis | None = None
        self.projection: Projection | None = None
        self.fates: FateStore | None = None
        self.unsent_fates = FateBatch()  # verdicts not yet in Redis (Redis down), bounded
        self.processed_batches = 0
        self._projecting: asyncio.Future[None] | None = None  # the Redis write in flight
        self._committing: asyncio.Future[None] | None = None  # the Kafka offset commit in flight
        self.standby: Standby | None = None  # the partitions kept warm for a takeover (agents.standby)

    # -- lifecycle ----------------------------------------------------------------------------

    watched: WatchedConsumer | None = None  # the consumer under the assignment watchdog

    async def start(self) -> None:
        s = self.settings
        self.redis = aioredis.from_url(s.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.projection = Projection(self.redis, self.keys, s.worker_id)
        self.fates = FateStore(self.redis, self.keys, s.fate_retention_days)
        self.producer = AIOKafkaProducer(**s.kafka_client_args(), acks="all", linger_ms=5)
        await self.producer.start()
        install_lean_records()
        make = lambda: AIOKafkaConsumer(  # a new member each (re)start
            **s.kafka_client_args(),
            group_id=self.topics.ledger_group,
            client_id=s.worker_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),  # co-locates partition p of both topics
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_ms,
            max_poll_interval_ms=300_000,
            # ~1 MB per partition keeps fetches flowing while a batch is folded; larger
            # fetches measured slower (the broker shares the cores).
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            fetch_max_wait_ms=10,  # Tansu holds a fetch for the full wait: keep freshness low
            value_deserializer=RAW,  # aiokafka's parsed records, no ConsumerRecord per message
        )
        sources = list(self.topics.sources)
        self.watched = WatchedConsumer(
            make,
            lambda c: setattr(self, "consumer", c),
            sources,
            _Rebalance(self),
            AssignmentWatchdog(s.rejoin_after_seconds),
            self.topics.ledger_group,
            s.worker_id,
            repair=lambda: repair_orphaned_leader(
                s,
                self.topics.ledger_group,
                s.worker_id,
                sources,
                RangePartitionAssignor.name,
                s.session_timeout_ms,
            ),
        )
        if s.standby_replicas > 0:  # before the first assignment: it claims what it is given
            self.standby = Standby(
                s,
                self.store,
                self.metrics,
                self.redis,
                self.producer,
                standby_hooks(s, self.hooks),
                owner_busy=lambda: bool(self.catching_up()),
            )
        await self._remove_previous_incarnation()
        await self.watched.start()  # returns once assigned (a new member after each stuck bound)
        if self.standby is not None:
            assert self.consumer is not None
            self.standby.start(
                len(self.consumer.partitions_for_topic(self.topics.revenue) or ()) or s.partitions
            )
        # The batch path allocates millions of short-lived, acyclic objects; the default cyclic
        # GC thresholds make it rescan the long-lived heap constantly (measured ~2x slower).
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)
        log.info("ledger worker %s started, state in %s", s.worker_id, s.state_dir)

    async def _remove_previous_incarnation(self) -> None:
        """A restart after a crash would otherwise wait for the dead member's session to expire
        (~11 s instead of ~3 s). That member is dead: this process holds its state's lock."""
        s = self.settings
        try:
            found = await remove_previous_members(s, self.topics.ledger_group, s.worker_id)
        except Exception as exc:  # noqa: BLE001 - only the shortcut is lost
            log.warning("could not look for a previous incarnation in the group: %r", exc)
            return
        if found.removed:
            log.info("removed this worker's previous incarnation from the group: %s", found.removed)
        if found.kept:  # removing an elected leader mid-rebalance can wedge the group (Tansu)
            log.info(
                "previous incarnation %s left to its session's expiry: group %s is %s",
                found.kept,
                self.topics.ledger_group,
                found.state or "in an unknown state",
            )

    async def stop(self) -> None:
        self._stopping = True
        async with self._lock:
            await self.projection_done()
            await self.offsets_committed()
            if self.standby is not None:
                await self.standby.stop()
            if self.watched is not None:
                await self.watched.stop()
            elif self.consumer is not None:
                await self.consumer.stop()
            if self.producer is not None:
                await self.producer.stop()
            if self.redis is not None:
                await self.redis.aclose()
            self.store.close()

    async def run(self) -> None:
        """Poll and process until stopped."""
        assert self.consumer is not None
        s = self.settings
        while not self._stopping:
            if self.watched is not None and await self.watched.check():
                continue  # a new consumer (member) after too long without an assignment
            batch = await self.consumer.getmany(
                timeout_ms=s.batch_timeout_ms, max_records=s.batch_max_records
            )
            if batch:
                await self.process(batch)
            await self.housekeeping()

    # -- rebalancing --------------------------------------------------------------------------

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:  # let an in-flight batch finish before the partitions move
            await self.projection_done()
            gone = {tp.partition for tp in revoked}
            for tp in revoked:
                self.next_offsets.pop(tp, None)
                self.replay_until.pop(tp, None)
            still = {tp.partition for tp in self.next_offsets}
            dropped = {o for o, p in self.org_partition.items() if p in gone and p not in still}
            for pk in [pk for pk in self.ledger.positions if pk[0] in dropped]:
                del self.ledger.positions[pk]
            for closed in self.ledger.closed.values():
                for org in dropped:
                    closed.pop(org, None)
            for hook in self.hooks:
                hook.on_revoked(dropped)
            self._refresh_owned()
            if self.standby is not None:  # this worker's stored state of them may be warmed again
                await self.standby.unclaim(gone - still)
            log.info("revoked %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self.consumer is not None
        began = time.monotonic()
        async with self._lock:
            n = len(self.consumer.partitions_for_topic(self.topics.revenue) or ()) or self.settings.partitions
            self.org_partition = {org: partition_for(org, n) for org in governments()}
            # a partition this worker stood by for: the standby lets go (after its batch in
            # flight) before its offsets are read: one writer per partition
            warm = await self.standby.claim({tp.partition for tp in assigned}) if self.standby else {}
            for tp in assigned:
                nxt = self.store.next_offset(tp.topic, tp.partition)
                self.consumer.seek(tp, nxt or 0)
                self.next_offsets[tp] = nxt or 0
                committed = await self.consumer.committed(tp)
                self.replay_until[tp] = committed or 0
                self.metrics.takeover_records.inc(max(0, (committed or 0) - (nxt or 0)))
            before = set(self.owned_orgs)
            self._refresh_owned()
            new = [org for org in self.owned_orgs if org not in before]
            for org in new:
                self.store.load(self.ledger, org)
            self._settle_at.clear()  # settled again once caught up with what the topics hold now
            for hook in self.hooks:
                await hook.on_assigned(self._hook_host(), new)
            self.pending_seed |= set(self.owned_orgs) - before
            self.metrics.assigned_partitions.set(len(self.next_offsets))
            log.info(
                "assigned %s resuming at %s (group committed %s; warm standby of partitions %s) "
                "after %.2f s of loading",
                sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
                {f"{tp.topic}:{tp.partition}": self.next_offsets[tp] for tp in assigned},
                {f"{tp.topic}:{tp.partition}": self.replay_until[tp] for tp in assigned},
                sorted(warm),
                time.monotonic() - began,
            )

    def _refresh_owned(self) -> None:
        parts = {tp.partition for tp in self.next_offsets}
        self.owned_orgs = [o for o, p in self.org_partition.items() if p in parts]

    # -- what the hooks see (agents.hooks) ------------------------------------------------------

    def _hook_host(self) -> HookHost:
        if self._host is None:
            assert self.redis is not None and self.producer is not None, "started"
            self._host = HookHost(
                self.store,
                self.redis,
                self.producer,
                self.ledger.positions,
                self._lock,
                lambda: self.owned_orgs,
                self.records_behind,
                self.unsettled,
            )
        return self._host

    def unsettled(self, backlog: int) -> Container[str]:
        """The governments of the partitions not caught up since their assignment: below the
        group's committed offset or the first high watermark seen (unknown until a fetch reports
        it) on either input topic, or with more than ``backlog`` records left on either. The two
        topics are read independently, so a partition catching up goes through states that never
        existed (e.g. receipts folded before a commitment that preceded them)."""
        consumer = self.consumer
        parts: set[int] = set()
        for tp, nxt in self.next_offsets.items():
            h = consumer.highwater(tp) if consumer is not None else None
            first = self._settle_at.get(tp)
            if first is None:
                if h is None:
                    parts.add(tp.partition)
                    continue
                first = self._settle_at[tp] = h
            if nxt < self.replay_until.get(tp, 0) or nxt < first or (h is not None and h - nxt > backlog):
                parts.add(tp.partition)
        if not parts:
            return frozenset()
        return frozenset(o for o, p in self.org_partition.items() if p in parts)

    def is_replay(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the group had processed this record before this worker was assigned its
        partition (a rebuild of a partition another worker owned)."""
        return offset < self.replay_until.get(TopicPartition(topic, partition), 0)

    def records_behind(self) -> int:
        """The consumer's lag: records between the next offsets and the high watermarks."""
        if self.consumer is None:
            return 0
        lag = 0
        for tp, pos in list(self.next_offsets.items()):
            hw = self.consumer.highwater(tp)
            if hw is not None:
                lag += max(0, hw - pos)
        return lag

    # -- the hot path -------------------------------------------------------------------------

    async def process(self, batch: dict[TopicPartition, list[RawRecord]]) -> None:
        # getmany has just emptied the fetcher's buffer; the fetcher, a task of this event loop,
        # asks the broker for more only when it next runs, which without these steps is after
        # the whole batch (the fold never yields): each batch then waited a full fetch round
        # trip (≈ 0.3 µs an event). Three loop steps take it from the wake-up to the request.
        for _ in range(3):
            await asyncio.sleep(0)
        # No cyclic GC while a batch is in flight: it would trace the batch's records and tuples
        # again and again (~10 containers per event, none in a cycle, all freed with the batch;
        # measured 1.3-1.7 µs per event). It runs between batches, when they are gone.
        gc.disable()
        try:
            async with self._lock:
                offsets = await self._process(batch)
        finally:
            gc.enable()
        # The group offset is for monitoring and replay suppression only (the state holds the
        # truth); committed outside the lock so a rebalance waiting on the lock cannot deadlock,
        # and in the background (one at a time, in order) while the next batch is folded.
        await self.offsets_committed()
        self._committing = asyncio.ensure_future(self._commit_offsets(offsets))

    async def offsets_committed(self) -> None:
        if self._committing is not None:
            task, self._committing = self._committing, None
            await task

    async def _process(self, batch: dict[TopicPartition, list[RawRecord]]) -> dict[tuple[str, int], int]:
        t0 = time.perf_counter()
        m = self.metrics
        ledger = self.ledger
        work: _Work = []
        offsets: dict[tuple[str, int], int] = {}
        skipped = 0
        last_ts = 0
        for tp, records in batch.items():
            start = self.next_offsets.get(tp)
            if start is None:  # revoked while this batch was in flight
                continue
            todo = records
            if records and records[0].offset < start:  # already in state (a replay): skip
                todo = [r for r in records if r.offset >= start]
                skipped += len(records) - len(todo)
            if todo:
                work.append((tp, todo))
            if records:
                offsets[(tp.topic, tp.partition)] = max(start, records[-1].offset + 1)
                last_ts = max(last_ts, records[-1].timestamp)
        applied_by_topic, dead = self._fold_contained(work)
        for (topic, part), nxt in offsets.items():
            self.next_offsets[TopicPartition(topic, part)] = nxt
        if skipped:
            m.replayed_skipped.inc(skipped)
        changes = ledger.take_changes()
        folded = FoldContext(
            changes, ledger.positions, int(time.time() * 1000), self.unsettled, self.is_replay
        )
        for hook in self.hooks:
            hook.after_fold(folded)  # its records join the batch's write

        # 1. dead letters first: a crash before the state write replays them, never loses them
        if dead:
            await self._dead_letter(dead)
        # 2. one atomic write: balances, journal, commitments, index and next offsets
        t1 = time.perf_counter()
        self.store.commit(changes, ledger.positions, offsets, folded.puts, folded.deletes)
        m.state_write_seconds.observe(time.perf_counter() - t1)
        ledger.journal.clear()
        ledger.commitments.clear()
        ledger.orders.clear()
        ledger.schedules.clear()
        # 3. the serving copy, then each event's fate
        fates = self._fates(changes, work, dead, last_ts)
        await self._project(changes.index.keys(), changes.last_event_ms, last_ts, fates)
        for hook in self.hooks:
            await hook.after_commit()

        for topic, n in applied_by_topic.items():
            if n:
                m.events_applied.labels(topic).inc(n)
        if changes.duplicates:
            m.duplicates_dropped.inc(changes.duplicates)
        if last_ts:
            m.last_applied.set(last_ts / 1000)
        m.batch_size.observe(sum(len(v) for v in batch.values()))
        m.batch_seconds.observe(time.perf_counter() - t0)
        self.processed_batches += 1
        return offsets

    # -- poison containment -------------------------------------------------------------------

    def _fold_contained(self, work: _Work) -> tuple[dict[str, int], _Dead]:
        """Fold the batch; whatever a record contains, the worker does not stop on it.

        A record whose decision or fold raises becomes an ``internal_error`` dead letter and
        the rest of the batch is applied exactly as if it were absent: the ledger is put back
        to the state on disk (the last committed batch) and the batch folded again without it.
        The culprit is found by bisection on the batch's prefix (the fold is deterministic, so
        the shortest failing prefix ends at it); repeated until the batch folds."""
        try:
            return self._fold_once(work, {})
        except Exception as exc:  # noqa: BLE001 - any defect on any input
            log.error("a batch failed to fold (%r); isolating the record that causes it", exc)
        poison: dict[tuple[TopicPartition, int], str] = {}
        flat = [(tp, r) for tp, records in work for r in records]
        while True:
            self._restore_from_store()
            with contextlib.suppress(Exception):  # still failing: bisect for the next culprit
                return self._fold_once(work, poison)
            lo, hi, error = 0, len(flat), ""  # the prefix of length hi fails
            while lo + 1 < hi:
                mid = (lo + hi) // 2
                self._restore_from_store()
                try:
                    self._fold_once(self._prefix(work, mid), poison)
                    lo = mid
                except Exception as exc:  # noqa: BLE001 - any defect: this prefix fails
                    hi, error = mid, f"{exc.__class__.__name__}: {exc}"
            tp, r = flat[hi - 1]
            if (tp, r.offset) in poison:  # not reproducible: give up on the whole batch
                raise RuntimeError("a batch fails to fold, and no one record explains it")
            poison[(tp, r.offset)] = error or "the record's fold raised"
            log.error(
                "record %s:%d@%d isolated as internal_error: %s",
                tp.topic,
                tp.partition,
                r.offset,
                poison[(tp, r.offset)],
            )

    @staticmethod
    def _prefix(work: _Work, n: int) -> _Work:
        out: _Work = []
        for tp, records in work:
            if n <= 0:
                break
            out.append((tp, records[:n]))
            n -= len(records)
        return out

    def _fold_once(
        self, work: _Work, poison: dict[tuple[TopicPartition, int], str]
    ) -> tuple[dict[str, int], _Dead]:
        org_partition = self.org_partition
        max_bytes = self.settings.max_event_bytes
        applied_by_topic: dict[str, int] = defaultdict(int)
        dead: _Dead = []
        for tp, todo in work:
            topic, part = tp.topic, tp.partition
            if poison:
                bad = [r for r in todo if (tp, r.offset) in poison]
                dead += [(Rejection("internal_error", poison[(tp, r.offset)]), tp, r) for r in bad]
                todo = [r for r in todo if (tp, r.offset) not in poison]
            applied, rejected = fold_partition(
                self.ledger, todo, topic, part, self.side[topic], org_partition, max_bytes
            )
            applied_by_topic[topic] += applied
            dead += [(rej, tp, r) for rej, r in rejected]
        return applied_by_topic, dead

    def _restore_from_store(self) -> None:
        """Put the ledger back to the last committed batch (what the store holds)."""
        ledger = self.ledger
        ledger.take_changes()
        ledger.journal.clear()
        ledger.commitments.clear()
        ledger.orders.clear()
        ledger.schedules.clear()
        ledger.positions.clear()
        for closed in ledger.closed.values():
            closed.clear()
        for org in self.owned_orgs:
            self.store.load(ledger, org)

    async def _dead_letter(self, dead: list[tuple[Rejection, TopicPartition, RawRecord]]) -> None:
        assert self.producer is not None
        futures = []
        sent: list[bytes] = []
        for rej, tp, r in dead:
            self.metrics.events_deadlettered.labels(rej.reason).inc()
            if r.offset < self.replay_until.get(tp, 0):
                continue  # the previous owner already dead-lettered it
            letter = DeadLetter.from_record(rej, tp.topic, tp.partition, r, self.settings.worker_id)
            encoded = letter.encode()
            futures.append(
                await self.producer.send(
                    self.topics.deadletter,
                    encoded,
                    key=letter.key(),
                    partition=tp.partition,
                )
            )
            sent.append(encoded)
        if futures:
            await asyncio.gather(*futures)
            # Before the state write, like the topic: a crash replays (and re-lists) them.
            self.recent_dead.extend(sent)
            await self._remember_dead_letters()

    async def _remember_dead_letters(self) -> None:
        """Copy acknowledged dead letters to the Redis recent list (the API's /v1/deadletters).
        The topic is the complete record; while Redis is down the newest wait here (bounded)."""
        assert self.projection is not None
        if not self.recent_dead or not self.redis_ok:
            return
        try:
            await self.projection.remember_deadletters(list(self.recent_dead))
        except Exception as exc:  # noqa: BLE001 - Redis down: _project and housekeeping take it from here
            self.redis_ok = False
            self.metrics.redis_errors.inc()
            log.warning("redis write failed, dead letters listed later: %r", exc)
            return
        self.recent_dead.clear()

    def _fates(self, changes: Changes, work: _Work, dead: _Dead, last_ts: int) -> FateBatch:
        """The batch's verdicts for GET /v1/events/{org}/{id}. None for a backlog older than
        the window, nor for partitions still re-folding what their previous owner had done
        (it wrote those verdicts; the batch that crosses into new records writes them all)."""
        now = int(time.time() * 1000)
        if last_ts and now - last_ts > self.settings.fate_retention_days * 86_400_000:
            return FateBatch()
        behind = {tp.partition for tp, nxt in self.next_offsets.items() if nxt < self.replay_until.get(tp, 0)}
        skip = [o for o, p in self.org_partition.items() if p in behind] if behind else ()
        refused = (
            (rej.reason, rej.detail, tp.topic, tp.partition, r.offset, r.key, r.value) for rej, tp, r in dead
        )
        # Applied events and copies only where the record asks (the API's submissions): a verdict
        # for every event measured ~14 µs an event of Redis writes, more than the fold itself.
        asked = {
            w for tp, records in work for r in records if r.headers and (w := _asked(tp.topic, r)) is not None
        }
        return batch_fates(changes, self.ledger.positions, refused, now, skip, asked)

    async def _project(
        self, changed: Iterable[PosKey], last_event_ms: int, last_ts: int, fates: FateBatch | None = None
    ) -> None:
        """Encode the batch's positions now and send them while the next batch is folded: the
        worker waits for Redis only before the next projection, which keeps the writes in order
        (measured ≈ 0.3 µs per event of waiting for the Lua call, off the hot path now)."""
        assert self.projection is not None
        await self.projection_done()
        if not self.redis_ok:  # housekeeping re-seeds everything once Redis answers again
            self._keep_fates(fates)
            return
        seeds = self._seedable(self.pending_seed)
        self.pending_seed -= seeds
        changed = list(changed)
        call = self.projection.prepare(
            self.ledger.positions, changed, seeds, last_event_ms, self.ledger.closed
        )
        self._projecting = asyncio.ensure_future(
            self._send_projection(call, changed, seeds, last_event_ms, last_ts, fates)
        )

    async def projection_done(self) -> None:
        """Wait for the projection in flight, if any (it never raises)."""
        if self._projecting is not None:
            task, self._projecting = self._projecting, None
            await task

    async def _send_projection(
        self,
        call: Prepared | None,
        changed: list[PosKey],
        seeds: set[str],
        last_event_ms: int,
        last_ts: int,
        fates: FateBatch | None = None,
    ) -> None:
        assert self.projection is not None and self.fates is not None
        t = time.perf_counter()
        try:
            missing = await self.projection.send(call)
            if missing:  # the next projection (or housekeeping) seeds them from committed state
                self.pending_seed |= set(missing)
            if changed or seeds:
                orgs = {pk[0] for pk in changed} | seeds
                await self.projection.notify(orgs, last_event_ms)
            if seeds:
                self.metrics.redis_reseeds.inc(len(seeds))
            if fates:  # after the positions: an ``applied`` read then finds its version
                await self.fates.write(fates, int(time.time() * 1000))
        except Exception as exc:  # noqa: BLE001 - Redis down: keep folding, re-seed when it is back
            self._keep_fates(fates)
            self.pending_seed |= seeds
            self.redis_ok = False
            self.metrics.redis_errors.inc()
            log.warning("redis write failed, will re-seed: %r", exc)
            return
        self.metrics.redis_write_seconds.observe(time.perf_counter() - t)
        if last_ts:
            self.metrics.event_to_visible.observe(max(0.0, time.time() - last_ts / 1000))

    def catching_up(self) -> dict[str, int]:
        """Partitions whose figures are behind, with the records left: being re-folded (below what
        the group had processed), not yet fetched since assignment (0: unknown), or more than
        ``CATCHING_UP_RECORDS`` behind the high watermark."""
        out: dict[str, int] = {}
        for tp, nxt in list(self.next_offsets.items()):
            hw = self.consumer.highwater(tp) if self.consumer is not None else None
            replay = self.replay_until.get(tp, 0) - nxt
            gap = max(replay, 0 if hw is None else hw - nxt)
            if replay > 0 or hw is None or hw - nxt > CATCHING_UP_RECORDS:
                key = str(tp.partition)
                out[key] = max(out.get(key, 0), gap)
        return out

    def serves(self, org: str) -> bool:
        """Whether this worker owns ``org`` and has caught up on it (its history is whole)."""
        return org in self.org_partition and org in self._seedable([org]) and org in self.owned_orgs

    def chain(self, pk: PosKey) -> Chain | None:
        """A position's hash chains (``state.history``), as of the last batch."""
        return self.history.chains.get(pk)

    def _keep_fates(self, fates: FateBatch | None) -> None:
        """Hold verdicts Redis did not take (written again once it answers), up to a bound."""
        if not fates:
            return
        held = sum(len(v) for v in self.unsent_fates.writes.values())
        if held >= UNSENT_FATES_MAX:
            self.metrics.fates_dropped.inc(sum(len(v) for v in fates.writes.values()))
            return
        self.unsent_fates.extend(fates)

    def _seedable(self, orgs: Iterable[str]) -> set[str]:
        """Governments whose state may be marked complete in Redis: their partitions have caught
        up with what the group had already processed. While a partition is being rebuilt (new
        owner without state, or a deleted state directory) its governments stay unseeded, so
        the API answers 503 rather than showing a partial history as current."""
        behind = {tp.partition for tp, nxt in self.next_offsets.items() if nxt < self.replay_until.get(tp, 0)}
        if not behind:
            return set(orgs)
        return {o for o in orgs if self.org_partition.get(o) not in behind}

    async def _commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        assert self.consumer is not None
        if not offsets:
            return
        try:
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except Exception as exc:  # noqa: BLE001 - a rebalance in progress; the state holds the offsets
            log.info("offset commit skipped: %r", exc)

    # -- once a second --------------------------------------------------------------------------

    async def housekeeping(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = now
        assert self.projection is not None and self.redis is not None and self.consumer is not None
        async with self._lock:
            await self.projection_done()
            try:
                missing = await self.projection.unseeded(self.owned_orgs)
                # pending seeds too, batch or not: a partition taken over from a warm standby
                # may hold events its previous owner never published, and no new ones may come
                if missing or not self.redis_ok or self._seedable(self.pending_seed):
                    wanted = set(missing) | (set(self.owned_orgs) if not self.redis_ok else set())
                    wanted |= self.pending_seed
                    seeds = self._seedable(wanted)
                    self.pending_seed = wanted - seeds
                    await self.projection.write(self.ledger.positions, (), seeds, closed=self.ledger.closed)
                    await self.projection.notify(seeds, 0)
                    self.metrics.redis_reseeds.inc(len(seeds))
                    if not self.redis_ok:
                        log.info("redis is back: re-seeded %d governments", len(seeds))
                    self.redis_ok = True
                await self._remember_dead_letters()
                if self.unsent_fates and self.fates is not None:
                    await self.fates.write(self.unsent_fates, int(time.time() * 1000))
                    self.unsent_fates = FateBatch()
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(
                        self.keys.worker_metrics(self.settings.worker_id),
                        generate_latest(self.metrics.registry),
                        ex=30,
                    )
                    pipe.hset(
                        self.keys.freshness,
                        self.settings.worker_id,
                        orjson.dumps(
                            {
                                "heartbeat_ms": int(time.time() * 1000),
                                "partitions": sorted({tp.partition for tp in self.next_offsets}),
                                "state_dir": self._state_dir,  # lets `cashpos reconcile` find the owner
                                "web": self.web_address,  # the API asks it for history (agents.history_web)
                                "behind": self.catching_up(),  # the API marks these stale (serving.staleness)
                            }
                        ),
                    )
                    await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - whatever failed, Redis counts as down until it answers
                if self.redis_ok:
                    log.warning("redis unavailable: %r", exc)
                self.redis_ok = False
        for hook in self.hooks:
            await hook.housekeeping()
        if now - self._last_flush >= self.settings.state_flush_seconds:
            self.store.flush()  # in the background; bounds the replay after a crash
            self._last_flush = now
        lag: dict[str, int] = defaultdict(int)
        for tp, pos in list(self.next_offsets.items()):
            hw = self.consumer.highwater(tp)  # from fetch responses: right even on Tansu
            if hw is not None:
                lag[tp.topic] += max(0, hw - pos)
        for topic, n in lag.items():
            self.metrics.lag.labels(topic).set(n)
