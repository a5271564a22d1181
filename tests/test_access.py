"""Who may see and change which government's money: the access matrix over every role and
endpoint, tokens (expiry, revocation), rate limits, the dashboard session (cookie + CSRF), the
audit log, and the Redis service accounts. Against the real API, worker, broker and Redis.

The expected statuses are written out here from the issue's model, not derived from
``access.policy``, so a policy bug shows up as a failing cell. That every route declares its
permission needs no stack: tests/test_access_routes.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import orjson
import pytest
import redis

from cashpos.names import RedisKeys, Topics
from streams.reader import read_topics
from tests.conftest import Stack, new_stack
from tests.events import event

pytestmark = pytest.mark.integration  # the module's stack: a broker, redis-server, a worker and the API


def ev(kind: str, amount: int, org: str) -> bytes:
    return event(f"acc-{uuid.uuid4().hex}", kind, amount, org=org)


OWN, SIBLING, OTHER = "3000000", "3010000", "5260000"  # 종로구, 중구 (both 서울), 울릉군 (경북)
SEOUL = "6110000"
RELATIONS = {"own": OWN, "sibling": SIBLING, "other": OTHER}

# role -> (the --org it is created with, the relations its scope covers)
ROLES: dict[str, tuple[tuple[str, ...], set[str]]] = {
    "finance_director": ((OWN,), {"own"}),
    "viewer": ((OWN,), {"own"}),
    "provincial": ((SEOUL,), {"own", "sibling"}),
    "national": ((), {"own", "sibling", "other"}),
    "integration": ((OWN,), {"own"}),
    "source": ((OWN,), {"own"}),
    "admin": ((), {"own", "sibling", "other"}),
    "metrics": ((), set()),  # Prometheus's: /metrics and nothing else, no government in scope
}
READERS = {"finance_director", "viewer", "provincial", "national", "integration"}


def expected(role: str, relation: str, action: str) -> int:
    """The issue's model: out of scope reads 404 (as unknown); a missing permission 403; ingest
    outside the scope 403; acknowledgement needs the role before anything else."""
    in_scope = relation in ROLES[role][1]
    if action == "ingest":
        return 202 if role == "source" and in_scope else 403
    if action == "ack":
        return (200 if in_scope else 404) if role == "finance_director" else 403
    if not in_scope:
        return 404
    allowed = {
        "government": set(ROLES),
        "read": READERS,
        "thresholds_get": READERS | {"admin"},
        "thresholds_put": {"admin"},
    }[action]
    return 200 if role in allowed else 403


ALERT_IDS: dict[str, str] = {}  # org -> the open shortfall alert ``acc`` raised there


@pytest.fixture(scope="module")
def acc(infra, tmp_path_factory):
    s = new_stack(infra, tmp_path_factory.mktemp("access"))
    (s.root / "state-w1").mkdir()
    s.start_worker()
    s.start_api()
    s.wait_ready()
    # one open shortfall alert in each of the three governments, to acknowledge
    for org in RELATIONS.values():
        r = httpx.post(
            f"{s.api}/v1/events",
            content=ev("payment", 5_000_000, org=org),
            headers=s.auth("source", (OWN, SIBLING, OTHER)),
            timeout=10,
        )
        assert r.status_code == 202, r.text
    deadline = time.monotonic() + 30
    alerts: dict[str, str] = {}
    while time.monotonic() < deadline and len(alerts) < 3:
        got = httpx.get(f"{s.api}/v1/alerts", headers=s.headers, timeout=5).json()["alerts"]
        alerts = {
            a["org_code"]: a["id"]
            for a in got
            if a["rule"] == "shortfall" and a["org_code"] in RELATIONS.values()
        }
        time.sleep(0.2)
    assert len(alerts) == 3, alerts
    ALERT_IDS.update(alerts)
    yield s
    s.stop_all()


def call(s: Stack, role: str, relation: str, action: str) -> int:
    org = RELATIONS[relation]
    h = s.auth(role, ROLES[role][0])
    u = s.api
    if action == "government":
        return httpx.get(f"{u}/v1/governments/{org}", headers=h, timeout=10).status_code
    if action == "thresholds_get":
        return httpx.get(f"{u}/v1/thresholds/{org}/general", headers=h, timeout=10).status_code
    if action == "thresholds_put":
        return httpx.put(
            f"{u}/v1/thresholds/{org}/general", headers=h, timeout=10, content=b'{"floor_krw": 1000}'
        ).status_code
    if action == "ingest":
        return httpx.post(
            f"{u}/v1/events", content=ev("receipt", 1, org=org), headers=h, timeout=10
        ).status_code
    if action == "ack":
        aid = ALERT_IDS[org]
        return httpx.post(f"{u}/v1/alerts/{aid}/ack", headers=h, timeout=10, content=b"{}").status_code
    raise AssertionError(action)


READ_PATHS = [
    "/v1/positions/{org}",
    "/v1/positions/{org}/general",
    "/v1/alerts?org={org}",
    "/v1/alerts?org={org}&state=all",
    "/v1/stream?org={org}",
]


def read_status(s: Stack, role: str, relation: str, path: str) -> int:
    url = s.api + path.format(org=RELATIONS[relation])
    with httpx.stream("GET", url, headers=s.auth(role, ROLES[role][0]), timeout=10) as r:
        return r.status_code  # the stream is closed without reading its body


@pytest.mark.parametrize("role", list(ROLES))
def test_access_matrix_per_government(acc, role) -> None:
    got, want = {}, {}
    for relation in RELATIONS:
        for path in READ_PATHS:
            got[(relation, path)] = read_status(acc, role, relation, path)
            want[(relation, path)] = expected(role, relation, "read")
        for action in ("government", "thresholds_get", "thresholds_put", "ingest", "ack"):
            got[(relation, action)] = call(acc, role, relation, action)
            want[(relation, action)] = expected(role, relation, action)
    wrong = {k: (got[k], want[k]) for k in got if got[k] != want[k]}
    assert not wrong, f"{role}: (got, expected) {wrong}"


GLOBAL = {  # path -> roles that get 200 (everyone else 403)
    "/v1/summary": READERS,
    "/v1/stream": READERS,
    "/v1/deadletters": {"national", "admin"},
    "/metrics": {"national", "admin", "metrics"},
    "/v1/tokens": {"admin"},
    "/v1/governments": set(ROLES) - {"metrics"},
    "/v1/session": set(ROLES) - {"metrics"},
}


@pytest.mark.parametrize("path", list(GLOBAL))
def test_access_matrix_global_endpoints(acc, path) -> None:
    got = {}
    for role in ROLES:
        with httpx.stream("GET", acc.api + path, headers=acc.auth(role, ROLES[role][0]), timeout=10) as r:
            got[role] = r.status_code
    want = {role: 200 if role in GLOBAL[path] else 403 for role in ROLES}
    assert got == want
    with httpx.stream("GET", acc.api + path, timeout=10) as r:
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_lists_and_totals_are_filtered_to_the_scope(acc) -> None:
    def get(role: str, path: str) -> dict:
        r = httpx.get(acc.api + path, headers=acc.auth(role, ROLES[role][0]), timeout=10)
        assert r.status_code == 200, (role, path, r.text)
        return r.json()

    seoul = {
        g["org_code"]
        for g in get("national", "/v1/governments")["governments"]
        if g["province_code"] == SEOUL
    }
    assert len(seoul) == 26
    assert {g["org_code"] for g in get("provincial", "/v1/governments")["governments"]} == seoul
    assert [g["org_code"] for g in get("finance_director", "/v1/governments")["governments"]] == [OWN]
    assert len(get("admin", "/v1/governments")["governments"]) == 243
    prov = get("provincial", "/v1/summary")
    assert {g["org_code"] for g in prov["governments"]} == seoul and "national" not in prov
    assert [p["province_code"] for p in prov["provinces"]] == [SEOUL]
    assert prov["total"]["cash"] == sum(g["cash"] for g in prov["governments"])
    nat = get("national", "/v1/summary")
    assert nat["national"]["governments"] == 243
    assert {a["org_code"] for a in get("provincial", "/v1/alerts")["alerts"]} == {OWN, SIBLING}
    assert {a["org_code"] for a in get("integration", "/v1/alerts")["alerts"]} == {OWN}
    assert {OWN, SIBLING, OTHER} <= {a["org_code"] for a in get("national", "/v1/alerts")["alerts"]}


def _stream_orgs(s: Stack, role: str, seconds: float) -> set[str]:
    """Governments named by the snapshot and updates of a role's national stream."""
    seen: set[str] = set()
    with httpx.stream(
        "GET", f"{s.api}/v1/stream?snapshot=1", headers=s.auth(role, ROLES[role][0]), timeout=10
    ) as r:
        assert r.status_code == 200
        end = time.monotonic() + seconds
        for line in r.iter_lines():
            if line.startswith("data: "):
                d = orjson.loads(line[6:])
                seen |= set(d.get("governments", {})) | set(d.get("not_ready", []))
                if "org_code" in d and d.get("rule"):
                    seen.add(d["org_code"])
            if time.monotonic() > end:
                break
    return seen


