"""The poison records that once stopped the worker, through the real worker, broker and API.

Each of these put the worker in a crash loop (every restart replayed the record and died again)
or made the API answer 500: a 950 kB record (its dead letter did not fit the broker), instants
with no Korean date (``astimezone`` overflowed), sums past 64 bits (orjson and msgpack refused
them). Now each ends as a dead letter or an exact figure, the worker keeps running, and the valid
events around them are applied.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from cashpos.dlq import list_deadletters
from cashpos.names import Topics
from cashpos.refdata import governments
from streams.contract import MAX_SIDE_TOTAL
from streams.deadletter import KEEP_VALUE_BYTES
from streams.topics import partition_for
from tests.conftest import new_stack
from tests.events import event

pytestmark = pytest.mark.integration

ORG = "3090000"  # 도봉구
STEP = 10**15  # the contract's largest amount
FULL = MAX_SIDE_TOTAL // STEP  # receipts of STEP that fill one position's revenue share
ACCOUNTS = [a.code for a in governments()[ORG].accounts if a.type != "custody"][:10]
ASIDE = [a.code for a in governments()[ORG].accounts if a.type != "custody"][10]


def _records() -> tuple[list[tuple[str, bytes | None, bytes]], Counter[str]]:
    """(side, key, value) in order, and the dead-letter reasons they must produce."""
    key = ORG.encode()
    recs: list[tuple[str, bytes | None, bytes]] = []
    bad: Counter[str] = Counter()

    def poison(side: str, value: bytes, reason: str, k: bytes | None = key) -> None:
        recs.append((side, k, value))
        bad[reason] += 1

    recs.append(("revenue", key, event("before", "receipt", 7, account=ASIDE)))
    poison("revenue", event("big", "receipt", 1) + b" " * 950_000, "oversized")
    for i, at in enumerate(
        ["0001-01-01T00:00:00+10:00", "9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59Z"]
    ):
        poison("revenue", event(f"date{i}", "receipt", 1, at=at), "invalid_timestamp")
    poison("revenue", event("dup", "receipt", 1)[:-1] + b',"amount":999}', "duplicate_key")
    poison("revenue", event("colon", "receipt", 1, at="2026-11-20T10:00:00+0900"), "invalid_timestamp")
    poison("revenue", event("nokey", "receipt", 1), "missing_key", None)
    recs.append(("revenue", key, event("after", "receipt", 11, account=ASIDE)))
    for acc in ACCOUNTS:  # ten positions at the bound: the government's total passes 2^63
        recs += [("revenue", key, event(f"{acc}-{i}", "receipt", STEP, account=acc)) for i in range(FULL)]
    poison("revenue", event("one-more", "receipt", 1, account=ACCOUNTS[0]), "position_out_of_range")
    recs += [("expenditure", key, event(f"pay-{i}", "payment", STEP, account="custody")) for i in range(FULL)]
    poison("expenditure", event("pay-more", "payment", 1, account="custody"), "position_out_of_range")
    return recs, bad


@pytest.fixture(scope="module")
def poisoned(infra, tmp_path_factory):
    s = new_stack(infra, tmp_path_factory.mktemp("poison"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    recs, bad = _records()
    topics = Topics(s.namespace)

    async def produce() -> None:
        p = AIOKafkaProducer(
            bootstrap_servers=s.infra.bootstrap, acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
        )
        await p.start()
        try:
            part = partition_for(ORG, s.partitions)
            futs = [
                await p.send(
                    topics.revenue if side == "revenue" else topics.expenditure, value, key=k, partition=part
                )
                for side, k, value in recs
            ]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    asyncio.run(produce())
    yield s, recs, bad
    s.stop_all()


def _wait(pred, timeout: float = 90, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    return last


def test_the_worker_survives_every_poison_record_and_applies_the_rest(poisoned):
    s, _recs, bad = poisoned
    expected_cash = 7 + 11 + len(ACCOUNTS) * MAX_SIDE_TOTAL - MAX_SIDE_TOTAL

    def settled():
        r = httpx.get(f"{s.api}/v1/positions/{ORG}", headers=s.headers, timeout=10)
        return r if r.status_code == 200 and r.json()["totals"]["cash"] == expected_cash else None

    r = _wait(settled)
    assert r is not None, httpx.get(f"{s.api}/v1/positions/{ORG}", headers=s.headers, timeout=10).text
    assert s.procs["worker-w1"].poll() is None, s.log("worker-w1")[-3000:]
    body = r.json()
    # exact past 64 bits, as a JSON integer: the custody account's -10^18 is not spendable
    assert body["totals"]["spendable"] == len(ACCOUNTS) * MAX_SIDE_TOTAL + 18 > 2**63
    by_acc = {a["account"]: a for a in body["accounts"]}
    assert by_acc[ACCOUNTS[0]]["cash"] == MAX_SIDE_TOTAL
    assert by_acc[ASIDE]["cash"] == 18  # the events around the poison records
    assert by_acc["custody"]["cash"] == -MAX_SIDE_TOTAL

    summary = httpx.get(f"{s.api}/v1/summary", headers=s.headers, timeout=10)
    assert summary.status_code == 200 and summary.json()["national"]["cash"] == expected_cash

    letters = _wait(
        lambda: (ls := asyncio.run(list_deadletters(s.settings))) and len(ls) >= sum(bad.values()) and ls,
        timeout=30,
    )
    assert Counter(d.reason for d in letters) == bad
    big = next(d for d in letters if d.reason == "oversized")
    assert big.value_truncated and big.value_length > 950_000 and len(big.value()) == KEEP_VALUE_BYTES
    log = s.log("worker-w1")
    assert "OverflowError" not in log and "MessageSizeTooLarge" not in log and "Traceback" not in log


def test_the_api_refuses_the_same_bodies_with_the_reason_not_500(poisoned):
    s, _, _ = poisoned
    for body, reason in [
        (event("api-date", "receipt", 1, org=ORG, at="0001-01-01T00:00:00+10:00"), "invalid_timestamp"),
        (event("api-dup", "receipt", 1, org=ORG)[:-1] + b',"amount":999}', "duplicate_key"),
        (event("api-colon", "receipt", 1, org=ORG, at="2026-11-20T10:00:00+0900"), "invalid_timestamp"),
    ]:
        r = httpx.post(
            f"{s.api}/v1/events",
            content=body,
            timeout=10,
            headers={**s.source_headers, "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (r.status_code, r.text)
        assert r.json()["reason"] == reason
