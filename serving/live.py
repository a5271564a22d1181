"""Live updates for the dashboard: ``GET /v1/stream``, server-sent events.

One Redis pub/sub subscription per API process, however many streams are open
-----------------------------------------------------------------------------
The :class:`Hub` (one per app, started lazily by the first stream) holds the only Redis
subscriber of the process, on ``keys.updates_channel`` (one message per processed batch:
``{"orgs": [...], "last_event_ms", "written_ms"}``) and ``keys.alerts_channel``. For each update it
reads the changed governments' positions from Redis **once** (one pipelined HGETALL per
government, batches that queued up meanwhile are coalesced into one read), keeps them in an
in-memory copy of all 243 governments, encodes each SSE frame once and puts the same bytes on
every interested client's bounded queue. Thousands of open streams therefore mean one Redis
subscriber and one read per batch, never one per client. The same in-memory copy answers the
API's reads of positions and the summary (``serving.positions.PositionReader``) while the hub is
subscribed; otherwise those read Redis.

A slow client never blocks the others: fan-out uses ``put_nowait``; when a client's queue is full
its backlog is dropped and replaced by a *resync* marker, so the client next receives a fresh
snapshot (positions are absolute values: a snapshot loses nothing). A client that overflows again
before it has even taken that snapshot is disconnected (its EventSource reconnects and resumes).

Events (every frame has ``id:`` and ``event:``)
-----------------------------------------------
``id`` is ``{seq}-{ms}``: ``seq`` is a per-process counter incremented for every broadcast (so ids
are monotonic per process and a snapshot carries the ``seq`` it is current to); ``ms`` is the
batch's ``written_ms`` (positions), or the server time (heartbeat, snapshot, alerts).

- ``positions``: ``{"orgs": [changed codes], "written_ms", "last_event_ms", "governments":
  {org: body}}``. With ``?org=`` the stream carries only that government's updates, each body in
  full (the ``/v1/positions/{org}`` shape: ``accounts`` and ``totals``). Without ``org`` (the
  national view) a body is compact: ``org_code``, ``as_of``, ``totals`` (no account rows); for a
  principal scoped to some governments (provincial, integration) that view holds only those.
  ``not_ready`` lists changed governments whose serving copy is being rebuilt (left out).
- ``snapshot``: the same shape with every watched government (``"snapshot": true``). Sent first
  when the client resumes (``Last-Event-ID`` header, as EventSource sends on reconnect, or the
  ``last_event_id`` query parameter), when it asks with ``?snapshot=1``, after the hub lost and
  re-established its Redis subscription, and after the client's queue overflowed.
- ``alerts``: the JSON published on ``keys.alerts_channel``, forwarded as is (filtered by
  ``org_code`` for ``?org=`` streams and scoped views).
- ``heartbeat`` every ~2 s to a stream that had no other frame meanwhile (and to all when
  ``live`` changes): ``{"server_ms", "server_time", "seq", "last_write_ms", "last_event_ms",
  "live"}``; ``live`` is false while the hub has no Redis subscription.
- ``closed``: ``{"reason": "token_revoked" | "token_expired" | "token_invalid", "server_ms"}``,
  the last frame of a stream whose token is no longer valid (frames still queued for it are
  dropped). The hub re-reads the tokens of every open stream once per
  ``CASHPOS_TOKEN_CACHE_SECONDS``, all in one Redis round trip, so a revocation or an expiry ends
  a stream as soon as it refuses new requests. (If Redis does not answer, streams stay open.)

Per token and API process at most ``CASHPOS_MAX_STREAMS_PER_TOKEN`` streams are open at once;
one more is answered 429 (problem details, reason ``too_many_streams``).

The frames start with ``retry: 1000`` so browsers reconnect one second after a drop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final, TypedDict

import orjson
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from access.policy import Permission
from access.tokens import TokenStore, now_ms
from cashpos.metrics import ApiMetrics
from cashpos.names import META_FIELD, RedisKeys
from cashpos.refdata import governments
from cashpos.settings import Settings
from serving import wire
from serving.direct import DIRECT, DirectSink, chunk
from serving.openapi import COMPONENTS
from serving.positions import Body, _rows, by_fiscal_year, iso_ms, totals
from serving.problems import problem_doc, problem_response
from serving.security import TokenCache, principal, require

log = logging.getLogger("cashpos.api.live")

HEARTBEAT_S = 2.0
# Every broadcast is one write per open stream, so the more streams, the rarer the broadcasts:
# (from this many streams, at most one broadcast per this many seconds). A dashboard still shows
# an event within about a second.
BROADCAST_INTERVALS = ((1000, 1.0), (100, 0.25), (0, 0.0))
QUEUE_FRAMES = 256  # per client; a positions frame is one batch, a few KB at most
# A stream written directly (serving.direct) whose socket holds more than this unsent is behind:
# it is skipped until the socket drains, then sent a snapshot (as a full queue is, above).
BEHIND_BYTES = 512 * 1024
# Streams written per turn of the event loop: a broadcast to 5,000 streams is spread over 20
# turns, so a read that arrives meanwhile waits for one slice (~1 ms), not for all of them.
FANOUT_SLICE = 250
RETRY_MS = 1000
VERIFY_S = 1.0  # how often the in-memory copy is checked against Redis for dropped governments


class _Marker(enum.Enum):
    RESYNC = enum.auto()  # queue marker: send this client a fresh snapshot
    CLOSE = enum.auto()  # queue marker: end this client's stream


_RESYNC: Final = _Marker.RESYNC
_CLOSE: Final = _Marker.CLOSE
Item = bytes | _Marker  # what a client's queue holds: a frame, or a marker


class Update(TypedDict, total=False):
    """One message on the updates channel (``state.projection.Projection.notify``)."""

    orgs: list[str]
    last_event_ms: int
    written_ms: int


# What a stream watches: one government (its code), every government (None), or the
# governments of a scoped principal's national view (a frozenset: a province, a system's list).
View = str | frozenset[str] | None


@dataclass(eq=False)
class Client:
    org: View
    token: str = ""  # the hash of the token the stream was opened with ("": not checked)
    queue: asyncio.Queue[Item] = field(default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))
    wants_snapshot: bool = False  # still owed a snapshot (the hub was not loaded when it came)
    resync_pending: bool = False  # (direct: behind, waiting for its socket to drain)
    sent_at: float = 0.0  # monotonic time of the last frame queued (heartbeats go to idle streams)
    # Written directly (serving.direct): the socket, what the stream's coroutine is to do next
    # (a snapshot after a drain, or the end), the future it waits on, frames skipped while behind
    # and _made at its last snapshot (deliveries made before it are not sent after it).
    sink: DirectSink | None = None
    signal: _Marker | None = None
    wake: asyncio.Future[None] | None = None
    skipped: int = 0
    synced_at: int = -1  # Hub._made when its last snapshot was taken


def _frame(event: str, ident: str, data: bytes) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (ident.encode(), event.encode(), data)


class Hub:
    """The process's single Redis subscriber and the in-process fan-out to SSE clients."""

    def __init__(self, settings: Settings, keys: RedisKeys, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.keys = keys
        self.redis = redis  # the app's pool, for reads
        self.clients: set[Client] = set()
        self.by_org: dict[View, set[Client]] = {}
        self.bodies: dict[str, Body] = {}  # org -> full body (accounts + totals)
        self.metas: dict[str, dict[str, int]] = {}  # org -> its ``_meta`` (written_ms, last_event_ms)
        self.version = 0  # incremented whenever ``bodies`` change (caches key on it)
        self._pending: set[str] = set()  # changed governments not yet broadcast
        self._pending_head = (0, 0)  # (written_ms, last_event_ms) of what is pending
        self._timer: asyncio.TimerHandle | None = None
        self._heartbeat_live = False  # ``live`` as the last heartbeat round told everyone
        self.not_ready: set[str] = set()
        self.seq = 0
        self.last_write_ms = 0
        self.last_event_ms = 0
        self._last_broadcast = 0.0
        self.loaded = False  # the in-memory copy is complete (seeded after a (re)subscribe)
        self.live = False  # subscribed right now
        self.closing = False  # the process is shutting down: end every stream
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshots: dict[View, bytes] = {}  # encoded snapshot data, until the next change
        self.tokens = TokenStore(redis, keys)
        self.held: dict[str, int] = {}  # token id -> streams open (or being opened) with it
        self.token_cache: TokenCache | None = None  # the app's: told what the re-checks find
        # Deliveries not done yet, in order: (frame or marker, its HTTP chunk, its number,
        # targets); the first has been delivered up to _work_at. Done a slice per loop turn
        # (_pump). _made numbers them: a stream skips those made before its last snapshot.
        self._made = 0
        self._work: collections.deque[tuple[Item, bytes | None, int, list[Client]]] = collections.deque()
        self._work_at = 0
        self._pumping = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name="sse-hub-subscriber"),
                asyncio.create_task(self._heartbeats(), name="sse-hub-heartbeat"),
                asyncio.create_task(self._verify(), name="sse-hub-verify"),
                asyncio.create_task(self._token_checks(), name="sse-hub-tokens"),
            ]

    def close_streams(self) -> None:
        """End every open stream (their clients reconnect elsewhere, or here once we are back)."""
        self.closing = True
        for c in list(self.clients):
            self._offer(c, _CLOSE, force=True)

    async def stop(self) -> None:
        self.close_streams()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    # -- clients --------------------------------------------------------------------------------

    def reserve(self, token_id: str, cap: int) -> bool:
        """Count one more stream of this token, unless it has ``cap`` already."""
        n = self.held.get(token_id, 0)
        if n >= cap:
            return False
        self.held[token_id] = n + 1
        return True

    def release(self, token_id: str) -> None:
        n = self.held.get(token_id, 0) - 1
        if n > 0:
            self.held[token_id] = n
        else:
            self.held.pop(token_id, None)

    def register(self, org: View, snapshot: bool, token: str = "") -> tuple[Client, bytes | None]:
        """Add a client; returns it and, if asked and possible, its snapshot frame, taken in the
        same step (no await), so that the snapshot plus the queued frames miss nothing."""
        c = Client(org, token)
        if self.closing:
            c.queue.put_nowait(_CLOSE)
            return c, None
        self.clients.add(c)
        self.by_org.setdefault(org, set()).add(c)
        first = None
        if snapshot:
            if self.loaded:
                first = self.snapshot_frame(c)
            else:
                c.wants_snapshot = True  # sent when the hub has loaded
        return c, first

    def unregister(self, c: Client) -> None:
        self.clients.discard(c)
        group = self.by_org.get(c.org)
        if group is not None:
            group.discard(c)
            if not group:
                del self.by_org[c.org]

    def _offer(self, c: Client, item: Item, force: bool = False) -> None:
        """Queue one frame for a client without ever waiting. On overflow the backlog is replaced
        by a resync marker (a snapshot supersedes it); a second overflow disconnects. ``force``
        (with ``_CLOSE``) ends the stream even when the queue is full."""
        if c.sink is not None:
            data = chunk(item) if isinstance(item, bytes) else None
            self._write(c, c.sink, item, data, self._made + 1, force)
            return
        try:
            c.queue.put_nowait(item)
            c.sent_at = time.monotonic()
            if item is _CLOSE:
                self.unregister(c)
            return
        except asyncio.QueueFull:
            pass
        drop_client = c.resync_pending or force
        while not c.queue.empty():
            c.queue.get_nowait()
        if drop_client:
            log.info("sse client too slow, disconnecting (org=%s)", c.org)
            c.queue.put_nowait(_CLOSE)
            self.unregister(c)
        else:
            c.resync_pending = True
            c.queue.put_nowait(_RESYNC)

    # -- streams written directly (serving.direct) ----------------------------------------------

    def _write(
        self, c: Client, sink: DirectSink, item: Item, data: bytes | None, made: int, force: bool = False
    ) -> None:
        """``_offer`` for a stream written directly: the frame goes to its socket now (``data``:
        the frame as an HTTP chunk). A socket with more than BEHIND_BYTES unsent is behind: its
        coroutine waits for it to drain, then it gets a snapshot; frames meanwhile are skipped,
        and a stream that stays behind for QUEUE_FRAMES of them is ended (as a full queue is)."""
        if item is _CLOSE:
            self.unregister(c)
            self._signal(c, _CLOSE)
            return
        if not sink.writable:  # gone: its coroutine has been woken by the lost connection
            self.unregister(c)
            self._signal(c, _CLOSE)
            return
        if c.resync_pending:
            c.skipped += 1
            if c.skipped > QUEUE_FRAMES or force:
                log.info("sse client too slow, disconnecting (org=%s)", c.org)
                self.unregister(c)
                self._signal(c, _CLOSE)
            return
        if item is _RESYNC:
            if self.loaded:
                sink.write(chunk(self.snapshot_frame(c)))
                c.synced_at = self._made
                c.sent_at = time.monotonic()
            return
        if made <= c.synced_at:  # made before its snapshot was taken: the snapshot has it
            return
        if sink.buffered() > BEHIND_BYTES:
            c.resync_pending = True
            c.skipped = 0
            self._signal(c, _RESYNC)
            return
        sink.write(data if data is not None else chunk(item))
        c.sent_at = time.monotonic()

    @staticmethod
    def _signal(c: Client, what: _Marker) -> None:
        """Tell a direct stream's coroutine to resync or to end (ending wins)."""
        if what is _CLOSE or c.signal is None:
            c.signal = what
        if c.wake is not None and not c.wake.done():
            c.wake.set_result(None)

    def attach(self, c: Client, sink: DirectSink) -> None:
        """From now on write ``c``'s frames to ``sink`` (its response's head and first frame are
        out): what was queued meanwhile first, in order, in the same step."""
        sink.on_lost(lambda: self._signal(c, _CLOSE))
        c.sink = sink
        while not c.queue.empty():
            item = c.queue.get_nowait()
            self._write(c, sink, item, None, self._made + 1)

    def resume(self, c: Client) -> None:
        """``c``'s socket has drained after it fell behind: a fresh snapshot, then frames again."""
        c.resync_pending = False
        c.skipped = 0
        if c in self.clients and c.sink is not None and c.sink.writable and self.loaded:
            c.sink.write(chunk(self.snapshot_frame(c)))
            c.synced_at = self._made
            c.sent_at = time.monotonic()

    async def serve_direct(self, c: Client, sink: DirectSink, send: Any) -> None:
        """The coroutine of a stream written directly, after its first frame: it only waits, and
        wakes to send a snapshot once a slow socket has drained, or to end the response."""
        loop = asyncio.get_running_loop()
        self.attach(c, sink)
        while True:
            if c.signal is None:
                c.wake = loop.create_future()
                await c.wake
            what, c.signal = c.signal, None
            if what is _CLOSE:
                break
            if what is _RESYNC:
                # uvicorn's send waits until the socket has drained (below its low-water mark)
                await send({"type": "http.response.body", "body": b"", "more_body": True})
                self.resume(c)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def end(self, c: Client, frame: bytes) -> None:
        """End a stream now: whatever is queued for it is dropped, ``frame`` is its last."""
        if c.sink is not None:
            if c.sink.writable:
                c.sink.write(chunk(frame))
            self.unregister(c)
            self._signal(c, _CLOSE)
            return
        while not c.queue.empty():
            c.queue.get_nowait()
        c.queue.put_nowait(frame)
        c.queue.put_nowait(_CLOSE)
        self.unregister(c)

    async def check_tokens(self) -> int:
        """End the streams whose token is revoked, expired or gone; returns how many."""
        by_token: dict[str, list[Client]] = {}
        for c in self.clients:
            if c.token:
                by_token.setdefault(c.token, []).append(c)
        if not by_token:
            return 0
        digests = list(by_token)
        records = await self.tokens.lookup_digests(digests)
        now = now_ms()
        ended = 0
        for h, rec in zip(digests, records):
            status = "invalid" if rec is None else rec.status(now)
            if status == "active":
                continue
            if self.token_cache is not None:  # reconnects are refused at once, not after the cache
                self.token_cache.remember(h, rec)
            data = wire.dumps({"reason": f"token_{status}", "server_ms": now})
            frame = _frame("closed", self._ident(now), data)
            for c in by_token[h]:
                if c in self.clients:
                    self.end(c, frame)
                    ended += 1
        if ended:
            log.info("ended %d live stream(s) of revoked or expired tokens", ended)
        return ended

    def _fanout(self, item: Item, groups: list[View] | None = None) -> None:
        """Offer a frame to every client (``groups`` None) or to the clients watching one of
        ``groups`` (an org code, or None for the national streams)."""
        if groups is None:
            targets = list(self.clients)
        else:
            targets = [c for g in groups for c in self.by_org.get(g, ())]
        self._deliver(item, targets)

    def _deliver(self, item: Item, targets: list[Client]) -> None:
        """Offer ``item`` to ``targets``, after every delivery before it: FANOUT_SLICE streams
        now, the rest a slice per turn of the event loop (each stream's frames stay in order)."""
        if not targets:
            return
        self._made += 1
        self._work.append((item, chunk(item) if isinstance(item, bytes) else None, self._made, targets))
        if not self._pumping:
            self._pump()

    def _pump(self) -> None:
        self._pumping = False
        budget = FANOUT_SLICE
        clients = self.clients
        while self._work and budget > 0:
            item, data, made, targets = self._work[0]
            start = self._work_at
            stop = min(len(targets), start + budget)
            for c in targets[start:stop]:
                if c not in clients:  # gone since (or ended): nothing more for it
                    continue
                if c.sink is not None:
                    self._write(c, c.sink, item, data, made)
                else:
                    self._offer(c, item)
            budget -= stop - start
            if stop < len(targets):
                self._work_at = stop
            else:
                self._work.popleft()
                self._work_at = 0
        if self._work:
            self._pumping = True
            asyncio.get_running_loop().call_soon(self._pump)

    # -- frames ---------------------------------------------------------------------------------

    @staticmethod
    def compact(body: Body) -> dict[str, object]:
        return {
            "org_code": body["org_code"],
            "as_of": body["as_of"],
            "last_event_at": body["last_event_at"],
            "totals": body["totals"],
        }

    def _ident(self, ms: int) -> str:
        return f"{self.seq}-{ms}"

    def snapshot_frame(self, c: Client) -> bytes:
        """The current state of what ``c`` watches. Encoded once per change and shared, so a
        crowd reconnecting at once costs one encoding, not one per client."""
        c.resync_pending = False
        c.wants_snapshot = False
        data = self._snapshots.get(c.org)
        if data is None:
            if c.org is None or isinstance(c.org, frozenset):
                watched = [o for o in governments() if c.org is None or o in c.org]
                govs: dict[str, object] = {
                    o: self.compact(self.bodies[o]) for o in watched if o in self.bodies
                }
            else:
                govs = {c.org: self.bodies[c.org]} if c.org in self.bodies else {}
                watched = [c.org]
            data = wire.dumps(
                {
                    "snapshot": True,
                    "orgs": list(govs),
                    "governments": govs,
                    "written_ms": self.last_write_ms,
                    "last_event_ms": self.last_event_ms,
                    "not_ready": [o for o in watched if o not in govs],
                    "seq": self.seq,
                }
            )
            self._snapshots[c.org] = data
        return _frame("snapshot", self._ident(int(time.time() * 1000)), data)

    # -- reading Redis --------------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """The in-memory copy is complete and following Redis: reads may be answered from it."""
        return self.live and self.loaded

    async def _fetch(self, orgs: list[str]) -> tuple[dict[str, Body], list[str]]:
        """Full bodies of these governments, one pipelined round trip; and the not-ready ones."""
        govs = governments()
        orgs = [o for o in orgs if o in govs]
        async with self.redis.pipeline(transaction=False) as pipe:
            for o in orgs:
                pipe.hgetall(self.keys.positions(o))
            raws: list[dict[bytes, bytes]] = await pipe.execute()
        out: dict[str, Body] = {}
        missing: list[str] = []
        for o, raw in zip(orgs, raws):
            meta_raw = raw.get(META_FIELD.encode())
            if meta_raw is None:
                missing.append(o)
                continue
            g = govs[o]
            rows = _rows(g, raw, None)
            meta = orjson.loads(meta_raw)
            self.metas[o] = meta
            last_ev = max((r.last_event_ms for r in rows), default=0)
            out[o] = {
                "org_code": o,
                "name": g.name,
                "province_code": g.province_code,
                "province_name": g.province_name,
                "as_of": iso_ms(int(meta.get("written_ms", 0))),
                "last_event_at": iso_ms(last_ev),
                "accounts": [r.as_dict() for r in rows],
                "totals": totals(rows),
                "fiscal_years": by_fiscal_year(rows),
            }
        return out, missing

    def _apply(self, bodies: dict[str, Body], missing: list[str]) -> None:
        self._snapshots.clear()
        self.version += 1
        self.bodies.update(bodies)
        for o in missing:
            self.bodies.pop(o, None)
        self.not_ready = (self.not_ready - set(bodies)) | set(missing)

    async def _load_all(self) -> None:
        bodies, missing = await self._fetch(list(governments()))
        self._apply(bodies, missing)

    async def _on_updates(self, msgs: list[Update]) -> None:
        """Read the changed governments at once (reads served from memory stay fresh), then
        broadcast: at once with few streams, else at most once per BROADCAST_INTERVALS."""
        orgs = sorted({str(o) for m in msgs for o in m.get("orgs", [])})
        written = max(int(m.get("written_ms") or 0) for m in msgs)
        last_ev = max(int(m.get("last_event_ms") or 0) for m in msgs)
        if not orgs:
            return
        bodies, missing = await self._fetch(orgs)
        self._apply(bodies, missing)
        self.last_write_ms = max(self.last_write_ms, written)
        self.last_event_ms = max(self.last_event_ms, last_ev)
        self._pending.update(orgs)
        self._pending_head = (max(self._pending_head[0], written), max(self._pending_head[1], last_ev))
        interval = next(s for n, s in BROADCAST_INTERVALS if len(self.clients) >= n)
        wait = self._last_broadcast + interval - time.monotonic()
        if wait <= 0:
            self._broadcast()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._broadcast)

    def _broadcast(self) -> None:
        """One positions frame per watching view for everything changed since the last one
        (values are absolute: the latest body says it all)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        self._last_broadcast = time.monotonic()
        changed, self._pending = sorted(self._pending), set()
        written, last_ev = self._pending_head
        self._pending_head = (0, 0)
        bodies = {o: self.bodies[o] for o in changed if o in self.bodies}
        missing = [o for o in changed if o not in self.bodies]
        self.seq += 1
        self._snapshots.clear()
        ident = self._ident(written or int(time.time() * 1000))
        head = {
            "orgs": list(bodies),
            "written_ms": written,
            "last_event_ms": last_ev,
            "not_ready": missing,
            "seq": self.seq,
        }
        if self.by_org.get(None):
            data = wire.dumps({**head, "governments": {o: self.compact(b) for o, b in bodies.items()}})
            self._fanout(_frame("positions", ident, data), [None])
        for view in [v for v in self.by_org if isinstance(v, frozenset)]:
            mine = {o: self.compact(b) for o, b in bodies.items() if o in view}
            gone = [o for o in missing if o in view]
            if mine or gone:
                data = wire.dumps({**head, "orgs": list(mine), "governments": mine, "not_ready": gone})
                self._fanout(_frame("positions", ident, data), [view])
        for o, b in bodies.items():
            if self.by_org.get(o):
                data = wire.dumps({**head, "orgs": [o], "governments": {o: b}, "not_ready": []})
                self._fanout(_frame("positions", ident, data), [o])
        for o in missing:
            if self.by_org.get(o):
                data = wire.dumps({**head, "orgs": [], "governments": {}, "not_ready": [o]})
                self._fanout(_frame("positions", ident, data), [o])

    def _on_alert(self, raw: bytes) -> None:
        try:
            alert = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("ignoring a malformed alert message: %r", raw[:200])
            return
        org = None
        if isinstance(alert, dict):
            org = alert.get("org_code") or alert.get("org")
        self._broadcast()  # positions changed before the alert go out before it
        self.seq += 1
        self._snapshots.clear()
        frame = _frame("alerts", self._ident(int(time.time() * 1000)), raw)
        if org:
            org = str(org)
            self._fanout(
                frame, [None, org, *(v for v in self.by_org if isinstance(v, frozenset) and org in v)]
            )
        else:  # operational alerts (a stalled worker) name no government and carry no money
            self._fanout(frame)

    # -- the loops ------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.2
        first = True
        while True:
            sub = aioredis.from_url(
                self.settings.redis_url,
                socket_connect_timeout=2,
                socket_keepalive=True,
                health_check_interval=15,
            )
            pubsub = sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.updates_channel, self.keys.alerts_channel)
                # Subscribed first, then read everything: an update racing the load is re-read.
                await self._load_all()
                self.live = self.loaded = True
                backoff = 0.2
                self._deliver(_RESYNC, [c for c in self.clients if not first or c.wants_snapshot])
                first = False
                log.info("live hub subscribed to %s", self.keys.updates_channel)
                await self._consume(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 Redis down or restarted: resubscribe, then resync everyone
                if self.live:
                    log.warning("live hub lost its Redis subscription: %r", exc)
                self.live = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.live = False
                self._broadcast()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await sub.aclose()

    async def _consume(self, pubsub: aioredis.client.PubSub) -> None:
        updates = self.keys.updates_channel.encode()
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            # Updates are read at once (reads served from memory stay fresh); with many open
            # streams the broadcast is throttled in _on_updates: every broadcast is a write to
            # every stream, so at thousands of them the fan-out, not Redis, is the cost.
            batch: list[Update] = []
            while msg is not None:  # coalesce what has queued up into one read of Redis
                if msg.get("type") == "message":
                    if msg["channel"] == updates:
                        try:
                            batch.append(orjson.loads(msg["data"]))
                        except orjson.JSONDecodeError:
                            log.warning("ignoring a malformed update: %r", msg["data"][:200])
                    else:
                        if batch:
                            await self._on_updates(batch)
                            batch = []
                        self._on_alert(msg["data"])
                if len(batch) >= 2000:
                    break
                msg = await pubsub.get_message(timeout=0)
            if batch:
                await self._on_updates(batch)

    async def _verify(self) -> None:
        """Once a second, check that Redis still holds the serving copy of every government held
        in memory. A copy dropped without an update (FLUSHALL, an operator deleting it to force a
        re-projection) must stop being served within a second, as it would from Redis."""
        marker = META_FIELD.encode()
        while True:
            await asyncio.sleep(VERIFY_S)
            if not self.serving:
                continue
            orgs = list(self.bodies)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for o in orgs:
                        pipe.hexists(self.keys.positions(o), marker)
                    present = await pipe.execute()
            except Exception as exc:  # noqa: BLE001 the check must outlive any failure; retried in a second
                log.debug("serving copy check skipped: %r", exc)
                continue
            gone = [o for o, ok in zip(orgs, present) if not ok]
            if gone:
                log.warning(
                    "serving copy of %d government(s) vanished from Redis; not serving them", len(gone)
                )
                self._apply({}, gone)
                self._pending.update(gone)
                self._broadcast()

    async def _token_checks(self) -> None:
        """Once per token-cache period: a revoked or expired token keeps no stream open longer
        than it would be trusted for a request."""
        while True:
            await asyncio.sleep(self.settings.token_cache_seconds)
            try:
                await self.check_tokens()
            except Exception as exc:  # noqa: BLE001 Redis unreachable (or a bad record): keep the streams, retry
                log.debug("stream token check skipped: %r", exc)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if not self.clients:
                continue
            now = int(time.time() * 1000)
            data = wire.dumps(
                {
                    "server_ms": now,
                    "server_time": iso_ms(now),
                    "seq": self.seq,
                    "last_write_ms": self.last_write_ms,
                    "last_event_ms": self.last_event_ms,
                    "live": self.live,
                }
            )
            frame = _frame("heartbeat", self._ident(now), data)
            quiet_since = time.monotonic() - HEARTBEAT_S * 0.9
            # Only streams without another frame lately, unless ``live`` is news to them.
            everyone = not self.live or self.live != self._heartbeat_live
            self._heartbeat_live = self.live
            self._deliver(frame, [c for c in self.clients if everyone or c.sent_at <= quiet_since])


def _end_streams_on_exit_signal(app: FastAPI) -> Callable[[], None]:
    """Chain onto the server's SIGINT/SIGTERM handlers so that a shutdown ends the open streams.

    Uvicorn waits for every open response to finish before it runs the lifespan shutdown, and an
    event stream never finishes by itself: without this, a deploy would hang until every browser
    went away. Returns a function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    saved: dict[int, Callable[[int, FrameType | None], object]] = {}

    def close() -> None:
        hub: Hub | None = getattr(app.state, "live_hub", None)
        if hub is not None:
            hub.close_streams()

    for sig in (signal.SIGINT, signal.SIGTERM):
        prev = signal.getsignal(sig)
        if not callable(prev):
            continue

        def handler(signum: int, frame: FrameType | None, prev=prev) -> None:
            loop.call_soon_threadsafe(close)
            prev(signum, frame)

        saved[sig] = prev
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in saved.items():
            signal.signal(sig, prev)

    return restore


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Merged into the app's lifespan by ``include_router``."""
    restore = _end_streams_on_exit_signal(app)
    try:
        yield
    finally:
        restore()
        hub: Hub | None = getattr(app.state, "live_hub", None)
        if hub is not None:
            await hub.stop()