def test_the_live_stream_carries_only_the_scope(acc) -> None:
    import threading

    def publish_later() -> None:
        time.sleep(1.0)
        for org in (OWN, SIBLING, OTHER):
            httpx.post(
                f"{acc.api}/v1/events",
                content=ev("receipt", 7, org=org),
                headers=acc.auth("source", (OWN, SIBLING, OTHER)),
                timeout=10,
            )

    t = threading.Thread(target=publish_later)
    t.start()
    seen = _stream_orgs(acc, "provincial", 4.0)
    t.join()
    assert OWN in seen and SIBLING in seen and OTHER not in seen
    assert len(seen) <= 26


def test_expired_and_revoked_tokens_are_refused(acc) -> None:
    url = f"{acc.api}/v1/positions/{OWN}"
    tok = acc.token("viewer", (OWN,), name="soon expired", expires_days=1)
    h = {"Authorization": f"Bearer {tok}"}
    assert httpx.get(url, headers=h, timeout=10).status_code == 200
    # let a day pass: move the stored expiry into the past
    from access.tokens import digest

    r = redis.Redis.from_url(acc.infra.redis_url)
    key = RedisKeys(acc.namespace).tokens
    stored = r.hget(key, digest(tok))
    assert isinstance(stored, bytes)
    rec = orjson.loads(stored)
    rec["expires_ms"] = int(time.time() * 1000) - 1
    r.hset(key, digest(tok), orjson.dumps(rec))
    time.sleep(2.5)  # the API trusts a lookup for CASHPOS_TOKEN_CACHE_SECONDS (2)
    res = httpx.get(url, headers=h, timeout=10)
    assert res.status_code == 401 and res.json()["detail"] == "token expired"

    tok2 = acc.token("viewer", (OWN,), name="to revoke", expires_days=30)
    h2 = {"Authorization": f"Bearer {tok2}"}
    assert httpx.get(url, headers=h2, timeout=10).status_code == 200
    listed = httpx.get(f"{acc.api}/v1/tokens", headers=acc.admin_headers, timeout=10).json()["tokens"]
    tid = next(t["id"] for t in listed if t["name"] == "to revoke")
    assert tok2 not in orjson.dumps(listed).decode()  # never the token itself
    assert (
        httpx.delete(f"{acc.api}/v1/tokens/{tid}", headers=acc.admin_headers, timeout=10).status_code == 200
    )
    deadline = time.monotonic() + 5
    while httpx.get(url, headers=h2, timeout=10).status_code == 200:
        assert time.monotonic() < deadline, "revocation did not take effect"
        time.sleep(0.2)
    res = httpx.get(url, headers=h2, timeout=10)
    assert res.status_code == 401 and res.json()["detail"] == "token revoked"
    assert httpx.get(url, headers={"Authorization": "Bearer cpt_not-a-token"}, timeout=10).status_code == 401
    # the store holds hashes only
    assert not any(tok.encode() in k or tok.encode() in v for k, v in r.hgetall(key).items())
    r.close()


