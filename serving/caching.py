"""HTTP caching of the API's reads: validators (``ETag``, ``If-None-Match`` → 304) and
``Cache-Control``.

Every API read answers ``Cache-Control: private, no-cache`` (the dashboard's static files and the
API docs excepted): a browser or client may keep the body but must ask again before using it,
and no shared cache keeps it (bodies depend on the caller's token). Asking again is cheap where
there is an ``ETag``: a matching ``If-None-Match`` is answered 304, with no body.

The positions and summary ETags are **weak** (``W/"..."``). They are derived from what determines
the figures, not from the body's bytes: the positions' ``version``\\ s (a position's version
increases with each change of it), whether each fiscal year is ``final``, the fiscal-year filter
and, for the summary, the caller's scope. Two bodies with the same ETag therefore carry the same
money but not the same bytes: their ``freshness`` block (ages, the processor's heartbeat) and
``as_of`` move every second. RFC 9110 (8.8.1) calls that a weak validator: semantically
equivalent representations. (A strong ETag from the bytes would change every second and never
match.) The alerts' ETags are strong: an alert body has no clock in it, so its bytes are the
validator.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

Scope = dict[str, Any]

CACHE_CONTROL = "private, no-cache"
_CC = (b"cache-control", CACHE_CONTROL.encode())
_UNCACHED_PREFIXES = ("/dashboard", "/docs", "/redoc", "/openapi.json")
_TAG = re.compile(r'(?:W/)?"([^"]*)"')


def _digest(parts: list[object]) -> str:
    # orjson: JSON of strings, integers, booleans, null and arrays, unambiguous and fast (~3 us
    # for a government's dozen positions, hashing included)
    return hashlib.blake2b(orjson.dumps(parts), digest_size=12).hexdigest()


def rows_key(accounts: Iterable[Mapping[str, Any]]) -> list[tuple[object, ...]]:
    """What determines one government's figures: per position its account, fiscal year,
    version and finality."""
    return [(a["account"], a["fiscal_year"], a["version"], a["final"]) for a in accounts]


def figures_etag(kind: str, *parts: object) -> str:
    """A weak ETag over what determines a body's figures (``kind``: which resource shape)."""
    return f'W/"{_digest([kind, *parts])}"'


def bytes_etag(body: bytes | memoryview) -> str:
    """A strong ETag of a body without clock-dependent members (its bytes are its validator)."""
    return f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` against the current ETag: ``*`` matches any current representation,
    a list matches when one member does; weak comparison (RFC 9110 13.1.2: ``W/`` ignored)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(f'"{m}"' == ours for m in _TAG.findall(if_none_match))


def _if_none_match(request: Request) -> str | None:
    # straight from the ASGI scope: building Starlette's Headers costs more than the check
    for k, v in request.scope["headers"]:
        if k == b"if-none-match":
            return str(v.decode("latin-1"))
    return None


def not_modified(request: Request, etag: str) -> Response | None:
    """The 304 answer when the request's ``If-None-Match`` matches ``etag``; else None."""
    if matches(_if_none_match(request), etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
    return None


def tagged(response: Response, etag: str) -> Response:
    response.raw_headers.append((b"etag", etag.encode()))
    return response


def conditional(request: Request, response: Response) -> Response:
    """A body without clock-dependent members, with its strong ETag; 304 if the client has it."""
    etag = bytes_etag(response.body)
    return not_modified(request, etag) or tagged(response, etag)


def is_read(scope: Scope) -> bool:
    """An API read: answered with ``Cache-Control: private, no-cache`` (``add_cache_control``)."""
    return scope["method"] in ("GET", "HEAD") and not scope["path"].startswith(_UNCACHED_PREFIXES)


def add_cache_control(message: dict[str, Any]) -> None:
    """On a read's ``http.response.start``, unless the response set its own (the live stream:
    ``no-cache, no-transform``). Called by ``serving.observe.ObserveMiddleware``, which sees every
    response already (one ASGI layer less on every request)."""
    headers = message.get("headers") or []
    if not any(k.lower() == b"cache-control" for k, _ in headers):
        message["headers"] = [*headers, _CC]
