"""GET /v1/events/{org_code}/{event_id}: the fate of a submitted event.

The processor records each event's verdict in Redis after its batch is written
(``state/fate_projection.py``, kept ``fate_retention_days``); the ingest gateway records each
submission it publishes. This module reads them: ``pending`` (published, no verdict yet),
``applied`` (its effects, each with the position version it produced), ``duplicate`` (a copy of
an event applied before the window: it changed nothing) or ``dead_lettered`` (reason, detail,
source coordinates). ``?wait=`` holds the answer until a verdict or the wait runs out.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from access.policy import Permission, Principal
from cashpos.calendar import utc_stamp
from cashpos.names import EXPENDITURE, REVENUE
from cashpos.refdata import governments
from serving.problems import Problem, problem_doc
from serving.security import check
from serving.wire import ExactJSONResponse
from state.fate_projection import APPLIED, DEAD_LETTERED, DUPLICATE, PENDING, Fate, FateStore
from state.ledger import side_scoped_id
from streams.contract import MAX_SIDE_TOTAL

router = APIRouter()

MAX_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05  # how often a waiting request looks again (one Redis round trip)
_WAIT = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")

Side = Literal["revenue", "expenditure"]
Money = Annotated[int, Field(ge=-MAX_SIDE_TOTAL, le=MAX_SIDE_TOTAL)]


class Effect(BaseModel):
    """What an applied event did to one position (integer KRW)."""

    account: str
    fiscal_year: int
    cash: Money = Field(description="change of the position's cash")
    committed: Money = Field(description="change of the position's open commitments")
    version: int = Field(ge=1, description="the position's version this effect produced")


class Coordinates(BaseModel):
    """Where a record was read (or published): its Kafka topic, partition and offset."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class Submission(Coordinates):
    """The API's publication of the event (only for events submitted through it)."""

    submitted_at: str = Field(description="RFC 3339 UTC, milliseconds")


class DeadLetterInfo(Coordinates):
    reason: str = Field(description="the contract's reason code (docs/events.md)")
    detail: str
    decided_at: str


class EventFate(BaseModel):
    """The fate of one event id of one government and side."""

    org_code: str
    event_id: str
    side: Side
    status: Literal["pending", "applied", "duplicate", "dead_lettered"]
    decided_at: str | None = Field(None, description="when the processor decided (null while pending)")
    effects: list[Effect] | None = Field(None, description="applied: its effects, in the order applied")
    dead_letter: DeadLetterInfo | None = Field(None, description="dead_lettered: why and where")
    copy_of_applied: Coordinates | None = Field(
        None, description="duplicate: the record that was dropped as a copy of an event applied before"
    )
    submission: Submission | None = Field(None, description="when it was submitted through this API")
    conflicting_copy: DeadLetterInfo | None = Field(
        None, description="a later copy with other content, refused as event_id_conflict"
    )


def fate_store(request: Request) -> FateStore:
    st = request.app.state
    store: FateStore | None = getattr(st, "fates", None)
    if store is None:
        store = st.fates = FateStore(st.redis, st.keys, st.settings.fate_retention_days)
    return store


def location(root_path: str, org: str, event_id: str, side: str | None = None) -> str:
    """The fate resource of an event (the ``Location`` of a submission)."""
    url = f"{root_path}/v1/events/{org}/{quote(event_id, safe='')}"
    return f"{url}?side={side}" if side else url


def _coordinates(d: dict[str, Any]) -> dict[str, Any]:
    return {"topic": d["topic"], "partition": d["partition"], "offset": d["offset"]}


