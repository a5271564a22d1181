"""The cashpos HTTP API (FastAPI). Reads Redis only; OpenAPI at /docs.

Run: ``cashpos api`` (uvicorn on CASHPOS_API_HOST:CASHPOS_API_PORT, default 127.0.0.1:8000).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from access.audit import AuditLog
from access.policy import Permission, Principal, decide
from access.tokens import TokenStore
from cashpos.metrics import ApiMetrics
from cashpos.names import RedisKeys, Topics
from cashpos.refdata import Government, governments
from cashpos.settings import Settings, load
from serving import forecast, history, models, paging
from serving.alerts import router as alerts_router
from serving.caching import figures_etag, not_modified, rows_key, tagged
from serving.fastpath import FastReads, FastRoutes
from serving.federation import exposition
from serving.ingest import router as ingest_router
from serving.limits import RequestLimits
from serving.live import hub_for
from serving.live import router as live_router
from serving.observe import ObserveMiddleware
from serving.openapi import install as install_openapi
from serving.positions import NotReady, PositionReader
from serving.problems import Problem, install, problem_doc, problem_response
from serving.problems import router as problems_router
from serving.security import AuthMiddleware, TokenCache, require
from serving.session import router as session_router
from serving.staleness import Heartbeats
from serving.wire import ExactJSONResponse
from streams.cluster_check import Refused
from streams.topics import ensure_topics, partition_for

log = logging.getLogger("cashpos.api")
STATIC = Path(__file__).resolve().parent / "static"


def _gov_dict(g: Government, with_accounts: bool) -> dict[str, object]:
    d: dict[str, object] = {
        "org_code": g.org_code,
        "name": g.name,
        "level": g.level,
        "province_code": g.province_code,
        "province_name": g.province_name,
    }
    if g.note:
        d["note"] = g.note
    if with_accounts:
        d["accounts"] = [{"account": a.code, "name": a.name, "type": a.type} for a in g.accounts]
    return d


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load()
    keys = RedisKeys(settings.namespace)
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)  # the workers' join it at each scrape (serving/federation.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A blocking pool queues a burst of requests (thousands of dashboards reconnecting)
        # instead of failing them once 256 connections are busy.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            socket_timeout=2,
            socket_connect_timeout=2,
            max_connections=256,
            timeout=5,
        )
        r = aioredis.Redis(connection_pool=pool)
        try:
            await ensure_topics(settings)
        except Refused as exc:  # e.g. replication factor 1 on an external cluster: one line, EX_CONFIG
            log.critical(str(exc))
            raise SystemExit(78) from None
        producer = AIOKafkaProducer(**settings.kafka_client_args(), acks="all", linger_ms=2)
        await producer.start()
        app.state.redis = r
        app.state.producer = producer
        # The live hub (one Redis subscription) keeps every government in memory: it feeds the
        # dashboards' streams and answers position and summary reads without a Redis round trip.
        hub = await hub_for(app)
        app.state.reader = PositionReader(r, keys, hub)
        app.state.tokens = TokenStore(r, keys)
        app.state.audit = AuditLog(producer, app.state.topics.audit)
        # What exists now (modules, the app, its routes and models) lives as long as the
        # process: out of the collector's reach, a full collection scans only what came after
        # (with thousands of open streams each one stalls every request in the process).
        gc.collect()
        gc.freeze()
        yield
        await producer.stop()
        await r.aclose()

    app = FastAPI(
        title="cashpos",
        version="0.1.0",
        summary="Live cash positions of Korea's 243 local governments (integer KRW)",
        default_response_class=ExactJSONResponse,
        lifespan=lifespan,
        # Prometheus (/metrics) is the telemetry here; FastAPI's built-in OpenTelemetry hooks
        # would otherwise be consulted on every request (a few % of a read's cost).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keys = keys
    app.state.topics = Topics(settings.namespace)

    # Added first = inner: every request is counted, refused ones (401/403/413/429/431) included;
    # size limits come before authentication (an anonymous 64 MB body is never read).
    app.state.token_cache = TokenCache(settings.token_cache_seconds)  # shared with the live hub
    # Innermost: the plain hot reads answered without routing and dependency solving
    # (serving.fastpath); its handlers are set below, once the routes exist.
    fast = FastRoutes()
    app.add_middleware(FastReads, fast=fast)
    app.add_middleware(AuthMiddleware, cache=app.state.token_cache)
    app.add_middleware(RequestLimits, settings=settings)
    app.add_middleware(ObserveMiddleware, metrics=metrics)  # and Cache-Control on every read

    # Every error is a problem (RFC 9457, ``serving.problems``): HTTP errors, validation errors
    # and unexpected exceptions here; the middlewares' own refusals send theirs.
    install(app)
    retry = {"Retry-After": "1"}

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> Response:
        return problem_response(
            "not_ready",
            "serving copy is being rebuilt; retry shortly",
            retry,
            request.scope.get("root_path", ""),
            governments=exc.orgs[:20],
        )

    @app.exception_handler(aioredis.RedisError)
    async def redis_down(request: Request, exc: Exception) -> Response:
        return problem_response(
            "unavailable",
            f"serving store unavailable: {exc.__class__.__name__}",
            retry,
            request.scope.get("root_path", ""),
        )

    def gov_or_404(org_code: str) -> Government:
        # Out-of-scope codes never get here (``require`` answers the same 404 for them).
        g = governments().get(org_code)
        if g is None:
            raise HTTPException(404, f"unknown government {org_code}")
        return g

    beats_at = 0.0
    beats: dict[bytes | str, bytes | str] = {}  # worker id -> its last heartbeat (JSON)

    async def heartbeats(r: aioredis.Redis) -> Heartbeats:
        # Workers beat once a second; reading their heartbeats once per 0.5 s per process keeps
        # a Redis round trip off every request.
        nonlocal beats_at, beats
        if time.monotonic() - beats_at > 0.5:
            beats = await r.hgetall(keys.freshness)
            beats_at = time.monotonic()
        return Heartbeats.read([orjson.loads(v) for v in beats.values()], int(time.time() * 1000))

    async def processor_status(r: aioredis.Redis) -> dict[str, object]:
        hb = await heartbeats(r)
        now = int(time.time() * 1000)
        return {
            "workers": hb.workers,
            "heartbeat_age_seconds": round((now - hb.newest_ms) / 1000, 3) if hb.newest_ms else None,
            "stale": not hb.workers,
        }

    async def staleness(request: Request, orgs: list[str]) -> dict[str, object]:
        """Whether the figures of ``orgs`` are current (``serving.staleness``): the freshness
        stamp's stale, why, how far behind, and which governments."""
        hb = await heartbeats(request.app.state.redis)
        now = int(time.time() * 1000)
        n = settings.partitions
        why: dict[str, tuple[str, int | None]] = {}
        for org in orgs:
            reason, behind = hb.why_stale(partition_for(org, n))
            if reason is not None:
                why[org] = (reason, behind)
        first = next(iter(why.values()), (None, None))
        return {
            "stale": bool(why),
            "stale_reason": first[0],
            "records_behind": max((b for _, b in why.values() if b is not None), default=None),
            "stale_governments": sorted(why)[:20] if len(orgs) > 1 and why else None,
            "processor_heartbeat_age_seconds": round((now - hb.newest_ms) / 1000, 3)
            if hb.newest_ms
            else None,
        }

    def stale_etag(etag: str, status: dict[str, object]) -> str:
        """A stale answer is another representation: its ETag says so (no 304 across a change)."""
        return etag[:-1] + f'-{status["stale_reason"]}"' if status["stale"] else etag

    def with_status(body: dict[str, object], status: dict[str, object]) -> ExactJSONResponse:
        """Add the staleness to the freshness stamp. Returns the response itself: handing
        FastAPI a dict would run it through its generic encoder (most of a read's cost)."""
        fresh = body.get("freshness")
        if isinstance(fresh, dict):
            fresh.update({k: v for k, v in status.items() if v is not None or k != "stale_governments"})
        return ExactJSONResponse(body)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    @app.get(
        "/v1/governments",
        summary="The governments in the caller's scope, with their province (reference-data order)",
        response_model=models.GovernmentList,
    )
    async def list_governments(
        request: Request,
        p: Annotated[Principal, require(Permission.REFDATA)],
        limit: int = paging.limit_param(300, 1000, "governments"),
        cursor: str | None = paging.cursor_param(),
    ) -> ExactJSONResponse:
        # The default page holds all 243: the dashboard reads the list in one request.
        after = paging.decode(cursor, "governments")
        govs = governments()
        if after is not None and (not isinstance(after, str) or after not in govs):
            raise Problem("invalid_cursor", "cursor names no government", field="cursor")
        codes = list(govs)
        start = codes.index(after) + 1 if after is not None else 0
        page: list[Government] = []
        more = False
        for code in codes[start:]:
            if not p.covers(code):
                continue
            if len(page) == limit:
                more = True
                break
            page.append(govs[code])
        nxt = paging.encode("governments", page[-1].org_code) if more else None
        return ExactJSONResponse(
            {"governments": [_gov_dict(g, False) for g in page], "next": nxt},
            headers=paging.link_next(request, nxt),
        )

    @app.get(
        "/v1/governments/{org_code}",
        summary="One government with its chart of accounts",
        response_model=models.GovernmentDetail,
        dependencies=[require(Permission.REFDATA)],
    )
    async def get_government(org_code: str) -> ExactJSONResponse:
        return ExactJSONResponse(_gov_dict(gov_or_404(org_code), True))

    def fy_param() -> Any:
        return Query(None, description="only this fiscal year (default: every open and recent one)")

    def as_of_param() -> Any:
        return Query(
            None,
            description="the figures as they stood at this instant of event time (RFC 3339; naive: "
            "Korea time): every event that had occurred by then, late arrivals included; from the "
            "history of the worker that owns the government",
        )

    def as_known_at_param() -> Any:
        return Query(
            None,
            description="the figures as cashpos knew them at this instant (RFC 3339; naive: Korea "
            "time): every event whose record was on its topic by then, whatever its event time; an "
            "event arriving later never changes the answer. Not with as_of",
        )

    @app.get(
        "/v1/positions/{org_code}",
        summary="Every account's cash, committed and available",
        description="Conditional: a weak ETag over the positions' versions (serving/caching.py); "
        "If-None-Match with it answers 304.",
        # A union: FastAPI writes anyOf of the two. (A response_model plus a hand-written schema
        # would be merged into {$ref, anyOf}: both at once in JSON Schema, which no body is.)
        response_model=models.GovernmentPositions | history.PositionsAsOf,
        responses=history.at_instant_responses("the live positions", "the positions (PositionsAsOf)"),
        dependencies=[require(Permission.READ)],
    )
    async def get_positions(
        request: Request,
        org_code: str,
        fiscal_year: int | None = fy_param(),
        as_of: str | None = as_of_param(),
        as_known_at: str | None = as_known_at_param(),
    ) -> Response:
        g = gov_or_404(org_code)
        if as_of is not None or as_known_at is not None:
            at, axis = history.instant_of(as_of, as_known_at)
            return await history.positions_as_of(request, g, at, axis, fiscal_year)
        return await positions_response(request, org_code, fiscal_year)

    async def positions_response(request: Request, org_code: str, fiscal_year: int | None) -> Response:
        """The live positions of a known government (the route's and the fast path's)."""
        body = await request.app.state.reader.government(org_code, fiscal_year)
        accounts = body["accounts"]
        assert isinstance(accounts, list)
        status = await staleness(request, [org_code])
        etag = stale_etag(figures_etag("government", org_code, fiscal_year, rows_key(accounts)), status)
        return not_modified(request, etag) or tagged(with_status(body, status), etag)

    @app.get(
        "/v1/positions/{org_code}/{account}",
        summary="One account's position per fiscal year",
        description="Conditional: a weak ETag over the positions' versions (serving/caching.py); "
        "If-None-Match with it answers 304.",
        response_model=models.AccountPositions | history.PositionsAsOf,  # a union (see get_positions)
        responses=history.at_instant_responses("the live position", "the account (PositionsAsOf)"),
        dependencies=[require(Permission.READ)],
    )
    async def get_account(
        request: Request,
        org_code: str,
        account: str,
        fiscal_year: int | None = fy_param(),
        as_of: str | None = as_of_param(),
        as_known_at: str | None = as_known_at_param(),
    ) -> Response:
        g = gov_or_404(org_code)
        if account not in g.account_codes:
            raise HTTPException(404, f"{org_code} has no account {account}")
        if as_of is not None or as_known_at is not None:
            at, axis = history.instant_of(as_of, as_known_at)
            return await history.positions_as_of(request, g, at, axis, fiscal_year, account)
        body = await request.app.state.reader.government(org_code, fiscal_year)
        rows = [a for a in body["accounts"] if a["account"] == account]
        status = await staleness(request, [org_code])
        etag = stale_etag(figures_etag("account", org_code, account, fiscal_year, rows_key(rows)), status)
        unchanged = not_modified(request, etag)
        if unchanged is not None:
            return unchanged
        acc = next(a for a in g.accounts if a.code == account)
        resp = with_status(
            {
                "org_code": org_code,
                "name": g.name,
                "account": account,
                "account_name": acc.name,
                "type": acc.type,
                "as_of": body["as_of"],
                "freshness": body["freshness"],
                "fiscal_years": rows,
                "totals": {k: sum(r[k] for r in rows) for k in ("cash", "committed", "available")},
            },
            status,
        )
        return tagged(resp, etag)

    @app.get(
        "/v1/summary",
        summary="Totals and one row per province, over the caller's scope",
        description="Conditional: a weak ETag over the versions of the positions it adds and the "
        "caller's scope (serving/caching.py); If-None-Match with it answers 304.",
        response_model=models.Summary | history.SummaryAsOf,  # a union (see get_positions)
        responses=history.at_instant_responses("the live totals", "the totals (SummaryAsOf)"),
    )
    async def get_summary(
        request: Request,
        p: Annotated[Principal, require(Permission.READ)],
        fiscal_year: int | None = fy_param(),
        as_of: str | None = as_of_param(),
        as_known_at: str | None = as_known_at_param(),
    ) -> Response:
        if as_of is not None or as_known_at is not None:
            # from every worker's history: all must answer (503 history_unavailable otherwise)
            at, axis = history.instant_of(as_of, as_known_at)
            return await history.summary_as_of(request, p.orgs, at, axis, fiscal_year)
        return await summary_response(request, p.orgs, fiscal_year)

    async def summary_response(
        request: Request, orgs: frozenset[str] | None, fiscal_year: int | None
    ) -> Response:
        """The live summary over ``orgs`` (the route's and the fast path's)."""
        body, etag = await request.app.state.reader.summary_tagged(fiscal_year, orgs)
        status = await staleness(request, sorted(orgs) if orgs is not None else list(governments()))
        etag = stale_etag(etag, status)
        return not_modified(request, etag) or tagged(with_status(body, status), etag)

    def plain_reader(request: Request, org: str | None) -> Principal | None:
        """The caller, if ``require(Permission.READ)`` lets it read ``org`` without an audit
        record; else None (the ordinary path refuses or audits it)."""
        p: Principal | None = request.scope.get("state", {}).get("principal")
        if p is None or p.audited_reads or decide(p, Permission.READ, org).status != 200:
            return None
        return p

    async def fast_positions(request: Request, org_code: str) -> Response | None:
        if org_code not in governments() or plain_reader(request, org_code) is None:
            return None
        try:
            return await positions_response(request, org_code, None)
        except (NotReady, aioredis.RedisError):  # the ordinary path answers the problem
            return None

    async def fast_summary(request: Request, _: str) -> Response | None:
        p = plain_reader(request, None)
        if p is None:
            return None
        try:
            return await summary_response(request, p.orgs, None)
        except (NotReady, aioredis.RedisError):
            return None

    @app.get(
        "/v1/deadletters",
        summary="The most recent dead letters (the last 1000 kept) with their reasons, newest first",
        response_model=models.DeadLetterList,
        dependencies=[require(Permission.OPERATIONS)],
    )
    async def recent_deadletters(
        request: Request,
        limit: int = paging.limit_param(50, 500, "dead letters"),
        cursor: str | None = paging.cursor_param(),
    ) -> ExactJSONResponse:
        letters, nxt = await _deadletters_page(
            request.app.state.redis, keys.deadletters_recent, paging.decode(cursor, "deadletters"), limit
        )
        return ExactJSONResponse(
            {"deadletters": letters, "next": nxt}, headers=paging.link_next(request, nxt)
        )

    @app.get(
        "/v1/reconciliation",
        summary="The last reconciliation's result (cashpos reconcile)",
        response_model=models.ReconciliationReport,
        responses={404: problem_doc("no reconciliation has run yet (reason not_found)")},
        dependencies=[require(Permission.OPERATIONS)],
    )
    async def last_reconciliation(request: Request) -> ExactJSONResponse:
        raw = await request.app.state.redis.get(keys.reconciliation)
        if raw is None:
            raise Problem("not_found", "no reconciliation has run yet")
        return ExactJSONResponse(orjson.loads(raw))

    @app.get("/healthz", summary="The API process is alive", response_model=models.Health)
    async def healthz() -> ExactJSONResponse:
        return ExactJSONResponse({"status": "ok"})

    @app.get(
        "/readyz",
        summary="This API process can serve: Redis answers (the processors' health is a field, "
        "not a reason to leave the rotation: every replica would leave at once)",
        response_model=models.Readiness,
        responses={503: problem_doc("not ready (reason not_ready, ready false, processor)")},
    )
    async def readyz(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        try:
            await request.app.state.redis.ping()
            status = await processor_status(request.app.state.redis)
        except aioredis.RedisError as exc:
            detail = f"Redis does not answer: {exc.__class__.__name__}"
            return problem_response("not_ready", detail, retry, root, ready=False)
        metrics.processor_workers.set(int(str(status["workers"])))
        return ExactJSONResponse({"ready": True, "processor": status})

    # METRICS: the metrics role (what a Prometheus server holds), and national and admin
    @app.get("/metrics", include_in_schema=False, dependencies=[require(Permission.METRICS)])
    async def prometheus(request: Request) -> PlainTextResponse:
        body = await exposition(registry, request.app.state.redis, keys)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(session_router)
    app.include_router(ingest_router)
    app.include_router(alerts_router)
    app.include_router(live_router)
    app.include_router(problems_router)
    app.include_router(history.router)
    app.include_router(forecast.router)
    app.mount("/dashboard", StaticFiles(directory=STATIC, html=True), name="dashboard")
    fast.positions, fast.summary = fast_positions, fast_summary
    fast.routes = {
        r.path: r
        for r in app.routes
        if isinstance(r, APIRoute) and r.path in ("/v1/positions/{org_code}", "/v1/summary")
    }
    install_openapi(app)
    return app


def _letter_id(raw: bytes | str) -> str:
    """A dead letter's identity: its source record (``topic:partition:offset``)."""
    src = orjson.loads(raw).get("source") or {}
    return f"{src.get('topic')}:{src.get('partition')}:{src.get('offset')}"


async def _deadletters_page(
    r: aioredis.Redis, key: str, after: object, limit: int
) -> tuple[list[object], str | None]:
    """A page of the recent dead letters (a Redis list, newest first, capped) after the cursor's
    letter. New letters are pushed at the head and old ones trimmed at the tail, so the letter a
    cursor names is at its recorded index or further on; gone, it was trimmed, and so was
    everything after it: the page is empty."""
    start = 0
    if after is not None:
        if not (isinstance(after, list) and len(after) == 2 and isinstance(after[0], int)):
            raise Problem("invalid_cursor", "cursor holds no dead letter", field="cursor")
        at, ident = max(0, after[0]), after[1]
        while True:
            chunk: list[bytes | str] = await r.lrange(key, at, at + 255)
            if not chunk:
                return [], None
            found = next((i for i, raw in enumerate(chunk) if _letter_id(raw) == ident), None)
            if found is not None:
                start = at + found + 1
                break
            at += len(chunk)
    items: list[bytes | str] = await r.lrange(key, start, start + limit)  # one more: is there a next?
    page = items[:limit]
    nxt = None
    if len(items) > limit:
        nxt = paging.encode("deadletters", [start + limit - 1, _letter_id(page[-1])])
    return [orjson.loads(i) for i in page], nxt
