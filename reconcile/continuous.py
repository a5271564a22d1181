"""`cashpos reconcile --continuous`: the reconciliation as a long-running process, incremental.

It keeps the reference fold (:class:`reconcile.incremental.Incremental`) and the offsets it has
read up to in a checkpoint (:mod:`reconcile.checkpoint`). Each interval:

1. reads Redis's positions (every government's hash),
2. reads the input topics from the checkpoint's offsets to their ends, page by page, folding
   each page and dropping it (memory holds the fold's state and one page, never the history),
3. compares as the one-shot run does (:func:`reconcile.run._compare`): a position is compared
   exactly when Redis's version (events it reflects) equals the fold's; a lower one is a lag,
   not a difference. Redis is read *before* the topics, so the fold has seen at least what Redis
   reflects: a live stream makes lag, never a false difference,
4. writes a new checkpoint (when it read anything), then publishes the same report to the same
   Redis key as the one-shot run (``GET /v1/reconciliation``, the API's
   ``cashpos_reconciliation_*`` gauges) and its own metrics beside the workers' expositions.

A restart resumes from the checkpoint. A checkpoint of another format or contract version,
namespace or partition count, or whose offsets lie past the topics' ends (topics recreated), is
discarded and the fold starts again from offset 0 (logged, counted). ``cashpos reconcile``
without ``--continuous`` stays the full re-fold, on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError
from prometheus_client import generate_latest

from cashpos.metrics import ReconcilerMetrics
from cashpos.names import RedisKeys, Topics, side_of_topic
from cashpos.settings import Settings
from reconcile import checkpoint
from reconcile.checkpoint import Discarded, Header, Offsets
from reconcile.incremental import Incremental
from reconcile.run import Report, _compare, _redis_view
from streams.contract import CONTRACT_VERSION
from streams.reader import Record

log = logging.getLogger("cashpos.reconcile")

PAGE_RECORDS = 20_000
SAVE_EVERY_S = 60.0  # during a long read (the first fold of a long history): a checkpoint this often
METRICS_ID = "reconcile"  # its exposition's name among the workers' (the API's label worker=)


class TopicsBehind(Exception):
    """The checkpoint's offsets lie past a partition's end: the topics are not the ones folded."""


def fold_page(ref: Incremental, offsets: Offsets, page: Iterable[Record]) -> int:
    """Fold the records of ``page`` past ``offsets`` (each partition's next offset, advanced
    here) into ``ref``, then compact it; returns how many were folded. A record below its
    partition's offset was folded already (a re-delivery) and is skipped."""
    n = 0
    for rec in page:
        tp = (rec.topic, rec.partition)
        if rec.offset < offsets.get(tp, 0):
            continue
        ref.feed_record(rec.value, side_of_topic(rec.topic), rec.key)
        offsets[tp] = rec.offset + 1
        n += 1
    ref.compact()
    return n


