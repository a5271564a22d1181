"""A live stream's socket, for writing its frames straight to the connection.

An event stream through ASGI costs, per frame and per open stream, a task wake-up, a generator
step and an ``await send(...)`` through every middleware: 30–35 µs, so a broadcast to 5,000
streams held the event loop for 150–170 ms. The API's HTTP protocol (``serving.server``) puts a
:class:`DirectSink` in the scope of every ``GET …/v1/stream`` request (``scope["extensions"]``,
key :data:`DIRECT`); once the response's head and first frame have gone out through ASGI as
usual, the live hub (``serving.live``) writes each frame to the transport itself, as the HTTP
chunk uvicorn would have written. Under another server (a test client) there is no sink and
streams go through ASGI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DIRECT = "cashpos.direct"  # the scope extension's key
STREAM_PATH = "/v1/stream"  # the requests that get a sink


def chunk(frame: bytes) -> bytes:
    """``frame`` as one HTTP/1.1 chunk (what uvicorn writes for a body part)."""
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class DirectSink:
    """The transport of one streaming response, and whether it can still be written to."""

    __slots__ = ("_on_lost", "cycle", "lost", "transport")

    def __init__(self, transport: Any, cycle: Any) -> None:
        self.transport = transport
        self.cycle = cycle  # uvicorn's RequestResponseCycle of this request
        self.lost = False
        self._on_lost: Callable[[], None] | None = None

    @property
    def writable(self) -> bool:
        """The head is out, the response is chunked and not finished, the peer is there."""
        c = self.cycle
        return (
            not self.lost
            and c.response_started
            and not c.response_complete
            and not c.disconnected
            and c.chunked_encoding is True
        )

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel (a slow or stalled reader)."""
        n: int = self.transport.get_write_buffer_size()
        return n

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` (once) when the connection is lost."""
        self._on_lost = callback
        if self.lost and callback is not None:
            callback()

    def connection_lost(self) -> None:
        """From the protocol's ``connection_lost``."""
        if self.lost:
            return
        self.lost = True
        cb, self._on_lost = self._on_lost, None
        if cb is not None:
            cb()
