"""The cash forecast over HTTP (issue #18): a government's or an account's 90-day forecast, every
government's in brief (the national view's sort by the days until a projected shortfall), and the
forecast against what happened.

Reads Redis only. The worker that owns a government writes its forecasts within a second of an
event that changes them, a first one at once (``agents/forecast.py``); their format is
``state/forecast_projection.py``'s (read here through ``decode``, ``cut`` and ``decode_accuracy``).

Nothing to forecast is not missing: an account without a position in an open fiscal year (so
without a known future flow either: each one is an event of its position) has no forecast in
Redis, and neither has a government without any; the API answers theirs, the engine's on empty
inputs (zero every day, nothing learned), from the government's today (none yet: today's Korean
date). A forecast that should be there and is not (the figures are served, the worker has not
written it yet, or Redis lost it) is 503 ``forecast_unavailable`` (Retry-After), never zero.

Conditional reads: a forecast's ETag is strong, over the stored value (which carries its version)
and the horizon asked: the body has no clock in it, so equal values serve equal bytes, and a value
rewritten with the same version (a floor changed by a threshold override) still changes it. The
two lists are tagged over their bytes (``serving.caching.conditional``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from access.policy import Permission, Principal
from cashpos.calendar import date_day, kst_day
from cashpos.names import RedisKeys
from cashpos.refdata import Government, governments
from serving import models
from serving.caching import conditional, not_modified, tagged
from serving.problems import Problem, problem_doc
from serving.security import require
from serving.wire import ExactJSONResponse
from state.forecast import HORIZON_DAYS, Inputs, combine, forecast, idle_cash
from state.forecast_projection import GOVERNMENT, body, body_bytes, cut, decode, decode_accuracy

router = APIRouter(tags=["forecast"])

_NOT_MODIFIED = {"description": "not modified: the forecast is the one of the ETag sent"}
_UNAVAILABLE = problem_doc(
    "it has figures but no forecast yet (reason forecast_unavailable; Retry-After), the serving copy "
    "is being rebuilt (reason not_ready), or a store does not answer (reason unavailable)"
)


def _keys(request: Request) -> RedisKeys:
    keys: RedisKeys = request.app.state.keys
    return keys


def _gov(org_code: str) -> Government:
    # Out-of-scope codes never get here (``require`` answers the same 404 for them).
    g = governments().get(org_code)
    if g is None:
        raise HTTPException(404, f"unknown government {org_code}")
    return g


def horizon_param() -> Any:
    return Query(
        HORIZON_DAYS,
        ge=1,
        le=HORIZON_DAYS,
        description="days from the government's today (the bands' length; crossings and flows after "
        "them are left out; idle_cash stays the whole horizon's)",
    )


def org_param() -> Any:
    return Query(None, description="only this government (7-digit code)")


def _orgs(p: Principal, org: str | None) -> list[str]:
    """The governments a list answers for: the caller's, or the one asked (``require`` has
    answered 404 already for one outside the scope)."""
    if org is not None:
        _gov(org)
        return [org]
    return [code for code in governments() if p.covers(code)]


def forecast_etag(raw: bytes, horizon_days: int) -> str:
    """Strong: over the stored value (its version and figures) and the horizon served."""
    h = hashlib.blake2b(raw, digest_size=12)
    h.update(b"/%d" % horizon_days)
    return f'"{h.hexdigest()}"'


async def _forecast(request: Request, org: str, field: str, what: str, horizon_days: int) -> Response:
    redis = request.app.state.redis
    key = _keys(request).forecast(org)
    raw: bytes | None = await redis.hget(key, field)
    if raw is None:
        doc = await _nothing_known(request, org, field, what, await redis.hget(key, GOVERNMENT))
        return conditional(request, ExactJSONResponse(cut(doc, horizon_days)))
    etag = forecast_etag(raw, horizon_days)
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    if horizon_days >= HORIZON_DAYS:  # the whole body, as the worker wrote it: no decoding
        return tagged(Response(body_bytes(raw), media_type="application/json"), etag)
    _version, doc = decode(raw)
    return tagged(ExactJSONResponse(cut(doc, horizon_days)), etag)


async def _nothing_known(
    request: Request, org: str, field: str, what: str, government: bytes | None
) -> dict[str, Any]:
    """The forecast of an account (``field``) or a government with no position in an open year:
    the engine's on empty inputs. 503 when it has one: its forecast is missing, not empty."""
    live = await request.app.state.reader.government(org)  # not_ready while being rebuilt
    if any(not a["final"] and (field == GOVERNMENT or a["account"] == field) for a in live["accounts"]):
        raise Problem("forecast_unavailable", f"no forecast of {what} yet", {"Retry-After": "1"})
    if government is not None:
        today = date_day(dt.date.fromisoformat(decode(government)[1]["today"]))
    else:
        today = kst_day(int(time.time() * 1000))
    f = forecast(Inputs(0, 0, account="" if field == GOVERNMENT else field), today, HORIZON_DAYS)
    if field == GOVERNMENT:
        f = combine([f])  # a government's: nothing learned of its own (as the worker's)
    return body(org, f, idle_cash(f, 0))


