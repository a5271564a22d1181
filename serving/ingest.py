"""POST /v1/events and POST /v1/events:batch: the ingest gateway for systems without a Kafka client.

Each event is checked against the contract (the stateless rules; the stateful ones are the
processor's) and against what is known of its id (``state/fate_projection.py``):

* a new id: published byte for byte with acks=all, then the submission recorded; **202**
  ``accepted`` with the ``Location`` of its fate (``GET /v1/events/{org}/{id}``);
* an id submitted or decided before with the same content (the ledger's test: the decoded
  event, whatever its bytes' field order): not published again; **200** ``duplicate``;
* with other content: not published; **409** ``event_id_conflict`` (the processor would refuse it).

An id the API has no record of (published straight to Kafka, or older than the window) is
published, and the processor decides: its fate then says ``duplicate`` or shows the refused copy.
The record of a submission comes after its publication: a crash in between leaves no record, and
a retry publishes a copy that the processor drops as a duplicate; never a record of an event
that was not published.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from access.audit import record
from access.policy import Permission, Principal
from cashpos.names import FATE_HEADER, side_of_kind, side_of_topic
from serving.events import fate_store, location
from serving.events import router as fate_router
from serving.openapi import struct_schema
from serving.problems import contract_field, problem_body, problem_doc, problem_response
from serving.security import audit_log, principal, require
from serving.wire import ExactJSONResponse
from state.fate_projection import Fate, FateStore, content_digest, submission
from state.ledger import side_scoped_id
from streams.contract import CLOSE_KIND, SCHEMA_ID, Event, Rejection, YearClose, check_message

router = APIRouter()
router.include_router(fate_router)  # GET /v1/events/{org_code}/{event_id}: where a submission leads

NDJSON = "application/x-ndjson"
FATE = [(FATE_HEADER, b"1")]  # the processor records the fate of what carries it


class Accepted(BaseModel):
    """202: published (acks=all); its fate is at ``location``."""

    status: Literal["accepted"]
    org_code: str
    event_id: str
    location: str = Field(description="the event's fate: GET it (optionally with ?wait=2s)")
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class Duplicate(BaseModel):
    """200: this id was submitted or decided before with the same content; nothing was published."""

    status: Literal["duplicate"]
    org_code: str
    event_id: str
    location: str
    fate: Literal["pending", "applied", "duplicate", "dead_lettered"] = Field(
        description="the status of the earlier submission"
    )


class BatchItem(BaseModel):
    """One line of a batch, in the order sent."""

    index: int = Field(ge=0)
    status: Literal["accepted", "duplicate", "conflict", "rejected"]
    http_status: int = Field(description="what POST /v1/events would have answered for this event")
    org_code: str | None = None
    event_id: str | None = None
    location: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    reason: str | None = Field(None, description="rejected or conflict: the problem's reason code")
    detail: str | None = None
    field: str | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    refused: int
    results: list[BatchItem]


@dataclass
class _Item:
    """One event on its way through the gateway."""

    index: int
    raw: bytes
    status: str = ""
    http: int = 0
    event: Any = None
    sids: list[str] = field(default_factory=list)
    digest: str = ""
    problem: dict[str, Any] | None = None
    topics: list[str] = field(default_factory=list)
    coords: tuple[str, int, int] | None = None
    fate: str | None = None

    @property
    def org(self) -> str | None:
        return None if self.event is None else str(self.event.org_code)

    @property
    def event_id(self) -> str | None:
        return None if self.event is None else str(self.event.event_id)


class Gateway:
    """Decide and publish a list of events for one caller (one event, or a batch)."""

    def __init__(self, request: Request, p: Principal) -> None:
        self.request = request
        self.state = request.app.state
        self.p = p
        self.root = request.scope.get("root_path", "")

    @property
    def fates(self) -> FateStore:
        return fate_store(self.request)  # only once an event passed the stateless checks

    def _refuse(
        self, it: _Item, reason: str, detail: str, fld: str | None, status: int | None = None
    ) -> None:
        it.status = "conflict" if reason == "event_id_conflict" else "rejected"
        it.problem = problem_body(reason, detail, self.root, status, **({"field": fld} if fld else {}))
        it.http = int(str(it.problem["status"]))

    async def run(self, raws: list[bytes]) -> list[_Item]:
        items = [_Item(i, raw) for i, raw in enumerate(raws)]
        for it in items:
            self._check(it)
        if any(not it.status for it in items):
            await self._against_known([it for it in items if not it.status])
        await self._publish([it for it in items if it.status == "accepted"])
        return items

    def _check(self, it: _Item) -> None:
        st = self.state
        res = check_message(it.raw, None, None, st.settings.max_event_bytes)
        if isinstance(res, Rejection):
            st.metrics.ingest_rejected.labels(res.reason).inc()
            self._refuse(it, res.reason, res.detail, contract_field(res.reason, res.detail))
            return
        it.event = res
        if not self.p.covers(res.org_code):
            st.metrics.forbidden.inc()
            detail = f"this token may not submit events for {res.org_code}"
            self._refuse(it, "forbidden_government", detail, "org_code")
            return
        it.topics = list(st.topics.for_record(res.kind))  # a year's close: both input topics
        sides = [side_of_topic(t) for t in it.topics] if res.kind == CLOSE_KIND else [side_of_kind(res.kind)]
        it.sids = [side_scoped_id(s, res.event_id) for s in sides]
        it.digest = content_digest(res)

    async def _against_known(self, items: list[_Item]) -> None:
        """Duplicates and conflicts, against the fates' records and earlier lines of the batch."""
        by_org: dict[str, list[_Item]] = {}
        for it in items:
            by_org.setdefault(it.org or "", []).append(it)
        now = int(time.time() * 1000)
        for org, group in by_org.items():
            known = await self.fates.read(org, sorted({sid for it in group for sid in it.sids}), now)
            seen: dict[str, str] = {}  # sid -> digest, of this request's earlier lines
            for it in group:
                self._judge(it, [known[sid] for sid in it.sids], [seen.get(sid) for sid in it.sids])
                if it.status == "accepted":
                    seen.update(dict.fromkeys(it.sids, it.digest))

    def _judge(self, it: _Item, fates: list[Fate], earlier: list[str | None]) -> None:
        digests = {d for d in [f.digest for f in fates] + earlier if d is not None}
        if not digests:
            it.status, it.http = "accepted", 202
            return
        if digests != {it.digest}:
            detail = f"{it.event_id} was submitted before with other content"
            self._refuse(it, "event_id_conflict", detail, "event_id")
            return
        it.status, it.http = "duplicate", 200
        statuses = [f.status for f in fates if f.status is not None]
        it.fate = next((s for s in statuses if s != "pending"), "pending")

    async def _publish(self, items: list[_Item]) -> None:
        if not items:
            return
        producer = self.state.producer
        sends = []
        for it in items:
            for topic in it.topics:
                key = it.org.encode() if it.org else None
                sends.append((it, await producer.send(topic, it.raw, key=key, headers=FATE)))
        acks = await asyncio.gather(*(f for _, f in sends))
        now = int(time.time() * 1000)
        for (it, _), md in zip(sends, acks, strict=True):
            it.coords = (md.topic, md.partition, md.offset)
            await self.fates.submit(
                it.org or "",
                side_scoped_id(side_of_topic(md.topic), it.event_id or ""),
                submission(it.digest, md.topic, md.partition, md.offset, now),
                now,
            )
        self.state.metrics.ingested.inc(len(items))

    def body(self, it: _Item) -> dict[str, Any]:
        """The answer of POST /v1/events for one event (``Accepted`` or ``Duplicate``)."""
        assert it.org is not None and it.event_id is not None
        where = location(self.root, it.org, it.event_id)
        if it.status == "duplicate":
            return {
                "status": "duplicate",
                "org_code": it.org,
                "event_id": it.event_id,
                "location": where,
                "fate": it.fate,
            }
        assert it.coords is not None
        topic, part, offset = it.coords
        return {
            "status": "accepted",
            "org_code": it.org,
            "event_id": it.event_id,
            "location": where,
            "topic": topic,
            "partition": part,
            "offset": offset,
        }

    def line(self, it: _Item) -> dict[str, Any]:
        """One result of a batch (``BatchItem``)."""
        out: dict[str, Any] = {"index": it.index, "status": it.status, "http_status": it.http}
        if it.event is not None:
            out |= {"org_code": it.org, "event_id": it.event_id}
        if it.status in ("accepted", "duplicate"):
            out |= self.body(it)
            out["status"] = it.status
            out.pop("fate", None)
        elif it.problem is not None:
            out |= {
                k: it.problem.get(k) for k in ("reason", "detail", "field") if it.problem.get(k) is not None
            }
        return out

    async def audit(self, items: list[_Item], path: str) -> None:
        done = [it for it in items if it.status == "accepted"]
        if not done:
            return
        # The events are the durable record of the write; the audit entry says who sent them.
        orgs = sorted({it.org or "" for it in done})
        detail: dict[str, object] = {
            "events": [
                {"event_id": it.event_id, "partition": it.coords[1], "offset": it.coords[2]}
                for it in done[:100]
                if it.coords is not None
            ],
            "count": len(done),
        }
        entry = record(
            self.p,
            "event_submit",
            method="POST",
            path=path,
            org=orgs[0] if len(orgs) == 1 else None,
            detail=detail,
        )
        try:
            await audit_log(self.request).append(entry, wait=False)
        except Exception:  # noqa: BLE001  the events are written: an audit failure is counted, the answer stays
            self.state.metrics.audit_errors.inc()


