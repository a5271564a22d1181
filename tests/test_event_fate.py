"""The fate of every submitted event (issue #17): POST answers accepted / duplicate / conflict,
GET /v1/events/{org}/{id} follows it to applied or dead_lettered, the batch answers per line.

The first tests are pure (the verdicts a folded batch produces, the batch body's parsing); the
rest run against the real broker, Redis, worker and API.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from cashpos.names import FATE_HEADER, Topics
from serving.ingest import BatchBodyError, split_batch
from state.fate_projection import APPLIED, COPY, DEAD, PUT, batch_fates
from state.ledger import Ledger
from streams.contract import check_message
from tests.conftest import Stack
from tests.events import event

ORG = "3090000"  # 도봉구
OTHER = "6110000"  # 서울특별시


def _fold(ledger: Ledger, raws: list[bytes]) -> None:
    for offset, raw in enumerate(raws):
        ev = check_message(raw, ORG.encode(), None, 8192)
        assert not hasattr(ev, "reason"), ev
        ledger.update(ev, raw, ("t.expenditure" if b'"receipt"' not in raw else "t.revenue", 0, offset, 0))


def test_applied_verdicts_name_each_effect_and_the_version_it_produced() -> None:
    ledger = Ledger()
    _fold(
        ledger,
        [
            event("r1", "receipt", 1_000),
            event("r2", "receipt", 500),
            event("c1", "commitment", 300, commitment_id="C-1", due_date="2026-12-15"),
            event("p1", "payment", 120, commitment_id="C-1"),
            event("r1", "receipt", 1_000),  # a copy: dropped
        ],
    )
    changes = ledger.take_changes()
    batch = batch_fates(changes, ledger.positions, [], 1_700_000_000_000)
    writes = {name: (mode, orjson.loads(v)) for mode, name, v in batch.writes[ORG] if mode == PUT}
    assert writes["r:r1"] == (
        PUT,
        {"v": APPLIED, "effects": [["general", 2026, 1000, 0, 1]], "at": 1_700_000_000_000},
    )
    assert writes["r:r2"][1]["effects"] == [["general", 2026, 500, 0, 2]]
    assert writes["e:c1"][1]["effects"] == [["general", 2026, 0, 300, 3]]
    assert writes["e:p1"][1]["effects"] == [["general", 2026, -120, -120, 4]]
    # the version of the last effect is the position's
    assert ledger.positions[(ORG, "general", 2026)].version == 4
    copies = [(mode, name) for mode, name, _ in batch.writes[ORG] if mode == COPY]
    assert copies == [(COPY, "r:r1")]


def test_refused_records_are_addressed_by_key_and_event_id_and_conflicts_kept_apart() -> None:
    ledger = Ledger()
    dead = [
        ("unknown_commitment", "no C-9", "t.expenditure", 3, 17, ORG.encode(), event("p9", "payment", 5)),
        ("event_id_conflict", "other content", "t.revenue", 3, 18, ORG.encode(), event("r1", "receipt", 9)),
        ("not_json", "bad", "t.revenue", 3, 19, ORG.encode(), b"{nope"),  # no id: no fate
        ("unknown_government", "x", "t.revenue", 3, 20, b"9999999", event("z", "receipt", 1, org="9999999")),
    ]
    batch = batch_fates(ledger.take_changes(), ledger.positions, dead, 5)
    assert [(m, n) for m, n, _ in batch.writes[ORG]] == [(DEAD, "e:p9"), (PUT, "c:r:r1")]
    first = orjson.loads(batch.writes[ORG][0][2])
    assert (first["reason"], first["topic"], first["partition"], first["offset"]) == (
        "unknown_commitment",
        "t.expenditure",
        3,
        17,
    )
    assert "9999999" not in batch.writes


def test_only_the_records_that_ask_get_an_applied_verdict() -> None:
    ledger = Ledger()
    _fold(ledger, [event("r1", "receipt", 1_000), event("r2", "receipt", 5)])
    batch = batch_fates(ledger.take_changes(), ledger.positions, [], 1, asked={(ORG, "r:r2")})
    assert [name for _, name, _ in batch.writes[ORG]] == ["r:r2"]


def test_a_partition_being_refolded_writes_no_verdicts() -> None:
    ledger = Ledger()
    _fold(ledger, [event("r1", "receipt", 1_000)])
    assert not batch_fates(ledger.take_changes(), ledger.positions, [], 1, skip=[ORG])


def test_a_batch_body_is_ndjson_or_a_json_array_each_event_kept_byte_for_byte() -> None:
    a, b = event("a", "receipt", 1), b'{ "event_id" : "b",  "kind":"receipt"}'
    assert split_batch(a + b"\n\n" + b + b"\n", "application/x-ndjson", 10) == [a, b]
    assert split_batch(b"[" + a + b" ,\n " + b + b"]", "application/json", 10) == [a, b]
    for body, why in ((b"{}", "not a JSON array"), (b"[]", "no event"), (b"[1,2,3]", "at most 2")):
        with pytest.raises(BatchBodyError, match=why):
            split_batch(body, "application/json", 2)


# -- against the real stack --------------------------------------------------------------------


def _wait_fate(client: httpx.Client, url: str, headers: dict[str, str]) -> dict[str, Any]:
    r = client.get(url, params={"wait": "5s"}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.integration
def test_a_payment_claim_followed_to_its_fate(stack: Stack) -> None:
    """Submit, follow the Location, get applied with the position version; the same again is a
    duplicate, other content a conflict; a refusal only the ledger can make is told too."""
    src = stack.auth("source", [ORG])
    reader = stack.auth("viewer", [ORG])
    stamp = str(time.time_ns())
    with httpx.Client(base_url=stack.api, timeout=10) as c:
        r = c.post("/v1/events", content=event(f"rcv-{stamp}", "receipt", 7_000_000), headers=src)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == r.json()["location"] == f"/v1/events/{ORG}/rcv-{stamp}"
        claim = event(f"pay-{stamp}", "payment", 2_500_000)
        r = c.post("/v1/events", content=claim, headers=src)
        assert r.status_code == 202, r.text
        fate = _wait_fate(c, r.headers["location"], reader)
        assert fate["status"] == "applied", fate
        (effect,) = fate["effects"]
        assert (effect["account"], effect["fiscal_year"], effect["cash"], effect["committed"]) == (
            "general",
            2026,
            -2_500_000,
            0,
        )
        pos = c.get(f"/v1/positions/{ORG}/general", headers=reader).json()
        (row,) = [y for y in pos["fiscal_years"] if y["fiscal_year"] == 2026]
        assert row["version"] >= effect["version"] >= 2
        assert fate["submission"]["topic"].endswith("expenditure")

        # the same event again (other field order and spacing): a duplicate, not published
        again = orjson.dumps(dict(reversed(list(orjson.loads(claim).items()))), option=orjson.OPT_INDENT_2)
        r = c.post("/v1/events", content=again, headers=src)
        assert (r.status_code, r.json()["status"], r.json()["fate"]) == (200, "duplicate", "applied")
        # other content under the same id: 409, nothing published
        r = c.post("/v1/events", content=event(f"pay-{stamp}", "payment", 2_500_001), headers=src)
        assert r.status_code == 409 and r.json()["reason"] == "event_id_conflict", r.text
        assert r.headers["content-type"] == "application/problem+json"

        # a refusal only the processor can make: a payment against an unknown commitment
        r = c.post(
            "/v1/events", content=event(f"bad-{stamp}", "payment", 5, commitment_id="C-404"), headers=src
        )
        assert r.status_code == 202
        fate = _wait_fate(c, r.headers["location"], src)
        assert fate["status"] == "dead_lettered", fate
        dl = fate["dead_letter"]
        assert dl["reason"] == "unknown_commitment" and dl["topic"].endswith("expenditure")
        assert dl["offset"] == fate["submission"]["offset"]

        # unknown ids, other governments' events
        assert c.get(f"/v1/events/{ORG}/never-{stamp}", headers=reader).json()["reason"] == "unknown_event"
        other = stack.auth("viewer", [OTHER])
        assert c.get(f"/v1/events/{ORG}/pay-{stamp}", headers=other).status_code == 404


@pytest.mark.integration
def test_an_event_published_straight_to_kafka_has_a_fate_when_it_asks(stack: Stack) -> None:
    """A producer's record with the fate header gets a verdict like the API's; one without it
    only when it is refused (the dead letters are all recorded)."""
    stamp = str(time.time_ns())
    asked, silent = event(f"kafka-{stamp}", "receipt", 123), event(f"quiet-{stamp}", "receipt", 5)
    refused = event(f"refused-{stamp}", "payment", 5, commitment_id="C-404")
    topics = Topics(stack.settings.namespace)

    async def publish() -> None:
        producer = AIOKafkaProducer(**stack.settings.kafka_client_args(), acks="all")
        await producer.start()
        try:
            key = ORG.encode()
            await producer.send_and_wait(topics.revenue, asked, key=key, headers=[(FATE_HEADER, b"1")])
            await producer.send_and_wait(topics.revenue, silent, key=key)
            await producer.send_and_wait(topics.expenditure, refused, key=key)
        finally:
            await producer.stop()

    asyncio.run(publish())
    with httpx.Client(base_url=stack.api, timeout=10) as c:
        url = f"/v1/events/{ORG}/kafka-{stamp}"
        deadline = time.monotonic() + 15
        while (r := c.get(url, params={"wait": "2s"}, headers=stack.headers)).status_code == 404:
            assert time.monotonic() < deadline, r.text
        fate = r.json()
        assert fate["status"] == "applied" and fate["effects"][0]["cash"] == 123
        assert fate.get("submission") is None
        dead = _wait_fate(c, f"/v1/events/{ORG}/refused-{stamp}", stack.headers)
        assert dead["dead_letter"]["reason"] == "unknown_commitment"
        quiet = c.get(f"/v1/events/{ORG}/quiet-{stamp}", headers=stack.headers)
        assert (quiet.status_code, quiet.json()["reason"]) == (404, "unknown_event")
        # POSTed afterwards: the API has no record of its content; the processor drops the copy
        src = stack.auth("source", [ORG])
        r = c.post("/v1/events", content=asked, headers=src)
        assert r.status_code == 202
        assert _wait_fate(c, url, stack.headers)["status"] == "applied"


@pytest.mark.integration
def test_a_batch_answers_one_result_per_event_in_order(stack: Stack) -> None:
    src = stack.auth("source", [ORG])
    stamp = str(time.time_ns())
    events = [
        event(f"b1-{stamp}", "receipt", 10),
        event(f"b2-{stamp}", "receipt", 0),  # invalid amount
        event(f"b1-{stamp}", "receipt", 10),  # same as line 0
        event(f"b1-{stamp}", "receipt", 11),  # conflicts with line 0
        event(f"b3-{stamp}", "receipt", 10, org=OTHER, account="general"),  # outside the scope
    ]
    with httpx.Client(base_url=stack.api, timeout=10) as c:
        r = c.post(
            "/v1/events:batch",
            content=b"\n".join(events),
            headers={**src, "content-type": "application/x-ndjson"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        got = [(x["index"], x["status"], x["http_status"], x.get("reason")) for x in body["results"]]
        assert got == [
            (0, "accepted", 202, None),
            (1, "rejected", 422, "invalid_amount"),
            (2, "duplicate", 200, None),
            (3, "conflict", 409, "event_id_conflict"),
            (4, "rejected", 403, "forbidden_government"),
        ]
        assert (body["accepted"], body["duplicates"], body["refused"]) == (1, 1, 3)
        fate = _wait_fate(c, body["results"][0]["location"], src)
        assert fate["status"] == "applied"
        # the same events as a JSON array, NDJSON answer: all known now
        r = c.post(
            "/v1/events:batch",
            content=b"[" + b",".join(events[:1]) + b"]",
            headers={**src, "accept": "application/x-ndjson"},
        )
        lines = [msgspec.json.decode(x) for x in r.content.splitlines()]
        assert [x["status"] for x in lines] == ["duplicate"]
        r = c.post("/v1/events:batch", content=b"{}", headers=src)
        assert (r.status_code, r.json()["reason"]) == (422, "invalid_batch")
