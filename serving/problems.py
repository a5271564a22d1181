"""Error bodies as RFC 9457 problem details (``application/problem+json``): every error the API
answers, whatever raised it.

Every problem has ``type``, ``title``, ``status``, ``detail`` and ``reason``: a stable code that
clients branch on (``title`` and ``detail`` are for people and may change); ``field`` names the
request field at fault when there is one, and a few problems add members of their own (a 503 of a
rebuild: ``governments``; a 409 of an acknowledgement: ``alert``; a 422 of the request's
parameters: ``errors``). ``type`` is the reference ``/problems/{reason}``, resolved against the
API's address; ``GET`` on it (public) answers what the problem means and what to do about it.

The problem types are registered here (:data:`TYPES`), one per ``reason``, so a reason is never
used with two meanings. The refusals of ``POST /v1/events`` use the event contract's reason codes
(``streams.contract.REASONS``, the same as the dead letters'); the other errors a small set of
their own (:data:`STATUS_REASONS` for an ``HTTPException`` that names none). Ways to answer:

* raise :class:`Problem` (or any ``HTTPException``) from a route or dependency;
* :func:`problem_response` from a route or an exception handler (a Starlette response);
* :func:`send_problem` from a pure ASGI middleware (``send`` callable);
* :func:`problem_bytes` for code below ASGI (the HTTP protocol in ``serving.server``).

:func:`install` puts the exception handlers on the app (once, in ``serving.app``): HTTP errors
(FastAPI's and Starlette's: 404 of an unknown path, 405), request validation (422) and any other
exception (500, its text never shown).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.models import ProblemTypeInfo
from streams.contract import REASONS, STATEFUL_REASONS

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
        ProblemType(
            "unauthorized",
            401,
            "Authentication required",
            "The request carries no token, or one that is unknown, expired or revoked (detail "
            "says which). Send Authorization: Bearer <token>, or sign in (POST /v1/session).",
        ),
        ProblemType(
            "forbidden",
            403,
            "Not permitted for this token's role",
            "The token's role lacks the permission the endpoint needs (docs/access.md has the "
            "matrix). Use a token of a role that has it.",
        ),
        ProblemType(
            "forbidden_government",
            403,
            "Government outside the token's scope",
            "POST /v1/events: the event's org_code is not one of the governments the token may "
            "submit events for. Nothing was published.",
        ),
        ProblemType(
            "not_found",
            404,
            "Not found",
            "No such resource: an unknown path, government, account, alert, token or problem "
            "type. A government outside the token's scope answers the same as an unknown one.",
        ),
        ProblemType(
            "method_not_allowed",
            405,
            "Method not allowed",
            "The path exists but not with this method; the Allow header lists the ones it takes.",
        ),
        ProblemType(
            "conflict",
            409,
            "Conflict with the resource's state",
            "The request cannot be applied to the resource as it is now.",
        ),
        ProblemType(
            "alert_resolved",
            409,
            "Alert already resolved",
            "POST /v1/alerts/{id}/ack on an alert that is resolved: there is nothing to "
            "acknowledge. The body's alert member is the alert as it is.",
        ),
        ProblemType(
            "unsupported_media_type",
            415,
            "Unsupported media type",
            "The request body's Content-Type is not one the endpoint takes (application/json).",
        ),
        ProblemType(
            "invalid_request",
            422,
            "Invalid request",
            "A path or query parameter, or the JSON body of an endpoint other than "
            "POST /v1/events, is missing, of the wrong type or out of range; field names it "
            "(errors lists every one for parameters). Correct the request; do not retry as is.",
        ),
        ProblemType(
            "invalid_cursor",
            422,
            "Invalid paging cursor",
            "The cursor query parameter is not one this list issued: malformed, from another "
            "list, or from the same list with other filters. Start again without a cursor, or "
            "follow the list's own next (the Link header, rel=next).",
        ),
        ProblemType(
            "rate_limited",
            429,
            "Rate limit exceeded",
            "The token has spent its requests per second (its rate_per_s, with a burst of two "
            "seconds' worth). Wait the Retry-After seconds before the next request.",
        ),
        ProblemType(
            "internal_error",
            500,
            "Internal server error",
            "The API failed unexpectedly (a defect; it is logged, the detail tells nothing of it). "
            "Retrying may work; report it if it persists.",
        ),
        ProblemType(
            "not_ready",
            503,
            "Not ready",
            "The serving copy of the named governments is being rebuilt (governments), or "
            "/readyz: Redis does not answer or no processor worker is alive. Retry after "
            "Retry-After seconds.",
        ),
        ProblemType(
            "unavailable",
            503,
            "Service temporarily unavailable",
            "A store the request needs does not answer: Redis (the serving store and the "
            "tokens), the audit log or the event log. Nothing was changed. Retry after "
            "Retry-After seconds.",
        ),
        # The refusals of POST /v1/events: the event contract's stateless reasons, the same
        # codes as the dead letters' (the stateful ones are the processor's to decide, later).
        *(
            ProblemType(
                reason,
                422,
                f"Event refused: {reason.replace('_', ' ')}",
                f"POST /v1/events refused the event: {about}. Nothing was published; the same "
                "code is the reason of a dead letter (docs/events.md). Correct the event; do not "
                "retry it as is.",
            )
            for reason, about in REASONS.items()
            if reason not in STATEFUL_REASONS and reason != "internal_error"
        ),
        # The fate of a submitted event (serving/ingest.py, serving/events.py).
        ProblemType(
            "event_id_conflict",
            409,
            "Event id already used with other content",
            "An event with this event_id (and side) was submitted or applied before with different "
            "content. Nothing was published: the processor would refuse it (the dead letters' "
            "event_id_conflict). Use a new event_id for a new event; to undo one, submit a reversal.",
        ),
        ProblemType(
            "unknown_event",
            404,
            "No such event",
            "No event with this id was submitted through the API or decided by the processor within "
            "the fate's retention (CASHPOS_FATE_RETENTION_DAYS). Check the government and the id; an "
            "event published straight to Kafka is known once the processor has decided it.",
        ),
        ProblemType(
            "ambiguous_event_id",
            409,
            "The id names two events",
            "A receipt (revenue) and an expenditure event of this government share the event_id "
            "(each side has its own ids). Ask again with side=revenue or side=expenditure.",
        ),
        ProblemType(
            "history_retired",
            410,
            "History retired to daily closings",
            "The fiscal year asked about is older than the years kept online in full "
            "(CASHPOS_HISTORY_ONLINE_YEARS; default the current and the previous): its daily "
            "closings remain, so ask at a day's end (23:59:59.999 Korea time) or for its "
            "statement; the events behind its figures are not kept. Do not retry as is.",
        ),
        ProblemType(
            "history_unavailable",
            503,
            "History not available now",
            "The history of a government is answered by the worker that owns it. None does right now "
            "(a partition moving between workers), or it is still rebuilding its state. Retry after "
            "Retry-After seconds; live positions (without as_of) are served meanwhile.",
        ),
        ProblemType(
            "forecast_unavailable",
            503,
            "No forecast yet",
            "GET /v1/forecast/{org_code}[/{account}]: the government (or the account) has figures but "
            "the worker that owns it has not written their forecast yet (it does at once after its "
            "first event, then within a second of each change; after Redis lost it, within a "
            "second or two). Retry after Retry-After seconds. (Nothing to forecast is no error: an "
            "account or a government without a position answers its zero forecast.)",
        ),
        ProblemType(
            "invalid_batch",
            422,
            "Batch body refused",
            "POST /v1/events:batch takes a JSON array of events, or NDJSON (Content-Type "
            "application/x-ndjson) with one event a line, at most CASHPOS_MAX_BATCH_EVENTS of them. "
            "Nothing was published.",
        ),
        ProblemType(
            "http_error",
            400,
            "HTTP error",
            "An HTTP error without a more specific problem type; status is the HTTP status.",
        ),
    )
}

# The reason of an HTTPException raised without one (anything else: http_error).
STATUS_REASONS: dict[int, str] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    503: "unavailable",
}


# The body's schema: the model ``serving.models.Problem``, a component of the OpenAPI document
# (``serving.openapi`` puts it there).
PROBLEM_REF = "#/components/schemas/Problem"


def problem_doc(description: str) -> dict[str, object]:
    """An OpenAPI ``responses`` entry answered with a problem."""
    return {"description": description, "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}}


def problem_body(
    reason: str, detail: str, root_path: str = "", status: int | None = None, **extra: object
) -> dict[str, object]:
    """The JSON object of a registered problem (KeyError for an unregistered ``reason``);
    ``status`` only for ``http_error`` (any other type has its own)."""
    t = TYPES[reason]
    return {
        "type": t.path(root_path),
        "title": t.title if status is None or status == t.status else HTTPStatus(status).phrase,
        "status": status or t.status,
        "detail": detail,
        "reason": reason,
        **{k: v for k, v in extra.items() if v is not None},
    }


def problem_bytes(
    reason: str, detail: str, root_path: str = "", status: int | None = None, **extra: object
) -> tuple[int, bytes]:
    """(status, encoded body) of a problem."""
    body = problem_body(reason, detail, root_path, status, **extra)
    return int(str(body["status"])), orjson.dumps(body)


def problem_response(
    reason: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    root_path: str = "",
    status: int | None = None,
    **extra: object,
) -> Response:
    status, body = problem_bytes(reason, detail, root_path, status, **extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


class Problem(HTTPException):
    """An HTTP error with its problem type: ``raise Problem("invalid_request", detail, field=...)``."""

    def __init__(
        self, reason: str, detail: str, headers: Mapping[str, str] | None = None, **extra: object
    ) -> None:
        super().__init__(TYPES[reason].status, detail, dict(headers) if headers else None)
        self.reason = reason
        self.extra = extra


_AT_FIELD = re.compile(r"`\$\.([^`\[]+)")
_NAMED_FIELD = re.compile(r"field `([^`]+)`")


def field_of(message: str) -> str | None:
    """The field a msgspec error message names (``... - at `$.x` ``, ``... field `x` ``)."""
    m = _AT_FIELD.search(message) or _NAMED_FIELD.search(message)
    return m.group(1) if m else None


# The event field each contract refusal is about, where the reason alone says it.
_CONTRACT_FIELDS = {
    "invalid_amount": "amount",
    "invalid_kind": "kind",
    "invalid_timestamp": "occurred_at",
    "naive_timestamp": "occurred_at",
    "unknown_government": "org_code",
    "unknown_account": "account",
    "fiscal_year_mismatch": "fiscal_year",
    "period_closed": "occurred_at",
    "close_too_early": "occurred_at",
    "missing_basis": "basis",
    "missing_category": "category",
    "missing_commitment_id": "commitment_id",
    "missing_to_account": "to_account",
    "transfer_same_account": "to_account",
    "unknown_to_account": "to_account",
}


def contract_field(reason: str, detail: str) -> str | None:
    """The event field a contract refusal (``streams.contract.Rejection``) is about, if any."""
    if reason in _CONTRACT_FIELDS:
        return _CONTRACT_FIELDS[reason]
    if reason in ("missing_field", "unknown_field", "duplicate_key", "invalid_field"):
        return field_of(detail)
    if reason == "field_not_allowed":
        return detail.split(" ", 1)[0] or None
    return None


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    reason = getattr(exc, "reason", None) or STATUS_REASONS.get(exc.status_code, "http_error")
    status = exc.status_code if TYPES[reason].status != exc.status_code else None
    extra: dict[str, object] = getattr(exc, "extra", None) or {}
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(reason, detail, exc.headers, _root(request), status, **extra)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> tuple[str, str]:
    where = str(loc[0]) if loc else ""
    parts = loc[1:] if where in ("path", "query", "header", "cookie", "body") else loc
    return ".".join(str(x) for x in parts), where


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        name, where = _field_path(tuple(e.get("loc") or ()))
        errors.append({"field": name, "in": where, "detail": str(e.get("msg", ""))})
    first = errors[0] if errors else {"field": "", "detail": "invalid request"}
    detail = f"{first['field']}: {first['detail']}" if first["field"] else first["detail"]
    return problem_response(
        "invalid_request", detail, root_path=_root(request), field=first["field"] or None, errors=errors
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The exception is logged by the server (Starlette re-raises it after this answer); the
    # client learns only that it happened.
    return problem_response(
        "internal_error", "the API failed to answer this request (logged)", root_path=_root(request)
    )


def install(app: FastAPI) -> None:
    """Answer every HTTP error, validation error and unexpected exception as a problem."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)


async def send_problem(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    scope: Mapping[str, Any],
    reason: str,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: object,
) -> None:
    """Answer a request with a problem from pure ASGI code."""
    status, body = problem_bytes(reason, detail, scope.get("root_path", ""), None, **extra)
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


@router.get(
    "/problems/{reason}",
    summary="What a problem type (an error's `type`) means",
    response_model=ProblemTypeInfo,
)
async def describe(reason: str) -> Response:
    t = TYPES.get(reason)
    if t is None:
        raise Problem("not_found", f"no problem type {reason}")
    body = {
        "type": t.path(),
        "reason": t.reason,
        "title": t.title,
        "status": t.status,
        "status_phrase": HTTPStatus(t.status).phrase,
        "description": t.about,
    }
    return Response(orjson.dumps(body), media_type="application/json")
