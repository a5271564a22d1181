"""Request limits of the API server (``serving.server``, ``serving.limits``): header size,
header and body deadlines, body size, keep-alive. Against a real uvicorn server with the API's
configuration (``uvicorn_config``) in a thread, over raw sockets, with short timeouts; the app
behind it is a small echo app (the limits do not depend on the routes). The last tests check
the app's limits on the real API process (the ``stack`` fixture: broker, Redis, worker, API).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from cashpos.embedded import free_port
from cashpos.settings import Settings, load
from serving.limits import RequestLimits
from serving.server import BODY_GRACE_S, GuardedHttpToolsProtocol, uvicorn_config
from tests.events import event

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 0.5
LIMITS = Settings(
    max_header_bytes=8192,
    max_body_bytes=16384,
    max_event_bytes=8192,
    header_timeout_seconds=HEADER_TIMEOUT,
    body_timeout_seconds=BODY_TIMEOUT,
    keep_alive_seconds=1,
    api_max_connections=500,
)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the size of the body it read; ``/noread`` answers without reading it."""
    assert scope["type"] == "http"
    n = 0
    if scope["path"] != "/noread":
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            n += len(msg.get("body", b""))
            more = msg.get("more_body", False)
    body = orjson.dumps({"read": n})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextmanager
def running(settings: Settings = LIMITS) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn_config(
            settings, app=RequestLimits(echo, settings), port=port, lifespan="off", log_level="error"
        )
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and t.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        t.join(10)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with running() as p:
        yield p


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(s: socket.socket, timeout: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and when it closed it."""
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out, time.monotonic()


def response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def problem(raw: bytes, status: int, reason: str) -> dict[str, Any]:
    code, headers, body = response(raw)
    assert code == status, raw[:300]
    assert headers["content-type"] == "application/problem+json"
    p: dict[str, Any] = orjson.loads(body)
    assert p["status"] == status and p["reason"] == reason and p["type"] == f"/problems/{reason}"
    assert p["title"] and p["detail"]
    return p


def request(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with connect(port) as s:
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)
        return response(read_until_closed(s)[0])


# -- headers ------------------------------------------------------------------------------------


def test_a_header_within_the_limit_is_served(port: int) -> None:
    status, _, body = request(port, b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 6000 + b"\r\n\r\n")
    assert status == 200 and orjson.loads(body) == {"read": 0}


def test_a_1mb_header_is_refused_with_431(port: int) -> None:
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        problem(read_until_closed(s)[0], 431, "headers_too_large")


def test_an_oversized_head_is_refused_before_it_ends(port: int) -> None:
    """The server does not wait for (or buffer) the rest of a head that is already too large."""
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        s.settimeout(0.02)
        raw, sent = b"", 0
        while not raw and sent < 48_000:  # header lines in several reads; the head never ends
            try:
                s.sendall(b"X-Pad: " + b"b" * 4000 + b"\r\n")
                sent += 4009
                raw = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
        rest, _ = read_until_closed(s, timeout=HEADER_TIMEOUT * 0.8)  # well before any deadline
        problem(raw + rest, 431, "headers_too_large")
        assert sent <= LIMITS.max_header_bytes + 3 * 4009  # answered as soon as it was too large


# -- slow clients -------------------------------------------------------------------------------


def test_slowly_sent_headers_are_cut_off_at_the_header_deadline(port: int) -> None:
    """Slowloris: many connections trickling a head never finish it; each one is answered 408
    and closed at the header deadline, however steadily it keeps sending."""
    conns = [connect(port) for _ in range(50)]
    t0 = time.monotonic()
    for s in conns:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        s.setblocking(False)
    closed: dict[int, float] = {}
    got: dict[int, bytes] = {i: b"" for i in range(len(conns))}
    while len(closed) < len(conns) and time.monotonic() - t0 < HEADER_TIMEOUT + 3:
        for i, s in enumerate(conns):
            if i in closed:
                continue
            try:
                s.send(b"X")  # one more byte of a header name, every 50 ms
            except OSError:
                pass
            try:
                chunk = s.recv(65536)
                if chunk:
                    got[i] += chunk
                else:
                    closed[i] = time.monotonic() - t0
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = time.monotonic() - t0
        time.sleep(0.05)
    for s in conns:
        s.close()
    assert len(closed) == len(conns), f"{len(conns) - len(closed)} slow connections still open"
    assert max(closed.values()) < HEADER_TIMEOUT + 1.0, max(closed.values())
    assert min(closed.values()) >= HEADER_TIMEOUT * 0.9
    answered = [raw for raw in got.values() if raw]
    assert answered, "no connection was told why it was closed"
    for raw in answered:
        problem(raw, 408, "request_timeout")


def test_an_idle_new_connection_is_closed_at_the_header_deadline(port: int) -> None:
    with connect(port) as s:
        t0 = time.monotonic()
        raw, at = read_until_closed(s)
        assert raw == b"" and HEADER_TIMEOUT * 0.9 <= at - t0 < HEADER_TIMEOUT + 1.0


def test_a_slow_body_is_answered_408_at_the_body_deadline(port: int) -> None:
    with connect(port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        t0 = time.monotonic()
        s.setblocking(False)
        raw = b""
        while time.monotonic() - t0 < BODY_TIMEOUT + 3:
            try:
                s.send(b"x")
            except OSError:
                break
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
            except BlockingIOError:
                pass
            except OSError:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
    problem(raw, 408, "request_timeout")
    assert BODY_TIMEOUT * 0.9 <= elapsed < BODY_TIMEOUT + 1.0


def test_a_trickled_body_nobody_reads_does_not_hold_the_connection(port: int) -> None:
    """The app answered at once; the client keeps trickling the body it announced (every byte
    would reset uvicorn's keep-alive timer): the body deadline closes the connection."""
    with connect(port) as s:
        s.sendall(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n")
        t0 = time.monotonic()
        s.setblocking(False)
        raw, closed_at = b"", None
        while time.monotonic() - t0 < BODY_TIMEOUT + BODY_GRACE_S + 3:
            try:
                s.send(b"x")
                chunk = s.recv(65536)
                if not chunk:
                    closed_at = time.monotonic() - t0
                    break
                raw += chunk
            except BlockingIOError:
                pass
            except OSError:
                closed_at = time.monotonic() - t0
                break
            time.sleep(0.1)
    assert response(raw)[0] == 200
    assert closed_at is not None and closed_at < BODY_TIMEOUT + BODY_GRACE_S + 1.0, closed_at


def test_keep_alive_requests_still_work_and_idle_ones_end(port: int) -> None:
    with connect(port) as s:
        for _ in range(3):  # three requests, a pause between them shorter than any deadline
            s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
            data = b""
            while b'{"read":5}' not in data:
                chunk = s.recv(65536)
                assert chunk, "connection closed between keep-alive requests"
                data += chunk
            time.sleep(0.3)
        t0 = time.monotonic()
        raw, at = read_until_closed(s)
        assert raw == b"" and at - t0 < LIMITS.keep_alive_seconds + 0.8


# -- bodies -------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_on_its_content_length(port: int) -> None:
    """64 MB announced: 413 at once, without a byte of the body sent."""
    with connect(port) as s:
        s.sendall(
            b"POST /v1/session HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 67108864\r\n\r\n"
        )
        raw, _ = read_until_closed(s, timeout=2)
    p = problem(raw, 413, "body_too_large")
    assert "16384" in p["detail"]
    assert response(raw)[1]["connection"] == "close"


def test_a_chunked_body_is_cut_off_once_past_the_limit(port: int) -> None:
    chunk = b"y" * 4096
    with connect(port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            for _ in range(16):  # 64 KiB; the limit is 16 KiB
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                time.sleep(0.01)
        except OSError:
            pass
        raw, _ = read_until_closed(s, timeout=3)
    problem(raw, 413, "body_too_large")


def test_the_events_endpoint_takes_up_to_the_contracts_maximum(port: int) -> None:
    event = b"{" + b" " * (LIMITS.max_event_bytes - 2) + b"}"
    status, _, body = request(
        port, b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(event), event
    )
    assert status == 200 and orjson.loads(body) == {"read": LIMITS.max_event_bytes}
    status, _, body = request(
        port,
        b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (len(event) + 1),
        event + b" ",
    )
    assert status == 413 and orjson.loads(body)["reason"] == "body_too_large"
    # other endpoints take up to max_body_bytes (larger here than an event)
    big = b"z" * LIMITS.max_body_bytes
    status, _, body = request(
        port, b"POST /v1/other HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(big), big
    )
    assert status == 200 and orjson.loads(body) == {"read": LIMITS.max_body_bytes}


def test_the_server_configuration() -> None:
    cfg = uvicorn_config(LIMITS, app=echo)
    assert cfg.timeout_keep_alive == 1 and cfg.limit_concurrency == 500
    http = cfg.http
    assert isinstance(http, type) and issubclass(http, GuardedHttpToolsProtocol)
    assert http.max_header_bytes == 8192 and http.header_timeout == HEADER_TIMEOUT
    assert (cfg.host, cfg.port) == (LIMITS.api_host, LIMITS.api_port)


# -- the real API -------------------------------------------------------------------------------


def send_until_answered(port: int, pieces: list[bytes]) -> bytes:
    """Send ``pieces`` until the server answers (or stops reading); then read the answer."""
    with connect(port) as s:
        s.settimeout(0.05)
        raw = b""
        for piece in pieces:
            try:
                s.sendall(piece)
                raw = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if raw:
                break
        rest, _ = read_until_closed(s, timeout=5)
        return raw + rest


@pytest.mark.integration
def test_the_api_refuses_oversized_requests(stack) -> None:
    port = stack.api_port
    settings = load()
    # an anonymous 64 MB sign-in: refused on its Content-Length, before a byte of it is read
    head = b"POST /v1/session HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n"
    raw = send_until_answered(port, [head])
    problem(raw, 413, "body_too_large")
    # the same, chunked: cut off once past the limit
    chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
    raw = send_until_answered(
        port, [b"POST /v1/session HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", *[chunk] * 256]
    )
    problem(raw, 413, "body_too_large")
    # a 1 MB header on an authenticated read
    auth = stack.headers["Authorization"].encode()
    raw = send_until_answered(
        port,
        [
            b"GET /v1/summary HTTP/1.1\r\nHost: t\r\nAuthorization: " + auth + b"\r\nX-Big: ",
            *[b"a" * 16384] * 64,
            b"\r\n\r\n",
        ],
    )
    problem(raw, 431, "headers_too_large")
    # events: up to the contract's maximum message size, not one byte more
    ev = event(f"limits-{uuid.uuid4().hex}", "receipt", 1)
    padded = ev + b" " * (settings.max_event_bytes - len(ev))
    ok = httpx.post(f"{stack.api}/v1/events", content=padded, headers=stack.source_headers, timeout=10)
    assert ok.status_code == 202, ok.text
    too_big = httpx.post(
        f"{stack.api}/v1/events", content=padded + b" ", headers=stack.source_headers, timeout=10
    )
    assert too_big.status_code == 413 and too_big.json()["reason"] == "body_too_large"
    assert too_big.headers["content-type"] == "application/problem+json"
    # a problem's type is documented at its address, without a token
    doc = httpx.get(f"{stack.api}/problems/body_too_large", timeout=10)
    assert doc.status_code == 200 and doc.json()["status"] == 413 and doc.json()["description"]
    assert httpx.get(f"{stack.api}/problems/no_such_problem", timeout=10).status_code == 404