# The event's types from the contract's structs; the full JSON Schema (per-kind rules, charts of
# accounts) is docs/event.schema.json, named by its $id in the descriptions.
_EVENT = struct_schema(Event, YearClose)
_EVENT_BODY = {
    "required": True,
    "description": "One event of the contract (docs/events.md; JSON Schema "
    f"{SCHEMA_ID}, docs/event.schema.json), as JSON; it is published byte for byte",
    "content": {"application/json": {"schema": _EVENT}},
}


@router.post(
    "/v1/events",
    status_code=202,
    summary="Submit one event; answers where to follow its fate",
    response_model=Accepted,
    responses={
        200: {"model": Duplicate, "description": "the same event (id and content) was submitted before"},
        202: {"model": Accepted, "description": "accepted and durably published; Location: its fate"},
        403: problem_doc(
            "the event's government is outside the token's scope (reason forbidden_government), "
            "or the role may not submit events (reason forbidden)"
        ),
        409: problem_doc("the event id was submitted before with other content (reason event_id_conflict)"),
        422: problem_doc(
            "refused by the event contract: reason is the contract's reason code (the dead "
            "letters'), field the event field at fault"
        ),
    },
    openapi_extra={"requestBody": _EVENT_BODY},
    dependencies=[require(Permission.INGEST)],
)
async def post_event(request: Request) -> Response:
    gw = Gateway(request, principal(request))
    (it,) = await gw.run([await request.body()])
    if it.problem is not None:
        return problem_response(
            it.problem["reason"], it.problem["detail"], None, gw.root, it.http, **_extra(it.problem)
        )
    await gw.audit([it], "/v1/events")
    body = gw.body(it)
    return ExactJSONResponse(body, status_code=it.http, headers={"Location": body["location"]})


