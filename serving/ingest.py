"""POST /v1/events: the ingest gateway for systems without a Kafka client.

Validates against the contract (the stateless rules; duplicates, commitments and reversals are
the processor's to judge), then produces the body byte for byte with acks=all.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import ORJSONResponse

from access.audit import record
from access.policy import Permission
from serving.security import audit_log, principal, require
from streams.contract import Rejection, check_message

router = APIRouter()


@router.post(
    "/v1/events",
    status_code=202,
    summary="Submit one event (JSON object of the event contract)",
    responses={
        202: {"description": "accepted and durably published"},
        403: {"description": "the event's government is outside the token's scope"},
        422: {"description": "refused: {reason, detail}"},
    },
    dependencies=[require(Permission.INGEST)],
)
async def post_event(request: Request) -> ORJSONResponse:
    state = request.app.state
    raw = await request.body()
    res = check_message(raw, None, None, state.settings.max_event_bytes)
    if isinstance(res, Rejection):
        state.metrics.ingest_rejected.labels(res.reason).inc()
        return ORJSONResponse({"reason": res.reason, "detail": res.detail}, status_code=422)
    p = principal(request)
    if not p.covers(res.org_code):
        state.metrics.forbidden.inc()
        return ORJSONResponse(
            {
                "reason": "forbidden_government",
                "detail": f"this token may not submit events for {res.org_code}",
            },
            status_code=403,
        )
    for topic in state.topics.for_record(res.kind):  # a year's close: both input topics
        md = await state.producer.send_and_wait(topic, raw, key=res.org_code.encode())
    state.metrics.ingested.inc()
    # The event itself is the durable record of the write; the audit entry says who sent it.
    entry = record(
        p,
        "event_submit",
        method="POST",
        path="/v1/events",
        org=res.org_code,
        detail={"event_id": res.event_id, "offset": md.offset, "partition": md.partition},
    )
    try:
        await audit_log(request).append(entry, wait=False)
    except Exception:  # noqa: BLE001  the event is written: an audit failure is counted, the answer stays 202
        state.metrics.audit_errors.inc()
    return ORJSONResponse(
        {"event_id": res.event_id, "topic": md.topic, "partition": md.partition, "offset": md.offset},
        status_code=202,
    )
