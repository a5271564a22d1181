"""Alert webhook delivery (agents.webhook.WebhookSender) against a local HTTP server: signed
with HMAC-SHA256, retried with backoff on failure, never blocking (bounded queue, drops counted).
No broker or Redis needed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools

from aiohttp import web

from agents.webhook import WebhookSender, sign
from cashpos.metrics import ProcessorMetrics


def counter(m: ProcessorMetrics, outcome: str) -> float:
    return m.alert_webhook.labels(outcome)._value.get()


async def serve(statuses: list[int]) -> tuple[web.AppRunner, str, list[tuple[bytes, str | None, float]]]:
    seen: list[tuple[bytes, str | None, float]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(
            (
                await request.read(),
                request.headers.get("X-Cashpos-Signature"),
                asyncio.get_running_loop().time(),
            )
        )
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook", seen


async def test_signed_delivery_is_retried_with_backoff_until_accepted() -> None:
    runner, url, seen = await serve([500, 503, 200])
    m = ProcessorMetrics()
    sender = WebhookSender(url, "s3cret", m, base_delay=0.05, attempts=5)
    sender.start()
    try:
        body = b'{"id":"5260000:general:2026:shortfall:1","change":"raised"}'
        assert sender.offer(body)
        for _ in range(100):
            if counter(m, "delivered"):
                break
            await asyncio.sleep(0.05)
    finally:
        await sender.stop()
        await runner.cleanup()
    assert counter(m, "delivered") == 1 and counter(m, "failed") == 0
    assert [b for b, _, _ in seen] == [body] * 3
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert {sig for _, sig, _ in seen} == {expected} == {sign(b"s3cret", body)}
    gaps = [b - a for (_, _, a), (_, _, b) in itertools.pairwise(seen)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential: 0.05 s, then 0.1 s


async def test_client_errors_are_not_retried_and_attempts_are_bounded() -> None:
    runner, url, seen = await serve([400, 500, 500])
    m = ProcessorMetrics()
    sender = WebhookSender(url, "k", m, base_delay=0.01, attempts=2)
    sender.start()
    try:
        sender.offer(b"{}")  # refused with 400: given up at once
        sender.offer(b"[]")  # 500 twice: given up after 2 attempts
        for _ in range(100):
            if counter(m, "failed") == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await sender.stop()
        await runner.cleanup()
    assert counter(m, "failed") == 2 and counter(m, "delivered") == 0
    assert [b for b, _, _ in seen] == [b"{}", b"[]", b"[]"]


async def test_a_full_queue_drops_instead_of_blocking() -> None:
    m = ProcessorMetrics()
    sender = WebhookSender("http://127.0.0.1:9/never", None, m, maxsize=2)  # not started
    assert sender.offer(b"1") and sender.offer(b"2")
    assert not sender.offer(b"3")
    assert counter(m, "dropped") == 1
