"""Authentication, rate limits and authorization for every request. Deny by default.

* :class:`AuthMiddleware` (pure ASGI, runs before routing) lets through only the public paths
  (health probes, API docs, the dashboard's static files, and the sign-in itself); every other
  request must carry a valid token, as ``Authorization: Bearer <token>`` (systems) or in the
  HttpOnly session cookie set by ``POST /v1/session`` (the dashboard). A cookie-authenticated
  request that changes something must also send the session's CSRF value in ``X-CSRF-Token``
  (double submit, bound to the session: the value must be ``csrf_for`` of the session's own
  token, whatever ``cashpos_csrf`` cookies come along; the cookies are ``SameSite=Strict`` as
  well). Then the token's rate limit. Answers 401, 403 (CSRF), 429 or 503 itself (problem
  details, ``serving.problems``); otherwise puts the
  :class:`~access.policy.Principal` on ``request.state.principal`` and the token's hash on
  ``request.state.token_digest`` (open streams re-check it: ``serving.live``).
* :func:`require` is the per-route check of a permission and, for routes with an
  ``{org_code}``, the scope (out of scope = 404, like an unknown code). Every non-public route
  declares one (``tests/test_access.py`` checks that no route is missing it).
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import Depends, Request
from redis.exceptions import RedisError

from access.audit import AuditLog, record
from access.policy import Decision, Permission, Principal, decide
from access.ratelimit import RateLimiter
from access.tokens import TokenRecord, TokenStore, csrf_for, digest, principal_of
from serving.problems import Problem, send_problem

SESSION_COOKIE = "cashpos_session"
CSRF_COOKIE = "cashpos_csrf"
CSRF_HEADER = b"x-csrf-token"
PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
PUBLIC_PREFIXES = ("/dashboard/", "/problems/")
SIGN_IN = ("POST", "/v1/session")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = dict[str, Any]


def is_public(method: str, path: str) -> bool:
    return (
        path in PUBLIC_PATHS
        or path.startswith(PUBLIC_PREFIXES)
        or path == "/dashboard"
        or (method, path) == SIGN_IN
    )


def _cookies(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        if k == b"cookie":
            for part in v.decode("latin-1").split(";"):
                name, _, value = part.strip().partition("=")
                out.setdefault(name, value)
    return out


class TokenCache:
    """Token lookups, remembered for ``ttl`` seconds per process: a request costs no Redis round
    trip for its token, and a revocation takes effect everywhere within ``ttl``."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[float, TokenRecord | None, Principal | None]] = {}

    async def get(
        self, store: TokenStore, token: str, h: str | None = None
    ) -> tuple[TokenRecord | None, Principal | None]:
        """The token's record and principal; ``h`` is its digest if the caller has it already."""
        h = h or digest(token)
        now = time.monotonic()
        hit = self._seen.get(h)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1], hit[2]
        rec = await store.lookup(token)
        if rec is None:  # not remembered: a token restored after a Redis loss works at once
            return None, None
        p = principal_of(rec)
        if len(self._seen) > 50_000:
            self._seen.clear()
        self._seen[h] = (now, rec, p)
        return rec, p

    def remember(self, h: str, rec: TokenRecord | None) -> None:
        """What a caller just read from the store for the token hashed ``h`` (the live hub's
        re-check of open streams): a revoked token is refused from now on, not once the entry
        would have expired."""
        if rec is None:
            self._seen.pop(h, None)
        else:
            self._seen[h] = (time.monotonic(), rec, principal_of(rec))

    def forget(self) -> None:
        self._seen.clear()


