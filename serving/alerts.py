"""Alerts over HTTP: ``GET /v1/alerts``, ``POST /v1/alerts/{id}/ack`` and ``/v1/thresholds``.

Reads Redis only (``state.alert_projection``); the workers raise and resolve alerts. An
acknowledgement is recorded in Redis (first one wins) and published to the alerts topic and the
live channel. Threshold overrides are stored in Redis (``keys.thresholds``) and picked up by the
workers within about a second, without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from access.policy import Permission
from alerts.config import AlertConfig, Override, Resolver, config_from_env
from alerts.model import RULES
from cashpos.refdata import governments
from serving import models, paging
from serving.caching import conditional
from serving.openapi import json_body
from serving.problems import Problem, field_of, problem_doc, problem_response
from serving.security import audit_write, check, principal, require
from serving.wire import ExactJSONResponse
from state.alert_projection import AlertProjection, decode_overrides
from state.projection import override_field

router = APIRouter(tags=["alerts"])

_STATES = {
    "open": ("raised", "acknowledged"),
    "raised": ("raised",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": ("raised", "acknowledged", "resolved"),
}
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def _listing_order(a: Mapping[str, Any]) -> tuple[int, int, int, str]:
    """Open before resolved, the most severe first, then the newest, then by id (a total order:
    the paging key). An alert is decoded JSON."""
    return (
        int(a.get("state") == "resolved"),
        _SEVERITY_RANK.get(str(a.get("severity")), 3),
        -int(a.get("resolved_ms") or a.get("raised_ms") or 0),
        str(a.get("id")),
    )


def _after(cursor: str | None, filters: str) -> tuple[int, int, int, str] | None:
    key = paging.decode(cursor, "alerts", filters)
    if key is None:
        return None
    if not (
        isinstance(key, list)
        and len(key) == 4
        and all(isinstance(k, int) for k in key[:3])
        and isinstance(key[3], str)
    ):
        raise Problem("invalid_cursor", "cursor holds no alert position", field="cursor")
    return (key[0], key[1], key[2], key[3])


class AckBody(msgspec.Struct, forbid_unknown_fields=True):
    # Who acknowledged is the signed-in principal; ``by`` (optional) is only a free-text note.
    by: Annotated[str, msgspec.Meta(max_length=128)] = ""


def _projection(request: Request) -> AlertProjection:
    st = request.app.state
    p: AlertProjection | None = getattr(st, "alert_projection", None)
    if p is None or p.redis is not st.redis:
        p = st.alert_projection = AlertProjection(st.redis, st.keys, _config(request).operational.recent_keep)
    return p


def _config(request: Request) -> AlertConfig:
    st = request.app.state
    cfg: AlertConfig | None = getattr(st, "alert_config", None)
    if cfg is None:
        cfg = st.alert_config = config_from_env()
    return cfg


def _unprocessable(detail: str, field: str | None = None) -> Problem:
    return Problem("invalid_request", detail, field=field or field_of(detail))


@router.get(
    "/v1/alerts",
    summary="Alerts in the caller's scope, newest first (default: the open ones)",
    description="Conditional: a strong ETag of the body; If-None-Match with it answers 304.",
    response_model=models.AlertList,
    responses={304: {"description": "not modified"}},
    dependencies=[require(Permission.READ)],
)
async def list_alerts(
    request: Request,
    org: str | None = Query(None, description="one government (7-digit code)"),
    province: str | None = Query(None, description="province (광역) code or name"),
    rule: str | None = Query(None, description="|".join(RULES)),
    state: str = Query(
        "open", description="open (raised or acknowledged) | raised | acknowledged | resolved | all"
    ),
    limit: int = paging.limit_param(500, 5000, "alerts"),
    cursor: str | None = paging.cursor_param(),
) -> Response:
    p = principal(request)  # permission and scope: checked by require()
    if org is not None and org not in governments():
        raise HTTPException(404, f"unknown government {org}")
    if rule is not None and rule not in RULES:
        raise _unprocessable(f"rule must be one of {', '.join(RULES)}", "rule")
    states = _STATES.get(state)
    if states is None:
        raise _unprocessable(f"state must be one of {', '.join(_STATES)}", "state")
    after = _after(cursor, paging.filters_digest(org=org, province=province, rule=rule, state=state))
    alerts = await _projection(request).list(open_="resolved" != state, resolved=state in ("resolved", "all"))
    out = [
        a
        for a in alerts
        if a.get("state") in states
        and (a.get("org_code") is None and p.orgs is None or p.covers(str(a.get("org_code"))))
        and (org is None or a.get("org_code") == org)
        and (rule is None or a.get("rule") == rule)
        and (province is None or province in (a.get("province_code"), a.get("province_name")))
    ]
    out.sort(key=_listing_order)
    start = 0
    if after is not None:
        start = next((i for i, a in enumerate(out) if _listing_order(a) > after), len(out))
    page = out[start : start + limit]
    nxt = None
    if start + limit < len(out):
        filters = paging.filters_digest(org=org, province=province, rule=rule, state=state)
        nxt = paging.encode("alerts", list(_listing_order(page[-1])), filters)
    body = {"alerts": page, "count": len(out), "next": nxt}
    return conditional(request, ExactJSONResponse(body, headers=paging.link_next(request, nxt)))


def _in_scope(request: Request, a: dict[str, object] | None, alert_id: str) -> dict[str, object]:
    """The alert, if the caller's scope covers its government; else the same 404 as no alert."""
    p = principal(request)
    org = a.get("org_code") if a is not None else None
    if a is None or not (p.covers(str(org)) if org else p.orgs is None):
        raise HTTPException(404, f"no alert {alert_id}")
    return a