async def read_pages(
    settings: Settings,
    topics: list[str],
    start: Offsets,
    page_records: int = PAGE_RECORDS,
    idle_ms: int = 1500,
    stall_s: float = 60.0,
) -> AsyncGenerator[list[Record], None]:
    """The records of ``topics`` from ``start`` (next offset per (topic, partition); 0 when
    absent) to each partition's end, in pages of at most ``page_records``. The end is the high
    watermark of the fetch responses, as in :func:`streams.reader.read_topics` (Tansu answers
    ListOffsets wrongly, so no reset to "latest": an offset past the end raises TopicsBehind).
    TimeoutError when no page and no end arrive for ``stall_s``."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_args(),
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="none",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata for every topic
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start.get((tp.topic, tp.partition), 0))
        deadline = time.monotonic() + stall_s
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=idle_ms, max_records=page_records)
            except OffsetOutOfRangeError as exc:
                raise TopicsBehind(f"an offset past the end of its partition: {exc}") from exc
            page = [
                Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value or b"")
                for recs in batch.values()
                for r in recs
            ]
            if page:
                deadline = time.monotonic() + stall_s
                yield page
            done = True
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None and start.get((tp.topic, tp.partition), 0) > hw:
                    raise TopicsBehind(
                        f"{tp.topic}[{tp.partition}]: checkpoint at {start[(tp.topic, tp.partition)]}, end {hw}"
                    )
                done = done and hw is not None and await consumer.position(tp) >= hw
            if done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topics}: no record and no end for {stall_s}s")
    finally:
        await consumer.stop()


class Reconciler:
    """The reference fold, its offsets and checkpoint directory; :meth:`run_once` is one interval."""

    def __init__(
        self,
        settings: Settings,
        directory: Path | None = None,
        metrics: ReconcilerMetrics | None = None,
        page_records: int = PAGE_RECORDS,
    ) -> None:
        self.settings = settings
        self.directory = directory or settings.reconcile_checkpoint_dir
        self.metrics = metrics or ReconcilerMetrics()
        self.page_records = page_records
        self.keys = RedisKeys(settings.namespace)
        self.topics = list(Topics(settings.namespace).sources)
        self.checkpoint_bytes = 0
        self.resumed = False  # from a checkpoint (else from offset 0)
        self.unsaved = 0  # records folded since the last checkpoint
        self.ref, self.offsets = self._resume()

    def _fresh(self, why: str) -> tuple[Incremental, Offsets]:
        log.warning("reconcile: full re-fold from offset 0: %s", why, extra={"refold": {"why": why}})
        self.metrics.full_refolds.inc()
        self.resumed = False
        return Incremental(max_bytes=self.settings.max_event_bytes), {}

    def _resume(self) -> tuple[Incremental, Offsets]:
        data = checkpoint.read(self.directory)
        if data is None:
            return self._fresh(f"no checkpoint in {self.directory}")
        try:
            cp = checkpoint.decode(data, self.settings.namespace, self.settings.partitions)
        except Discarded as exc:
            return self._fresh(f"checkpoint discarded: {exc}")
        self.checkpoint_bytes = len(data)
        self.resumed = True
        log.info(
            "reconcile: resuming from the checkpoint (%d records folded, %d bytes)",
            cp.header.records,
            len(data),
            extra={"checkpoint": {"records": cp.header.records, "bytes": len(data)}},
        )
        return cp.ref, cp.offsets

    def save(self) -> int:
        header = Header(
            format=checkpoint.FORMAT_VERSION,
            contract=CONTRACT_VERSION,
            namespace=self.settings.namespace,
            partitions=self.settings.partitions,
            written_ms=int(time.time() * 1000),
            records=self.ref.records,
        )
        self.checkpoint_bytes = checkpoint.write(
            self.directory, checkpoint.encode_chunks(self.ref, self.offsets, header)
        )
        self.unsaved = 0
        return self.checkpoint_bytes

    async def _read(self) -> int:
        """Fold every record past the offsets. The state is consistent with the offsets after each
        page (a page is folded without a pause), so a failure or a cancellation part-way loses
        nothing already folded, and a long read writes a checkpoint every SAVE_EVERY_S."""
        n = 0
        saved_at = time.monotonic()
        pages = read_pages(self.settings, self.topics, dict(self.offsets), self.page_records)
        async with contextlib.aclosing(pages):
            async for page in pages:
                folded = fold_page(self.ref, self.offsets, page)
                n += folded
                self.unsaved += folded
                if time.monotonic() - saved_at > SAVE_EVERY_S:
                    self.save()
                    saved_at = time.monotonic()
                    log.info("reconcile: %d records read so far (checkpoint written)", n)
        return n

    async def run_once(self, publish: bool = True) -> Report:
        """One interval: Redis, then the new records, the comparison, the checkpoint, the report."""
        t0 = time.perf_counter()
        r = aioredis.from_url(self.settings.redis_url, socket_timeout=10)
        try:
            redis_view, unseeded = await _redis_view(r, self.keys)  # first: see the module's doc
            try:
                read = await self._read()
            except TopicsBehind as exc:
                self.ref, self.offsets = self._fresh(f"checkpoint ahead of the topics: {exc}")
                read = await self._read()
            expected, versions = self.ref.positions(), self.ref.versions()
            diffs, lagging, krw = _compare(expected, versions, redis_view, "redis", lag_ok=True)
            if self.unsaved or not self.checkpoint_bytes:
                self.save()
            counts = self.ref.counts()
            report = Report(
                finished_ms=int(time.time() * 1000),
                seconds=round(time.perf_counter() - t0, 3),
                records_in=self.ref.records,
                applied=counts["applied"],
                duplicates=counts["duplicate"],
                dead_letters=sum(counts["rejected"].values()),
                positions_checked=len(set(expected) | set(redis_view)),
                lagging=lagging,
                unseeded=unseeded,
                diff_krw=krw,
                differences=diffs[:100],
                mode="incremental",
                records_read=read,
                checkpoint_bytes=self.checkpoint_bytes,
            )
            m = self.metrics
            m.records_read.inc(read)
            m.records_folded.set(report.records_in)
            m.run_seconds.set(report.seconds)
            m.checkpoint_bytes.set(self.checkpoint_bytes)
            m.runs.labels("exact" if report.ok else "difference").inc()
            if publish:
                await r.set(self.keys.reconciliation, msgspec.json.encode(report))
                await self.publish_metrics(r)
            return report
        finally:
            await r.aclose()

    async def publish_metrics(self, r: aioredis.Redis) -> None:
        """Its exposition where the API finds the workers' (kept for three intervals)."""
        ttl = int(max(60.0, 3 * self.settings.reconcile_interval_seconds))
        await r.set(self.keys.worker_metrics(METRICS_ID), generate_latest(self.metrics.registry), ex=ttl)


def log_report(rep: Report) -> None:
    figures = {
        "mode": rep.mode,
        "records": rep.records_in,
        "read": rep.records_read,
        "applied": rep.applied,
        "duplicates": rep.duplicates,
        "dead_letters": rep.dead_letters,
        "positions": rep.positions_checked,
        "lagging": rep.lagging,
        "unseeded": rep.unseeded,
        "diff_krw": rep.diff_krw,
        "checkpoint_bytes": rep.checkpoint_bytes,
        "seconds": rep.seconds,
    }
    text = " ".join(f"{k}={v}" for k, v in figures.items())
    log.info("reconcile %s", text, extra={"reconcile": {"ok": rep.ok, **figures}})
    for d in rep.differences[:20]:
        log.warning(
            "reconcile difference %s %s/%s/%s",
            d.against,
            d.org_code,
            d.account,
            d.fiscal_year,
            extra={"difference": msgspec.to_builtins(d)},
        )


async def run_continuous(settings: Settings, interval: float, stop: asyncio.Event) -> None:
    """Reconcile every ``interval`` seconds (from one's end to the next's start) until ``stop``.
    A failed interval (broker or Redis away) is logged and counted; the next one carries on
    from what was folded."""
    rec = Reconciler(settings)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            run = asyncio.ensure_future(rec.run_once())
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():  # stopped during an interval (a long first fold): keep what was read
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run
                if rec.unsaved:
                    rec.save()
                    log.info("reconcile: stopped during an interval; what it had read is checkpointed")
                return
            try:
                log_report(run.result())
            except Exception:  # any failure of one interval: logged, the next one retries
                log.exception("reconcile: the interval failed; retrying in %ss", interval)
                rec.metrics.runs.labels("failed").inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), timeout=interval)
    finally:
        stopping.cancel()