def fate_body(org: str, event_id: str, side: str, fate: Fate) -> dict[str, Any]:
    """The API's body of a fate (``EventFate``)."""
    v = fate.verdict
    body: dict[str, Any] = {"org_code": org, "event_id": event_id, "side": side, "status": fate.status}
    body["decided_at"] = utc_stamp(v["at"]) if v is not None else None
    if v is not None and v["v"] == APPLIED:
        keys = ("account", "fiscal_year", "cash", "committed", "version")
        body["effects"] = [dict(zip(keys, e, strict=True)) for e in v["effects"]]
    if v is not None and v["v"] == DEAD_LETTERED:
        body["dead_letter"] = _dead(v)
    if v is not None and v["v"] == DUPLICATE:
        body["copy_of_applied"] = _coordinates(v)
    if fate.submitted is not None:
        body["submission"] = {**_coordinates(fate.submitted), "submitted_at": utc_stamp(fate.submitted["at"])}
    if fate.conflict is not None:
        body["conflicting_copy"] = _dead(fate.conflict)
    return body


def _dead(v: dict[str, Any]) -> dict[str, Any]:
    return {**_coordinates(v), "reason": v["reason"], "detail": v["detail"], "decided_at": utc_stamp(v["at"])}


def parse_wait(text: str | None) -> float:
    """``?wait=``: ``2s``, ``500ms`` or plain seconds, at most ``MAX_WAIT_SECONDS``."""
    if not text:
        return 0.0
    m = _WAIT.match(text)
    if m is None:
        raise Problem(
            "invalid_request", f"wait: {text!r} is not a duration such as 2s or 500ms", field="wait"
        )
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    if seconds > MAX_WAIT_SECONDS:
        raise Problem("invalid_request", f"wait: at most {MAX_WAIT_SECONDS:g}s", field="wait")
    return seconds


async def require_fate_reader(request: Request) -> Principal:
    """The submitter (``ingest``) or a reader (``read``) of the government may ask."""
    org = request.path_params.get("org_code")
    try:
        return check(request, Permission.INGEST, org)
    except Problem:
        return check(request, Permission.READ, org)


@router.get(
    "/v1/events/{org_code}/{event_id}",
    dependencies=[Depends(require_fate_reader)],
    summary="The fate of a submitted event: pending, applied, duplicate or dead-lettered",
    response_model=EventFate,
    responses={
        404: problem_doc(
            "no event with this id is known within the retention window (reason unknown_event), "
            "or the government is outside the token's scope (reason not_found)"
        ),
        409: problem_doc(
            "the id names an event on both sides (a receipt and an expenditure event): "
            "give side= (reason ambiguous_event_id)"
        ),
    },
)
async def get_event_fate(
    request: Request,
    org_code: str,
    event_id: str,
    side: Annotated[
        Side | None, Query(description="revenue (receipts) or expenditure; needed only if both exist")
    ] = None,
    wait: Annotated[
        str | None,
        Query(
            description="hold the answer until the event is decided or this long passes (e.g. 2s, "
            f"500ms; at most {MAX_WAIT_SECONDS:g}s); without it the answer is immediate"
        ),
    ] = None,
) -> ExactJSONResponse:
    if org_code not in governments():
        raise Problem("not_found", f"unknown government {org_code}")
    seconds = parse_wait(wait)
    sides = [side] if side else [REVENUE, EXPENDITURE]
    sids = [side_scoped_id(s, event_id) for s in sides]
    store = fate_store(request)
    deadline = time.monotonic() + seconds
    while True:
        fates = await store.read(org_code, sids, int(time.time() * 1000))
        known = [(s, fates[sid]) for s, sid in zip(sides, sids, strict=True) if fates[sid].status is not None]
        decided = known and all(f.status != PENDING for _, f in known)
        if decided or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_SECONDS)
    if not known:
        raise Problem(
            "unknown_event",
            f"{org_code} has no event {event_id!r} submitted or decided in the last "
            f"{store.retention_days} days",
        )
    if len(known) > 1:
        raise Problem(
            "ambiguous_event_id", f"{event_id!r} names a receipt and an expenditure event: give side="
        )
    s, fate = known[0]
    return ExactJSONResponse(fate_body(org_code, event_id, s, fate))
