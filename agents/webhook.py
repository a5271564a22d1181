"""The alert webhook: every alert change POSTed to one URL (``CASHPOS_ALERT_WEBHOOK_URL``), signed
with ``CASHPOS_ALERT_WEBHOOK_SECRET`` (docs/alerts.md), from a background task that never makes
the processor wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from typing import TYPE_CHECKING

from cashpos.metrics import ProcessorMetrics

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("cashpos.alerts")


def sign(secret: bytes, body: bytes) -> str:
    """``X-Cashpos-Signature`` header value: HMAC-SHA256 of the exact body, hex."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Delivers alert changes to one URL from a background task with a bounded queue: the
    processor only ever ``offer``s (never waits); a full queue drops the change (counted).
    Each POST carries the JSON body and ``X-Cashpos-Signature: sha256=<HMAC-SHA256(secret,
    body)>``; failures (connection errors, timeouts, 5xx, 408, 429) are retried with
    exponential backoff, other 4xx are not."""

    def __init__(
        self,
        url: str,
        secret: str | None,
        metrics: ProcessorMetrics | None = None,
        *,
        maxsize: int = 1000,
        attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
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
            # whatever it ended with, the sender is gone: its failures were counted and logged
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
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

    async def deliver(self, session: aiohttp.ClientSession, body: bytes) -> bool:
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
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("alert webhook attempt %d failed: %r", attempt + 1, exc)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(min(self.max_delay, self.base_delay * 2**attempt))
        self._count("failed")
        return False
