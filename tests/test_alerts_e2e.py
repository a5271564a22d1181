"""Alerts end to end on the real parts: Tansu broker, redis-server, worker and API processes.

An event that causes a shortfall must show up at GET /v1/alerts and on the Redis alerts channel
within 2 s of being published; acknowledging works and survives resolution; a kill -9 of the
worker neither repeats nor loses an alert (the alerts topic and Redis are compared before and
after); a changed threshold takes effect without a restart; and the simulator's staged scenario
raises its alert (the shortfall, whose projection it inhibits).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from cashpos.calendar import KST
from cashpos.embedded import Infra
from cashpos.names import RedisKeys, Topics
from state.projection import decode_position, field_name
from streams.publisher import Publisher
from streams.reader import read_topics
from tests.conftest import ROOT, Stack, new_stack

pytestmark = pytest.mark.integration

ORG = "5260000"  # 울릉군
OTHER = "3090000"  # 도봉구


def ev(kind: str, amount: int, org: str = ORG, account: str = "general", **extra: object) -> bytes:
    now = dt.datetime.now(KST)
    d: dict[str, object] = {
        "event_id": f"e2e-{uuid.uuid4().hex[:20]}",
        "org_code": org,
        "account": account,
        "fiscal_year": now.year,
        "kind": kind,
        "amount": amount,
        "occurred_at": now.isoformat(timespec="milliseconds"),
        "source": "test_alerts_e2e",
        **extra,
    }
    if kind == "receipt":
        d["category"] = "local_tax"
    return orjson.dumps(d)


async def http(method: str, url: str, **kw: Any) -> httpx.Response:
    """One request, off the event loop (the tests' async readers keep running)."""
    return await asyncio.to_thread(httpx.request, method, url, **kw)


async def publish(stack: Stack, *raws: bytes) -> None:
    async with Publisher(stack.settings) as pub:
        for raw in raws:
            await pub.send(raw)


Alert = dict[str, Any]  # an alert as the API returns it


def alerts(stack: Stack, **params: str) -> list[Alert]:
    r = httpx.get(f"{stack.api}/v1/alerts", params=params, headers=stack.headers, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["alerts"]


def wait_alerts(
    stack: Stack, pred: Callable[[Alert], bool], timeout: float = 15, **params: str
) -> list[Alert]:
    deadline = time.monotonic() + timeout
    got: list[Alert] = []
    while time.monotonic() < deadline:
        got = [a for a in alerts(stack, **params) if pred(a)]
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"no matching alert within {timeout}s; have {alerts(stack, **params)}")


def wait_cash(stack: Stack, org: str, account: str, cash: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{stack.api}/v1/positions/{org}/{account}", headers=stack.headers, timeout=5)
        if r.status_code == 200 and r.json()["totals"]["cash"] == cash:
            return
        time.sleep(0.1)
    raise AssertionError(f"{org}/{account} never reached cash {cash}")


def folded_cash(raws: list[bytes], pk: tuple[str, str, int]) -> int:
    """The position's cash by the pure fold of the very bytes published."""
    from state.ledger import Ledger
    from streams.contract import Rejection, check_message

    ledger = Ledger()
    for raw in raws:
        checked = check_message(raw, None, None)
        assert not isinstance(checked, Rejection), checked
        ledger.update(checked, raw)
    return sum(p.cash for k, p in ledger.positions.items() if k[:2] == pk[:2])


async def topic_changes(stack: Stack) -> list[Alert]:
    recs = await read_topics(stack.settings, [Topics(stack.namespace).alerts], idle_ms=800)
    return [orjson.loads(r.value) for r in recs]


def start_worker(s: Stack, worker_id: str = "w1") -> None:
    (s.root / f"state-{worker_id}").mkdir(exist_ok=True)  # Faust's datadir lives under it
    s.start_worker(worker_id)


@pytest.fixture()
def astack(infra: Infra, tmp_path: Path) -> Iterator[Stack]:
    s = new_stack(infra, tmp_path)
    start_worker(s)
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()


async def test_shortfall_alert_is_served_and_pushed_within_two_seconds_and_can_be_acknowledged(
    astack: Stack,
) -> None:
    s = astack
    keys = RedisKeys(s.namespace)
    await publish(s, ev("receipt", 1_000_000))
    wait_cash(s, ORG, "general", 1_000_000)
    assert alerts(s, org=ORG) == []
    r = aioredis.from_url(s.infra.redis_url)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.alerts_channel)
    try:
        pay = ev("payment", 3_000_000)
        await publish(s, pay)
        t0 = time.monotonic()
        pushed = None
        while time.monotonic() - t0 < 5:
            msg = await pubsub.get_message(timeout=0.2)
            if msg and msg["type"] == "message":
                body = orjson.loads(msg["data"])
                if body.get("org_code") == ORG and body.get("rule") == "shortfall":
                    pushed = body
                    break
        t_push = time.monotonic() - t0
        got = await asyncio.to_thread(wait_alerts, s, lambda a: a["rule"] == "shortfall", 5, org=ORG)
        t_api = time.monotonic() - t0
    finally:
        await pubsub.aclose()
        await r.aclose()
    assert pushed is not None, "no alert on the Redis channel"
    assert t_push < 2.0 and t_api < 2.0, (t_push, t_api)
    a = got[0]
    assert pushed["id"] == a["id"] and pushed["change"] == "raised"
    assert (a["available"], a["cash"], a["committed"]) == (-2_000_000, -2_000_000, 0)
    assert a["raised_event"] == orjson.loads(pay)["event_id"] and a["state"] == "raised"
    assert a["name"] == "울릉군" and a["province_code"] == "6470000" and a["severity"] == "critical"
    # filters
    assert [x["id"] for x in alerts(s, province="6470000", rule="shortfall")] == [a["id"]]
    assert alerts(s, province="6110000") == [] and alerts(s, org=OTHER) == []
    assert (
        await http("GET", f"{s.api}/v1/alerts", params={"rule": "nope"}, headers=s.headers)
    ).status_code == 422
    assert (
        await http("GET", f"{s.api}/v1/alerts", params={"org": "9999999"}, headers=s.headers)
    ).status_code == 404

    # acknowledge (by 울릉군's finance director, whose token is named "kim"): recorded once
    # (first wins), published, kept through resolution
    url = f"{s.api}/v1/alerts/{a['id']}/ack"
    kim = {"Authorization": f"Bearer {s.token('finance_director', (ORG,), name='kim')}"}
    lee = {"Authorization": f"Bearer {s.token('finance_director', (ORG,), name='lee')}"}
    assert (await http("POST", url, json={}, timeout=5)).status_code == 401  # no token
    assert (
        await http("POST", url, json={"by": "kim"}, headers=s.headers, timeout=5)
    ).status_code == 403  # national: read-only
    assert (await http("POST", url, json={"by": 5}, headers=kim, timeout=5)).status_code == 422
    assert (await http("POST", url, json={"who": "kim"}, headers=kim, timeout=5)).status_code == 422
    assert (
        await http("POST", f"{s.api}/v1/alerts/nope/ack", json={"by": "kim"}, headers=kim)
    ).status_code == 404
    ack = await http("POST", url, json={"by": "kim"}, headers=kim, timeout=5)
    assert ack.status_code == 200 and ack.json()["state"] == "acknowledged"
    assert ack.json()["acknowledged_by"] == "kim"
    again = (await http("POST", url, json={"by": "lee"}, headers=lee, timeout=5)).json()
    assert again["acknowledged_by"] == "kim"
    now = next(x for x in alerts(s, org=ORG) if x["id"] == a["id"])
    assert (now["state"], now["acknowledged_by"]) == ("acknowledged", "kim")
    assert [x["id"] for x in alerts(s, org=ORG, state="acknowledged")] == [a["id"]]
    await publish(s, ev("receipt", 10_000_000))
    done = await asyncio.to_thread(
        wait_alerts, s, lambda x: x["id"] == a["id"], 10, org=ORG, state="resolved"
    )
    assert done[0]["acknowledged_by"] == "kim" and done[0]["resolution"] == "recovered"
    assert done[0]["available"] == 8_000_000
    assert all(x["id"] != a["id"] for x in alerts(s, org=ORG))  # no longer open
    assert (await http("POST", url, json={"by": "park"}, headers=kim, timeout=5)).status_code == 409
    changes = [c for c in await topic_changes(s) if c["id"] == a["id"]]
    assert [c["change"] for c in changes] == ["raised", "acknowledged", "resolved"]
    assert changes[-1]["acknowledged_by"] == "kim"
    # the worker's counter, re-exported by the API (a scrape may miss the workers under load, or
    # read the worker's copy from before the alert: its label sets start at 0)
    deadline, line = time.monotonic() + 10, ""
    while time.monotonic() < deadline and not (line and float(line.rsplit(" ", 1)[1]) >= 1):
        text = (await http("GET", f"{s.api}/metrics", headers=s.headers, timeout=5)).text
        line = next(
            (
                ln
                for ln in text.splitlines()
                if ln.startswith("cashpos_alerts_raised_total{") and 'rule="shortfall"' in ln
            ),
            "",
        )
        await asyncio.sleep(0.3)
    assert line and float(line.rsplit(" ", 1)[1]) == 1.0, line


async def test_kill9_and_restart_neither_repeats_nor_loses_alerts(infra: Infra, tmp_path: Path) -> None:
    s = new_stack(infra, tmp_path)
    try:
        start_worker(s)
        s.start_api()
        s.wait_ready()
        await publish(s, ev("receipt", 1_000_000), ev("payment", 5_000_000))
        first = await asyncio.to_thread(wait_alerts, s, lambda a: a["rule"] == "shortfall", 15, org=ORG)
        before_topic = await topic_changes(s)
        r = aioredis.from_url(s.infra.redis_url)
        keys = RedisKeys(s.namespace)
        before_open = set((await r.hgetall(keys.alerts_open)).keys())
        s.stop("worker-w1", kill=True)
        # while it is down: one more payment on the short account (no new crossing) and a new
        # shortfall elsewhere
        await publish(s, ev("payment", 1_000), ev("receipt", 100, org=OTHER), ev("payment", 700, org=OTHER))
        start_worker(s)
        other = await asyncio.to_thread(wait_alerts, s, lambda a: a["rule"] == "shortfall", 30, org=OTHER)
        wait_cash(s, ORG, "general", 1_000_000 - 5_000_000 - 1_000)
        await asyncio.sleep(1.5)  # let any (wrong) repeat surface
        after_topic = await topic_changes(s)
        after_open = set((await r.hgetall(keys.alerts_open)).keys())
        await r.aclose()
    finally:
        s.stop_all()

    # nothing that was published before is published again, nothing is lost
    def key(c: dict) -> tuple[str, int, str]:
        return c["id"], c["rev"], c["change"]

    before, after = Counter(map(key, before_topic)), Counter(map(key, after_topic))
    assert all(n == 1 for n in after.values()), after
    assert before.keys() <= after.keys()
    # (cash below zero is projected below zero too: the shortfall inhibits that projection)
    assert [(c["org_code"], c["rule"], c["change"]) for c in before_topic] == [(ORG, "shortfall", "raised")]
    new = sorted((c["org_code"], c["rule"], c["change"]) for c in after_topic if key(c) not in before)
    assert new == [(OTHER, "shortfall", "raised")]
    assert before_open <= after_open  # the open alert is still open, under the same id
    assert first[0]["id"].encode() in before_open and other[0]["id"].encode() in after_open
    assert len(after_open) == len(before_open) + 1  # other's shortfall


async def test_thresholds_put_takes_effect_without_restart(astack: Stack) -> None:
    s = astack
    await publish(s, ev("receipt", 5_000_000_000))
    wait_cash(s, ORG, "general", 5_000_000_000)
    url = f"{s.api}/v1/thresholds/{ORG}/general"
    base = (await http("GET", url, headers=s.headers, timeout=5)).json()
    assert base["effective"]["floor_months"] == 2 and base["override"] is None
    for bad in (
        {"floor_krw": 1.5},
        {"floor_krw": -1},
        {"floor_krw": "6000000000"},
        {"floor_krw": 0},
        {"nope": 1},
        {"margin_pct": 101},
        {"floor_months": True},
    ):
        r = await http("PUT", url, json=bad, headers=s.admin_headers, timeout=5)
        assert r.status_code == 422, (bad, r.text)
    assert (
        await http("PUT", f"{s.api}/v1/thresholds/9999999/general", json={}, headers=s.admin_headers)
    ).status_code == 404
    assert (
        await http("PUT", f"{s.api}/v1/thresholds/{ORG}/nope", json={}, headers=s.admin_headers)
    ).status_code == 404
    assert (
        await http("PUT", url, json={"floor_krw": 6_000_000_000}, headers=s.headers)
    ).status_code == 403  # readers
    t0 = time.monotonic()
    r = await http("PUT", url, json={"floor_krw": 6_000_000_000}, headers=s.admin_headers, timeout=5)
    assert r.status_code == 200 and r.json()["effective"]["floor_krw"] == 6_000_000_000
    got = await asyncio.to_thread(wait_alerts, s, lambda a: a["rule"] == "below_floor", 10, org=ORG)
    assert time.monotonic() - t0 < 5
    assert (got[0]["floor"], got[0]["available"]) == (6_000_000_000, 5_000_000_000)
    # the next event is judged against it too: 5,000,000,000 + 1,500,000,000 >= floor + 5%
    await publish(s, ev("receipt", 1_500_000_000))
    done = await asyncio.to_thread(
        wait_alerts, s, lambda a: a["id"] == got[0]["id"], 10, org=ORG, state="resolved"
    )
    assert done[0]["resolution"] == "recovered"
    assert (await http("DELETE", url, headers=s.admin_headers, timeout=5)).json()["override"] is None


def test_simulator_scenario_raises_the_staged_shortfall(astack: Stack) -> None:
    s = astack
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cashpos.cli",
            "simulate",
            "--scenario",
            "shortfall",
            "--seed",
            "5",
            "--speed",
            "3600",
            "--rate",
            "2000",
            "--total",
            "4000",
        ],
        env=s.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the assert shows stderr
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # the simulator logs JSON lines: its scenario lines are their msg
    said = [orjson.loads(ln)["msg"] for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("{")]
    assert any("scenario shortfall" in m and "울릉군 5260000 general" in m for m in said), said[-5:]
    cid = next(m for m in said if "commitment" in m).split("commitment ")[1].split()[0]
    # the commitment is larger than the cash: a shortfall at its event, which inhibits the
    # projection of its due date (one condition, one alert)
    short = wait_alerts(s, lambda a: a["rule"] == "shortfall" and a["account"] == "general", 30, org=ORG)
    assert short[0]["raised_event"] == f"{cid}-c" and short[0]["available"] < 0
    mine = alerts(s, org=ORG, state="all")
    assert not [a for a in mine if a["rule"] == "projected_shortfall" and a["account"] == "general"]


