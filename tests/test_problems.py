"""Every error the API answers is an RFC 9457 problem (``application/problem+json``, ``status`` the
HTTP status, a registered ``reason``), and the API uses no deprecated FastAPI response class.

No stack: the app as ``serving.app.create_app`` builds it, driven in process (httpx's ASGI
transport) with stand-ins for what its lifespan would connect (the token store, the audit log,
Redis, the position reader, the alert projection). The same answers from the running API:
tests/test_access.py, tests/test_serving_limits.py, tests/test_end_to_end.py.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import FastAPIDeprecationWarning
from redis.exceptions import ConnectionError as RedisConnectionError

from access.policy import Role
from access.tokens import TokenRecord, csrf_for
from serving.app import create_app
from serving.positions import NotReady
from serving.problems import PROBLEM_JSON, TYPES
from serving.security import SESSION_COOKIE
from tests.events import event

ORG = "3090000"
OTHER = "3010000"
ROOT = Path(__file__).resolve().parent.parent


def _rec(id_: str, role: Role, orgs: list[str], rate: int = 1000, expires_ms: int = 0) -> TokenRecord:
    return TokenRecord(id_, id_, role, orgs, 0, expires_ms, rate)


TOKENS = {
    "t-admin": _rec("admin", Role.ADMIN, []),
    "t-viewer": _rec("viewer", Role.VIEWER, [ORG]),
    "t-director": _rec("director", Role.FINANCE_DIRECTOR, [ORG]),
    "t-source": _rec("source", Role.SOURCE, [ORG]),
    "t-slow": _rec("slow", Role.VIEWER, [ORG], rate=1),
    "t-expired": _rec("expired", Role.VIEWER, [ORG], expires_ms=1),
}


class FakeTokens:
    async def lookup(self, token: str) -> TokenRecord | None:
        if token == "t-down":
            raise RedisConnectionError("no route to 10.0.0.7:6379")
        return TOKENS.get(token)


class FakeAudit:
    async def append(self, entry: object, wait: bool = False) -> None:
        return None


class FakeRedis:
    async def ping(self) -> bool:
        raise RedisConnectionError("no route to 10.0.0.7:6379")


class FakeReader:
    async def government(self, org: str, fiscal_year: int | None) -> dict[str, object]:
        raise NotReady([org])


class FakeAlerts:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.alert = {"id": "a1", "org_code": ORG, "state": "resolved", "rule": "shortfall"}

    async def get(self, alert_id: str) -> dict[str, object] | None:
        return dict(self.alert) if alert_id == "a1" else None

    async def acknowledge(self, alert_id: str, by: str, at_ms: int) -> tuple[str, dict[str, object]]:
        return "resolved", dict(self.alert)


def _app() -> FastAPI:
    app = create_app()
    st = app.state
    st.tokens = FakeTokens()
    st.audit = FakeAudit()
    st.redis = FakeRedis()
    st.reader = FakeReader()
    st.alert_projection = FakeAlerts(st.redis)

    # Test-only routes: an unexpected exception, and HTTP errors no route of the API raises today.
    @app.get("/v1/test/boom")
    async def boom() -> None:
        raise RuntimeError("secret-internal-state 10.0.0.7")

    @app.post("/v1/test/media")
    async def media() -> None:
        raise HTTPException(415, "send application/json")

    @app.get("/v1/test/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout")

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# (what, method, path, headers, body, expected status, expected reason, expected field)
CASES: list[tuple[str, str, str, dict[str, str], bytes | None, int, str, str | None]] = [
    ("no token", "GET", "/v1/summary", {}, None, 401, "unauthorized", None),
    ("unknown token", "GET", "/v1/summary", bearer("t-nope"), None, 401, "unauthorized", None),
    ("expired token", "GET", "/v1/summary", bearer("t-expired"), None, 401, "unauthorized", None),
    ("role lacks permission", "GET", "/v1/tokens", bearer("t-viewer"), None, 403, "forbidden", None),
    (
        "cookie write without CSRF",
        "DELETE",
        "/v1/session",
        {"Cookie": f"{SESSION_COOKIE}=t-viewer"},
        None,
        403,
        "csrf_mismatch",
        None,
    ),
    (
        "event outside scope",
        "POST",
        "/v1/events",
        bearer("t-source"),
        event("e-other", "receipt", 1_000, org=OTHER, account="general"),
        403,
        "forbidden_government",
        "org_code",
    ),
    ("unknown path", "GET", "/v1/nope", bearer("t-admin"), None, 404, "not_found", None),
    ("unknown government", "GET", "/v1/governments/9999999", bearer("t-admin"), None, 404, "not_found", None),
    ("out of scope", "GET", f"/v1/positions/{OTHER}", bearer("t-viewer"), None, 404, "not_found", None),
    ("unknown alert", "GET", "/v1/alerts/zz", bearer("t-viewer"), None, 404, "not_found", None),
    ("unknown problem type", "GET", "/problems/nope", {}, None, 404, "not_found", None),
    ("wrong method", "DELETE", "/v1/governments", bearer("t-admin"), None, 405, "method_not_allowed", None),
    (
        "ack resolved alert",
        "POST",
        "/v1/alerts/a1/ack",
        bearer("t-director"),
        None,
        409,
        "alert_resolved",
        None,
    ),
    (
        "event too large",
        "POST",
        "/v1/events",
        bearer("t-source"),
        b"{" + b" " * 70_000 + b"}",
        413,
        "body_too_large",
        None,
    ),
    (
        "unsupported media type",
        "POST",
        "/v1/test/media",
        bearer("t-admin"),
        None,
        415,
        "unsupported_media_type",
        None,
    ),
    ("other HTTP error", "GET", "/v1/test/teapot", bearer("t-admin"), None, 418, "http_error", None),
    (
        "query out of range",
        "GET",
        "/v1/deadletters?limit=0",
        bearer("t-admin"),
        None,
        422,
        "invalid_request",
        "limit",
    ),
    (
        "query wrong type",
        "GET",
        f"/v1/positions/{ORG}?fiscal_year=x",
        bearer("t-viewer"),
        None,
        422,
        "invalid_request",
        "fiscal_year",
    ),
    (
        "bad alert rule",
        "GET",
        "/v1/alerts?rule=nope",
        bearer("t-viewer"),
        None,
        422,
        "invalid_request",
        "rule",
    ),
    (
        "bad token body",
        "POST",
        "/v1/tokens",
        bearer("t-admin"),
        b'{"role": "viewer", "name": "x", "orgs": ["3090000"], "expires_days": "soon"}',
        422,
        "invalid_request",
        "expires_days",
    ),
    ("bad sign-in body", "POST", "/v1/session", {}, b"{}", 422, "invalid_request", "token"),
    (
        "contract refusal",
        "POST",
        "/v1/events",
        bearer("t-source"),
        event("e-zero", "receipt", 0, org=ORG),
        422,
        "invalid_amount",
        "amount",
    ),
    (
        "contract refusal, missing field",
        "POST",
        "/v1/events",
        bearer("t-source"),
        orjson.dumps(
            {k: v for k, v in orjson.loads(event("e-m", "receipt", 5, org=ORG)).items() if k != "account"}
        ),
        422,
        "missing_field",
        "account",
    ),
    ("not JSON", "POST", "/v1/events", bearer("t-source"), b"{nope", 422, "not_json", None),
    ("unexpected exception", "GET", "/v1/test/boom", bearer("t-admin"), None, 500, "internal_error", None),
    (
        "serving copy rebuilding",
        "GET",
        f"/v1/positions/{ORG}",
        bearer("t-viewer"),
        None,
        503,
        "not_ready",
        None,
    ),
    ("token store down", "GET", "/v1/summary", bearer("t-down"), None, 503, "unavailable", None),
    ("not ready", "GET", "/readyz", {}, None, 503, "not_ready", None),
]


async def _send(
    app: FastAPI, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        return await c.request(method, path, headers=headers, content=body)


def _check_problem(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON, r.headers
    p: dict[str, Any] = r.json()
    assert p["status"] == status and p["reason"] == reason, p
    assert p["type"] == f"/problems/{reason}" and reason in TYPES
    assert isinstance(p["title"], str) and p["title"] and isinstance(p["detail"], str) and p["detail"]
    return p


@pytest.mark.parametrize(
    ("what", "method", "path", "headers", "body", "status", "reason", "field"),
    CASES,
    ids=[c[0] for c in CASES],
)
async def test_every_error_is_a_problem(
    what: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    reason: str,
    field: str | None,
) -> None:
    r = await _send(_app(), method, path, headers, body)
    p = _check_problem(r, status, reason)
    assert p.get("field") == field, p
    if reason == "internal_error":
        assert "secret" not in r.text and "10.0.0.7" not in r.text and "RuntimeError" not in r.text
    if reason == "unavailable":
        assert "10.0.0.7" not in r.text and r.headers["retry-after"] == "1"
    if status in (401,):
        assert r.headers["www-authenticate"].startswith("Bearer")
    if status == 405:
        assert "GET" in r.headers["allow"]


async def test_problem_members() -> None:
    app = _app()
    r = await _send(app, "GET", "/v1/summary", bearer("t-expired"), None)
    assert _check_problem(r, 401, "unauthorized")["detail"] == "token expired"
    r = await _send(app, "GET", f"/v1/positions/{ORG}", bearer("t-viewer"), None)
    assert _check_problem(r, 503, "not_ready")["governments"] == [ORG] and r.headers["retry-after"] == "1"
    r = await _send(app, "POST", "/v1/alerts/a1/ack", bearer("t-director"), None)
    assert _check_problem(r, 409, "alert_resolved")["alert"]["id"] == "a1"
    r = await _send(app, "GET", "/v1/deadletters?limit=0", bearer("t-admin"), None)
    errors = _check_problem(r, 422, "invalid_request")["errors"]
    assert errors and errors[0]["field"] == "limit" and errors[0]["in"] == "query"
    r = await _send(app, "GET", "/readyz", {}, None)
    assert _check_problem(r, 503, "not_ready")["ready"] is False and "10.0.0.7" not in r.text
    # the rate limit: a burst of two seconds' worth (rate 1/s), then 429 with Retry-After
    for _ in range(2):
        assert (await _send(app, "GET", "/v1/alerts/zz", bearer("t-slow"), None)).status_code == 404
    r = await _send(app, "GET", "/v1/alerts/zz", bearer("t-slow"), None)
    _check_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    # a problem under a root path names its type there
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        r = await c.get("/api/v1/nope", headers=bearer("t-admin"))
    assert r.json()["type"] == "/api/problems/not_found"


async def test_every_reason_is_documented() -> None:
    from streams.contract import REASONS, STATEFUL_REASONS

    # every refusal of the contract's stateless rules is a problem type of its own, with status 422
    for reason in set(REASONS) - STATEFUL_REASONS - {"internal_error"}:
        assert TYPES[reason].status == 422, reason
    app = _app()
    for reason, t in TYPES.items():
        r = await _send(app, "GET", f"/problems/{reason}", {}, None)
        assert r.status_code == 200 and r.json()["status"] == t.status and r.json()["description"]
    # a cookie session's write with the session's CSRF value gets through the check
    cookie = {"Cookie": f"{SESSION_COOKIE}=t-viewer", "X-CSRF-Token": csrf_for("t-viewer")}
    assert (await _send(app, "DELETE", "/v1/session", cookie, None)).status_code == 200


async def test_no_deprecated_fastapi_response() -> None:
    """FastAPI 0.12x deprecates ORJSONResponse (a warning per response): the API uses
    ``serving.wire.ExactJSONResponse``, and building it and answering warn nothing."""
    for path in sorted((ROOT / "serving").rglob("*.py")):
        assert "ORJSONResponse" not in path.read_text(), path
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FastAPIDeprecationWarning)
        app = _app()
        assert (await _send(app, "GET", "/openapi.json", {}, None)).status_code == 200
        r = await _send(app, "GET", "/v1/session", bearer("t-viewer"), None)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json()["role"] == "viewer"
        assert (await _send(app, "GET", "/v1/nope", bearer("t-admin"), None)).status_code == 404


def test_exact_json_matches_orjson_bytes() -> None:
    """The bodies ORJSONResponse wrote (orjson.dumps) are what ExactJSONResponse writes."""
    from serving.wire import ExactJSONResponse

    body = {"token_id": "x", "orgs": ["3090000"], "n": 2**62, "ok": True, "none": None, "at": time.time()}
    assert ExactJSONResponse(body).body == orjson.dumps(body)


async def test_over_capacity_is_a_problem() -> None:
    """Past CASHPOS_API_MAX_CONNECTIONS uvicorn answers without the app: a problem too."""
    from uvicorn.protocols.http import httptools_impl

    from cashpos.settings import load
    from serving.server import guarded_protocol, over_capacity

    guarded_protocol(load())
    assert vars(httptools_impl)["service_unavailable"] is over_capacity
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await over_capacity({"type": "http", "root_path": ""}, None, send)
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 503 and headers[b"content-type"] == PROBLEM_JSON.encode()
    assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
    p = orjson.loads(sent[1]["body"])
    assert p["status"] == 503 and p["reason"] == "unavailable"


def test_declared_error_responses_are_problems() -> None:
    """Where a route declares its error responses in the OpenAPI, they are problems."""
    spec = create_app().openapi()
    declared = [
        (path, method, status, r)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        for status, r in op.get("responses", {}).items()
        if status.startswith(("4", "5")) and "Validation Error" not in r.get("description", "")
    ]
    assert len(declared) >= 6
    for path, method, status, r in declared:
        assert PROBLEM_JSON in r.get("content", {}), (path, method, status)
