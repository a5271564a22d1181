"""GET /v1/stream end to end: real broker, worker, Redis and API process (the ``stack`` fixture).

An event published during the test reaches open streams as a ``positions`` frame; a client that
resumes with Last-Event-ID first gets a ``snapshot``; 200 open streams still mean exactly one
Redis subscriber in the API process; a token revoked or expired while its streams are open ends
them within the token-cache period; and a token holds at most CASHPOS_MAX_STREAMS_PER_TOKEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from access.tokens import TokenStore, digest
from cashpos.names import RedisKeys
from cashpos.settings import Settings, load
from serving import live
from streams.publisher import Publisher

integration = pytest.mark.integration

KST = dt.timezone(dt.timedelta(hours=9))
SEOUL = "6110000"
JONGNO = "3000000"  # 종로구


def event(org: str, amount: int, kind: str = "receipt", account: str = "general") -> bytes:
    now = dt.datetime.now(KST)
    ev: dict[str, object] = {
        "event_id": f"live-{uuid.uuid4().hex}",
        "org_code": org,
        "account": account,
        "fiscal_year": now.year,
        "kind": kind,
        "amount": amount,
        "occurred_at": now.isoformat(),
        "source": "test_live_stream",
    }
    if kind == "receipt":
        ev["category"] = "local_tax"
    if kind in ("commitment", "commitment_cancel"):
        ev["commitment_id"] = f"c-{uuid.uuid4().hex[:16]}"
    return orjson.dumps(ev)


async def publish(settings, *raws: bytes) -> None:
    async with Publisher(settings) as pub:
        for raw in raws:
            await pub.send(raw)


@dataclass
class Sse:
    event: str
    id: str | None
    data: dict


class Stream:
    """A minimal SSE reader over an httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry: int | None = None
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> Sse:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Sse:
        event, ident = "message", None
        data: list[str] = []
        async for line in self._lines:
            if line == "":
                if data:
                    return Sse(event, ident, orjson.loads("\n".join(data)))
                event, ident, data = "message", None, []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
        raise EOFError("stream ended")

    async def until(self, pred, timeout: float = 10.0) -> Sse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no matching event")
            msg = await self.next(left)
            if pred(msg):
                return msg


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, base: str, token: str | None = None, **params: str
) -> AsyncIterator[Stream]:
    """A stream opened with the client's token, or with ``token``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if "last_event_id" in params:
        headers["Last-Event-ID"] = params.pop("last_event_id")
    async with client.stream("GET", f"{base}/v1/stream", params=params, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Stream(r)


def sse_gauge(metrics_text: str) -> float:
    m = re.search(r"^cashpos_api_sse_connections (\S+)$", metrics_text, re.MULTILINE)
    assert m, "cashpos_api_sse_connections not exported"
    return float(m.group(1))


@pytest.fixture
async def http(stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a national token of its own (a high rate limit: 200 streams open at once)."""
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
    token = stack.token("national", name="test_live_stream", rate_per_s=5_000)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(10, read=None), limits=limits, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        yield c


@integration
async def test_published_event_arrives_as_positions(stack, http) -> None:
    before = (await http.get(f"{stack.api}/v1/positions/{JONGNO}")).json()["totals"]
    async with open_stream(http, stack.api, org=JONGNO) as one, open_stream(http, stack.api) as nation:
        await publish(stack.settings, event(JONGNO, 1_234_567))
        msg = await one.until(lambda m: m.event == "positions", timeout=15)
        assert one.retry == 1000
        assert msg.id and re.fullmatch(r"\d+-\d+", msg.id)
        assert msg.data["orgs"] == [JONGNO]
        body = msg.data["governments"][JONGNO]
        assert body["totals"]["cash"] == before["cash"] + 1_234_567
        assert {a["account"] for a in body["accounts"]} >= {"general"}  # full body for ?org=
        assert body == {
            **body,
            **{
                k: v
                for k, v in (await http.get(f"{stack.api}/v1/positions/{JONGNO}")).json().items()
                if k in ("accounts", "totals")
            },
        }

        nat = await nation.until(lambda m: m.event == "positions" and JONGNO in m.data["orgs"])
        compact = nat.data["governments"][JONGNO]
        assert "accounts" not in compact  # the national stream carries totals only
        assert compact["totals"] == body["totals"]
        assert int(str(nat.id).split("-")[0]) == int(str(msg.id).split("-")[0])  # the same broadcast

        hb = await one.until(lambda m: m.event == "heartbeat", timeout=5)
        assert hb.data["live"] is True and hb.data["server_ms"] > 0
        assert int(str(hb.id).split("-")[0]) >= int(str(msg.id).split("-")[0])  # ids never go back


