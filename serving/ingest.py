"""POST /v1/events: the ingest gateway for systems without a Kafka client.

Validates against the contract (the stateless rules; duplicates, commitments and reversals are
the processor's to judge), then produces the body byte for byte with acks=all.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse

from streams.contract import Rejection, check_message, side_of

router = APIRouter()


@router.post(
    "/v1/events",
    status_code=202,
    summary="Submit one event (JSON object of the event contract)",
    responses={202: {"description": "accepted and durably published"},
               422: {"description": "refused: {reason, detail}"}},
)
async def post_event(request: Request) -> ORJSONResponse:
    state = request.app.state
    raw = await request.body()
    res = check_message(raw, None, None, state.settings.max_event_bytes)
    if isinstance(res, Rejection):
        state.metrics.ingest_rejected.labels(res.reason).inc()
        return ORJSONResponse({"reason": res.reason, "detail": res.detail}, status_code=422)
    md = await state.producer.send_and_wait(
        state.topics.revenue if side_of(res.kind) == "revenue" else state.topics.expenditure,
        raw, key=res.org_code.encode(),
    )
    state.metrics.ingested.inc()
    return ORJSONResponse(
        {"event_id": res.event_id, "topic": md.topic, "partition": md.partition, "offset": md.offset},
        status_code=202,
    )