class AuthMiddleware:
    def __init__(self, app: Any, ttl: float = 2.0, cache: TokenCache | None = None) -> None:
        self.app = app
        self.cache = cache or TokenCache(ttl)
        self.limiter = RateLimiter()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or is_public(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        token = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                scheme, _, cred = v.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and cred.strip():
                    token = cred.strip()
                break
        if token is None:
            cookies = _cookies(scope)
            token = cookies.get(SESSION_COOKIE) or None
            if token is not None and scope["method"] not in SAFE_METHODS:
                sent = next((v for k, v in scope["headers"] if k == CSRF_HEADER), b"")
                if not sent:
                    await send_problem(
                        send, scope, "csrf_mismatch", "X-CSRF-Token missing for a cookie session"
                    )
                    return
                if not hmac.compare_digest(sent, csrf_for(token).encode()):
                    await send_problem(send, scope, "csrf_mismatch", "X-CSRF-Token is not this session's")
                    return
        challenge = [(b"www-authenticate", b'Bearer realm="cashpos"')]
        if token is None:
            detail = "authentication required: Authorization: Bearer <token>"
            await send_problem(send, scope, "unauthorized", detail, challenge)
            return
        state = scope["app"].state
        try:
            h = digest(token)
            rec, principal = await self.cache.get(state.tokens, token, h)
        except RedisError as exc:  # the token store is unreachable: the same 503 as any read
            detail = f"serving store unavailable: {exc.__class__.__name__}"
            await send_problem(send, scope, "unavailable", detail, [(b"retry-after", b"1")])
            return
        status = "invalid" if rec is None else rec.status(int(time.time() * 1000))
        if status != "active" or principal is None:
            state.metrics.auth_failures.labels(status).inc()
            await send_problem(send, scope, "unauthorized", f"token {status}", challenge)
            return
        wait = self.limiter.take(principal.token_id, principal.rate_per_s, time.monotonic())
        if wait > 0:
            state.metrics.rate_limited.inc()
            await send_problem(
                send,
                scope,
                "rate_limited",
                f"rate limit of {principal.rate_per_s} requests/s exceeded",
                [(b"retry-after", str(max(1, round(wait + 0.5))).encode())],
            )
            return
        st = scope.setdefault("state", {})
        st["principal"] = principal
        st["token_digest"] = h
        await self.app(scope, receive, send)


def principal(request: Request) -> Principal:
    p: Principal | None = getattr(request.state, "principal", None)
    if p is None:  # a route reached without the middleware: never serve it
        raise Problem("unauthorized", "authentication required")
    return p


def check(request: Request, permission: Permission, org: str | None = None) -> Principal:
    """Raise the right HTTP error unless the caller may do ``permission`` on ``org``."""
    p = principal(request)
    d: Decision = decide(p, permission, org)
    if d.status != 200:
        raise Problem("not_found" if d.status == 404 else "forbidden", d.reason)
    return p


def audit_log(request: Request) -> AuditLog:
    log: AuditLog = request.app.state.audit
    return log


async def audit_write(
    request: Request,
    p: Principal,
    action: str,
    org: str | None = None,
    detail: dict[str, object] | None = None,
) -> None:
    """Record a write; raises 503 when the audit log cannot take it (no unaudited writes)."""
    entry = record(p, action, method=request.method, path=request.url.path, org=org, detail=detail)
    try:
        await audit_log(request).append(entry, wait=True)
    except Exception as exc:
        request.app.state.metrics.audit_errors.inc()
        why = f"audit log unavailable: {exc.__class__.__name__}"
        raise Problem("unavailable", why, {"Retry-After": "1"}) from exc


async def audit_read(request: Request, p: Principal, org: str | None = None) -> None:
    if not p.audited_reads:
        return
    entry = record(
        p,
        "read",
        method=request.method,
        path=request.url.path,
        org=org,
        detail=dict(request.query_params) or None,
    )
    try:
        await audit_log(request).append(entry, wait=False)
    except Exception:  # noqa: BLE001 whatever the producer raises, the read is refused (503)
        request.app.state.metrics.audit_errors.inc()
        raise Problem("unavailable", "audit log unavailable", {"Retry-After": "1"}) from None


def require(permission: Permission) -> Any:
    """Route dependency: the permission, and the scope for the government the request names
    (the path's ``{org_code}`` or the ``org`` query parameter). Reads by provincial and national
    roles are audited."""

    async def dep(request: Request) -> Principal:
        org = request.path_params.get("org_code") or request.query_params.get("org")
        p = check(request, permission, org)
        if permission is Permission.READ:
            await audit_read(request, p, org)
        return p

    dep.__name__ = f"require_{permission}"
    return Depends(dep)
