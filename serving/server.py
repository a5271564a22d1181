"""How the API is served: uvicorn with httptools, behind limits uvicorn does not have itself.

Uvicorn's httptools protocol has no limit on the size of a request's headers and no timeout for
receiving a request: its keep-alive timeout only covers the time between requests, and every
received byte cancels it, so a client trickling a request line or a body one byte at a time holds
its connection (and a slot of ``limit_concurrency``) forever. :class:`GuardedHttpToolsProtocol`
adds, per connection:

* a **header deadline**: a request's line and headers must be complete within
  ``header_timeout_seconds`` of its first byte, or of the connection opening for the first request;
  else ``408`` and the connection is closed (a connection that sent nothing is just closed);
* a **header size limit**: once more than ``max_header_bytes`` of an incomplete head have arrived
  (or a complete one is larger), ``431`` and the connection is closed: at most the limit plus one
  read of the socket is ever buffered;
* a **body deadline** (a backstop): a request's body must be complete within
  ``body_timeout_seconds`` (+ 2 s) of its headers; ``serving.limits`` answers ``408`` for a body
  the app is reading, this closes connections whose unread body still trickles.

Past ``limit_concurrency`` open connections uvicorn answers ``503`` without calling the app; that
answer is a problem (``unavailable``, :func:`over_capacity`) like every other error.

Limits on a body's size and the per-token stream cap are the app's (``serving.limits``,
``serving.live``). :func:`uvicorn_config` builds the server's configuration from
:class:`~cashpos.settings.Settings`; :func:`serve` runs it (``cashpos api``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cashpos.logs import capture_std_streams
from cashpos.settings import Settings, load
from serving.problems import PROBLEM_JSON, problem_bytes, send_problem

BODY_GRACE_S = 2.0  # the app's own 408 (serving.limits) comes first


class _Refused(Exception):
    """Raised from a parser callback: stops parsing; ``send_400_response`` answers instead."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with header size and request receipt limits. Configure a
    subclass with :func:`guarded_protocol` (uvicorn instantiates the class itself)."""

    max_header_bytes = 16384
    header_timeout = 10.0
    body_timeout = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # waiting for (the rest of) a request's line and headers
        self._head_bytes = 0  # bytes received for the current head (the first read not counted)
        self._begun = False  # a request has begun and is not complete yet
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: tuple[str, str] | None = None  # (reason, detail) of an answer to send

    # -- timers ---------------------------------------------------------------------------------

    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._begun and (self.cycle is None or self.cycle.response_complete):
            self._answer(
                "request_timeout", f"request line and headers not received within {self.header_timeout:g} s"
            )
        else:  # nothing sent at all, or a pipelined request stalled behind a response under way
            self.transport.close()

    def _body_expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            self._answer("request_timeout", f"request body not received within {self.body_timeout:g} s")
        else:
            self.transport.close()

    def _answer(self, reason: str, detail: str) -> None:
        """Write a problem response below ASGI and close the connection."""
        status, body = problem_bytes(reason, detail, self.root_path)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: ",
            PROBLEM_JSON.encode(),
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()

    # -- protocol -------------------------------------------------------------------------------

    def connection_made(  # type: ignore[override]  # uvicorn's signature: Transport, not BaseTransport
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._arm(self.header_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._answer("headers_too_large", f"request line and headers over {self.max_header_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        reason, detail = self._refusal
        self._answer(reason, detail)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = self._in_head = True
        self._head_bytes = 0
        if self._deadline is None:  # the first request's deadline runs from the connection
            self._arm(self.header_timeout, self._head_expired)

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_header_bytes:
            detail = f"request line and headers of {size} bytes; at most {self.max_header_bytes}"
            self._refusal = ("headers_too_large", detail)
            self._disarm()
            raise _Refused
        self._arm(self.body_timeout + BODY_GRACE_S, self._body_expired)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._begun = False
        self._disarm()
        super().on_message_complete()


async def over_capacity(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What uvicorn runs instead of the app past ``limit_concurrency`` (its own answer is a
    text/plain 503): the same 503 as a problem."""
    detail = "the API process is at its connection limit (CASHPOS_API_MAX_CONNECTIONS); retry shortly"
    await send_problem(
        send, scope, "unavailable", detail, [(b"retry-after", b"1"), (b"connection", b"close")]
    )


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with ``settings``' limits (and uvicorn's over-capacity answer a problem:
    the protocol looks up its module's ``service_unavailable`` per request)."""
    httptools_impl.service_unavailable = over_capacity  # type: ignore[assignment]  # an ASGI app too
    return type(
        "CashposHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
        },
    )


def uvicorn_config(settings: Settings, app: Any = None, **overrides: Any) -> uvicorn.Config:
    """The API server's configuration: ``app`` (default: ``create_app(settings)``) on
    ``api_host:api_port`` with the limits of ``settings``. ``overrides`` go to ``uvicorn.Config``."""
    if app is None:
        from serving.app import create_app

        app = create_app(settings)
    kw: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        # uvicorn's loggers propagate to the root's JSON handler (cashpos.logs) at its level:
        # no dictConfig of uvicorn's own (its text formatters), access lines at INFO.
        "log_config": None,
        "log_level": None,
        "access_log": True,
        "loop": "uvloop",
        "http": guarded_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.api_max_connections,
    }
    return uvicorn.Config(app, **{**kw, **overrides})


def serve(settings: Settings | None = None) -> None:
    """Run the API until SIGINT/SIGTERM (what ``cashpos api`` does)."""
    capture_std_streams()  # a stray print or traceback: a JSON line too
    server = uvicorn.Server(uvicorn_config(settings or load()))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits
