"""Alerting inside the ledger's batch: the ``BatchHook`` (``agents.hooks``) that runs the alert
book (``alerts.book.AlertBook``) and publishes what it decides.

* ``after_fold`` feeds the batch's changes to the book and adds its records (alert state, daily
  buckets, open commitments, one *outbox* record per alert change) to the batch's one atomic
  write: after a kill -9 the alert state on disk matches the balances on disk, and the replayed
  events raise exactly what had not been written.
* ``after_commit`` publishes the outbox once the state holding it is flushed to disk: the alerts
  topic (keyed by org_code, acks=all), Redis (open/recent alerts, version-guarded), the channel
  ``keys.alerts_channel`` (the dashboards' live stream) and, if configured, the webhook; then
  deletes the outbox records. What a crash interrupts is re-published on start: a change can
  reach the topic twice (same ``id`` and ``rev``: consumers de-duplicate on that pair), never
  zero times.
* Rules are evaluated only on a *settled* partition (``FoldContext.unsettled``); while one
  catches up, its positions are held and judged once, on the state it reaches.
* Changes caused by records the group had processed before (a worker rebuilding a partition
  another worker already processed) update Redis but are not announced again, unless Redis lacks
  them (then the earlier run never published them).
* ``housekeeping`` (once a second): threshold overrides from Redis (``PUT /v1/thresholds``) take
  effect without a restart, the operational rules run (stale data, processor lag), the
  acknowledgements made through the API are copied into the book, failed publications retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable

import msgspec
import orjson

from agents.hooks import FoldContext, HookHost
from agents.webhook import WebhookSender
from alerts.book import AlertBook
from alerts.config import AlertConfig, config_from_env
from alerts.model import RULES, Alert, AlertChange
from cashpos.metrics import ProcessorMetrics
from cashpos.names import RedisKeys, Topics
from cashpos.settings import Settings
from state import layout
from state.alert_projection import AlertProjection, decode_overrides, merge_ack
from state.ledger import Position, PosKey

log = logging.getLogger("cashpos.alerts")

ACK_SYNC_SECONDS = 5.0

# An alert change waiting to be published: its public shape and whether it was caused by a
# replay (a record the group had processed before, or an outbox record found on start, which
# may have been published before the crash).
Pending = tuple[dict[str, object], bool]


class AlertingHook:
    def __init__(
        self,
        settings: Settings,
        metrics: ProcessorMetrics | None = None,
        config: AlertConfig | None = None,
        webhook: WebhookSender | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ProcessorMetrics()
        self.topics = Topics(settings.namespace)
        self.keys = RedisKeys(settings.namespace)
        self.config = config or config_from_env()
        self.book = AlertBook(self.config, worker_id=settings.worker_id)
        self.webhook = webhook if webhook is not None else WebhookSender.from_env(self.metrics)
        self.pending: dict[bytes, Pending] = {}  # outbox key -> change, in order
        self.last_applied: dict[str, int] = {}  # org -> wall ms of its latest applied event
        self.host: HookHost | None = None
        self.projection: AlertProjection | None = None
        self._flush_lock = asyncio.Lock()
        self._started = False
        self._overrides_raw: dict[bytes | str, bytes | str] | None = None
        self._last_ack_sync = 0.0
        self._retry_at = 0.0

    def floor_of(self, org: str, account: str) -> int | None:
        """The account's floor today (its newest fiscal year's, as rule 2 judges it)."""
        years = self.book.accounts.get((org, account))
        return years[-1].floor if years else None

    def _write_direct(self, records: list[tuple[bytes, bytes]]) -> None:
        """Records produced outside a batch (load, thresholds, operational rules, acks): written
        on their own; they depend on nothing a replay could change."""
        if not records or self.host is None:
            return
        self.host.store.write([(k, v) for k, v in records if v])
        gone = [k for k, v in records if not v]
        if gone:
            self.host.store.delete(gone)

    def _queue(self, changes: Iterable[AlertChange], replay: bool = False) -> None:
        for ch in changes:
            a = ch.alert
            self.pending[layout.outbox_key(a.org_code, a.id, a.rev)] = (ch.to_dict(), replay)

    # -- BatchHook -------------------------------------------------------------------------------

    async def on_assigned(self, host: HookHost, orgs: list[str]) -> None:
        self.host = host
        if self.projection is None:
            self.projection = AlertProjection(host.redis, self.keys, self.config.operational.recent_keep)
        if not self._started:
            self._started = True
            self.book.load_worker(host.store.scan)
            for k, v in host.store.scan(layout.OUTBOX_PREFIX):  # committed, not published (a crash)
                self.pending[k] = (layout.decode_outbox(v), True)
            if self.pending:
                log.info("re-publishing %d alert change(s) from the outbox", len(self.pending))
            if self.webhook is not None:
                self.webhook.start()
        overrides = await self._read_overrides()
        changes: list[AlertChange] = []
        if overrides is not None:
            self._overrides_raw = overrides
            changes += self.book.set_overrides(decode_overrides(overrides), host.positions)
        seed = await self._open_alerts_in_redis() if orgs else {}
        by_org: dict[str, dict[PosKey, Position]] = {org: {} for org in orgs}
        for pk, p in host.positions.items():
            mine = by_org.get(pk[0])
            if mine is not None:
                mine[pk] = p
        records: list[tuple[bytes, bytes]] = []
        for org in orgs:
            records += self.book.load_org(org, by_org[org], host.store.scan, seed.get(org, ()))
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
            log.info(
                "alerting: loaded %d governments, %d open alerts", len(orgs), len(self.book.open_alerts())
            )

    def on_revoked(self, orgs: set[str]) -> None:
        self.book.drop_orgs(orgs)
        for org in orgs:
            self.last_applied.pop(org, None)

    def after_fold(self, batch: FoldContext) -> None:
        try:
            hold = batch.unsettled(self.config.operational.settle_backlog_records)
            out = self.book.apply(batch.changes, batch.positions, hold)
            if self.book.held:
                out += self.book.release(batch.positions, lambda org: org not in hold)
            for pk in batch.changes.index:
                self.last_applied[pk[0]] = batch.now_ms
            records = self.book.take_records()
        except Exception:  # alerting must never stop the ledger
            log.exception("alert evaluation failed for a batch")
            self.metrics.alert_errors.inc()
            return
        for ch in out:
            replay = ch.source is not None and batch.is_replay(*ch.source)
            self._queue((ch,), replay)
        batch.write(records)

    async def after_commit(self) -> None:
        if self.pending:
            await self.flush()

    async def housekeeping(self) -> None:
        host = self.host
        if host is None:
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
            except Exception as exc:  # noqa: BLE001 - Redis unavailable: synced next time
                log.debug("ack sync skipped: %r", exc)
        lag = host.records_behind()
        async with host.exclusive:  # the book is the batch's: never change it while a batch runs
            changes: list[AlertChange] = []
            try:
                if overrides is not None and overrides != self._overrides_raw:
                    self._overrides_raw = overrides
                    changes += self.book.set_overrides(decode_overrides(overrides), host.positions)
                for aid, ack in acks.items():
                    at_ms = ack.get("at_ms")
                    self.book.acknowledge(aid, str(ack.get("by")), at_ms if isinstance(at_ms, int) else 0)
                if self.book.held:
                    hold = host.unsettled(self.config.operational.settle_backlog_records)
                    changes += self.book.release(host.positions, lambda org: org not in hold)
                changes += self.book.check_stale(now_ms, self.last_applied, host.owned_orgs())
                changes += self.book.check_lag(now_ms, lag)
                self._write_direct(self.book.take_records())
            except Exception:  # alerting must never stop the ledger
                log.exception("alert housekeeping failed")
                self.metrics.alert_errors.inc()
            self._queue(changes)
        if self.pending and mono >= self._retry_at:
            await self.flush()
        by_rule = Counter(a.rule for a in self.book.open_alerts())
        for rule in RULES:
            self.metrics.alerts_open.labels(rule).set(by_rule.get(rule, 0))

    async def stop(self) -> None:
        if self.webhook is not None:
            await self.webhook.stop()

    # -- publishing ------------------------------------------------------------------------------

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
        except Exception as exc:  # noqa: BLE001 - without them, a new owner may raise them again
            log.warning("open alerts not read from Redis (a new owner may raise them again): %r", exc)
        return out

    async def _read_overrides(self) -> dict[bytes | str, bytes | str] | None:
        if self.host is None:
            return None
        try:
            raw = await self.host.redis.hgetall(self.keys.thresholds)
        except Exception as exc:  # noqa: BLE001 - Redis unavailable: the overrides in force stay
            log.debug("thresholds not read: %r", exc)
            return None
        return raw

    async def flush(self) -> None:
        """Publish the pending alert changes: topic, Redis, channel, webhook; then drop them
        from the outbox. On failure everything stays pending and is retried."""
        async with self._flush_lock:
            items = list(self.pending.items())
            host = self.host
            if not items or host is None or self.projection is None:
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
                live = [d for _, (d, replay) in items if not replay or _rev(d) > known.get(str(d["id"]), -1)]
                bodies = [orjson.dumps(d) for d in live]
                if bodies:
                    # Announced means on disk: the state that raised these changes (and their
                    # outbox records) is flushed first; the write-ahead log is off, so a kill -9
                    # would otherwise lose it and the replay would raise them again.
                    await asyncio.to_thread(host.store.flush, True)
                    futures = [
                        await host.producer.send(self.topics.alerts, body, key=_topic_key(d))
                        for d, body in zip(live, bodies, strict=True)
                    ]
                    await asyncio.wait_for(asyncio.gather(*futures), timeout=15)
                await self.projection.write(d for _, (d, _) in items)
                if bodies:
                    async with host.redis.pipeline(transaction=False) as pipe:
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
                host.store.delete([k for k, _ in items])
                for k, _ in items:
                    self.pending.pop(k, None)
            except Exception as exc:  # noqa: BLE001 - any failure: everything stays pending, retried
                self.metrics.alert_publish_errors.inc()
                self._retry_at = time.monotonic() + 1.0
                log.warning("alert publication failed (%d pending, retried): %r", len(self.pending), exc)


def _rev(d: dict[str, object]) -> int:
    rev = d["rev"]
    return rev if isinstance(rev, int) else -1


def _topic_key(d: dict[str, object]) -> bytes:
    """The alerts topic's key: the government (the worker, for processor lag)."""
    return str(d.get("org_code") or d.get("worker") or "").encode()
