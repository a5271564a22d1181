"""Signing in (the dashboard) and managing tokens (admins).

``POST /v1/session`` exchanges a token for two cookies: the token itself, HttpOnly (page scripts
never see it), and the session's CSRF value (``access.tokens.csrf_for``: bound to the token) that
the page echoes in ``X-CSRF-Token`` on writes. Both are ``SameSite=Strict`` and ``Secure`` behind
HTTPS (or with ``CASHPOS_COOKIE_SECURE=1``).
"""

from __future__ import annotations

import os
from typing import Annotated

import msgspec
from fastapi import APIRouter, HTTPException, Request

from access.policy import GRANTS, Permission, Principal, Role, ScopeError
from access.tokens import TokenRecord, csrf_for, now_ms, principal_of
from cashpos.refdata import governments
from serving import models, paging
from serving.openapi import json_body
from serving.problems import Problem, field_of
from serving.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    audit_write,
    principal,
    require,
)
from serving.wire import ExactJSONResponse

router = APIRouter(tags=["access"])
MAX_SESSION_S = 12 * 3600


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class NewToken(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    orgs: list[str] = []
    expires_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = 90
    rate_per_s: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None


def whoami(p: Principal, rec: TokenRecord | None = None) -> dict[str, object]:
    govs = governments()
    scope = list(govs) if p.orgs is None else [o for o in govs if o in p.orgs]
    return {
        "token_id": p.token_id,
        "name": p.name,
        "role": str(p.role),
        "permissions": sorted(str(x) for x in GRANTS[p.role]),
        "all_governments": p.orgs is None,
        "orgs": scope,
        **({"expires_ms": rec.expires_ms} if rec is not None and rec.expires_ms else {}),
    }


def _decode(body: bytes, typ: type) -> object:
    try:
        return msgspec.json.decode(body, type=typ)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Problem("invalid_request", str(exc), field=field_of(str(exc))) from exc


@router.post(
    "/v1/session",
    summary="Sign in: exchange a token for an HttpOnly session cookie",
    response_model=models.Session,
    openapi_extra={
        **json_body(SignIn, "the token to sign in with"),
        "responses": {
            "401": {"description": "unknown, expired or revoked token (reason unauthorized)"},
            "503": {"description": "the token store or the audit log does not answer (reason unavailable)"},
        },
    },
)
async def sign_in(request: Request) -> ExactJSONResponse:
    body = _decode(await request.body(), SignIn)
    assert isinstance(body, SignIn)
    st = request.app.state
    rec = await st.tokens.lookup(body.token)
    status = "invalid" if rec is None else rec.status(now_ms())
    if rec is None or status != "active":
        st.metrics.auth_failures.labels(status).inc()
        raise HTTPException(401, f"token {status}")
    p = principal_of(rec)
    await audit_write(request, p, "sign_in")
    max_age = MAX_SESSION_S
    if rec.expires_ms:
        max_age = max(1, min(max_age, (rec.expires_ms - now_ms()) // 1000))
    secure = request.url.scheme == "https" or os.environ.get("CASHPOS_COOKIE_SECURE") == "1"
    resp = ExactJSONResponse(whoami(p, rec))
    resp.set_cookie(
        SESSION_COOKIE, body.token, max_age=max_age, httponly=True, secure=secure, samesite="strict", path="/"
    )
    resp.set_cookie(
        CSRF_COOKIE,
        csrf_for(body.token),
        max_age=max_age,
        httponly=False,
        secure=secure,
        samesite="strict",
        path="/",
    )
    return resp


@router.get(
    "/v1/session",
    summary="Who am I: role, permissions and the governments in scope",
    response_model=models.Session,
    dependencies=[require(Permission.REFDATA)],
)
async def get_session(request: Request) -> ExactJSONResponse:
    return ExactJSONResponse(whoami(principal(request)))


@router.delete(
    "/v1/session",
    summary="Sign out (clears the session cookies)",
    response_model=models.SignedOut,
    dependencies=[require(Permission.REFDATA)],
)
async def sign_out(request: Request) -> ExactJSONResponse:
    p = principal(request)
    await audit_write(request, p, "sign_out")
    resp = ExactJSONResponse({"signed_out": True})
    resp.delete_cookie(SESSION_COOKIE, path="/")
    resp.delete_cookie(CSRF_COOKIE, path="/")
    return resp


@router.get(
    "/v1/tokens",
    summary="Every token's record (never the token itself), oldest first",
    response_model=models.TokenList,
    dependencies=[require(Permission.TOKENS)],
)
async def list_tokens(
    request: Request,
    limit: int = paging.limit_param(500, 1000, "tokens"),
    cursor: str | None = paging.cursor_param(),
) -> ExactJSONResponse:
    after = paging.decode(cursor, "tokens")
    if after is not None and not (
        isinstance(after, list)
        and len(after) == 2
        and isinstance(after[0], int)
        and isinstance(after[1], str)
    ):
        raise Problem("invalid_cursor", "cursor holds no token position", field="cursor")
    recs = sorted(await request.app.state.tokens.all(), key=lambda r: (r.created_ms, r.id))
    if after is not None:
        recs = [r for r in recs if (r.created_ms, r.id) > (after[0], after[1])]
    page = recs[:limit]
    nxt = paging.encode("tokens", [page[-1].created_ms, page[-1].id]) if len(recs) > limit else None
    now = now_ms()
    return ExactJSONResponse(
        {"tokens": [r.public(now) for r in page], "next": nxt}, headers=paging.link_next(request, nxt)
    )


@router.post(
    "/v1/tokens",
    status_code=201,
    summary="Create a token; the response is the only time it is shown",
    response_model=models.CreatedToken,
    openapi_extra=json_body(NewToken, "the token's role, name, scope (orgs), expiry and rate limit"),
    dependencies=[require(Permission.TOKENS)],
)
async def create_token(request: Request) -> ExactJSONResponse:
    p = principal(request)
    body = _decode(await request.body(), NewToken)
    assert isinstance(body, NewToken)
    try:
        token, rec = await request.app.state.tokens.create(
            body.role, body.orgs, body.name, body.expires_days, body.rate_per_s
        )
    except ScopeError as exc:
        raise Problem("invalid_request", str(exc), field="orgs") from exc
    await audit_write(
        request,
        p,
        "token_create",
        detail={"created": rec.id, "role": str(rec.role), "orgs": rec.orgs, "name": rec.name},
    )
    return ExactJSONResponse({"token": token, **rec.public(now_ms())}, status_code=201)


@router.delete(
    "/v1/tokens/{token_id}",
    summary="Revoke a token (takes effect within seconds)",
    response_model=models.TokenInfo,
    dependencies=[require(Permission.TOKENS)],
)
async def revoke_token(request: Request, token_id: str) -> ExactJSONResponse:
    p = principal(request)
    rec = await request.app.state.tokens.revoke(token_id)
    if rec is None:
        raise HTTPException(404, f"no token {token_id}")
    await audit_write(request, p, "token_revoke", detail={"revoked": token_id})
    return ExactJSONResponse(rec.public(now_ms()))