def test_rate_limit_answers_429_with_retry_after(acc) -> None:
    tok = acc.token("viewer", (OWN,), name="slow client", rate_per_s=5)
    h = {"Authorization": f"Bearer {tok}"}
    with httpx.Client(headers=h, timeout=10) as c:
        codes = [c.get(f"{acc.api}/v1/governments/{OWN}") for _ in range(30)]
    statuses = [r.status_code for r in codes]
    assert statuses.count(200) >= 10 and statuses.count(429) >= 5, statuses
    limited = next(r for r in codes if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    time.sleep(1.2)
    assert httpx.get(f"{acc.api}/v1/governments/{OWN}", headers=h, timeout=10).status_code == 200
    # another token is not affected
    assert (
        httpx.get(
            f"{acc.api}/v1/governments/{OWN}", headers=acc.director_headers(OWN), timeout=10
        ).status_code
        == 200
    )


def test_dashboard_session_cookie_is_httponly_and_writes_need_the_csrf_header(acc) -> None:
    tok = acc.token("finance_director", (OWN,), name="director signing in")
    with httpx.Client(base_url=acc.api, timeout=10) as c:
        assert c.post("/v1/session", json={"token": "cpt_wrong"}).status_code == 401
        r = c.post("/v1/session", json={"token": tok})
        assert r.status_code == 200 and r.json()["role"] == "finance_director" and r.json()["orgs"] == [OWN]
        cookies = r.headers.get_list("set-cookie")
        session = next(x for x in cookies if x.startswith("cashpos_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session.replace("Strict", "strict")
        assert c.get(f"/v1/positions/{OWN}").status_code == 200  # the cookie alone reads
        assert c.get(f"/v1/positions/{OTHER}").status_code == 404
        aid = ALERT_IDS[OWN]
        assert c.post(f"/v1/alerts/{aid}/ack", content=b"{}").status_code == 403  # no CSRF header
        wrong = c.post(f"/v1/alerts/{aid}/ack", content=b"{}", headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        ok = c.post(
            f"/v1/alerts/{aid}/ack", content=b"{}", headers={"X-CSRF-Token": c.cookies["cashpos_csrf"]}
        )
        assert ok.status_code == 200, ok.text
        out = c.delete("/v1/session", headers={"X-CSRF-Token": c.cookies["cashpos_csrf"]})
        assert out.status_code == 200
        assert c.get(f"/v1/positions/{OWN}").status_code == 401


def test_the_csrf_value_is_bound_to_its_session(acc) -> None:
    """Double submit compares X-CSRF-Token with the session's own value, not with whichever
    ``cashpos_csrf`` cookie comes first: a planted cookie, or a value from another session, fails."""
    sessions = []
    for who in ("mine", "theirs"):
        tok = acc.token("finance_director", (OWN,), name=f"csrf {who}")
        with httpx.Client(base_url=acc.api, timeout=10) as c:
            r = c.post("/v1/session", json={"token": tok})
            assert r.status_code == 200, r.text
            sessions.append((tok, c.cookies["cashpos_csrf"]))
    (mine, my_csrf), (_, their_csrf) = sessions
    assert my_csrf != their_csrf

    def sign_out(cookie: str, header: str) -> httpx.Response:  # a write by the cookie session
        return httpx.delete(
            f"{acc.api}/v1/session", timeout=10, headers={"Cookie": cookie, "X-CSRF-Token": header}
        )

    # another session's (valid) value, as cookie and header
    r = sign_out(f"cashpos_session={mine}; cashpos_csrf={their_csrf}", their_csrf)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "csrf_mismatch" and r.json()["status"] == 403
    # two CSRF cookies: a planted one first, the session's own second
    r = sign_out(f"cashpos_session={mine}; cashpos_csrf=planted; cashpos_csrf={my_csrf}", "planted")
    assert r.status_code == 403 and r.json()["reason"] == "csrf_mismatch"
    r = sign_out(f"cashpos_session={mine}; cashpos_csrf=planted; cashpos_csrf={my_csrf}", my_csrf)
    assert r.status_code == 200, r.text  # the session's own value passes, whatever else is there
    assert sign_out(f"cashpos_session={mine}; cashpos_csrf={my_csrf}", my_csrf).status_code == 200
    assert sign_out(f"cashpos_session={mine}; cashpos_csrf={my_csrf}", "").status_code == 403
    # a bearer token needs no CSRF value (no ambient credential to abuse)
    assert (
        httpx.delete(
            f"{acc.api}/v1/session", timeout=10, headers={"Authorization": f"Bearer {mine}"}
        ).status_code
        == 200
    )


def test_reads_by_national_and_every_write_are_audited(acc) -> None:
    marker = uuid.uuid4().hex[:8]
    nat = acc.token("national", (), name=f"auditor {marker}")
    httpx.get(f"{acc.api}/v1/positions/{OTHER}", headers={"Authorization": f"Bearer {nat}"}, timeout=10)
    admin = acc.token("admin", (), name=f"admin {marker}")
    put = httpx.put(
        f"{acc.api}/v1/thresholds/{OTHER}/general",
        content=b'{"floor_krw": 5}',
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert put.status_code == 200, put.text
    made = httpx.post(
        f"{acc.api}/v1/tokens",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
        json={"role": "viewer", "orgs": [OWN], "name": f"made {marker}"},
    )
    assert made.status_code == 201 and made.json()["token"].startswith("cpt_")
    director = acc.token("finance_director", (OWN,), name=f"reader {marker}")
    httpx.get(f"{acc.api}/v1/positions/{OWN}", headers={"Authorization": f"Bearer {director}"}, timeout=10)
    time.sleep(0.5)
    entries = [
        orjson.loads(r.value) for r in asyncio.run(read_topics(acc.settings, [Topics(acc.namespace).audit]))
    ]
    mine = [(e["name"], e["action"], e["org_code"]) for e in entries if marker in str(e.get("name"))]
    assert (f"auditor {marker}", "read", OTHER) in mine
    assert (f"admin {marker}", "thresholds_set", OTHER) in mine
    assert (f"admin {marker}", "token_create", None) in mine
    assert not [m for m in mine if m[0] == f"reader {marker}"]  # a director's own reads are not audited
    e = next(e for e in entries if e.get("name") == f"admin {marker}" and e["action"] == "token_create")
    assert e["detail"]["name"] == f"made {marker}" and e["at"].endswith("Z") and e["role"] == "admin"


# -- Redis service accounts -------------------------------------------------------------------


def test_redis_service_accounts_can_do_only_their_part(acc) -> None:
    k = RedisKeys(acc.namespace)
    api = redis.Redis.from_url(acc.redis_urls["api"])
    proc = redis.Redis.from_url(acc.redis_urls["processor"])
    try:
        assert api.hgetall(k.positions(OWN))  # reads the serving copy
        for write in (
            lambda: api.hset(k.positions(OWN), "general|2026", b"1|{}"),
            lambda: api.delete(k.positions(OWN)),
            lambda: api.lpush(k.deadletters_recent, b"x"),
            lambda: api.get("other-namespace:pos:3000000"),
            lambda: api.flushall(),
            lambda: api.keys("*"),
            lambda: api.config_get("*"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                write()
        api.hset(k.thresholds, "probe|*", b"{}")  # its own writes
        api.hdel(k.thresholds, "probe|*")
        proc.hset(k.freshness, "probe", b"1")
        proc.hdel(k.freshness, "probe")
        for bad in (
            lambda: proc.flushall(),
            lambda: proc.set("other-namespace:x", 1),
            lambda: proc.acl_list(),
            lambda: proc.keys("*"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                bad()
    finally:
        api.close()
        proc.close()


def test_default_user_off_refuses_anonymous_clients(tmp_path) -> None:
    from cashpos.embedded import start_redis
    from cashpos.redis_acl import apply, disable_default_user

    svc = start_redis(log_path=tmp_path / "redis.log")
    try:
        base = f"redis://127.0.0.1:{svc.port}/0"
        r = redis.Redis.from_url(base)
        urls = apply(r, "cashpos", base)
        disable_default_user(r)
        r.close()
        anon = redis.Redis.from_url(base)
        with pytest.raises(
            (
                redis.exceptions.AuthenticationError,
                redis.exceptions.NoPermissionError,
                redis.exceptions.ResponseError,
            )
        ):
            anon.get("cashpos:pos:3000000")
        anon.close()
        admin = redis.Redis.from_url(urls["admin"])
        admin.set("cashpos:probe", 1)
        assert admin.get("cashpos:probe") == b"1"
        admin.close()
    finally:
        svc.stop()
