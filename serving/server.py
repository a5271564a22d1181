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
:class:`~cashpos.settings.Settings`; :func:`serve` runs it (``cashpos api``): one process, or
``CASHPOS_API_PROCESSES`` of them (default one per core) on the one address, each on a socket of
its own bound with SO_REUSEPORT (:class:`Processes`). Every response names the process that
answered (``x-cashpos-process``: its pid). For ``GET /v1/stream`` the protocol hands the live hub
the connection's socket (``serving.direct``), so frames do not go through ASGI one by one.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from cashpos.logs import capture_std_streams
from cashpos.settings import Settings, load
from serving.direct import DIRECT, STREAM_PATH, DirectSink
from serving.problems import PROBLEM_JSON, problem_bytes, send_problem

log = logging.getLogger("cashpos.api")
BODY_GRACE_S = 2.0  # the app's own 408 (serving.limits) comes first
PROCESS_HEADER = "x-cashpos-process"  # the answering API process's pid, on every response
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EX_CONFIG = 78  # the configuration was refused: starting again cannot help
RESET_AFTER_S = 60.0  # a process that ran this long is started again after 1 s again
STOP_TIMEOUT_S = 25.0  # within systemd's TimeoutStopSec=30


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
        self._sink: DirectSink | None = None  # a live stream's socket (serving.direct)

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
        if self._sink is not None:
            self._sink.connection_lost()

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
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope and self.scope["path"].endswith(STREAM_PATH):
            # The live hub may write this stream's frames to the socket itself (serving.direct).
            self._sink = DirectSink(self.transport, cycle)
            extensions = cast("dict[str, Any]", self.scope.setdefault("extensions", {}))
            extensions[DIRECT] = self._sink

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
        # Which of several processes on the port answered (tests, and an operator's curl -i).
        "headers": [(PROCESS_HEADER, str(os.getpid()))],
    }
    return uvicorn.Config(app, **{**kw, **overrides})


def processes(settings: Settings) -> int:
    """How many API processes ``cashpos api`` runs: the setting, or one per core it may use."""
    return settings.api_processes or len(os.sched_getaffinity(0))


def serve(settings: Settings | None = None, fd: int | None = None) -> None:
    """Run the API until SIGINT/SIGTERM (what ``cashpos api`` does): one process, or (with
    ``api_processes`` > 1) a supervisor of that many (:class:`Processes`). ``fd``: serve on this
    inherited listening socket (a supervised process)."""
    settings = settings or load()
    capture_std_streams()  # a stray print or traceback: a JSON line too
    if fd is None and processes(settings) > 1:
        sys.exit(Processes(settings, processes(settings)).run())
    server = uvicorn.Server(uvicorn_config(settings))
    sockets = [socket.socket(fileno=fd)] if fd is not None else None
    watch_gc_pauses()
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits


GC_PAUSE_LOG_S = 0.05  # a collection longer than this is logged (every request waits for it)


def watch_gc_pauses() -> None:
    """Log each garbage collection that holds the process longer than GC_PAUSE_LOG_S."""
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took > GC_PAUSE_LOG_S:
            log.warning(
                "gc pause %.0f ms (generation %d, %d collected)",
                took * 1000,
                info["generation"],
                info["collected"],
            )

    gc.callbacks.append(callback)


def _reuseport_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:
    """In a child between fork and exec: SIGTERM when the supervisor dies (even by SIGKILL)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """``n`` API processes on one address: each has a socket of its own bound to the address
    with SO_REUSEPORT (the kernel spreads new connections over them evenly), its own app, live
    hub and Redis subscription; an API process is stateless, so any of them answers any request
    alike. A process that dies is started again (1 s, doubling to 10 s); one that exits 78 (its
    configuration refused) stops them all with 78. SIGTERM/SIGINT: each process is told SIGTERM
    (it ends its streams and finishes its requests), then this one exits."""

    def __init__(self, settings: Settings, n: int) -> None:
        self.settings = settings
        self.n = n
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.started = [0.0] * n
        self.due = [0.0] * n  # when a dead one is started again
        self.delay = [1.0] * n
        self.stopping = False

    def _start(self, i: int) -> None:
        sock = _reuseport_socket(self.settings.api_host, self.settings.api_port)
        try:
            fd = sock.fileno()
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "cashpos.cli", "api", "--fd", str(fd)],
                pass_fds=(fd,),
                preexec_fn=_die_with_parent,  # noqa: PLW1509 this process has no threads
            )
        finally:
            sock.close()  # the child holds it; gone with the child, so no connection waits on it
        self.started[i] = time.monotonic()
        log.info("API process %d of %d started: pid %d", i + 1, self.n, self.procs[i].pid)  # type: ignore[union-attr]  # just set

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        host, port = self.settings.api_host, self.settings.api_port
        try:  # a plain bind fails if anything holds the port (SO_REUSEPORT binds would share it)
            _reuseport_socket(host, port, reuse_port=False).close()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", host, port, exc)
            return 1
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        code = 0
        for i in range(self.n):
            self._start(i)
        while not self.stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for i, p in enumerate(self.procs):
                if p is None:
                    if now >= self.due[i] and not self.stopping:
                        self._start(i)
                    continue
                rc = p.poll()
                if rc is None:
                    continue
                if rc == EX_CONFIG:
                    code = rc
                    self.stopping = True
                    break
                if now - self.started[i] > RESET_AFTER_S:
                    self.delay[i] = 1.0
                log.warning(
                    "API process pid %d exited with %d; starting it again in %g s", p.pid, rc, self.delay[i]
                )
                self.procs[i] = None
                self.due[i] = now + self.delay[i]
                self.delay[i] = min(self.delay[i] * 2, 10.0)
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return code