@integration
async def test_resume_with_last_event_id_sends_snapshot(stack, http) -> None:
    async with open_stream(http, stack.api, org=SEOUL) as s:
        await publish(stack.settings, event(SEOUL, 5_000_000_000))
        last = await s.until(lambda m: m.event == "positions", timeout=15)
    # While disconnected: another update the client must not miss.
    await publish(stack.settings, event(SEOUL, 777))
    want = None
    for _ in range(100):
        want = (await http.get(f"{stack.api}/v1/positions/{SEOUL}")).json()["totals"]
        if want["cash"] == last.data["governments"][SEOUL]["totals"]["cash"] + 777:
            break
        await asyncio.sleep(0.1)
    async with open_stream(http, stack.api, org=SEOUL, last_event_id=last.id or "") as s:
        snap = await s.next(timeout=5)
        assert snap.event == "snapshot"
        assert snap.data["snapshot"] is True and snap.data["orgs"] == [SEOUL]
        assert snap.data["governments"][SEOUL]["totals"] == want
        assert int(str(snap.id).split("-")[0]) >= int(str(last.id).split("-")[0])
    async with open_stream(http, stack.api, last_event_id="0-0") as s:  # the national stream
        snap = await s.next(timeout=5)
        assert snap.event == "snapshot"
        assert len(snap.data["governments"]) == 243 and snap.data["not_ready"] == []
        summary = (await http.get(f"{stack.api}/v1/summary")).json()
        row = next(g for g in summary["governments"] if g["org_code"] == SEOUL)
        assert snap.data["governments"][SEOUL]["totals"]["cash"] == row["cash"]
    async with open_stream(http, stack.api, org=SEOUL) as s:  # a fresh client: no snapshot
        first = await s.next(timeout=5)
        assert first.event == "heartbeat"


@integration
async def test_unknown_government_is_404(stack, http) -> None:
    r = await http.get(f"{stack.api}/v1/stream", params={"org": "9999999"})
    assert r.status_code == 404


