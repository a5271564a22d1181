"""Alerting inside the ledger's batch: a ``BatchHook`` around the pure ``state.alerts.AlertBook``.

* ``after_fold`` feeds the batch's ``Changes`` to the book and returns its changed records (alert
  state, daily outflow buckets, open-commitment index, and one *outbox* record per alert change)
  for the ledger's single atomic WriteBatch: after a kill -9 the alert state on disk matches the
  balances on disk, and the replayed events raise exactly what had not been written.
* ``after_commit`` publishes the outbox, once the state holding it is flushed to disk: the
  alerts topic (keyed by org_code, acks=all), Redis
  (open/recent alerts, version-guarded), the Redis channel ``keys.alerts_channel`` (the
  dashboards' live stream) and, if configured, the webhook; then deletes the outbox records. What a
  crash interrupts is re-published on start: a change can reach the topic twice (same ``id`` and
  ``rev``: consumers de-duplicate on that pair), never zero times.
* Rules are evaluated only on a *settled* partition (see ``_unsettled``); while one catches up,
  its positions are held and judged once, on the state it reaches.
* Changes caused by records below the group's committed offset (a worker rebuilding a partition
  another worker already processed) update Redis but are not announced again, unless Redis
  lacks them (then the earlier run never published them).
* ``housekeeping`` (once a second): threshold overrides from Redis (``PUT /v1/thresholds``)
  take effect without a restart (the positions they touch are re-evaluated at once), the
  operational rules (stale data, processor lag), acknowledgements made through the API are
  copied into the book, and failed publications are retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec
import orjson
from aiokafka import TopicPartition

from cashpos.metrics import ProcessorMetrics
from cashpos.names import RedisKeys, Topics
from cashpos.settings import Settings
from state.alert_projection import AlertProjection, merge_ack
from state.alerts import (
    LAG,
    Alert,
    AlertBook,
    AlertChange,
    AlertConfig,
    decode_overrides,
    load_config,
)
from state.layout import OUTBOX_PREFIX
from state.ledger import Changes, Ledger

if TYPE_CHECKING:
    from agents.ledger import LedgerWorker

log = logging.getLogger("cashpos.alerts")

ACK_SYNC_SECONDS = 5.0


def alert_config_from_env() -> AlertConfig:
    return load_config(os.environ.get("CASHPOS_ALERT_CONFIG") or None)


# ---------------------------------------------------------------------------------------------
# Webhook


def sign(secret: bytes, body: bytes) -> str:
    """``X-Cashpos-Signature`` header value: HMAC-SHA256 of the exact body, hex."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Delivers alert changes to one URL from a background task with a bounded queue: the
    processor only ever ``offer``s (never waits); a full queue drops the change (counted).
    Each POST carries the JSON body and ``X-Cashpos-Signature: sha256=<HMAC-SHA256(secret,
    body)>``; failures (connection errors, timeouts, 5xx, 408, 429) are retried with
    exponential backoff, other 4xx are not."""

    def __init__(self, url: str, secret: str | None, metrics: ProcessorMetrics | None = None, *,
                 maxsize: int = 1000, attempts: int = 6, base_delay: float = 0.5,
                 max_delay: float = 30.0, timeout: float = 5.0) -> None:
        self.url = url
        self.secret = secret.encode() if secret else None
        self.metrics = metrics
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, metrics: ProcessorMetrics | None = None) -> WebhookSender | None:
        url = os.environ.get("CASHPOS_ALERT_WEBHOOK_URL")
        if not url:
            return None
        secret = os.environ.get("CASHPOS_ALERT_WEBHOOK_SECRET")
        if not secret:
            log.warning("CASHPOS_ALERT_WEBHOOK_SECRET is not set: alert webhooks are sent unsigned")
        return cls(url, secret, metrics)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_webhook.labels(outcome).inc()

    def offer(self, body: bytes) -> bool:
        try:
            self.queue.put_nowait(body)
            return True
        except asyncio.QueueFull:
            self._count("dropped")
            return False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="alert-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _run(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as s:
            while True:
                body = await self.queue.get()
                try:
                    await self.deliver(s, body)
                except asyncio.CancelledError:
                    raise
                except Exception:  # never let one bad delivery stop the sender
                    log.exception("alert webhook delivery crashed")
                    self._count("failed")

    async def deliver(self, session, body: bytes) -> bool:  # type: ignore[no-untyped-def]
        import aiohttp

        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers["X-Cashpos-Signature"] = sign(self.secret, body)
        for attempt in range(self.attempts):
            try:
                async with session.post(self.url, data=body, headers=headers) as r:
                    if 200 <= r.status < 300:
                        self._count("delivered")
                        return True
                    if 400 <= r.status < 500 and r.status not in (408, 429):
                        log.warning("alert webhook refused (%d); not retried", r.status)
                        self._count("failed")
                        return False
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.info("alert webhook attempt %d failed: %r", attempt + 1, exc)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(min(self.max_delay, self.base_delay * 2 ** attempt))
        self._count("failed")
        return False


# ---------------------------------------------------------------------------------------------
# The hook

Pending = tuple[dict[str, object], tuple[str, int, int] | None]
# The source of an outbox record found on start: it may have been published before the crash
# (its deletion was not flushed), so it is treated like a replayed change (see ``flush``).
RECOVERED: tuple[str, int, int] = ("", -1, -1)


class _Unsettled:
    """The governments of the partitions that are not settled (``in`` test for the book)."""

    __slots__ = ("partitions", "org_partition")

    def __init__(self, partitions: set[int], org_partition: dict[str, int]) -> None:
        self.partitions = partitions
        self.org_partition = org_partition

    def __contains__(self, org: object) -> bool:
        return self.org_partition.get(org, -1) in self.partitions  # type: ignore[call-overload]

    def __bool__(self) -> bool:
        return bool(self.partitions)


class AlertingHook:
    def __init__(self, settings: Settings, metrics: ProcessorMetrics | None = None,
                 config: AlertConfig | None = None, webhook: WebhookSender | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ProcessorMetrics()
        self.topics = Topics(settings.namespace)
        self.keys = RedisKeys(settings.namespace)
        self.config = config or alert_config_from_env()
        self.book = AlertBook(self.config, worker_id=settings.worker_id)
        self.webhook = webhook if webhook is not None else WebhookSender.from_env(self.metrics)
        self.pending: dict[bytes, Pending] = {}  # outbox key -> change, in order
        self.last_applied: dict[str, int] = {}  # org -> wall ms of its latest applied event
        self.worker: LedgerWorker | None = None
        self.projection: AlertProjection | None = None
        self._deletions: list[bytes] = []
        self._flush_lock = asyncio.Lock()
        self._started = False
        self._overrides_raw: dict[bytes, bytes] | None = None
        self._last_ack_sync = 0.0
        self._retry_at = 0.0
        self._settle_at: dict[TopicPartition, int] = {}  # first high watermark seen since assignment

    # -- store access ------------------------------------------------------------------------------

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        assert self.worker is not None
        yield from self.worker.store.scan(prefix, start)

    def _write_direct(self, records: list[tuple[bytes, bytes]]) -> None:
        """Records produced outside a batch (load, thresholds, operational rules, acks): written
        on their own; they depend on nothing a replay could change."""
        if not records or self.worker is None:
            return
        self.worker.store.write(records)
        self._delete([k for k, v in records if not v])

    def _delete(self, keys: list[bytes]) -> None:
        if keys and self.worker is not None:
            self.worker.store.delete(keys)

    def _queue(self, changes: list[AlertChange]) -> None:
        for ch in changes:
            self.pending[ch.outbox_key] = (ch.to_dict(), ch.source)

    # -- BatchHook ---------------------------------------------------------------------------------

    async def on_assigned(self, worker: LedgerWorker, orgs: list[str]) -> None:
        self.worker = worker
        self._settle_at.clear()
        if self.projection is None and worker.redis is not None:
            self.projection = AlertProjection(worker.redis, self.keys, self.config.operational.recent_keep)
        if not self._started:
            self._started = True
            self.book.load_worker(self._scan)
            for k, v in self._scan(OUTBOX_PREFIX):  # committed but not yet published (a crash)
                self.pending[k] = (orjson.loads(v), RECOVERED)
            if self.pending:
                log.info("re-publishing %d alert change(s) from the outbox", len(self.pending))
            if self.webhook is not None:
                self.webhook.start()
        overrides = await self._read_overrides()
        changes: list[AlertChange] = []
        if overrides is not None:
            self._overrides_raw = overrides
            changes += self.book.set_overrides(decode_overrides(overrides), worker.ledger.positions)
        seed = await self._open_alerts_in_redis() if orgs else {}
        by_org: dict[str, dict] = {org: {} for org in orgs}
        for pk, p in worker.ledger.positions.items():
            d = by_org.get(pk[0])
            if d is not None:
                d[pk] = p
        records: list[tuple[bytes, bytes]] = []
        for org in orgs:
            records += self.book.load_org(org, by_org[org], self._scan, seed.get(org, ()))
        records += self.book.take_records()
        self._write_direct(records)
        self._queue(changes)
        now = int(time.time() * 1000)
        for org in orgs:
            o = self.book.orgs.get(org)
            stale = o.rec.stale if o is not None else None
            # an open stale-data alert stays open until data really flows again
            self.last_applied[org] = stale.raised_ms if stale is not None else now
        if orgs:
            log.info("alerting: loaded %d governments, %d open alerts", len(orgs), len(self.book.open_alerts()))

    def on_revoked(self, orgs: set[str]) -> None:
        self.book.drop_orgs(orgs)
        for org in orgs:
            self.last_applied.pop(org, None)

    def _unsettled(self) -> _Unsettled:
        """Partitions not caught up since their assignment: below the group's committed offset
        or the first high watermark seen (unknown until a fetch reports it) on either input
        topic, or with more than ``settle_backlog_records`` left on either. The two topics are
        read independently, so a partition catching up goes through states that never existed
        (e.g. receipts folded before a commitment that preceded them)."""
        w = self.worker
        parts: set[int] = set()
        if w is not None:
            limit = self.config.operational.settle_backlog_records
            hw = w.consumer.highwater if w.consumer is not None else (lambda tp: None)
            settle_at = self._settle_at
            for tp, nxt in w.next_offsets.items():
                h = hw(tp)
                first = settle_at.get(tp)
                if first is None:
                    if h is None:
                        parts.add(tp.partition)
                        continue
                    first = settle_at[tp] = h
                if nxt < w.replay_until.get(tp, 0) or nxt < first or (h is not None and h - nxt > limit):
                    parts.add(tp.partition)
        return _Unsettled(parts, w.org_partition if w is not None else {})

    def after_fold(self, changes: Changes, ledger: Ledger) -> list[tuple[bytes, bytes]]:
        try:
            hold = self._unsettled()
            out = self.book.apply(changes, ledger.positions, hold)
            if self.book.held:
                out += self.book.release(ledger.positions, lambda org: org not in hold)
            if changes.index:
                now = int(time.time() * 1000)
                la = self.last_applied
                for pk in changes.index:
                    la[pk[0]] = now
            records = self.book.take_records()
        except Exception:  # alerting must never stop the ledger
            log.exception("alert evaluation failed for a batch")
            self.metrics.alert_errors.inc()
            return []
        self._queue(out)
        self._deletions = [k for k, v in records if not v]
        return records

    async def after_commit(self) -> None:
        if self._deletions:
            self._delete(self._deletions)  # closed commitments' index entries (tombstones)
            self._deletions = []
        if self.pending:
            await self.flush()

    async def housekeeping(self) -> None:
        w = self.worker
        if w is None or w.redis is None:
            return
        now_ms = int(time.time() * 1000)
        overrides = await self._read_overrides()
        acks: dict[str, dict[str, object]] = {}
        mono = time.monotonic()
        if self.projection is not None and mono - self._last_ack_sync >= ACK_SYNC_SECONDS:
            self._last_ack_sync = mono
            ids = [a.id for a in self.book.open_alerts() if a.acknowledged_by is None]
            try:
                acks = await self.projection.acks(ids)
            except Exception as exc:
                log.debug("ack sync skipped: %r", exc)
        lag = 0
        if w.consumer is not None:
            for tp, pos in list(w.next_offsets.items()):
                hw = w.consumer.highwater(tp)
                if hw is not None:
                    lag += max(0, hw - pos)
        async with w._lock:  # the book is the batch's: never change it while a batch runs
            changes: list[AlertChange] = []
            try:
                if overrides is not None and overrides != self._overrides_raw:
                    self._overrides_raw = overrides
                    changes += self.book.set_overrides(decode_overrides(overrides), w.ledger.positions)
                for aid, ack in acks.items():
                    self.book.acknowledge(aid, str(ack.get("by")), int(ack.get("at_ms") or 0))  # type: ignore[call-overload]
                if self.book.held:
                    hold = self._unsettled()
                    changes += self.book.release(w.ledger.positions, lambda org: org not in hold)
                changes += self.book.check_stale(now_ms, self.last_applied, w.owned_orgs)
                changes += self.book.check_lag(now_ms, lag)
                self._write_direct(self.book.take_records())
            except Exception:
                log.exception("alert housekeeping failed")
                self.metrics.alert_errors.inc()
            self._queue(changes)
        if self.pending and mono >= self._retry_at:
            await self.flush()
        by_rule = Counter(a.rule for a in self.book.open_alerts())
        for rule in ("shortfall", "below_floor", "projected_shortfall", "year_end", "stale_data", LAG):
            self.metrics.alerts_open.labels(rule).set(by_rule.get(rule, 0))

    async def stop(self) -> None:
        if self.webhook is not None:
            await self.webhook.stop()

    # -- publishing --------------------------------------------------------------------------------

    async def _open_alerts_in_redis(self) -> dict[str, list[Alert]]:
        """The serving copy's open alerts by government: what a previous owner of a partition
        raised, for a worker that has no alert state for it."""
        out: dict[str, list[Alert]] = {}
        if self.projection is None:
            return out
        try:
            for d in await self.projection.list(open_=True):
                try:
                    a = msgspec.convert(d, Alert)
                except msgspec.ValidationError:
                    continue
                out.setdefault(a.org_code, []).append(a)
        except Exception as exc:
            log.warning("open alerts not read from Redis (a new owner may raise them again): %r", exc)
        return out

    async def _read_overrides(self) -> dict[bytes, bytes] | None:
        w = self.worker
        if w is None or w.redis is None:
            return None
        try:
            return await w.redis.hgetall(self.keys.thresholds)
        except Exception as exc:
            log.debug("thresholds not read: %r", exc)
            return None

    def _is_replay(self, src: tuple[str, int, int] | None) -> bool:
        if src is RECOVERED:
            return True
        if src is None or self.worker is None:
            return False
        return src[2] < self.worker.replay_until.get(TopicPartition(src[0], src[1]), 0)

    async def flush(self) -> None:
        """Publish the pending alert changes: topic, Redis, channel, webhook; then drop them
        from the outbox. On failure everything stays pending and is retried."""
        async with self._flush_lock:
            items = list(self.pending.items())
            w = self.worker
            if not items or w is None or self.projection is None or w.producer is None:
                return
            try:
                ids = sorted({str(d["id"]) for _, (d, _) in items})
                acks = await self.projection.acks(ids)
                for _, (d, _) in items:
                    merge_ack(d, acks.get(str(d["id"])))
                # A replayed change is pushed again unless the serving copy already holds it: a
                # replay after kill -9 can meet the batch boundaries differently and raise what
                # the first run never did. The topic goes first, so Redis never holds a change
                # the topic lacks (a crash in between re-sends it: at least once, same id/rev).
                known = await self.projection.revs(ids)
                live = [d for _, (d, src) in items
                        if not self._is_replay(src) or int(d["rev"]) > known.get(str(d["id"]), -1)]  # type: ignore[call-overload]
                bodies = [orjson.dumps(d) for d in live]
                if bodies:
                    # Announced means on disk: the state that raised these changes (and their
                    # outbox records) is flushed first; the write-ahead log is off, so a kill -9
                    # would otherwise lose it and the replay would raise them again.
                    await asyncio.to_thread(w.store.flush, True)
                    futures = [await w.producer.send(self.topics.alerts, body,
                                                     key=str(d.get("org_code") or d.get("worker") or "").encode())
                               for d, body in zip(live, bodies)]
                    await asyncio.wait_for(asyncio.gather(*futures), timeout=15)
                await self.projection.write(d for _, (d, _) in items)
                if bodies:
                    async with w.redis.pipeline(transaction=False) as pipe:  # type: ignore[union-attr]
                        for body in bodies:
                            pipe.publish(self.keys.alerts_channel, body)
                        await pipe.execute()
                    if self.webhook is not None:
                        for body in bodies:
                            self.webhook.offer(body)
                for d in live:
                    if d.get("change") == "raised":
                        self.metrics.alerts_raised.labels(str(d["rule"])).inc()
                    elif d.get("change") == "resolved":
                        self.metrics.alerts_resolved.labels(str(d["rule"])).inc()
                self._delete([k for k, _ in items])
                for k, _ in items:
                    self.pending.pop(k, None)
            except Exception as exc:
                self.metrics.alert_publish_errors.inc()
                self._retry_at = time.monotonic() + 1.0
                log.warning("alert publication failed (%d pending, retried): %r", len(self.pending), exc)