router = APIRouter(tags=["live"], lifespan=lifespan)


class _HeldStream(StreamingResponse):
    """A stream that gives its token's slot back however it ends (even if its body never
    started: the client was gone before the response began)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        release: Callable[[], None],
        *,
        media_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class _DirectStream(StreamingResponse):
    """A stream whose frames the hub writes to its socket (``serving.direct``): the head and
    the first frame go through ASGI as any response's; then its coroutine only waits
    (:meth:`Hub.serve_direct`). Gives its token's slot back however it ends."""

    def __init__(
        self,
        hub: Hub,
        view: View,
        snapshot: bool,
        token: str,
        metrics: ApiMetrics,
        release: Callable[[], None],
        *,
        media_type: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(_nothing(), media_type=media_type, headers=headers)
        self.hub, self.view, self.snapshot, self.token = hub, view, snapshot, token
        self.metrics = metrics
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            sink: DirectSink = scope["extensions"][DIRECT]
            hub = self.hub
            # Registered when the response starts, the snapshot taken in the same step.
            client, first = hub.register(self.view, self.snapshot, self.token)
            self.metrics.sse_connections.inc()
            try:
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                body = b"retry: %d\n\n" % RETRY_MS + (first or b"")
                await send({"type": "http.response.body", "body": body, "more_body": True})
                await hub.serve_direct(client, sink, send)
            finally:
                hub.unregister(client)
                self.metrics.sse_connections.dec()
        finally:
            self._release()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def hub_for(app: FastAPI) -> Hub:
    hub: Hub | None = getattr(app.state, "live_hub", None)
    if hub is None:
        hub = Hub(app.state.settings, app.state.keys, app.state.redis)
        hub.token_cache = getattr(app.state, "token_cache", None)
        app.state.live_hub = hub
        hub.start()
    return hub


@router.get(
    "/v1/stream",
    summary="Live updates as server-sent events (positions, snapshot, alerts, heartbeat)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the stream: server-sent events, each one a StreamEvent",
            "content": {"text/event-stream": {"schema": {"$ref": COMPONENTS.format(name="StreamEvent")}}},
        },
        429: problem_doc("too many open streams for this token (reason too_many_streams)"),
    },
    dependencies=[require(Permission.READ)],
)
async def stream(
    request: Request,
    org: str | None = Query(None, description="only this government (7-digit code)"),
    snapshot: bool = Query(False, description="start with a snapshot of what the stream watches"),
    last_event_id_q: str | None = Query(
        None, alias="last_event_id", description="resume (same as the Last-Event-ID header)"
    ),
    last_event_id: str | None = Header(None),
) -> Response:
    p = principal(request)  # permission and scope: checked by require()
    if org is not None and org not in governments():
        raise HTTPException(404, f"unknown government {org}")
    view: View = org if org is not None else p.orgs  # a scoped principal's national view is its scope
    hub = await hub_for(request.app)
    metrics: ApiMetrics = request.app.state.metrics
    resume = bool(last_event_id or last_event_id_q)
    token: str = getattr(request.state, "token_digest", "")
    cap: int = request.app.state.settings.max_streams_per_token
    if not hub.reserve(p.token_id, cap):
        return problem_response(
            "too_many_streams",
            f"this token has {cap} live streams open on this server already",
            root_path=request.scope.get("root_path", ""),
            limit=cap,
        )
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            hub.release(p.token_id)

    headers = {
        "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no",
        "Connection": "keep-alive",
    }
    if DIRECT in request.scope.get("extensions", {}):  # the API's own server: written directly
        want = snapshot or resume
        return _DirectStream(
            hub, view, want, token, metrics, release, media_type="text/event-stream", headers=headers
        )

    async def frames() -> AsyncIterator[bytes]:
        # Registered here, when the response starts, so a client gone before it is never leaked;
        # the snapshot is taken in the same step (no await) as the registration.
        client, first = hub.register(view, snapshot or resume, token)
        metrics.sse_connections.inc()
        try:
            yield b"retry: %d\n\n" % RETRY_MS + (first or b"")
            while True:
                item = await client.queue.get()
                if item is _CLOSE:
                    return
                if item is _RESYNC:
                    if hub.loaded:
                        yield hub.snapshot_frame(client)
                    continue
                yield item
        finally:
            hub.unregister(client)
            metrics.sse_connections.dec()

    return _HeldStream(frames(), release, media_type="text/event-stream", headers=headers)