async def test_kill9_mid_stream_raises_the_staged_alerts_exactly_once(infra: Infra, tmp_path: Path) -> None:
    """kill -9 while a simulated stream (with the staged 울릉군 shortfall) is being folded, then a
    restart: the scenario's alerts exist under one id each (no re-fire under a new id), and the
    serving copy agrees with the alerts topic."""
    import threading

    from cashpos.simulator import StagedSimulator, shortfall_scenario

    s = new_stack(infra, tmp_path)
    try:
        start_worker(s)
        s.start_api()
        s.wait_ready()
        sim = StagedSimulator(
            seed=9, start=dt.datetime.now(KST) - dt.timedelta(hours=2), speed=144.0, rate=1000.0
        )
        staged = shortfall_scenario(sim, after_s=300)
        sim.stage(staged)
        raws = sim.opening_balances() + sim.next_batch(20_000)
        assert staged[0].raw in raws

        async def send() -> None:
            async with Publisher(s.settings) as pub:
                await pub.send_many(raws)

        t = threading.Thread(target=lambda: asyncio.run(send()))
        t.start()
        r = aioredis.from_url(s.infra.redis_url)
        keys = RedisKeys(s.namespace)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # part-way through the stream
            raw = await r.hget(keys.positions("6110000"), field_name("general", dt.datetime.now(KST).year))
            if raw and decode_position(raw if isinstance(raw, bytes) else raw.encode())[0] > 300:
                break
            await asyncio.sleep(0.02)
        s.stop("worker-w1", kill=True)
        t.join()
        start_worker(s)
        want_cash = folded_cash(raws, (ORG, "general", sim.start.year))
        await asyncio.to_thread(wait_cash, s, ORG, "general", want_cash, 90)
        got = await asyncio.to_thread(
            wait_alerts, s, lambda a: a["account"] == "general" and a["rule"] == "shortfall", 20, org=ORG
        )
        await asyncio.sleep(2)
        changes = await topic_changes(s)
        opened = {k.decode() if isinstance(k, bytes) else k for k in await r.hkeys(keys.alerts_open)}
        await r.aclose()
    finally:
        s.stop_all()
    # (a year_end notice joins them in December, when the stream's open commitments are within
    # 30 days of 31 December: the date's doing, not the scenario's)
    mine = {
        (c["id"], c["rule"])
        for c in changes
        if c["org_code"] == ORG
        and c["account"] == "general"
        and c["change"] == "raised"
        and c["rule"] != "year_end"
    }
    # (the projection of the scenario's payment day is inhibited by the shortfall)
    assert sorted(rule for _, rule in mine) == ["shortfall"], (
        mine,
        len(changes),
        [(c["org_code"], c["account"], c["rule"], c["change"]) for c in changes][:20],
        got,
    )
    assert got[0]["id"] in {i for i, _ in mine}
    # the serving copy holds exactly the alerts whose latest change on the topic is not a resolve
    latest: dict[str, dict] = {}
    for c in changes:
        if c["change"] != "acknowledged" and c["rev"] >= latest.get(c["id"], {"rev": 0})["rev"]:
            latest[c["id"]] = c
    assert opened == {i for i, c in latest.items() if c["state"] != "resolved"}
