"""Error bodies as RFC 9457 problem details (``application/problem+json``).

Every problem has ``type``, ``title``, ``status``, ``detail`` and ``reason``: a stable code that
clients branch on (``title`` and ``detail`` are for people and may change). ``type`` is the
reference ``/problems/{reason}``, resolved against the API's address; ``GET`` on it (public)
answers what the problem means and what to do about it.

The problem types are registered here (:data:`TYPES`), one per ``reason``, so a reason is never
used with two meanings. Three ways to answer with one:

* :func:`problem_response` from a route or an exception handler (a Starlette response);
* :func:`send_problem` from a pure ASGI middleware (``send`` callable);
* :func:`problem_bytes` for code below ASGI (the HTTP protocol in ``serving.server``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    reason: str
    status: int
    title: str
    about: str  # what it means and what the client should do

    def path(self, root_path: str = "") -> str:
        return f"{root_path}/problems/{self.reason}"


TYPES: dict[str, ProblemType] = {
    t.reason: t
    for t in (
        ProblemType(
            "too_many_streams",
            429,
            "Too many open live streams for this token",
            "The token already holds as many open /v1/stream connections as one API process "
            "allows (CASHPOS_MAX_STREAMS_PER_TOKEN). Close one (another browser tab, a client "
            "that did not close its connection) before opening another.",
        ),
        ProblemType(
            "body_too_large",
            413,
            "Request body too large",
            "The request body is larger than the endpoint accepts: POST /v1/events takes one "
            "event of at most CASHPOS_MAX_EVENT_BYTES, every other endpoint at most "
            "CASHPOS_MAX_BODY_BYTES. The connection is closed.",
        ),
        ProblemType(
            "headers_too_large",
            431,
            "Request header fields too large",
            "The request line and headers together are larger than CASHPOS_MAX_HEADER_BYTES. "
            "The connection is closed.",
        ),
        ProblemType(
            "request_timeout",
            408,
            "Request not received in time",
            "The request's headers did not arrive within CASHPOS_HEADER_TIMEOUT_SECONDS, or its "
            "body not within CASHPOS_BODY_TIMEOUT_SECONDS of them. The connection is closed; "
            "send the request again.",
        ),
        ProblemType(
            "csrf_mismatch",
            403,
            "Missing or wrong CSRF token",
            "A request authenticated by the session cookie that changes something must send "
            "the value of this session's cashpos_csrf cookie in X-CSRF-Token. Sign in again "
            "if the session predates the current cookie.",
        ),
    )
}


def problem_body(reason: str, detail: str, root_path: str = "", **extra: object) -> dict[str, object]:
    """The JSON object of a registered problem (KeyError for an unregistered ``reason``)."""
    t = TYPES[reason]
    return {
        "type": t.path(root_path),
        "title": t.title,
        "status": t.status,
        "detail": detail,
        "reason": reason,
        **extra,
    }


def problem_bytes(reason: str, detail: str, root_path: str = "", **extra: object) -> tuple[int, bytes]:
    """(status, encoded body) of a problem."""
    return TYPES[reason].status, orjson.dumps(problem_body(reason, detail, root_path, **extra))


def problem_response(
    reason: str, detail: str, headers: Mapping[str, str] | None = None, root_path: str = "", **extra: object
) -> Response:
    status, body = problem_bytes(reason, detail, root_path, **extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


async def send_problem(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    scope: Mapping[str, Any],
    reason: str,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: object,
) -> None:
    """Answer a request with a problem from pure ASGI code."""
    status, body = problem_bytes(reason, detail, scope.get("root_path", ""), **extra)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


router = APIRouter(tags=["problems"])


@router.get("/problems/{reason}", summary="What a problem type (an error's `type`) means")
async def describe(reason: str) -> Response:
    t = TYPES.get(reason)
    if t is None:
        raise HTTPException(404, f"no problem type {reason}")
    body = {
        "type": t.path(),
        "reason": t.reason,
        "title": t.title,
        "status": t.status,
        "status_phrase": HTTPStatus(t.status).phrase,
        "description": t.about,
    }
    return Response(orjson.dumps(body), media_type="application/json")
