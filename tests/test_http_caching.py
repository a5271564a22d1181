"""HTTP caching, paging and the typed bodies against the real API, worker, broker and Redis.

* Positions and summary carry a weak ETag over what determines their figures (serving/caching.py):
  the same figures give the same ETag (though ``freshness`` moves every second) and a 304 on
  ``If-None-Match`` (one tag, ``*``, a list, weak or strong form); a position changed by an event
  gives another ETag; an account's ETag moves with that account only; the summary's with the
  caller's scope and the fiscal-year filter.
* Every API read answers ``Cache-Control: private, no-cache``.
* Every body read and written here validates strictly against its OpenAPI model
  (serving/models.py): no member the model does not name, integers exact, no float money.
* The lists page through the real API, every item once.

The document itself (no stack): tests/test_openapi.py; paging and conditional rules in process:
tests/test_paging.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from cashpos.embedded import Infra
from cashpos.names import Topics
from cashpos.refdata import governments
from serving import models
from serving.caching import CACHE_CONTROL
from tests.conftest import Stack, new_stack
from tests.events import event

pytestmark = pytest.mark.integration

ORG = "3000000"  # 종로구 (서울)
SEOUL = "6110000"
OTHER_ACCOUNT = next(a.code for a in governments()[ORG].accounts if a.code != "general")


@pytest.fixture(scope="module")
def api(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the tests change positions and raise alerts."""
    s = new_stack(infra, tmp_path_factory.mktemp("caching"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()


def strict(model: type[BaseModel], r: httpx.Response) -> Any:
    """The body, validated as the OpenAPI model says: exact types, no unknown member."""
    assert r.headers["content-type"] == "application/json", r.headers
    model.model_validate_json(r.content, strict=True, extra="forbid")
    return r.json()


def get(s: Stack, path: str, headers: dict[str, str] | None = None, inm: str | None = None) -> httpx.Response:
    """GET ``path`` (``inm``: If-None-Match); a 200 or 304 must say Cache-Control."""
    extra = {"If-None-Match": inm} if inm is not None else {}
    r = httpx.get(f"{s.api}{path}", headers={**(headers or s.headers), **extra}, timeout=10)
    if r.status_code in (200, 304):
        assert r.headers["cache-control"] == CACHE_CONTROL, (path, r.headers)
    return r


def post_event(s: Stack, kind: str, amount: int, account: str = "general") -> None:
    body = event(f"cache-{uuid.uuid4().hex}", kind, amount, org=ORG, account=account)
    r = httpx.post(f"{s.api}/v1/events", content=body, headers=s.source_headers, timeout=10)
    assert r.status_code == 202, r.text


def changed(s: Stack, path: str, etag: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """Poll until ``path`` answers another ETag than ``etag`` (the worker applied the event)."""
    deadline = time.monotonic() + 20
    while True:
        r = get(s, path, headers, inm=etag)
        if r.status_code == 200:
            assert r.headers["etag"] != etag
            return r
        assert r.status_code == 304, r.text
        assert time.monotonic() < deadline, f"{path} kept ETag {etag}"
        time.sleep(0.2)


def settled(s: Stack, path: str, headers: dict[str, str] | None = None) -> None:
    """Until ``path``'s figures are not stale: a stale answer (a worker still catching up after
    the start) has an ETag of its own (``-{stale_reason}``), which changes once it has caught up."""
    deadline = time.monotonic() + 30
    while get(s, path, headers).json()["freshness"]["stale"]:
        assert time.monotonic() < deadline, f"{path} stays stale"
        time.sleep(0.2)


def test_positions_etag_follows_the_figures(api: Stack) -> None:
    path = f"/v1/positions/{ORG}"
    settled(api, path)
    r1 = get(api, path)
    assert r1.status_code == 200
    body1 = strict(models.GovernmentPositions, r1)
    etag = r1.headers["etag"]
    assert etag.startswith('W/"') and etag.endswith('"')  # weak: freshness is not part of it
    time.sleep(1.1)
    r2 = get(api, path)
    assert r2.headers["etag"] == etag  # same figures, a second later: the same tag
    assert strict(models.GovernmentPositions, r2)["accounts"] == body1["accounts"]
    bare = etag.removeprefix("W/")
    for inm in (etag, "*", f'"other", {etag}', bare, f'W/"x", {bare}'):
        r = get(api, path, inm=inm)
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag, inm
    assert get(api, path, inm='"other"').status_code == 200
    # a fiscal year's view has its own tag, as stable
    fy = get(api, f"{path}?fiscal_year=2026")
    strict(models.GovernmentPositions, fy)
    assert fy.headers["etag"] != etag
    assert get(api, f"{path}?fiscal_year=2026", inm=fy.headers["etag"]).status_code == 304

    acc_path = f"{path}/general"
    acc = get(api, acc_path)
    strict(models.AccountPositions, acc)
    other = get(api, f"{path}/{OTHER_ACCOUNT}")
    strict(models.AccountPositions, other)

    post_event(api, "receipt", 1_234_567)
    r3 = changed(api, path, etag)
    body3 = strict(models.GovernmentPositions, r3)
    before = {(a["account"], a["fiscal_year"]): a for a in body1["accounts"]}
    after = {(a["account"], a["fiscal_year"]): a for a in body3["accounts"]}
    was = before.get(("general", 2026), {"version": 0, "cash": 0})  # a fresh stack: no row yet
    assert after[("general", 2026)]["version"] > was["version"]
    assert after[("general", 2026)]["cash"] == was["cash"] + 1_234_567
    assert get(api, path, inm=r3.headers["etag"]).status_code == 304
    assert get(api, path, inm=etag).status_code == 200  # the old tag is stale
    # the account's tag moved with it; the other account's did not
    assert get(api, acc_path, inm=acc.headers["etag"]).status_code == 200
    r = get(api, f"{path}/{OTHER_ACCOUNT}", inm=other.headers["etag"])
    assert r.status_code == 304
    post_event(api, "receipt", 1_000, account=OTHER_ACCOUNT)
    changed(api, f"{path}/{OTHER_ACCOUNT}", other.headers["etag"])


def test_summary_etag_per_scope(api: Stack) -> None:
    settled(api, "/v1/summary")
    national = get(api, "/v1/summary")
    assert strict(models.Summary, national)["scope"] == "national"
    seoul_headers = api.auth("provincial", (SEOUL,))
    seoul = get(api, "/v1/summary", seoul_headers)
    assert strict(models.Summary, seoul)["scope"] == "partial"
    n_tag, s_tag = national.headers["etag"], seoul.headers["etag"]
    assert n_tag.startswith("W/") and n_tag != s_tag
    assert get(api, "/v1/summary", inm=n_tag).status_code == 304
    # another scope's tag is not this caller's representation
    assert get(api, "/v1/summary", seoul_headers, inm=n_tag).status_code == 200
    fy = get(api, "/v1/summary?fiscal_year=2026")
    strict(models.Summary, fy)
    assert fy.headers["etag"] not in (n_tag, s_tag)
    assert get(api, "/v1/summary?fiscal_year=2026", inm=fy.headers["etag"]).status_code == 304

    post_event(api, "payment", 4_321)  # 종로구 is in Seoul: both scopes' totals change
    changed(api, "/v1/summary", n_tag)
    changed(api, "/v1/summary", s_tag, seoul_headers)
    changed(api, "/v1/summary?fiscal_year=2026", fy.headers["etag"])


def test_every_body_matches_its_model(api: Stack) -> None:
    admin = api.admin_headers
    director = api.director_headers(ORG)
    strict(models.Health, get(api, "/healthz"))
    strict(models.Readiness, get(api, "/readyz"))
    strict(models.GovernmentList, get(api, "/v1/governments"))
    strict(models.GovernmentDetail, get(api, f"/v1/governments/{ORG}"))
    strict(models.Session, get(api, "/v1/session"))
    strict(models.TokenList, get(api, "/v1/tokens", admin))
    strict(models.DeadLetterList, get(api, "/v1/deadletters"))
    strict(models.ThresholdsView, get(api, f"/v1/thresholds/{ORG}/general"))
    strict(models.ProblemTypeInfo, get(api, "/problems/invalid_cursor"))
    created = httpx.post(
        f"{api.api}/v1/tokens",
        json={"role": "viewer", "name": "model check", "orgs": [ORG], "expires_days": 1},
        headers=admin,
        timeout=10,
    )
    assert created.status_code == 201
    tok = strict(models.CreatedToken, created)
    signed = httpx.post(f"{api.api}/v1/session", json={"token": tok["token"]}, timeout=10)
    assert strict(models.Session, signed)["expires_ms"] > 0
    put = httpx.put(
        f"{api.api}/v1/thresholds/{ORG}/general",
        content=b'{"floor_krw": 5000, "year_end_days": [10]}',
        headers=admin,
        timeout=10,
    )
    assert strict(models.ThresholdsView, put)["override"] == {"floor_krw": 5000, "year_end_days": [10]}
    gone = httpx.delete(f"{api.api}/v1/thresholds/{ORG}/general", headers=admin, timeout=10)
    assert strict(models.ThresholdsView, gone)["override"] is None
    revoked = httpx.delete(f"{api.api}/v1/tokens/{tok['id']}", headers=admin, timeout=10)
    assert strict(models.TokenInfo, revoked)["status"] == "revoked"

    # a shortfall alert: listed, read, acknowledged
    post_event(api, "payment", 10**12)
    deadline = time.monotonic() + 20
    while True:
        listed = get(api, f"/v1/alerts?org={ORG}")
        found = [a for a in strict(models.AlertList, listed)["alerts"] if a["rule"] == "shortfall"]
        if found:
            break
        assert time.monotonic() < deadline, "no shortfall alert"
        time.sleep(0.2)
    aid = found[0]["id"]
    one = get(api, f"/v1/alerts/{aid}")
    strict(models.Alert, one)
    assert get(api, f"/v1/alerts/{aid}", inm=one.headers["etag"]).status_code == 304
    assert get(api, f"/v1/alerts?org={ORG}", inm=listed.headers["etag"]).status_code in (
        200,  # another alert may have changed meanwhile
        304,
    )
    ack = httpx.post(f"{api.api}/v1/alerts/{aid}/ack", json={"by": "test"}, headers=director, timeout=10)
    assert strict(models.Alert, ack)["state"] == "acknowledged"
    # the acknowledgement is a change of the alert: its tag moved
    assert get(api, f"/v1/alerts/{aid}", inm=one.headers["etag"]).status_code == 200


async def _publish_raw(s: Stack, values: list[bytes]) -> None:
    """Bytes straight onto the revenue topic (what a misbehaving source system would send)."""
    settings = s.settings
    producer = AIOKafkaProducer(**settings.kafka_client_args(), acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(Topics(settings.namespace).revenue, v, key=ORG.encode())
    finally:
        await producer.stop()


def test_operations_bodies_match_their_models(api: Stack) -> None:
    """Dead letters (paged while they are listed), the reconciliation and the live stream's
    frames, as the running system writes them."""
    from reconcile.run import reconcile

    bad = [b"{nope", b'{"event_id": "x"}', b"[]", b"\xff\xfe", b'{"amount": 1.5}']
    asyncio.run(_publish_raw(api, bad * 3))
    deadline = time.monotonic() + 20
    while len(get(api, "/v1/deadletters").json()["deadletters"]) < len(bad) * 3:
        assert time.monotonic() < deadline, "dead letters not listed"
        time.sleep(0.2)
    strict(models.DeadLetterList, get(api, "/v1/deadletters"))
    letters = walk(api, "/v1/deadletters?limit=4", "deadletters")
    ids = [(d["source"]["partition"], d["source"]["offset"]) for d in letters]
    assert len(ids) == len(set(ids)) == len(bad) * 3
    assert letters == get(api, "/v1/deadletters").json()["deadletters"]

    assert get(api, "/v1/reconciliation").status_code in (200, 404)
    asyncio.run(reconcile(api.settings, publish=True))
    strict(models.ReconciliationReport, get(api, "/v1/reconciliation"))

    # the stream's first frames: a snapshot (national, and one government's), then live ones
    for query in ("", f"&org={ORG}"):
        frames = []
        with httpx.stream(
            "GET", f"{api.api}/v1/stream?snapshot=1{query}", headers=api.headers, timeout=10
        ) as r:
            assert r.headers["cache-control"] == "no-cache, no-transform"
            event: dict[str, str] = {}
            for line in r.iter_lines():
                if line.startswith(("id:", "event:", "data:")):
                    k, _, v = line.partition(":")
                    event[k] = v.strip()
                elif not line and "data" in event:
                    frames.append(event)
                    event = {}
                    if len(frames) == 1:
                        post_event(api, "receipt", 77)
                    if {f["event"] for f in frames} >= {"snapshot", "positions"}:
                        break
        for f in frames:
            models.StreamEvent.model_validate_json(orjson.dumps(f), strict=True, extra="forbid")
            models.StreamData.model_validate_json(f["data"], strict=True, extra="forbid")
        assert frames[0]["event"] == "snapshot"


def walk(s: Stack, path: str, key: str, headers: dict[str, str] | None = None) -> list[Any]:
    items: list[Any] = []
    url: str | None = f"{s.api}{path}"
    while url is not None:
        r = httpx.get(url, headers=headers or s.headers, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body[key]
        if body["next"] is None:
            assert "link" not in r.headers
            url = None
        else:
            link = r.headers["link"]
            assert link.startswith("<") and link.endswith('>; rel="next"')
            url = f"{s.api}{link[1 : link.index('>')]}"  # relative to the API's address
            assert httpx.URL(url).params["cursor"] == body["next"]
        assert len(items) < 10_000
    return items


def test_lists_page_through_the_api(api: Stack) -> None:
    govs = walk(api, "/v1/governments?limit=50", "governments")
    assert [g["org_code"] for g in govs] == list(governments())
    for i in range(3):
        api.token("viewer", (ORG,), name=f"paging {i}")
    tokens = walk(api, "/v1/tokens?limit=2", "tokens", api.admin_headers)
    everything = httpx.get(f"{api.api}/v1/tokens", headers=api.admin_headers, timeout=10).json()["tokens"]
    assert len(everything) >= 5 and [t["id"] for t in tokens] == [t["id"] for t in everything]
    alerts = walk(api, "/v1/alerts?state=all&limit=1", "alerts")
    one_page = get(api, "/v1/alerts?state=all").json()
    assert [a["id"] for a in alerts] == [a["id"] for a in one_page["alerts"]]
    assert one_page["count"] == len(alerts)
