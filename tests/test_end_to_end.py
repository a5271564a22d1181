"""End to end on the real parts: Tansu broker, redis-server, a worker process and the API.

A known set of events of every kind, with duplicates, reversals, transfers and bad events, is
published; the API must then show exactly the expected integers and the dead-letter topic must
hold every bad event with its reason, source coordinates and original bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from cashpos.dlq import list_deadletters
from streams.publisher import Publisher
from tests.conftest import Stack, new_stack
from tests.events import event, first_account

pytestmark = pytest.mark.integration

ORG = "3090000"  # 도봉구
OTHER = "6110000"  # 서울특별시
FUND = first_account(ORG, "fund")

GOOD = [
    event("r1", "receipt", 1_000_000),
    event("r2", "receipt", 500_000, category="grant"),
    event("c1", "commitment", 300_000, commitment_id="C-1", due_date="2026-12-15"),
    event("p1", "payment", 120_000, commitment_id="C-1"),
    event("cc1", "commitment_cancel", 50_000, commitment_id="C-1"),
    event("p2", "payment", 200_000),
    event("t1", "transfer", 100_000, to_account=FUND),
    event("r3", "receipt", 7_000),
    event("rr3", "receipt", 7_000, reverses="r3"),
    event("p3", "payment", 100_000, commitment_id="C-1"),  # releases only the 30,000... see below
    event("k1", "receipt", 40_000, org=OTHER, account="custody", category="other"),
    # prior-year processing: on 15 Jan an event may still belong to the previous fiscal year
    event("py1", "receipt", 9_000, org=OTHER, at="2027-01-15T09:00:00+09:00", fiscal_year=2026),
]
DUPLICATES = [event("r1", "receipt", 1_000_000), event("t1", "transfer", 100_000, to_account=FUND)]
BAD = {
    b"{not json": "not_json",
    event("bad-float", "receipt", 1).replace(b'"amount":1,', b'"amount":1.0,'): "invalid_amount",
    event("bad-acc", "receipt", 5, account="no_such_account"): "unknown_account",
    event("bad-org", "receipt", 5, org="9999999"): "unknown_government",
    event("r1", "receipt", 999): "event_id_conflict",
    event("bad-pay", "payment", 5, commitment_id="C-404"): "unknown_commitment",
    event("c1-again", "commitment", 5, commitment_id="C-1"): "commitment_id_reused",
    event("rr3-again", "receipt", 7_000, reverses="r3"): "already_reversed",
    # a year not yet open (2025 would be period_closed: its cash processing ended on 20 January)
    event("bad-fy", "receipt", 5, at="2026-03-01T09:00:00+09:00", fiscal_year=2027): "fiscal_year_mismatch",
    event("bad-self", "transfer", 5, to_account="general"): "transfer_same_account",
}

# Worked by hand from the contract's semantics:
# C-1: 300,000 committed; p1 releases 120,000 (open 180,000); cc1 releases 50,000 (open
# 130,000); p3 pays 100,000 and releases 100,000 (open 30,000).
EXPECTED = {
    (ORG, "general", 2026): (
        1_000_000 + 500_000 - 120_000 - 200_000 - 100_000 + 7_000 - 7_000 - 100_000,
        300_000 - 120_000 - 50_000 - 100_000,
    ),
    (ORG, FUND, 2026): (100_000, 0),
    (OTHER, "custody", 2026): (40_000, 0),
    (OTHER, "general", 2026): (9_000, 0),
}


@pytest.fixture(scope="module")
def e2e(infra, tmp_path_factory):
    s = new_stack(infra, tmp_path_factory.mktemp("e2e"))
    s.start_worker()
    s.start_api()
    s.wait_ready()

    async def publish() -> None:
        async with Publisher(s.settings) as pub:
            for raw in GOOD + DUPLICATES + list(BAD):
                await pub.send(raw)  # one by one: the order inside the expenditure topic matters

    asyncio.run(publish())
    yield s
    s.stop_all()


def _positions(
    api: str, org: str, headers: dict[str, str]
) -> dict[tuple[str, str, int], tuple[int, int, int]]:
    body = httpx.get(f"{api}/v1/positions/{org}", headers=headers, timeout=5).json()
    return {
        (org, a["account"], a["fiscal_year"]): (a["cash"], a["committed"], a["available"])
        for a in body["accounts"]
    }


def _wait_for(s: Stack, expected: dict, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        got = {**_positions(s.api, ORG, s.headers), **_positions(s.api, OTHER, s.headers)}
        if {k: v[:2] for k, v in got.items()} == expected:
            return got
        time.sleep(0.2)
    return got


def test_api_shows_exact_positions(e2e):
    got = _wait_for(e2e, EXPECTED)
    assert {k: v[:2] for k, v in got.items()} == EXPECTED
    for cash, committed, available in got.values():
        assert available == cash - committed
        assert all(type(x) is int for x in (cash, committed, available))


def test_totals_and_summary_add_up(e2e):
    _wait_for(e2e, EXPECTED)
    body = httpx.get(f"{e2e.api}/v1/positions/{OTHER}", headers=e2e.headers, timeout=5).json()
    assert body["totals"]["cash"] == 49_000
    assert body["totals"]["restricted"] == 40_000  # custody cash is held for others
    assert body["totals"]["spendable"] == 9_000
    summary = httpx.get(f"{e2e.api}/v1/summary", headers=e2e.headers, timeout=5).json()
    expected_cash = sum(c for c, _ in EXPECTED.values())
    assert summary["national"]["cash"] == expected_cash
    seoul = next(p for p in summary["provinces"] if p["province_code"] == "6110000")
    assert seoul["governments"] == 26 and seoul["cash"] == expected_cash  # both orgs are in Seoul
    assert summary["freshness"]["last_write_at"] is not None


def test_account_endpoint_and_fiscal_year_filter(e2e):
    _wait_for(e2e, EXPECTED)
    one = httpx.get(f"{e2e.api}/v1/positions/{ORG}/general", headers=e2e.headers, timeout=5).json()
    assert one["totals"] == {"cash": 980_000, "committed": 30_000, "available": 950_000}
    prior = httpx.get(
        f"{e2e.api}/v1/positions/{OTHER}?fiscal_year=2027", headers=e2e.headers, timeout=5
    ).json()
    assert prior["accounts"] == []
    assert httpx.get(f"{e2e.api}/v1/positions/0000000", headers=e2e.headers, timeout=5).status_code == 404
    assert httpx.get(f"{e2e.api}/v1/positions/{ORG}/nope", headers=e2e.headers, timeout=5).status_code == 404


def test_dead_letters_hold_every_bad_event_with_reason_and_bytes(e2e):
    _wait_for(e2e, EXPECTED)
    deadline = time.monotonic() + 15
    letters = []
    while time.monotonic() < deadline:
        letters = asyncio.run(list_deadletters(e2e.settings))
        if len(letters) >= len(BAD):
            break
        time.sleep(0.5)
    assert Counter(d.reason for d in letters) == Counter(BAD.values())
    by_bytes = {d.value(): d for d in letters}
    for raw, reason in BAD.items():
        d = by_bytes[raw]
        assert d.reason == reason
        assert d.source.topic.startswith(e2e.namespace + ".events.")
        assert d.source.offset >= 0 and d.detail


def test_duplicates_are_counted(e2e):
    _wait_for(e2e, EXPECTED)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(f"{e2e.api}/metrics", headers=e2e.headers, timeout=5).text
        line = next((ln for ln in text.splitlines() if ln.startswith("cashpos_duplicates_dropped_total")), "")
        if line and float(line.rsplit(" ", 1)[1]) == len(DUPLICATES):
            return
        time.sleep(0.5)
    pytest.fail(f"duplicates counter not {len(DUPLICATES)}: {line!r}")


def test_ingest_gateway_accepts_and_refuses(e2e):
    ok = httpx.post(
        f"{e2e.api}/v1/events",
        content=event("gw1", "receipt", 12_345, org="3000000"),
        headers=e2e.source_headers,
        timeout=10,
    )
    assert ok.status_code == 202 and ok.json()["event_id"] == "gw1"
    bad = httpx.post(
        f"{e2e.api}/v1/events",
        content=event("gw2", "receipt", 0, org="3000000"),
        headers=e2e.source_headers,
        timeout=10,
    )
    assert bad.status_code == 422 and bad.json()["reason"] == "invalid_amount"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = _positions(e2e.api, "3000000", e2e.headers)
        if got:
            break
        time.sleep(0.2)
    assert got == {("3000000", "general", 2026): (12_345, 0, 12_345)}


def test_reconciliation_is_exact_and_served(e2e):
    from reconcile.run import reconcile

    _wait_for(e2e, EXPECTED)
    rep = asyncio.run(reconcile(e2e.settings, [e2e.root / "state-w1"]))
    assert rep.diff_krw == 0 and rep.differences == [], rep.differences
    assert rep.lagging == 0 and rep.unseeded == 0
    # counts in = applied + duplicates + dead letters
    assert rep.records_in == rep.applied + rep.duplicates + rep.dead_letters
    assert rep.duplicates == len(DUPLICATES)
    body = httpx.get(f"{e2e.api}/v1/reconciliation", headers=e2e.headers, timeout=5).json()
    assert body["diff_krw"] == 0 and body["records_in"] == rep.records_in
    metrics = httpx.get(f"{e2e.api}/metrics", headers=e2e.headers, timeout=5).text
    assert "cashpos_reconciliation_diff_krw 0.0" in metrics


def test_reconciliation_detects_a_wrong_serving_value(e2e):
    """The reconciler must be able to fail: corrupt one Redis value (same version) and look."""
    import redis as redis_sync

    from cashpos.names import RedisKeys
    from reconcile.run import reconcile
    from state.projection import decode_position

    _wait_for(e2e, EXPECTED)
    r = redis_sync.Redis.from_url(e2e.infra.redis_url)
    key, field = RedisKeys(e2e.namespace).positions(ORG), f"{FUND}|2026"
    original = r.hget(key, field)
    assert isinstance(original, bytes)
    version, _ = decode_position(original)
    try:
        r.hset(key, field, f'{version}|{{"cash":100001,"committed":0,"last_event_ms":0}}')
        rep = asyncio.run(reconcile(e2e.settings, publish=False))
        assert rep.diff_krw == 1
        assert [(d.org_code, d.account, d.against) for d in rep.differences] == [(ORG, FUND, "redis")]
    finally:
        r.hset(key, field, original)
