"""Reading a live stream (``/v1/stream``, server-sent events) from a Locust FastHttp response."""

from __future__ import annotations

from locust.contrib.fasthttp import FastResponse


class SSE:
    """Frames of an open ``text/event-stream`` response (FastHttpSession, ``stream=True``).

    Never interrupted by a timeout (that would close the socket mid-line): the server sends a
    heartbeat every ~2 s, so a reader checks its deadlines between frames."""

    def __init__(self, response: FastResponse) -> None:
        self._r = response._response
        self._event = b""
        self._data: list[bytes] = []

    def next(self) -> tuple[str, bytes]:
        """The next frame as (event, data); raises EOFError when the stream ends."""
        r = self._r
        if r is None:
            raise EOFError("stream closed")
        while True:
            line = r.readline(b"\n")
            if not line:
                raise EOFError("stream ended")
            line = line.rstrip(b"\r\n")
            if not line:
                if self._data or self._event:
                    ev, data = self._event.decode() or "message", b"\n".join(self._data)
                    self._event, self._data = b"", []
                    return ev, data
                continue
            if line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()

    def close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            r.release()  # incomplete message: the pool closes the socket
