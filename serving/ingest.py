"""POST /v1/events: the ingest gateway for systems without a Kafka client.

Validates against the contract (the stateless rules; duplicates, commitments and reversals are
the processor's to judge), then produces the body byte for byte with acks=all.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from access.audit import record
from access.policy import Permission
from serving.problems import contract_field, problem_doc, problem_response
from serving.security import audit_log, principal, require
from serving.wire import ExactJSONResponse
from streams.contract import Rejection, check_message

router = APIRouter()


@router.post(
    "/v1/events",
    status_code=202,
    summary="Submit one event (JSON object of the event contract)",
    responses={
        202: {"description": "accepted and durably published"},
        403: problem_doc(
            "the event's government is outside the token's scope (reason forbidden_government), "
            "or the role may not submit events (reason forbidden)"
        ),
        422: problem_doc(
            "refused by the event contract: reason is the contract's reason code (the dead "
            "letters'), field the event field at fault"
        ),
    },
    dependencies=[require(Permission.INGEST)],
)
async def post_event(request: Request) -> Response:
    state = request.app.state
    raw = await request.body()
    res = check_message(raw, None, None, state.settings.max_event_bytes)
    if isinstance(res, Rejection):
        state.metrics.ingest_rejected.labels(res.reason).inc()
        root = request.scope.get("root_path", "")
        return problem_response(
            res.reason, res.detail, None, root, field=contract_field(res.reason, res.detail)
        )
    p = principal(request)
    if not p.covers(res.org_code):
        state.metrics.forbidden.inc()
        detail = f"this token may not submit events for {res.org_code}"
        return problem_response(
            "forbidden_government", detail, None, request.scope.get("root_path", ""), field="org_code"
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
    return ExactJSONResponse(
        {"event_id": res.event_id, "topic": md.topic, "partition": md.partition, "offset": md.offset},
        status_code=202,
    )
