"""Opaque bearer tokens: 256 random bits, shown once, stored only as a SHA-256 hash.

The store is one Redis hash (``RedisKeys.tokens``): hash of the token -> JSON record. A fast hash
is the right one here: the secret has 256 bits of entropy, so there is nothing to brute-force and
a lookup must cost microseconds on every request. Revocation and expiry are fields of the
record; a revoked record is kept (the audit log and ``token list`` still name it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from access.policy import Principal, Role, ScopeError, resolve_scope
from cashpos.names import RedisKeys

PREFIX = "cpt_"  # recognisable in logs and by secret scanners
DEFAULT_EXPIRES_DAYS = 90
DEFAULT_RATE_PER_S: dict[Role, int] = {
    Role.FINANCE_DIRECTOR: 20,
    Role.VIEWER: 20,
    Role.PROVINCIAL: 50,
    Role.NATIONAL: 100,
    Role.INTEGRATION: 200,
    Role.SOURCE: 500,
    Role.ADMIN: 20,
    Role.METRICS: 20,  # scrapes are seconds apart; room for an operator's curl too
}


class TokenRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    name: str
    role: Role
    orgs: list[str]
    created_ms: int
    expires_ms: int  # 0: never
    rate_per_s: int
    revoked_ms: int = 0

    def status(self, now_ms: int) -> str:
        if self.revoked_ms:
            return "revoked"
        if self.expires_ms and now_ms >= self.expires_ms:
            return "expired"
        return "active"

    def public(self, now_ms: int) -> dict[str, object]:
        return {**msgspec.to_builtins(self), "status": self.status(now_ms)}


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_for(token: str) -> str:
    """The CSRF value of a dashboard session signed in with ``token``: an HMAC keyed by the token
    itself, so it is bound to that session (a value planted from another session, or a second
    ``cashpos_csrf`` cookie, does not match), is the same in every API process without a shared
    server secret, and reveals nothing about the token (nor does the stored hash lead to it)."""
    mac = hmac.new(token.encode(), b"cashpos csrf v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def now_ms() -> int:
    return int(time.time() * 1000)


_decode = msgspec.json.Decoder(TokenRecord).decode
_encode = msgspec.json.Encoder().encode


def principal_of(rec: TokenRecord) -> Principal:
    return Principal(rec.id, rec.name, rec.role, resolve_scope(rec.role, rec.orgs), rec.rate_per_s)


class TokenStore:
    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.key = keys.tokens

    async def create(
        self,
        role: Role | str,
        orgs: Iterable[str],
        name: str,
        expires_days: int | None = DEFAULT_EXPIRES_DAYS,
        rate_per_s: int | None = None,
        secret: str | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token (or ``secret`` registered as one); returns the token and its record.
        Raises ScopeError for a role/scope that makes no valid grant."""
        role = Role(role)
        orgs = sorted({o.strip() for o in orgs if o.strip()})
        resolve_scope(role, orgs)  # raises ScopeError
        if not name.strip():
            raise ScopeError("a token needs a --name (who or what holds it)")
        if expires_days is not None and expires_days <= 0:
            raise ScopeError("--expires must be a positive number of days")
        token = secret or new_secret()
        created = now_ms()
        rec = TokenRecord(
            id=secrets.token_hex(6),
            name=name.strip(),
            role=role,
            orgs=orgs,
            created_ms=created,
            expires_ms=created + expires_days * 86_400_000 if expires_days else 0,
            rate_per_s=rate_per_s or DEFAULT_RATE_PER_S[role],
        )
        if not await self.redis.hsetnx(self.key, digest(token), _encode(rec)):
            raise ScopeError("this token is already registered")
        return token, rec

    async def lookup(self, token: str) -> TokenRecord | None:
        raw = await self.redis.hget(self.key, digest(token))
        return None if raw is None else _decode(raw)

    async def lookup_digests(self, digests: list[str]) -> list[TokenRecord | None]:
        """The records of these token hashes (None: unknown), in one round trip."""
        if not digests:
            return []
        raws = await self.redis.hmget(self.key, digests)
        return [None if raw is None else _decode(raw) for raw in raws]

    async def all(self) -> list[TokenRecord]:
        recs = [_decode(v) for v in (await self.redis.hgetall(self.key)).values()]
        return sorted(recs, key=lambda r: r.created_ms)

    async def revoke(self, token_id: str) -> TokenRecord | None:
        """Revoke the token with this id; returns its record (None: no such id)."""
        for h, v in (await self.redis.hgetall(self.key)).items():
            rec = _decode(v)
            if rec.id == token_id:
                if not rec.revoked_ms:
                    rec = msgspec.structs.replace(rec, revoked_ms=now_ms())
                    await self.redis.hset(self.key, h, _encode(rec))
                return rec
        return None


def create_sync(
    redis_url: str, namespace: str, role: Role | str, orgs: Iterable[str], name: str, **kw: Any
) -> str:
    """``TokenStore.create`` for synchronous callers (harnesses, scripts), also from inside a
    running event loop (it then runs on a loop of its own in a thread). Returns the token."""
    import asyncio
    import concurrent.futures

    from cashpos.names import RedisKeys

    async def create() -> str:
        r = aioredis.from_url(redis_url)
        try:
            token, _ = await TokenStore(r, RedisKeys(namespace)).create(role, orgs, name, **kw)
            return token
        finally:
            await r.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(create())
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, create()).result()


__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "ScopeError",
    "TokenRecord",
    "TokenStore",
    "create_sync",
    "csrf_for",
    "digest",
    "principal_of",
]
