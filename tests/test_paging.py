"""Cursor paging of every list (serving/paging.py): walking the pages gets every item exactly
once, in the list's order; ``next`` and ``Link: rel="next"`` agree; a cursor from one list (or
other filters) is refused as a problem. Also the conditional-request rules of serving/caching.py.

No stack: the app as ``serving.app.create_app`` builds it, driven in process, with stand-ins for
the token store, Redis (the dead-letter list) and the alert projection. The same against the
running API: tests/test_http_caching.py.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from access.policy import Role
from access.tokens import TokenRecord
from cashpos.refdata import governments
from serving import paging
from serving.app import create_app
from serving.caching import CACHE_CONTROL, bytes_etag, figures_etag, matches
from serving.problems import PROBLEM_JSON, TYPES

ORG = "3090000"


def _rec(id_: str, role: Role, orgs: list[str], created: int = 0) -> TokenRecord:
    return TokenRecord(id_, id_, role, orgs, created, 0, 100_000)


ADMIN = _rec("admin", Role.ADMIN, [], created=5)
SEOUL = _rec("seoul", Role.PROVINCIAL, ["6110000"], created=5)
# several tokens created in the same millisecond: the order breaks the tie by id
MANY = [_rec(f"t{i:02d}", Role.VIEWER, [ORG], created=i // 3) for i in range(23)]
NATIONAL = _rec("national", Role.NATIONAL, [], created=5)
TOKENS = {"t-admin": ADMIN, "t-seoul": SEOUL, "t-national": NATIONAL}


class FakeTokens:
    async def lookup(self, token: str) -> TokenRecord | None:
        return TOKENS.get(token)

    async def all(self) -> list[TokenRecord]:
        return [*MANY[::-1], ADMIN, SEOUL, NATIONAL]


class FakeAudit:
    async def append(self, entry: object, wait: bool = False) -> None:
        return None


def letter(n: int) -> bytes:
    source = {"topic": "t", "partition": n % 4, "offset": n, "timestamp_ms": n, "key": None}
    return orjson.dumps({"reason": "not_json", "detail": "x", "source": source, "dead_lettered_ms": n})


class FakeRedis:
    """The recent dead letters: a Redis list, newest first (LPUSH), LRANGE inclusive."""

    def __init__(self) -> None:
        self.letters = [letter(n) for n in range(57, 0, -1)]

    async def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return self.letters[start : end + 1]


def alert(i: int) -> dict[str, object]:
    return {
        "id": f"{ORG}:general:2026:shortfall:{i}",
        "org_code": ORG,
        "rule": "shortfall" if i % 2 else "below_floor",
        "severity": ("critical", "warning")[i % 2],
        "state": ("raised", "acknowledged", "resolved")[i % 3],
        "raised_ms": 1000 * (i % 5),  # ties: the id decides
        "resolved_ms": 2000 if i % 3 == 2 else None,
    }


class FakeAlerts:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis  # serving.alerts keeps a projection made for the app's Redis
        self.alerts = [alert(i) for i in range(31)]

    async def list(self, open_: bool = True, resolved: bool = False) -> list[dict[str, object]]:
        return [
            dict(a)
            for a in self.alerts
            if (a["state"] == "resolved" and resolved) or (a["state"] != "resolved" and open_)
        ]

    async def get(self, alert_id: str) -> dict[str, object] | None:
        return next((dict(a) for a in self.alerts if a["id"] == alert_id), None)


def _app() -> FastAPI:
    app = create_app()
    st = app.state
    st.tokens = FakeTokens()
    st.audit = FakeAudit()
    st.redis = FakeRedis()
    st.alert_projection = FakeAlerts(st.redis)
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_for(path: str) -> str:
    return "t-admin" if path.startswith("/v1/tokens") else "t-national"


async def walk(app: FastAPI, path: str, key: str, token: str = "") -> tuple[list[Any], int]:
    """Follow ``next`` from the first page to the last; the items and the number of pages.
    Each page's Link header must name the next page's URL (the same cursor)."""
    transport = httpx.ASGITransport(app=app)
    items: list[Any] = []
    pages = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        url: str | None = path
        while url is not None:
            r = await c.get(url, headers=bearer(token or token_for(path)))
            assert r.status_code == 200, r.text
            assert r.headers["cache-control"] == CACHE_CONTROL
            body = r.json()
            items += body[key]
            pages += 1
            nxt = body["next"]
            if nxt is None:
                assert "link" not in r.headers
                url = None
            else:
                m = re.fullmatch(r'<([^>]+)>; rel="next"', r.headers["link"])
                assert m is not None, r.headers["link"]
                link = httpx.URL(m.group(1))
                assert not link.is_absolute_url  # relative: right behind any proxy
                assert link.params["cursor"] == nxt and link.path == path.split("?")[0]
                url = f"{link.path}?{link.query.decode()}"
            assert pages < 500
    return items, pages


async def test_governments_pages() -> None:
    app = _app()
    everything = list(governments())
    items, pages = await walk(app, "/v1/governments?limit=10", "governments")
    assert [g["org_code"] for g in items] == everything and pages == 25
    # the default page holds them all (the dashboard reads the list in one request)
    items, pages = await walk(app, "/v1/governments", "governments")
    assert len(items) == 243 and pages == 1
    # a scoped caller pages through its scope only
    items, _ = await walk(app, "/v1/governments?limit=4", "governments", "t-seoul")
    seoul = [o for o, g in governments().items() if g.province_code == "6110000"]
    assert [g["org_code"] for g in items] == seoul and len(seoul) == 26


async def test_link_under_a_root_path() -> None:
    transport = httpx.ASGITransport(app=_app(), root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        r = await c.get("/api/v1/governments?limit=2", headers=bearer("t-national"))
    assert r.headers["link"] == f'</api/v1/governments?limit=2&cursor={r.json()["next"]}>; rel="next"'


async def test_tokens_page_in_creation_order() -> None:
    items, pages = await walk(_app(), "/v1/tokens?limit=4", "tokens")
    order = sorted([*MANY, ADMIN, SEOUL, NATIONAL], key=lambda r: (r.created_ms, r.id))
    assert [t["id"] for t in items] == [r.id for r in order] and pages == 7
    assert all("token" not in t for t in items)


async def test_deadletters_page_newest_first_while_letters_arrive() -> None:
    app = _app()
    redis: FakeRedis = app.state.redis
    transport = httpx.ASGITransport(app=app)
    seen: list[int] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        cursor = None
        for page in range(100):
            q = "/v1/deadletters?limit=7" + (f"&cursor={cursor}" if cursor else "")
            body = (await c.get(q, headers=bearer("t-national"))).json()
            seen += [d["source"]["offset"] for d in body["deadletters"]]
            cursor = body["next"]
            if cursor is None:
                break
            # new letters arrive at the head and the oldest are trimmed: the walk goes on
            redis.letters = [letter(1000 + page * 2), letter(1001 + page * 2), *redis.letters[:-2]]
    # every letter that was there at the start and not trimmed meanwhile, once, newest first
    assert seen == list(range(57, 57 - len(seen), -1))
    assert len(seen) + 2 * (len(seen) // 7) >= 57  # what is missing was trimmed
    assert not any(n >= 1000 for n in seen)


async def test_alerts_page_in_listing_order() -> None:
    app = _app()
    everything, _ = await walk(app, "/v1/alerts?state=all&limit=1000", "alerts")
    assert len(everything) == 31
    for limit in (1, 4, 30):
        items, pages = await walk(app, f"/v1/alerts?state=all&limit={limit}", "alerts")
        assert [a["id"] for a in items] == [a["id"] for a in everything]
        assert pages == -(-31 // limit)
    items, _ = await walk(app, "/v1/alerts?limit=3", "alerts")  # the open ones
    assert len(items) == len([a for a in everything if a["state"] != "resolved"])
    # open before resolved, the most severe first
    states = [a["state"] == "resolved" for a in everything]
    assert states == sorted(states)


@pytest.mark.parametrize(
    ("issued_by", "used_on", "why"),
    [
        ("/v1/governments?limit=1", "/v1/tokens", "another list"),
        ("/v1/tokens?limit=1", "/v1/alerts?state=all", "another list"),
        ("/v1/alerts?state=all&limit=1", "/v1/alerts?state=open", "other filters"),
        ("/v1/alerts?state=all&limit=1", "/v1/deadletters", "another list"),
        (None, "/v1/governments", "not a cursor"),
        ("forged", "/v1/governments", "a list's name with a key of the wrong type"),
        ("forged", "/v1/tokens", "a list's name with a key of the wrong type"),
        ("forged", "/v1/alerts", "a list's name with a key of the wrong type"),
        ("forged", "/v1/deadletters", "a list's name with a key of the wrong type"),
    ],
)
async def test_a_cursor_is_refused_elsewhere(issued_by: str | None, used_on: str, why: str) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        if issued_by is None:
            cursor = "bm90LWEtY3Vyc29y"
        elif issued_by == "forged":
            name = used_on.split("?")[0].rsplit("/", 1)[1]
            digest = paging.filters_digest(org=None, province=None, rule=None, state="open")
            cursor = paging.encode(name, {"not": ["a", "key"]}, digest if name == "alerts" else "")
        else:
            cursor = (await c.get(issued_by, headers=bearer(token_for(issued_by)))).json()["next"]
            assert cursor
        sep = "&" if "?" in used_on else "?"
        r = await c.get(f"{used_on}{sep}cursor={cursor}", headers=bearer(token_for(used_on)))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON, why
    p = r.json()
    assert p["reason"] == "invalid_cursor" and p["field"] == "cursor" and "invalid_cursor" in TYPES


def test_if_none_match() -> None:
    weak = figures_etag("government", ORG, None, [("general", 2026, 7, False)])
    assert weak.startswith('W/"') and weak != figures_etag(
        "government", ORG, None, [("general", 2026, 8, False)]
    )
    strong = bytes_etag(b"{}")
    assert not strong.startswith("W/")
    bare = weak.removeprefix("W/")
    assert matches(weak, weak) and matches(bare, weak)  # weak comparison
    assert matches(f'"nope", {weak}', weak) and matches(f'W/"a,b" ,{bare}', weak)
    assert matches("*", weak) and matches(" * ", strong)
    assert not matches('"nope"', weak) and not matches(None, weak) and not matches("", weak)
    assert not matches(f'"{bare}x"', weak) and not matches(bare[1:-1], weak)


async def test_cache_control_on_reads_only() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        for path in ("/v1/governments", f"/v1/governments/{ORG}", "/v1/tokens", "/healthz"):
            assert (await c.get(path, headers=bearer("t-admin"))).headers["cache-control"] == CACHE_CONTROL
        # refusals of reads by the middleware too
        assert (await c.get("/v1/governments")).headers["cache-control"] == CACHE_CONTROL
        # not the dashboard's files, the docs, nor a write
        assert "cache-control" not in (await c.get("/dashboard/index.html")).headers
        assert "cache-control" not in (await c.get("/openapi.json")).headers
        r = await c.post("/v1/session", content=b"{}")
        assert r.status_code == 422 and "cache-control" not in r.headers
        # an alert: a strong ETag of its bytes, 304 when the client has it
        aid = f"{ORG}:general:2026:shortfall:3"
        r = await c.get(f"/v1/alerts/{aid}", headers=bearer("t-national"))
        etag = r.headers["etag"]
        assert r.status_code == 200 and etag == bytes_etag(r.content)
        r = await c.get(f"/v1/alerts/{aid}", headers={**bearer("t-national"), "If-None-Match": etag})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
        assert r.headers["cache-control"] == CACHE_CONTROL