# Before /v1/forecast/{org_code}: the first route that matches a path answers it.
@router.get(
    "/v1/forecast/accuracy",
    summary="The forecast against what happened, per government in the caller's scope",
    description="Each day a government's clock leaves, its forecast of that day is kept; once a "
    "forecast day has passed, the error of the forecasts made 1, 7 and 30 days before it is "
    "added up (forecast minus the actual closing cash). Conditional: a strong ETag of the body.",
    response_model=models.ForecastAccuracyList,
    responses={304: {"description": "not modified"}},
)
async def forecast_accuracy(
    request: Request, p: Annotated[Principal, require(Permission.READ)], org: str | None = org_param()
) -> Response:
    raw: dict[bytes, bytes] = await request.app.state.redis.hgetall(_keys(request).forecast_accuracy)
    out = []
    for code in _orgs(p, org):
        v = raw.get(code.encode())
        if v is None:
            continue
        scores = decode_accuracy(v)
        if not scores:  # owned, no day scored yet
            continue
        out.append(
            {
                "org_code": code,
                "horizons": [{"days_ahead": h, **scores[h]} for h in sorted(scores)],
            }
        )
    return conditional(request, ExactJSONResponse({"governments": out}))


@router.get(
    "/v1/forecast",
    summary="Every government's forecast in brief, over the caller's scope",
    description="Per government: its today, the first day its expected cash falls below zero "
    "(the projected shortfall) and below its floor, with the days until then, the lowest expected "
    "cash and the idle cash; what the national view sorts by. Conditional: a strong ETag of the body.",
    response_model=models.ForecastSummaryList,
    responses={304: {"description": "not modified"}},
)
async def forecast_summaries(
    request: Request, p: Annotated[Principal, require(Permission.READ)], org: str | None = org_param()
) -> Response:
    raw: dict[bytes, bytes] = await request.app.state.redis.hgetall(_keys(request).forecast_summary)
    out = []
    for code in _orgs(p, org):
        v = raw.get(code.encode())
        if v is not None:
            out.append(decode(v)[1])
    return conditional(request, ExactJSONResponse({"governments": out}))


@router.get(
    "/v1/forecast/{org_code}",
    summary="A government's 90-day cash forecast (the sum of its accounts')",
    description="From the government's today (its clock: the Korean day of its latest event): the "
    "expected and confirmed bands of closing cash and available per day, the first day each falls "
    "below zero and below the floor with the flows that drive it, every flow, and the idle cash. "
    "Conditional: a strong ETag; If-None-Match with it answers 304.",
    response_model=models.Forecast,
    responses={304: _NOT_MODIFIED, 503: _UNAVAILABLE},
    dependencies=[require(Permission.READ)],
)
async def government_forecast(
    request: Request, org_code: str, horizon_days: int = horizon_param()
) -> Response:
    g = _gov(org_code)
    return await _forecast(request, g.org_code, GOVERNMENT, g.org_code, horizon_days)


@router.get(
    "/v1/forecast/{org_code}/{account}",
    summary="One account's 90-day cash forecast (every open fiscal year of it)",
    description="As the government's, for one account, with what was learned from its own history. "
    "Conditional: a strong ETag; If-None-Match with it answers 304.",
    response_model=models.Forecast,
    responses={304: _NOT_MODIFIED, 503: _UNAVAILABLE},
    dependencies=[require(Permission.READ)],
)
async def account_forecast(
    request: Request, org_code: str, account: str, horizon_days: int = horizon_param()
) -> Response:
    g = _gov(org_code)
    if account not in g.account_codes:
        raise HTTPException(404, f"{org_code} has no account {account}")
    return await _forecast(request, g.org_code, account, f"{org_code} {account}", horizon_days)