@integration
async def test_many_clients_share_one_redis_subscriber(stack, http) -> None:
    keys = RedisKeys(stack.namespace)
    n = 200
    org = "3020000"  # 용산구
    cap = load().max_streams_per_token  # per token: the 200 streams come from several tokens
    tokens = [
        stack.token("national", name=f"test_live_stream many {i}", rate_per_s=5_000)
        for i in range(math.ceil(n / cap))
    ]
    r = aioredis.from_url(stack.infra.redis_url)
    try:
        async with asyncio.timeout(60):
            streams: list[Stream] = []
            async with contextlib.AsyncExitStack() as stack_cm:
                for i in range(n):
                    params = {"snapshot": "1"} | ({"org": org} if i % 2 else {})
                    streams.append(
                        await stack_cm.enter_async_context(
                            open_stream(http, stack.api, tokens[i // cap], **params)
                        )
                    )
                snaps = await asyncio.gather(*(s.next() for s in streams))
                assert {m.event for m in snaps} == {"snapshot"}

                numsub = dict(await r.pubsub_numsub(keys.updates_channel, keys.alerts_channel))
                assert numsub == {keys.updates_channel.encode(): 1, keys.alerts_channel.encode(): 1}
                text = (await http.get(f"{stack.api}/metrics")).text
                assert sse_gauge(text) == n

                await publish(stack.settings, event(org, 4242))
                got = await asyncio.gather(
                    *(
                        s.until(lambda m: m.event == "positions" and org in m.data["orgs"], timeout=20)
                        for s in streams
                    )
                )
                cash = {m.data["governments"][org]["totals"]["cash"] for m in got}
                assert len(cash) == 1  # every client saw the same, shared read
            # All closed: the gauge drops back (disconnects are noticed within a heartbeat).
            for _ in range(50):
                if sse_gauge((await http.get(f"{stack.api}/metrics")).text) == 0:
                    break
                await asyncio.sleep(0.2)
            assert sse_gauge((await http.get(f"{stack.api}/metrics")).text) == 0
            numsub = dict(await r.pubsub_numsub(keys.updates_channel))
            assert numsub[keys.updates_channel.encode()] == 1  # the hub stays subscribed
    finally:
        await r.aclose()


@integration
async def test_a_revoked_or_expired_token_ends_its_open_streams(stack) -> None:
    """Streams re-check their token once per token-cache period: one revoked (as ``cashpos token
    revoke`` does) and one expired end within that period with a ``closed`` frame, and nothing
    after it, while events for their government keep coming; a third token's stream goes on."""
    ttl = load().token_cache_seconds
    revoked, expiring, valid = (
        stack.token("finance_director", (JONGNO,), name=f"streaming {what}")
        for what in ("revoked", "expiring", "valid")
    )
    stop = asyncio.Event()

    async def feed() -> None:  # a positions frame for 종로구 every ~0.25 s
        async with Publisher(stack.settings) as pub:
            while not stop.is_set():
                await pub.send(event(JONGNO, 1))
                await asyncio.sleep(0.25)

    async def until_closed(s: Stream, t0: float) -> tuple[list[Sse], float]:
        """The frames until the stream ends (at most ttl + 3 s: frames keep coming otherwise)."""
        frames: list[Sse] = []
        with contextlib.suppress(EOFError, TimeoutError):
            async with asyncio.timeout(ttl + 3):
                while True:
                    frames.append(await s.next())
        return frames, time.monotonic() - t0

    positions = lambda m: m.event == "positions"
    admin = aioredis.from_url(stack.redis_urls["admin"])
    feeder = asyncio.create_task(feed())
    try:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as c,
            open_stream(c, stack.api, revoked, org=JONGNO) as s1,
            open_stream(c, stack.api, expiring, org=JONGNO) as s2,
            open_stream(c, stack.api, valid, org=JONGNO) as s3,
        ):
            for s in (s1, s2, s3):
                await s.until(positions, timeout=15)
            store = TokenStore(admin, RedisKeys(stack.namespace))
            rec = await store.lookup(revoked)
            assert rec is not None and await store.revoke(rec.id) is not None
            key = RedisKeys(stack.namespace).tokens
            stored = await admin.hget(key, digest(expiring))
            assert stored is not None
            raw = orjson.loads(stored)
            raw["expires_ms"] = int(time.time() * 1000) - 1
            await admin.hset(key, digest(expiring), orjson.dumps(raw))
            t0 = time.monotonic()
            (f1, took1), (f2, took2) = await asyncio.gather(until_closed(s1, t0), until_closed(s2, t0))
            for frames, took, reason in ((f1, took1, "token_revoked"), (f2, took2, "token_expired")):
                assert took <= ttl + 0.5, f"{reason}: stream open {took:.2f} s after the change"
                assert frames and frames[-1].event == "closed", [f.event for f in frames]
                assert frames[-1].data["reason"] == reason
            await s3.until(positions, timeout=5)  # the valid token's stream goes on
            for tok in (revoked, expiring):  # and the closed ones cannot come back
                again = await c.get(
                    f"{stack.api}/v1/stream",
                    params={"org": JONGNO},
                    headers={"Authorization": f"Bearer {tok}"},
                )
                assert again.status_code == 401
    finally:
        stop.set()
        await feeder
        await admin.aclose()


@integration
async def test_open_streams_per_token_are_capped(stack) -> None:
    cap = load().max_streams_per_token
    tok = stack.token("national", name="many tabs", rate_per_s=1_000)
    other = stack.token("national", name="one tab", rate_per_s=1_000)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as c:

        async def refused() -> httpx.Response:
            return await c.get(f"{stack.api}/v1/stream", headers={"Authorization": f"Bearer {tok}"})

        async with contextlib.AsyncExitStack() as held:
            first = await held.enter_async_context(contextlib.AsyncExitStack())
            await first.enter_async_context(open_stream(c, stack.api, tok))
            for _ in range(cap - 1):
                await held.enter_async_context(open_stream(c, stack.api, tok))
            r = await refused()
            assert r.status_code == 429, r.text
            assert r.headers["content-type"] == "application/problem+json"
            p = r.json()
            assert p["reason"] == "too_many_streams" and p["status"] == 429 and p["limit"] == cap
            assert p["type"] == "/problems/too_many_streams" and p["title"] and p["detail"]
            async with open_stream(c, stack.api, other) as s:  # another token is not affected
                await s.next(timeout=5)
            await first.aclose()  # one closed: its slot is free again
            for _ in range(50):
                with contextlib.suppress(AssertionError):
                    async with open_stream(c, stack.api, tok) as s:
                        assert (await refused()).status_code == 429  # full again while it is open
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("a closed stream's slot was not given back")


async def test_slow_client_gets_a_snapshot_then_is_dropped_never_blocking_others() -> None:
    """Fan-out never waits: a full queue is replaced by a resync marker (-> snapshot); a client
    that overflows again before taking it is disconnected. Others are unaffected."""
    hub = live.Hub(Settings(namespace="unit"), RedisKeys("unit"), redis=None)  # type: ignore[arg-type]  # this hub never reads Redis
    hub.loaded = True
    slow, _ = hub.register(None, snapshot=False)
    fast, _ = hub.register(None, snapshot=False)
    for i in range(live.QUEUE_FRAMES):
        hub._fanout(b"frame %d" % i)
        assert fast.queue.get_nowait() == b"frame %d" % i  # the fast client keeps up
    assert slow.queue.full()
    hub._fanout(b"one too many")
    assert slow.queue.qsize() == 1 and slow.queue.get_nowait() is live._RESYNC
    assert fast.queue.get_nowait() == b"one too many"
    assert slow in hub.clients
    slow.queue.put_nowait(live._RESYNC)  # not yet consumed: the client is still behind
    for i in range(live.QUEUE_FRAMES):
        hub._fanout(b"more %d" % i)
        fast.queue.get_nowait()
    assert slow.queue.get_nowait() is live._CLOSE
    assert slow not in hub.clients and fast in hub.clients
    frame = hub.snapshot_frame(fast)
    assert frame.startswith(b"id: 0-") and b"event: snapshot\n" in frame
