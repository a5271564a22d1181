"""Request size and time limits, enforced before authentication (pure ASGI middleware).

* Headers: the request line and headers together at most ``max_header_bytes``, else **431**.
  (``serving.server``'s HTTP protocol refuses them while they arrive, before they are buffered in
  full; this check holds whatever server runs the app.)
* Body: ``POST /v1/events`` at most ``max_event_bytes`` (the event contract's maximum message),
  ``POST /v1/events:batch`` at most ``max_batch_events`` such events, every other request at most ``max_body_bytes``, else **413**: refused up front on its
  ``Content-Length``, and for a chunked body as soon as what was read passes the limit (the rest
  is never read: the answer closes the connection).
* Time: once its headers are in, a request's body must arrive within ``body_timeout_seconds``,
  else **408** (the server's protocol closes a connection that still trickles a body nobody reads).

Answers are problem details (``serving.problems``) with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cashpos.settings import Settings
from serving.problems import send_problem

Scope = dict[str, Any]
CLOSE = [(b"connection", b"close")]
EVENTS = ("POST", "/v1/events")
BATCH = ("POST", "/v1/events:batch")


class Refused(Exception):
    """Raised from ``receive`` to abandon a request whose body breaks a limit."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _refusal(exc: BaseException) -> Refused | None:
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _refusal(inner)
            if found is not None:
                return found
    return None


class RequestLimits:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.max_header = settings.max_header_bytes
        self.max_body = settings.max_body_bytes
        self.max_event = settings.max_event_bytes
        # a batch: its events and a separator each (NDJSON newlines, or a JSON array's commas)
        self.max_batch = settings.max_batch_events * (settings.max_event_bytes + 2) + 2
        self.body_timeout = settings.body_timeout_seconds

    def body_limit(self, method: str, path: str) -> int:
        if (method, path) == EVENTS:
            return self.max_event
        return self.max_batch if (method, path) == BATCH else self.max_body

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The request line is about the path, the query, the method and "HTTP/1.1".
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 20
        length: bytes | None = None
        chunked = False
        for k, v in scope["headers"]:
            size += len(k) + len(v) + 4
            if k == b"content-length":
                length = v
            elif k == b"transfer-encoding":
                chunked = True
        if size > self.max_header:
            await send_problem(
                send,
                scope,
                "headers_too_large",
                f"request line and headers of about {size} bytes; at most {self.max_header}",
                CLOSE,
            )
            return
        if length is None and not chunked:
            await self.app(scope, receive, send)  # no body (HTTP/1.1): a read costs nothing more
            return
        limit = self.body_limit(scope["method"], scope["path"])
        if length is not None and length.isdigit() and int(length) > limit:
            await send_problem(
                send, scope, "body_too_large", f"Content-Length {int(length)} > {limit} bytes", CLOSE
            )
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        received = 0
        complete = False
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                # A message already there is taken even after the deadline (no suspension).
                async with asyncio.timeout_at(deadline):
                    message: dict[str, Any] = await receive()
            except TimeoutError:
                raise Refused(
                    "request_timeout",
                    f"the body did not arrive within {self.body_timeout:g} s ({received} bytes received)",
                ) from None
            if message["type"] != "http.request":
                complete = True
                return message
            received += len(message.get("body", b""))
            if received > limit:
                raise Refused("body_too_large", f"body larger than {limit} bytes")
            if not message.get("more_body", False):
                complete = True
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BaseException as exc:
            refused = _refusal(exc)
            if refused is None:
                raise
            if not started:  # otherwise the server closes the half-sent response's connection
                await send_problem(send, scope, refused.reason, refused.detail, CLOSE)