@router.get(
    "/v1/alerts/{alert_id}",
    summary="One alert (open or recently resolved)",
    description="Conditional: a strong ETag of the body; If-None-Match with it answers 304.",
    response_model=models.Alert,
    responses={304: {"description": "not modified"}},
    dependencies=[require(Permission.READ)],
)
async def get_alert(request: Request, alert_id: str) -> Response:
    alert = _in_scope(request, await _projection(request).get(alert_id), alert_id)
    return conditional(request, ExactJSONResponse(alert))


@router.post(
    "/v1/alerts/{alert_id}/ack",
    summary='Acknowledge an open alert (as the signed-in principal; optional body {"by": note})',
    response_model=models.Alert,
    openapi_extra=json_body(
        AckBody, "optional: a note on who acknowledged (the principal is recorded anyway)", required=False
    ),
    responses={
        404: problem_doc("no such alert (reason not_found)"),
        409: problem_doc("already resolved (reason alert_resolved, with the alert)"),
    },
    dependencies=[require(Permission.ACK)],
)
async def acknowledge(request: Request, alert_id: str) -> Response:
    p = principal(request)
    try:
        body = msgspec.json.decode(await request.body() or b"{}", type=AckBody)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _unprocessable(str(exc)) from exc
    proj = _projection(request)
    _in_scope(request, await proj.get(alert_id), alert_id)
    by = p.name if not body.by or body.by == p.name else f"{p.name} ({body.by})"
    outcome, alert = await proj.acknowledge(alert_id, by, int(time.time() * 1000))
    if outcome == "unknown":
        raise HTTPException(404, f"no alert {alert_id}")
    if outcome == "resolved":
        raise Problem("alert_resolved", "the alert is already resolved", alert=alert)
    assert alert is not None
    if outcome == "acknowledged":
        alert["change"] = "acknowledged"
        msg = orjson.dumps(alert)
        st = request.app.state
        try:
            await st.producer.send_and_wait(
                st.topics.alerts, msg, key=str(alert.get("org_code") or "").encode()
            )
        except Exception as exc:  # noqa: BLE001  whatever failed the publish, the acknowledgement is undone
            await proj.unacknowledge(alert_id)
            detail = f"could not publish the acknowledgement: {exc.__class__.__name__}"
            return problem_response(
                "unavailable", detail, {"Retry-After": "1"}, request.scope.get("root_path", "")
            )
        await st.redis.publish(st.keys.alerts_channel, msg)
        await audit_write(
            request, p, "alert_ack", str(alert.get("org_code") or "") or None, {"alert": alert_id}
        )
        metrics = getattr(st, "metrics", None)
        if metrics is not None and hasattr(metrics, "alerts_acknowledged"):
            metrics.alerts_acknowledged.inc()
    return ExactJSONResponse(alert)


