"""Cursor paging of the API's lists (``/v1/governments``, ``/v1/alerts``, ``/v1/tokens``,
``/v1/deadletters``).

A list takes ``limit`` (its own default and maximum, documented on the parameter) and ``cursor``;
its body carries ``next``: the cursor of the following page, or ``null`` on the last one; and
when there is one, the response has ``Link: <url>; rel="next"`` (the same request with that
cursor; a reference relative to the API's address). Pages are keyset pages in a stable order: a cursor holds the sort key of the last item
it followed, not an offset, so items added or removed meanwhile shift nothing.

A cursor is opaque to clients (base64url of a small JSON array); it names the list it belongs to
and a digest of the list's filters, so a cursor from one list, or from the same list with other
filters, is refused (422 ``invalid_cursor``, field ``cursor``) instead of paging something else.
It carries no secret and grants nothing: every page is filtered by the caller's scope anew.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson
from fastapi import Query, Request

from serving.problems import Problem

_VERSION = 1
CURSOR_DOC = "the next page: the previous page's `next` (opaque; omit for the first page)"


def cursor_param() -> Any:
    return Query(None, max_length=512, description=CURSOR_DOC)


def limit_param(default: int, maximum: int, what: str) -> Any:
    return Query(
        default, ge=1, le=maximum, description=f"{what} per page (default {default}, at most {maximum})"
    )


def filters_digest(**filters: object) -> str:
    """A short digest of a list's filters (what a cursor must be used with)."""
    raw = orjson.dumps(filters, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(raw, digest_size=6).hexdigest()


def encode(listing: str, key: object, filters: str = "") -> str:
    raw = orjson.dumps([_VERSION, listing, filters, key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str | None, listing: str, filters: str = "") -> Any:
    """The key a cursor of ``listing`` holds (None: no cursor, the first page); raises the
    ``invalid_cursor`` problem for anything this list did not issue with these filters."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, name, digest, key = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise Problem("invalid_cursor", "cursor is not one this API issued", field="cursor") from None
    if version != _VERSION or not isinstance(name, str):
        raise Problem("invalid_cursor", "cursor is not one this API issued", field="cursor")
    if name != listing:
        raise Problem("invalid_cursor", f"cursor belongs to the {name} list, not {listing}", field="cursor")
    if digest != filters:
        raise Problem("invalid_cursor", "cursor was issued for other filters of this list", field="cursor")
    if key is None:
        raise Problem("invalid_cursor", "cursor holds no position", field="cursor")
    return key


def link_next(request: Request, next_cursor: str | None) -> dict[str, str]:
    """The ``Link`` header of a page that has a next one (else none)."""
    if next_cursor is None:
        return {}
    # A relative reference (RFC 8288, 3.2): right behind a proxy that ends TLS or renames the host.
    url = request.url.include_query_params(cursor=next_cursor)
    return {"Link": f'<{url.path}?{url.query}>; rel="next"'}
