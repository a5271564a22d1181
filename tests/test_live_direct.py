"""The live hub writing frames straight to streams' sockets (serving.direct), without a server.

A fake transport stands for the socket. A broadcast larger than a slice is spread over turns of
the event loop and every stream still gets every frame once, in order; a socket that falls behind
is skipped until it drains and then gets a snapshot; one that stays behind is ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cashpos.names import RedisKeys
from cashpos.settings import Settings
from serving import live
from serving.direct import DirectSink, chunk


class FakeTransport:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.unsent = 0  # what the kernel has not taken (a slow reader)

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def get_write_buffer_size(self) -> int:
        return self.unsent


class Cycle:
    response_started = True
    response_complete = False
    disconnected = False
    chunked_encoding = True


def hub() -> live.Hub:
    h = live.Hub(Settings(namespace="unit"), RedisKeys("unit"), redis=None)  # type: ignore[arg-type]  # this hub never reads Redis
    h.loaded = True
    return h


def attached(h: live.Hub) -> tuple[live.Client, FakeTransport]:
    c, _ = h.register(None, snapshot=False)
    t = FakeTransport()
    h.attach(c, DirectSink(t, Cycle()))
    return c, t


@settings(max_examples=25, deadline=None)
@given(streams=st.integers(1, 700), frames=st.integers(1, 4))
def test_a_broadcast_is_spread_over_loop_turns_and_keeps_each_streams_order(
    streams: int, frames: int
) -> None:
    async def run() -> None:
        h = hub()
        socks = [attached(h)[1] for _ in range(streams)]
        written = 0
        for i in range(frames):
            h._fanout(b"frame %d" % i)
            now = sum(len(t.data) for t in socks)
            assert now - written <= live.FANOUT_SLICE  # at most one slice in this turn
            written = now
        assert written >= min(streams, live.FANOUT_SLICE)
        for _ in range(streams * frames // live.FANOUT_SLICE + 2):  # the rest, a slice per turn
            await asyncio.sleep(0)
        for t in socks:
            assert t.data == [chunk(b"frame %d" % i) for i in range(frames)]

    asyncio.run(run())


def test_a_socket_that_falls_behind_is_skipped_then_resynced_or_ended() -> None:
    async def run() -> None:
        h = hub()
        slow, slow_t = attached(h)
        fast, fast_t = attached(h)
        slow_t.unsent = live.BEHIND_BYTES + 1
        h._fanout(b"one")
        assert slow.resync_pending and slow.signal is live._RESYNC and slow_t.data == []
        assert fast_t.data == [chunk(b"one")]
        h._fanout(b"two")  # skipped while behind
        slow_t.unsent = 0
        h.resume(slow)  # drained: a snapshot, then frames again
        assert len(slow_t.data) == 1 and b"event: snapshot" in slow_t.data[0]
        h._fanout(b"three")
        assert slow_t.data[-1] == chunk(b"three")
        h._fanout(b"heartbeat")  # the same broadcast seq as the snapshot: still sent
        assert slow_t.data[-1] == chunk(b"heartbeat")
        slow_t.unsent = live.BEHIND_BYTES + 1
        for i in range(live.QUEUE_FRAMES + 2):  # behind for longer than a queue holds: ended
            h._fanout(b"more %d" % i)
        assert slow not in h.clients and slow.signal is live._CLOSE
        assert fast in h.clients and fast_t.data[-1] == chunk(b"more %d" % (live.QUEUE_FRAMES + 1))

    asyncio.run(run())


def test_frames_queued_before_the_socket_is_attached_go_first() -> None:
    async def run() -> None:
        h = hub()
        c, _ = h.register(None, snapshot=False)
        h._fanout(b"early")  # the response's head is still on its way: queued
        t = FakeTransport()
        h.attach(c, DirectSink(t, Cycle()))
        h._fanout(b"late")
        assert t.data == [chunk(b"early"), chunk(b"late")]

    asyncio.run(run())


def test_a_lost_connection_ends_the_streams_coroutine() -> None:
    async def run() -> None:
        h = hub()
        c, _ = h.register(None, snapshot=False)
        t = FakeTransport()
        sink = DirectSink(t, Cycle())
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        task = asyncio.create_task(h.serve_direct(c, sink, send))
        await asyncio.sleep(0)
        sink.connection_lost()
        await asyncio.wait_for(task, 1)
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}

    asyncio.run(run())
