"""History on the real stack (issue #16): the API asks the owning worker; as-of answers equal an
independent sum of the published events up to each instant, a late event changes the answers
after its own instant only and never what was known before it arrived (as_known_at), the statement balances (JSON and CSV), the events behind a figure
sum to it and page with a cursor."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest

from cashpos.calendar import korea_time
from streams.publisher import Publisher
from tests.conftest import Stack
from tests.events import event

pytestmark = pytest.mark.integration

ORG = "4090000"  # 김포시: no other test uses it
SEWER = "sewerage"


def _ms(at: str) -> int:
    return int(korea_time(at).timestamp() * 1000)


def _events(stamp: str) -> list[bytes]:
    rnd = random.Random(7)
    out = []
    for i in range(60):
        day = 2 + i % 5
        at = f"2026-03-{day:02d}T{9 + i % 8:02d}:{rnd.randrange(60):02d}:00+09:00"
        acc = SEWER if i % 3 == 0 else "general"
        kind = "receipt" if i % 4 else "payment"
        cat = rnd.choice(["local_tax", "grant", "non_tax"]) if kind == "receipt" else None
        extra: dict[str, Any] = {"category": cat} if cat else {}
        out.append(
            event(f"h{stamp}-{i}", kind, rnd.randrange(1, 10**7), org=ORG, account=acc, at=at, **extra)
        )
    out.append(
        event(f"h{stamp}-t", "transfer", 12_345, org=ORG, at="2026-03-04T12:00:00+09:00", to_account=SEWER)
    )
    out.append(
        event(
            f"h{stamp}-c",
            "commitment",
            99_999,
            org=ORG,
            at="2026-03-03T12:00:00+09:00",
            commitment_id=f"C{stamp}",
        )
    )
    return out


def _publish(stack: Stack, raws: list[bytes]) -> None:
    async def go() -> None:
        async with Publisher(stack.settings) as pub:
            for raw in raws:
                await pub.send(raw)

    asyncio.run(go())


def _expected(raws: list[bytes], at_ms: int) -> dict[tuple[str, int], tuple[int, int]]:
    """The independent sum: each event's effect by the contract's meaning, up to ``at_ms``."""
    out: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for raw in raws:
        e = orjson.loads(raw)
        if _ms(e["occurred_at"]) > at_ms:
            continue
        k, amt, fy = e["kind"], e["amount"], e["fiscal_year"]
        if k == "receipt":
            out[(e["account"], fy)][0] += amt
        elif k == "payment":
            out[(e["account"], fy)][0] -= amt
        elif k == "transfer":
            out[(e["account"], fy)][0] -= amt
            out[(e["to_account"], fy)][0] += amt
        elif k == "commitment":
            out[(e["account"], fy)][1] += amt
    return {k: (v[0], v[1]) for k, v in out.items()}


def _as_of(
    c: httpx.Client, h: dict[str, str], at_ms: int, axis: str = "as_of"
) -> dict[tuple[str, int], tuple[int, int]]:
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at_ms / 1000)) + f".{at_ms % 1000:03d}Z"
    r = c.get(f"/v1/positions/{ORG}", params={axis: at}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["time_axis"] == ("event_time" if axis == "as_of" else "known_time")
    assert body[axis] is not None
    return {(a["account"], a["fiscal_year"]): (a["cash"], a["committed"]) for a in body["accounts"]}


def _known_at(c: httpx.Client, h: dict[str, str], at_ms: int) -> dict[tuple[str, int], tuple[int, int]]:
    return _as_of(c, h, at_ms, "as_known_at")


def _minus(
    a: dict[tuple[str, int], tuple[int, int]], b: dict[tuple[str, int], tuple[int, int]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """What ``a`` adds to ``b`` (the shared stack's earlier tests published for this government too)."""
    out = {k: (v[0] - b.get(k, (0, 0))[0], v[1] - b.get(k, (0, 0))[1]) for k, v in a.items()}
    return {k: v for k, v in out.items() if v != (0, 0)}


def test_history_answers_exactly_from_the_owning_worker(stack: Stack) -> None:
    stamp = str(time.time_ns())
    raws = _events(stamp)
    published_from = int(time.time() * 1000) - 1  # every record of this test is known after it
    _publish(stack, raws)
    # many reads in a burst: a token with room above the default 20 requests/s
    h = {"Authorization": f"Bearer {stack.token('viewer', [ORG], name='history reader', rate_per_s=500)}"}
    with httpx.Client(base_url=stack.api, timeout=20) as c:
        deadline = time.monotonic() + 30
        last = _ms("2026-03-07T00:00:00+09:00")
        while _as_of(c, h, last) != _expected(raws, last):
            assert time.monotonic() < deadline, "history never caught up"
            time.sleep(0.3)
        # 20 random instants (and the ones right around events): each equals the independent sum
        instants = sorted({_ms(orjson.loads(r)["occurred_at"]) for r in raws})
        rnd = random.Random(3)
        for t in rnd.sample(instants, 10) + [
            rnd.randrange(instants[0] - 10**6, instants[-1] + 10**6) for _ in range(10)
        ]:
            for at in (t - 1, t):
                assert _as_of(c, h, at) == _expected(raws, at), at

        # the nation as of that instant: this government's row is the independent sum, and the
        # provinces and the national total add up its governments
        last_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last / 1000))
        r = c.get("/v1/summary", params={"as_of": last_utc}, headers=stack.headers)
        assert r.status_code == 200, r.text
        nation = r.json()
        (row,) = [g for g in nation["governments"] if g["org_code"] == ORG]
        want = _expected(raws, last)
        assert (row["cash"], row["committed"]) == (
            sum(v[0] for v in want.values()),
            sum(v[1] for v in want.values()),
        )
        assert nation["national"]["cash"] == sum(g["cash"] for g in nation["governments"])
        assert nation["national"]["cash"] == sum(p["cash"] for p in nation["provinces"])

        # a late event (2 March) changes the answers after its instant, not before
        late = event(
            f"h{stamp}-late", "receipt", 777, org=ORG, at="2026-03-02T08:00:00+09:00", category="bond"
        )
        before = _as_of(c, h, _ms("2026-03-02T07:59:59+09:00"))
        # the known-at axis: everything published so far had its record on the topics before
        # ``known`` (the producer's record timestamps: this machine's clock), whatever its event time
        known = int(time.time() * 1000)
        time.sleep(0.05)
        base = _known_at(c, h, published_from)  # what other tests had published before
        assert _minus(_known_at(c, h, known), base) == _expected(raws, 2**62)
        assert _known_at(c, h, 0) == {}  # nothing had arrived in 1970
        _publish(stack, [late])
        raws.append(late)
        deadline = time.monotonic() + 30
        while _as_of(c, h, last) != _expected(raws, last):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert _as_of(c, h, _ms("2026-03-02T07:59:59+09:00")) == before
        # the late event changed the event-time past (2 March on) but not what was known before it came
        assert _as_of(c, h, _ms("2026-03-02T08:00:00+09:00")) != _expected(
            raws[:-1], _ms("2026-03-02T08:00:00+09:00")
        )
        assert _minus(_known_at(c, h, known), base) == _expected(raws[:-1], 2**62)
        assert _minus(_known_at(c, h, int(time.time() * 1000)), base) == _expected(raws, 2**62)
        # the two axes are two questions: asking both at once is refused with the reason code
        r = c.get(
            f"/v1/positions/{ORG}",
            params={"as_of": "2026-03-02T08:00:00Z", "as_known_at": "2026-03-02T08:00:00Z"},
            headers=h,
        )
        assert r.status_code == 422 and r.json()["reason"] == "invalid_request", r.text
        # one account, and the nation, on the known-at axis
        known_utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(known / 1000)) + f".{known % 1000:03d}Z"
        r = c.get(f"/v1/positions/{ORG}/{SEWER}", params={"as_known_at": known_utc}, headers=h)
        assert r.status_code == 200, r.text
        want_known = _expected(raws[:-1], 2**62)
        got = {(a["account"], a["fiscal_year"]): (a["cash"], a["committed"]) for a in r.json()["accounts"]}
        assert _minus(got, base) == {k: v for k, v in want_known.items() if k[0] == SEWER}
        r = c.get("/v1/summary", params={"as_known_at": known_utc}, headers=stack.headers)
        assert r.status_code == 200 and r.json()["time_axis"] == "known_time", r.text
        (row,) = [g for g in r.json()["governments"] if g["org_code"] == ORG]
        assert row["cash"] - sum(v[0] for v in base.values()) == sum(v[0] for v in want_known.values())

        # the statement: JSON balances row by row and day to day; CSV says the same in Korean
        r = c.get(f"/v1/statements/{ORG}", params={"from": "2026-03-01", "to": "2026-03-07"}, headers=h)
        assert r.status_code == 200, r.text
        rows = r.json()["rows"]
        closing: dict[tuple[str, int], int] = {}
        for row in rows:
            moved = sum(
                row[f"receipts_{k}"] for k in ("local_tax", "non_tax", "grant", "subsidy", "bond", "other")
            )
            moved += (
                row["transfers_in"]
                + row["carried_in"]
                - row["payments"]
                - row["transfers_out"]
                - row["carried_out"]
            )
            assert row["opening_cash"] + moved + row["other_cash"] == row["closing_cash"]
            key = (row["account"], row["fiscal_year"])
            assert row["opening_cash"] == closing.get(key, 0)
            closing[key] = row["closing_cash"]
        assert {k: (v, 0) for k, v in closing.items() if k[0] == SEWER} == {
            k: v for k, v in _expected(raws, last).items() if k[0] == SEWER
        }
        assert sum(row["receipts_bond"] for row in rows) == 777
        # the same statement again: the same answer (kept while the figures do not move)
        again = c.get(f"/v1/statements/{ORG}", params={"from": "2026-03-01", "to": "2026-03-07"}, headers=h)
        assert again.json() == r.json() and again.headers["content-type"] == r.headers["content-type"]
        # ... and a new one when an event moves a figure (here: a late receipt on 5 March)
        later = event(
            f"h{stamp}-later", "receipt", 555, org=ORG, at="2026-03-05T08:00:00+09:00", category="bond"
        )
        _publish(stack, [later])
        raws.append(later)
        deadline = time.monotonic() + 30
        while (
            sum(
                x["receipts_bond"]
                for x in c.get(
                    f"/v1/statements/{ORG}", params={"from": "2026-03-01", "to": "2026-03-07"}, headers=h
                ).json()["rows"]
            )
            != 777 + 555
        ):
            assert time.monotonic() < deadline, "the kept statement was not replaced"
            time.sleep(0.3)
        last_moved = _expected(raws, last)
        assert last_moved[("general", 2026)][0] == _expected(raws[:-1], last)[("general", 2026)][0] + 555
        r = c.get(
            f"/v1/statements/{ORG}",
            params={"from": "2026-03-01", "to": "2026-03-07", "format": "csv"},
            headers=h,
        )
        assert r.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert table[0][:3] == ["일자", "회계", "회계명"] and len(table) == len(rows) + 1
        assert [int(x) for x in (table[-1][table[0].index("금일잔액")],)] == [rows[-1]["closing_cash"]]

        # the events behind the sewerage figure: they sum to it, paged by cursor
        lines: list[dict[str, Any]] = []
        params: dict[str, Any] = {"fiscal_year": 2026, "limit": 7}
        while True:
            r = c.get(f"/v1/positions/{ORG}/{SEWER}/events", params=params, headers=h)
            assert r.status_code == 200, r.text
            body = r.json()
            lines += body["lines"]
            if body["next"] is None:
                break
            assert 'rel="next"' in r.headers["link"]
            params["cursor"] = body["next"]
        want_cash, want_committed = _expected(raws, last)[(SEWER, 2026)]
        assert sum(x["cash"] for x in lines) == want_cash == lines[-1]["cash_after"]
        assert [x["occurred_at"] for x in lines] == sorted(x["occurred_at"] for x in lines)
        assert all(x["source"]["topic"].endswith(("revenue", "expenditure")) for x in lines)
        assert body["chain"]["head"] and len(body["chain"]["head"]) == 64
        # from an instant on: the day's events only
        since = "2026-03-04T00:00:00+09:00"
        r = c.get(
            f"/v1/positions/{ORG}/{SEWER}/events",
            params={"fiscal_year": 2026, "from": since, "as_of": "2026-03-04T23:59:59+09:00", "limit": 1000},
            headers=h,
        )
        day = r.json()["lines"]
        assert day and all(
            x["occurred_at"] >= "2026-03-03T15:00:00" and x["occurred_at"] < "2026-03-04T15:00:00"
            for x in day
        )
        assert len(day) == sum(
            1 for x in lines if "2026-03-03T15:00:00" <= x["occurred_at"] < "2026-03-04T15:00:00"
        )
        assert want_committed == 0