# -- thresholds -------------------------------------------------------------------------------


def _check_target(org_code: str, account: str) -> None:
    g = governments().get(org_code)
    if g is None:
        raise HTTPException(404, f"unknown government {org_code}")
    if account != "*" and account not in g.account_codes:
        raise HTTPException(404, f"{org_code} has no account {account}")


async def _thresholds_body(request: Request, org_code: str, account: str) -> dict[str, object]:
    st = request.app.state
    raw = await st.redis.hgetall(st.keys.thresholds)
    overrides = decode_overrides(raw)
    eff = Resolver(_config(request), overrides).get(org_code, account)
    ov = overrides.get((org_code, account))
    return {
        "org_code": org_code,
        "account": account,
        "effective": msgspec.to_builtins(eff),
        "override": msgspec.to_builtins(ov) if ov is not None else None,
    }


@router.get(
    "/v1/thresholds/{org_code}/{account}",
    summary="Effective alert thresholds of one account (account * = government-wide)",
    response_model=models.ThresholdsView,
    dependencies=[require(Permission.REFDATA)],
)
async def get_thresholds(request: Request, org_code: str, account: str) -> Response:
    # Readers see their governments' thresholds; admins set them.
    check(
        request, Permission.THRESHOLDS if principal(request).may(Permission.THRESHOLDS) else Permission.READ
    )
    _check_target(org_code, account)
    return ExactJSONResponse(await _thresholds_body(request, org_code, account))


@router.put(
    "/v1/thresholds/{org_code}/{account}",
    summary="Set (replace) the threshold override of one account; takes effect within seconds",
    response_model=models.ThresholdsView,
    openapi_extra=json_body(Override, "the override: only the members to set (floor_krw null: no floor)"),
    responses={
        422: problem_doc(
            "invalid: integers only, positive amounts and days (reason invalid_request, field the one at fault)"
        )
    },
    dependencies=[require(Permission.THRESHOLDS)],
)
async def put_thresholds(request: Request, org_code: str, account: str) -> Response:
    _check_target(org_code, account)
    try:
        ov = msgspec.json.decode(await request.body(), type=Override)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _unprocessable(str(exc)) from exc
    st = request.app.state
    await st.redis.hset(st.keys.thresholds, override_field(org_code, account), msgspec.json.encode(ov))
    await audit_write(
        request,
        principal(request),
        "thresholds_set",
        org_code,
        {"account": account, "override": msgspec.to_builtins(ov)},
    )
    return ExactJSONResponse(await _thresholds_body(request, org_code, account))


@router.delete(
    "/v1/thresholds/{org_code}/{account}",
    summary="Remove the override of one account",
    response_model=models.ThresholdsView,
    dependencies=[require(Permission.THRESHOLDS)],
)
async def delete_thresholds(request: Request, org_code: str, account: str) -> Response:
    _check_target(org_code, account)
    st = request.app.state
    await st.redis.hdel(st.keys.thresholds, override_field(org_code, account))
    await audit_write(request, principal(request), "thresholds_remove", org_code, {"account": account})
    return ExactJSONResponse(await _thresholds_body(request, org_code, account))
