"""The fiscal year's alerts on the real stack (#15): Tansu broker, redis-server, a worker, the API.

A realistic stream across the year end — the simulator from 20 December 2026 to 22 January 2027,
its events of a third of the governments (82 of 243: every third code and the staged ones):
December commitments carried forward, 1-20 January with two fiscal years open, every
government's close at 00:00 KST on 21 January on both input topics, a few commitments left to
lapse, then two days of FY2027 alone after the close — with two staged stories:

* 도봉구 (``COVERED``) receives a 5조 grant into FY2026's general account on 21 December and pays
  its first FY2027 bill, 5,000억, on 2 January: its FY2027 position alone is far below zero
  until the close, its bank account never is;
* 울릉군 (``SHORT``) pays 3조 as FY2027's on 4 January, far more than its account holds: it runs
  short, really, and stays so.

The stream is published one simulated day at a time, each once the worker has folded the day
before (so the partitions stay settled and their rules are judged batch by batch, as live; every
day's positions are compared with the pure fold's), and the test checks: no shortfall for an
account its bank balance covers (above all not on 2 January), exactly one shortfall for the
account that is short (on its newest year, through the close), no FY2026 alert open after the
close, the 20 January stage resolved by the close, and every position equal to the reference
fold fed topic by topic. It prints, for the record, the alerts raised on 2 January and, for a
few governments, what the close carried forward and what lapsed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from cashpos.calendar import KST, kst_day
from cashpos.embedded import Infra
from cashpos.names import CLOSE_KIND, EXPENDITURE, REVENUE, RedisKeys, Topics, side_of_topic
from cashpos.refdata import governments
from cashpos.simulator import StagedEvent, StagedSimulator
from faults.common import heartbeats, wait_until
from reconcile.reference import Reference
from state.ledger import APPLIED, LAPSE_TAG, Journal, Ledger, PosKey
from state.projection import META_FIELD, decode_position, parse_field
from streams.contract import Rejection, check_message
from streams.publisher import Publisher, route
from streams.reader import read_topics
from streams.topics import partition_for
from tests.conftest import Stack, new_stack

pytestmark = pytest.mark.integration

COVERED = "3090000"  # 도봉구
SHORT = "5260000"  # 울릉군
SEOUL = "6110000"
START = dt.datetime(2026, 12, 20, tzinfo=KST)
# Two days past the close: every check below is about the year end; a later day only costs
# time (see KEPT).
END = dt.datetime(2027, 1, 23, tzinfo=KST)
CLOSE_MS = int(dt.datetime(2027, 1, 21, tzinfo=KST).timestamp() * 1000)
JAN2 = kst_day(int(dt.datetime(2027, 1, 2, 12, tzinfo=KST).timestamp() * 1000))
RATE = 0.008  # events per simulated second: ~32,000 over the 35 days, ~12,000 of them kept
# Every simulated day the worker forecasts each account of each government it holds again (~1.5 s
# a day for all 243 here): a third of them keeps the test's cost down and every check whole (a
# government's events refer only to its own; 130 accounts are still covered-but-negative on 2
# January; every partition has governments).
KEPT = frozenset(sorted(governments())[::3]) | {COVERED, SHORT, SEOUL}

Alert = dict[str, Any]  # an alert change as the alerts topic carries it


def staged(at: str, **fields: Any) -> StagedEvent:
    t = dt.datetime.fromisoformat(at)
    body = {"account": "general", "occurred_at": at, "source": "test_fiscal_year_stack", **fields}
    return StagedEvent(t.timestamp(), orjson.dumps(body), str(fields["event_id"]))


def stream() -> list[bytes]:
    sim = StagedSimulator(seed=15, start=START, speed=1.0, rate=RATE)
    sim.stage(
        [
            staged(
                "2026-12-21T11:00:00+09:00",
                event_id="stk-grant",
                org_code=COVERED,
                fiscal_year=2026,
                kind="receipt",
                amount=5 * 10**12,
                category="grant",
            ),
            staged(
                "2027-01-02T10:00:00+09:00",
                event_id="stk-bill",
                org_code=COVERED,
                fiscal_year=2027,
                kind="payment",
                amount=5 * 10**11,
            ),
            staged(
                "2027-01-04T10:00:00+09:00",
                event_id="stk-short",
                org_code=SHORT,
                fiscal_year=2027,
                kind="payment",
                amount=3 * 10**12,
            ),
        ]
    )
    raws = sim.opening_balances() + sim.until(END.timestamp(), 10**6)
    return [raw for raw in raws if orjson.loads(raw)["org_code"] in KEPT]


def days(raws: list[bytes]) -> list[list[bytes]]:
    """The stream cut at each Korean day (it is in time order)."""
    out: list[list[bytes]] = []
    last = None
    for raw in raws:
        day = orjson.loads(raw)["occurred_at"][:10]
        if day != last:
            out.append([])
            last = day
        out[-1].append(raw)
    return out


class Fold:
    """The pure fold of what was published, each record once per topic it went to, in order:
    what the worker's positions must be once it has read as far."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.ledger = Ledger()
        self.offsets: Counter[str] = Counter()
        self.per_topic: dict[str, list[tuple[bytes, bytes | None]]] = {REVENUE: [], EXPENDITURE: []}

    def feed(self, raws: list[bytes]) -> tuple[set[str], set[str]]:
        """Fold ``raws``; returns the governments they touched and those of the last record of
        each input topic's partitions (once those are folded, so is everything before them)."""
        orgs: set[str] = set()
        last: dict[tuple[str, int], str] = {}
        for raw in raws:
            dest, key = route(self.topics, raw)
            for topic in dest:
                side = side_of_topic(topic)
                ev = check_message(raw, key, side)
                assert not isinstance(ev, Rejection), (ev, raw)
                part = partition_for(ev.org_code, 4)
                out = self.ledger.update(ev, raw, (topic, part, self.offsets[topic], 0))
                assert out == APPLIED, (out, raw)
                self.offsets[topic] += 1
                self.per_topic[side].append((raw, key))
                orgs.add(ev.org_code)
                last[(topic, part)] = ev.org_code
        return orgs, set(last.values())

    def view(self, orgs: set[str]) -> dict[PosKey, tuple[int, int, int]]:
        return {
            pk: (p.cash, p.committed, p.version) for pk, p in self.ledger.positions.items() if pk[0] in orgs
        }