def _extra(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail", "reason")}


class BatchBodyError(ValueError):
    pass


def split_batch(body: bytes, content_type: str, limit: int) -> list[bytes]:
    """The events of a batch body, each as its own bytes: NDJSON (one per non-empty line) or a
    JSON array (its elements' exact bytes, as msgspec.Raw keeps them)."""
    if content_type.split(";")[0].strip().lower() == NDJSON:
        raws = [line.strip() for line in body.split(b"\n")]
        raws = [r for r in raws if r]
    else:
        try:
            raws = [bytes(r) for r in msgspec.json.decode(body, type=list[msgspec.Raw])]
        except msgspec.DecodeError as exc:
            raise BatchBodyError(f"not a JSON array of events ({exc}); or send {NDJSON}") from None
    if not raws:
        raise BatchBodyError("the batch holds no event")
    if len(raws) > limit:
        raise BatchBodyError(f"{len(raws)} events: a batch holds at most {limit}")
    return raws


@router.post(
    "/v1/events:batch",
    summary="Submit up to CASHPOS_MAX_BATCH_EVENTS events; one result per event, in order",
    response_model=BatchResult,
    responses={
        200: {
            "model": BatchResult,
            "description": "one result per event, each as POST /v1/events would answer it "
            f"(as NDJSON, one result a line, when Accept is {NDJSON})",
        },
        403: problem_doc("the role may not submit events (reason forbidden)"),
        422: problem_doc(
            "the body is not a JSON array or NDJSON of events, or holds too many (reason invalid_batch)"
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A JSON array of events, or NDJSON (Content-Type application/x-ndjson): one event a line",
            "content": {
                "application/json": {"schema": {"type": "array", "items": _EVENT}},
                NDJSON: {"schema": {"type": "string", "description": "one event (JSON) per line"}},
            },
        }
    },
    dependencies=[require(Permission.INGEST)],
)
async def post_batch(request: Request) -> Response:
    gw = Gateway(request, principal(request))
    limit = gw.state.settings.max_batch_events
    try:
        raws = split_batch(await request.body(), request.headers.get("content-type", ""), limit)
    except BatchBodyError as exc:
        return problem_response("invalid_batch", str(exc), None, gw.root)
    items = await gw.run(raws)
    await gw.audit(items, "/v1/events:batch")
    lines = [gw.line(it) for it in items]
    if NDJSON in request.headers.get("accept", ""):
        payload = b"".join(msgspec.json.encode(x) + b"\n" for x in lines)
        return Response(payload, media_type=NDJSON)
    counts = {s: sum(1 for it in items if it.status == s) for s in ("accepted", "duplicate")}
    return ExactJSONResponse(
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "refused": len(items) - counts["accepted"] - counts["duplicate"],
            "results": lines,
        }
    )