def _bytes(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


async def redis_view(
    r: aioredis.Redis, keys: RedisKeys, orgs: set[str]
) -> dict[PosKey, tuple[int, int, int]]:
    """The serving copy's positions of ``orgs``: (cash, committed, version)."""
    ordered = sorted(orgs)
    async with r.pipeline(transaction=False) as pipe:
        for org in ordered:
            pipe.hgetall(keys.positions(org))
        hashes = await pipe.execute()
    out: dict[PosKey, tuple[int, int, int]] = {}
    for org, h in zip(ordered, hashes, strict=True):
        for f, v in h.items():
            name = _bytes(f).decode()
            if name == META_FIELD:
                continue
            account, fy = parse_field(name)
            version, body = decode_position(_bytes(v))
            out[(org, account, fy)] = (body["cash"], body["committed"], version)
    return out


async def wait_folded(
    s: Stack, r: aioredis.Redis, keys: RedisKeys, want: dict, last: set[str], timeout: float = 30
) -> None:
    """Until the serving copy shows ``want`` (every position the day touched). Polled through
    ``last``, the governments of each partition's last record: a few hashes, not every
    government's (polling all of them every 20 ms took a core from the worker); once those are
    folded the whole view is compared."""
    deadline = time.monotonic() + timeout
    got: dict = {}
    orgs = {pk[0] for pk in want}
    probe = {pk: v for pk, v in want.items() if pk[0] in last}
    while time.monotonic() < deadline:
        seen = await redis_view(r, keys, last)
        if all(seen.get(pk) == v for pk, v in probe.items()):
            got = await redis_view(r, keys, orgs)
            if all(got.get(pk) == v for pk, v in want.items()):
                return
        proc = s.procs.get("worker-w1")
        assert proc is not None and proc.poll() is None, s.log("worker-w1")[-3000:]
        await asyncio.sleep(0.02)
    diff = {pk: (got.get(pk), v) for pk, v in want.items() if got.get(pk) != v}
    raise AssertionError(f"the worker did not fold the day within {timeout}s: {list(diff.items())[:5]}")


def account_figures(ledger: Ledger) -> dict[tuple[str, str], dict[int, int]]:
    """Per (government, account): each fiscal year's available."""
    out: dict[tuple[str, str], dict[int, int]] = {}
    for (org, acc, fy), p in ledger.positions.items():
        out.setdefault((org, acc), {})[fy] = p.cash - p.committed
    return out


@pytest.fixture()
def fystack(infra: Infra, tmp_path: Path) -> Any:
    s = new_stack(infra, tmp_path)
    (s.root / "state-w1").mkdir(exist_ok=True)
    s.start_worker("w1")
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()


async def test_alerts_across_the_year_end_on_the_real_stack(fystack: Stack) -> None:
    s = fystack
    t0 = time.monotonic()
    keys = RedisKeys(s.namespace)
    topics = Topics(s.namespace)
    raws = stream()
    fold = Fold(topics)
    covered_at_jan2: dict[tuple[str, str], tuple[int, int]] = {}  # FY2027's own, the account's
    r = aioredis.from_url(s.infra.redis_url)
    try:
        async with Publisher(s.settings) as pub:
            for chunk in days(raws):
                orgs, last = fold.feed(chunk)
                await pub.send_many(chunk)
                await wait_folded(s, r, keys, fold.view(orgs), last)
                fold.ledger.take_changes()
                day = orjson.loads(chunk[-1])["occurred_at"][:10]
                if day == "2027-01-02":
                    for (org, acc), fys in account_figures(fold.ledger).items():
                        own = fys.get(2027)
                        if own is not None and own < 0 <= sum(fys.values()):
                            covered_at_jan2[(org, acc)] = (own, sum(fys.values()))
        published_s = time.monotonic() - t0
        folded_ms = int(time.time() * 1000)  # every batch's positions are in Redis
        # every position, as the reference fold fed topic by topic sees it
        ref = Reference()
        for side in (REVENUE, EXPENDITURE):
            for raw, key in fold.per_topic[side]:
                assert ref.feed(raw, side, key) == "applied"
        versions = ref.versions()
        want = {pk: (c, m, versions[pk]) for pk, (c, m) in ref.positions().items()}
        got = await redis_view(r, keys, {pk[0] for pk in want})
        assert got == want
        assert {pk: v for pk, v in want.items() if pk[2] == 2026 and v[:2] != (0, 0)} == {}  # final
        # the last batch's alert changes published: the worker publishes them before its loop
        # writes its next heartbeat (once a second)
        await asyncio.to_thread(
            wait_until, lambda: heartbeats(s)["w1"]["heartbeat_ms"] > folded_ms, 10, 0.05, "a heartbeat"
        )
        changes: list[Alert] = [
            orjson.loads(rec.value) for rec in await read_topics(s.settings, [topics.alerts], idle_ms=800)
        ]
        open_raw = await r.hgetall(keys.alerts_open)
        still_open = [orjson.loads(_bytes(v).split(b"|", 1)[1]) for v in open_raw.values()]
    finally:
        await r.aclose()

    raised = [c for c in changes if c["change"] == "raised"]
    by_rule = Counter((c["rule"], c["change"]) for c in changes)
    jan2 = [c for c in raised if kst_day(c["raised_ms"]) == JAN2]
    print(f"\n{len(raws):,} events in {len(days(raws))} days, published and folded in {published_s:.0f} s")
    print(f"alert changes: {dict(sorted(by_rule.items()))}")
    print(
        f"2 January 2027: {len(covered_at_jan2)} accounts with FY2027 alone below zero, covered by the account"
    )
    for (org, acc), (own, total) in sorted(covered_at_jan2.items(), key=lambda x: x[1][0])[:5]:
        print(f"  {org} {acc}: FY2027 available {own:,}, the account {total:,}")
    print(f"alerts raised on 2 January 2027: {len(jan2)}")
    for c in jan2:
        print(
            f"  {c['id']} {c['severity']} fiscal_years={c.get('fiscal_years')} available={c.get('available')}"
            f" stage={c.get('stage_days')}"
        )

    # 도봉구: FY2027 alone far below zero on 2 January, the bank account covering it
    assert (COVERED, "general") in covered_at_jan2
    own, total = covered_at_jan2[(COVERED, "general")]
    assert own <= -4 * 10**11 and total >= 4 * 10**12
    assert len(covered_at_jan2) > 50  # the simulator's own first January bills, too
    money = {"shortfall", "projected_shortfall"}
    assert not [
        c for c in changes if c["org_code"] == COVERED and c["account"] == "general" and c["rule"] in money
    ]
    # no account its bank balance covers gets a shortfall: the only one of the run is 울릉군's
    shortfalls = [c for c in raised if c["rule"] == "shortfall"]
    assert [(c["org_code"], c["account"]) for c in shortfalls] == [(SHORT, "general")], shortfalls
    assert not [c for c in jan2 if (c["org_code"], c["account"]) in covered_at_jan2 and c["rule"] in money]
    # 울릉군: one shortfall, on the account's newest year, open through the close
    (sf,) = shortfalls
    assert (sf["fiscal_year"], sf["fiscal_years"], sf["raised_event"]) == (2027, [2026, 2027], "stk-short")
    assert sf["id"] in {a["id"] for a in still_open}
    # the close: no FY2026 alert open after it; the 20 January notices resolved by it
    assert [a["id"] for a in still_open if a.get("fiscal_year") == 2026] == []
    lapse_notices = [c for c in raised if c["rule"] == "year_end" and c["stage_days"] == -20]
    assert lapse_notices, "the simulator leaves commitments to lapse: the 20 January stage must show"
    resolved = {c["id"]: c for c in changes if c["change"] == "resolved"}
    assert {resolved[c["id"]]["resolution"] for c in lapse_notices} <= {
        "fiscal_year_closed",
        "no_open_commitments",
    }
    assert any(resolved[c["id"]]["resolved_ms"] == CLOSE_MS for c in lapse_notices)
    assert all(c["raised_ms"] < CLOSE_MS for c in lapse_notices)
    print(
        f"20 January lapse notices: {len(lapse_notices)}, resolved by the close: "
        f"{sum(resolved[c['id']]['resolution'] == 'fiscal_year_closed' for c in lapse_notices)}"
    )

    # for the record: what the close carried forward and what lapsed
    journal = fold.ledger.journal
    api = httpx.AsyncClient(base_url=s.api, headers=s.headers, timeout=5)
    for org in (COVERED, SHORT, SEOUL):
        print(f"{org}:")
        for side, tag in ((REVENUE, "r:"), (EXPENDITURE, "e:")):
            entry = journal[(org, f"{tag}close-2026")]
            assert isinstance(entry, Journal) and entry.kind == CLOSE_KIND
            into = {acc: dc for acc, fy, dc, _dm in entry.effects if fy == 2027}
            print(f"  close-2026 ({side} copy): carried into 2027 {into}")
        lapses = [j for (o, sid), j in journal.items() if o == org and sid.startswith(LAPSE_TAG)]
        print(
            f"  lapsed: {[(j.account, j.commitment_id, j.amount) for j in lapses if isinstance(j, Journal)]}"
        )
        body = (await api.get(f"/v1/positions/{org}")).json()
        print(f"  fiscal years: {body['fiscal_years']}")
        fy27 = {a["account"]: a["cash"] for a in body["accounts"] if a["fiscal_year"] == 2027}
        print(f"  FY2027 cash by account: {fy27}")
        assert all(a["final"] for a in body["accounts"] if a["fiscal_year"] == 2026)
    gen = (await api.get(f"/v1/positions/{COVERED}/general")).json()
    await api.aclose()
    print(f"{COVERED} general: {gen.get('totals')}")
