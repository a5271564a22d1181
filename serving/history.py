"""History reads: positions as of an instant, daily statements, the events behind a figure.

The history is in the state of the worker that owns each government (``state/history.py``); the
API asks that worker on its web server (``agents/history_web.py``), found from the workers'
heartbeats in Redis (each lists its partitions and its web address). A government whose owner
is unknown, unreachable or still rebuilding answers 503 ``history_unavailable`` (Retry-After):
never a partial history. Instants are event time (``occurred_at``): a late event changes the
answer for the instants after its own. Why routed, not projected: docs/design.md.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
from collections import OrderedDict
from typing import Annotated, Any, Final, Literal

import httpx
import orjson
import redis.asyncio as aioredis
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from access.policy import Permission
from cashpos.calendar import date_day, day_date, korea_time, utc_stamp
from cashpos.names import RedisKeys
from cashpos.refdata import Government, governments
from serving.caching import rows_key
from serving.models import GovernmentTotals, ProvinceTotals, ScopeTotals
from serving.positions import CUSTODY, summarize
from serving.problems import Problem, problem_doc
from serving.security import require
from serving.staleness import Heartbeats
from serving.wire import ExactJSONResponse
from state.history import STATEMENT_COLUMNS
from streams.topics import partition_for

router = APIRouter()

MAX_STATEMENT_DAYS = 400
STATEMENT_CACHE = 256  # statements kept per API process (their figures' versions checked per read)
CSV = "text/csv"
# The statement's CSV headers, in Korean (the spreadsheet every finance office uses).
CSV_HEADERS: dict[str, str] = {
    "date": "일자",
    "account": "회계",
    "account_name": "회계명",
    "fiscal_year": "회계연도",
    "opening_cash": "전일잔액",
    "receipts_local_tax": "지방세 수입",
    "receipts_non_tax": "세외수입",
    "receipts_grant": "교부세 수입",
    "receipts_subsidy": "보조금 수입",
    "receipts_bond": "지방채 수입",
    "receipts_other": "기타 수입",
    "payments": "지출",
    "transfers_in": "전입",
    "transfers_out": "전출",
    "carried_in": "이월 전입",
    "carried_out": "이월 전출",
    "other_cash": "기타 현금 증감",
    "closing_cash": "금일잔액",
    "opening_committed": "전일 지출원인행위 잔액",
    "committed_opened": "지출원인행위",
    "committed_paid": "지출로 해소",
    "committed_cancelled": "취소",
    "committed_lapsed": "불용",
    "committed_carried_in": "이월 전입(지출원인행위)",
    "committed_carried_out": "이월 전출(지출원인행위)",
    "other_committed": "기타 지출원인행위 증감",
    "closing_committed": "금일 지출원인행위 잔액",
    "closing_available": "가용자금",
    "events": "건수",
}
BY_ACCOUNT, BY_GOVERNMENT = "account", "government"


class StatementRow(BaseModel):
    """One account's day: opening, every flow, closing (integer KRW; opening + flows = closing)."""

    date: dt.date
    account: str
    account_name: str
    fiscal_year: int
    opening_cash: int
    receipts_local_tax: int
    receipts_non_tax: int
    receipts_grant: int
    receipts_subsidy: int
    receipts_bond: int
    receipts_other: int
    payments: int
    transfers_in: int
    transfers_out: int
    carried_in: int = Field(description="cash carried from the previous fiscal year at its close")
    carried_out: int = Field(description="cash carried into the next fiscal year at this year's close")
    other_cash: int
    closing_cash: int
    opening_committed: int
    committed_opened: int
    committed_paid: int
    committed_cancelled: int
    committed_lapsed: int
    committed_carried_in: int
    committed_carried_out: int
    other_committed: int
    closing_committed: int
    closing_available: int
    events: int


class Statement(BaseModel):
    org_code: str
    name: str
    time_axis: Literal["event_time"]
    from_date: dt.date = Field(alias="from")
    to_date: dt.date = Field(alias="to")
    rows: list[StatementRow]


class GovernmentStatementRow(BaseModel):
    """The government's day, its accounts summed (of one fiscal year, or of every fiscal year
    open that day): opening, every flow, closing (integer KRW; opening + flows = closing)."""

    date: dt.date
    opening_cash: int
    receipts_local_tax: int
    receipts_non_tax: int
    receipts_grant: int
    receipts_subsidy: int
    receipts_bond: int
    receipts_other: int
    payments: int
    transfers_in: int = Field(description="between the government's own accounts too (gross, as per account)")
    transfers_out: int
    carried_in: int = Field(description="cash carried from the previous fiscal year at its close")
    carried_out: int = Field(description="cash carried into the next fiscal year at this year's close")
    other_cash: int
    closing_cash: int
    opening_committed: int
    committed_opened: int
    committed_paid: int
    committed_cancelled: int
    committed_lapsed: int
    committed_carried_in: int
    committed_carried_out: int
    other_committed: int
    closing_committed: int
    closing_available: int
    events: int


class GovernmentStatement(BaseModel):
    """``by=government``: one row per day, the sum of the account rows of that day."""

    org_code: str
    name: str
    time_axis: Literal["event_time"]
    by: Literal["government"]
    fiscal_year: int | None = Field(
        description="the fiscal year summed; null: every fiscal year open that day"
    )
    from_date: dt.date = Field(alias="from")
    to_date: dt.date = Field(alias="to")
    rows: list[GovernmentStatementRow]


class Source(BaseModel):
    topic: str
    partition: int
    offset: int
    recorded_at: str = Field(
        description="its record timestamp on the topic: when cashpos could first know it"
    )


class HistoryLine(BaseModel):
    """One event behind a figure, in event-time order."""

    event_id: str | None = Field(description="null for a lapse (the close's entry for a commitment)")
    side: Literal["revenue", "expenditure"]
    kind: str | None
    occurred_at: str
    cash: int = Field(description="its effect on this position's cash")
    committed: int
    cash_after: int = Field(description="the running balance after it, in this order")
    committed_after: int
    running_hash: str = Field(description="its side's hash-chain link after it (hex; docs/design.md)")
    commitment_id: str | None = None
    source: Source | None = None


class Chain(BaseModel):
    head: str
    revenue: str
    expenditure: str


class EventsBehind(BaseModel):
    org_code: str
    account: str
    fiscal_year: int
    as_of: str | None
    total: int
    lines: list[HistoryLine]
    next: str | None
    chain: Chain | None


class HistoryAccount(BaseModel):
    account: str
    name: str
    type: str
    fiscal_year: int
    cash: int
    committed: int
    available: int
    events: int = Field(description="events that built this figure")


EVENT_TIME: Final = "event_time"  # as_of: every event that had occurred by the instant
KNOWN_TIME: Final = "known_time"  # as_known_at: every event cashpos had received by the instant
TimeAxis = Literal["event_time", "known_time"]
AXIS_DOC: Final = (
    "event_time: as_of, the events that had occurred by the instant (a late event changes it); "
    "known_time: as_known_at, the events whose record was on their topic by the instant (what "
    "cashpos could show then; a later arrival never changes it)"
)


class PositionsAsOf(BaseModel):
    org_code: str
    name: str
    time_axis: TimeAxis = Field(description=AXIS_DOC)
    as_of: str | None = Field(description="the instant, on the event-time axis")
    as_known_at: str | None = Field(default=None, description="the instant, on the known-time axis")
    accounts: list[HistoryAccount]
    totals: dict[str, int]


class SummaryAsOf(BaseModel):
    """The caller's governments at an instant of either axis: per province and in all."""

    as_of: str | None
    as_known_at: str | None = None
    time_axis: TimeAxis = Field(description=AXIS_DOC)
    scope: Literal["national", "partial"]
    national: ScopeTotals | None = None
    total: ScopeTotals | None = None
    provinces: list[ProvinceTotals]
    governments: list[GovernmentTotals]


class Owners:
    """Which worker owns which partition, from their heartbeats (read at most every 0.5 s)."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, partitions: int) -> None:
        self.redis = redis
        self.keys = keys
        self.partitions = partitions
        self._at = 0.0
        self._by_partition: dict[int, str] = {}

    async def web_of(self, org: str) -> str | None:
        if time.monotonic() - self._at > 0.5:
            beats = await self.redis.hgetall(self.keys.freshness)
            hb = Heartbeats.read([orjson.loads(raw) for raw in beats.values()], int(time.time() * 1000))
            self._by_partition, self._at = dict(hb.web), time.monotonic()
        return self._by_partition.get(partition_for(org, self.partitions))


async def _web_of(request: Request, org: str) -> str:
    web = await _owners(request).web_of(org)
    if web is None:
        raise unavailable(f"no live worker owns {org}'s partition now")
    return web


async def ask(request: Request, org: str, path: str, params: dict[str, Any]) -> Any:
    """The owner's answer (JSON), or the 503 problem that says why there is none."""
    web = await _web_of(request, org)
    r = await _get(request, f"http://{web}/cashpos/history/{org}/{path}", params, f"the worker owning {org}")
    body = orjson.loads(r.content)
    if r.status_code == 503:
        raise unavailable(f"{org}: {body.get('detail')}")
    if r.status_code == 410:
        raise Problem("history_retired", str(body.get("detail")))
    if r.status_code != 200:
        raise Problem("invalid_request", str(body.get("detail")))
    return body


def instant_of(as_of: str | None, as_known_at: str | None) -> tuple[int, str]:
    """The instant asked and its axis (``EVENT_TIME`` or ``KNOWN_TIME``): one of the two only."""
    if as_of is not None and as_known_at is not None:
        raise Problem(
            "invalid_request",
            "as_of (event time) and as_known_at (known time) are two time axes: ask for one",
            field="as_known_at",
        )
    if as_known_at is not None:
        return instant_ms(as_known_at, "as_known_at"), KNOWN_TIME
    assert as_of is not None
    return instant_ms(as_of, "as_of"), EVENT_TIME


def _instant_fields(at: int, axis: str) -> dict[str, Any]:
    stamp = utc_stamp(at)
    return {
        "time_axis": axis,
        "as_of": stamp if axis == EVENT_TIME else None,
        "as_known_at": stamp if axis == KNOWN_TIME else None,
    }


def _owner_params(at: int, axis: str) -> dict[str, Any]:
    """The owner's query (agents/history_web.py): epoch ms, and the axis when not event time."""
    return {"as_of": at} if axis == EVENT_TIME else {"as_of": at, "axis": "known"}


async def summary_as_of(
    request: Request, scope: frozenset[str] | None, at: int, axis: str, fiscal_year: int | None
) -> Response:
    """``GET /v1/summary?as_of=|as_known_at=``: the caller's governments at an instant, per
    province and in all, from every worker that owns some of them (all must answer: never a
    partial sum)."""
    govs = [g for g in governments().values() if scope is None or g.org_code in scope]
    by_web: dict[str, list[str]] = {}
    for g in govs:
        by_web.setdefault(await _web_of(request, g.org_code), []).append(g.org_code)

    async def one(web: str, orgs: list[str]) -> dict[str, Any]:
        params = _owner_params(at, axis) | {"orgs": ",".join(orgs)}
        r = await _get(request, f"http://{web}/cashpos/history/many/positions", params, "a worker")
        body: dict[str, Any] = orjson.loads(r.content)
        if r.status_code == 410:
            raise Problem("history_retired", str(body.get("detail")))
        if r.status_code != 200 or body.get("missing"):
            raise unavailable(f"{len(body.get('missing') or orgs)} governments are moving between workers")
        positions: dict[str, Any] = body["positions"]
        return positions

    answers = await asyncio.gather(*(one(web, orgs) for web, orgs in by_web.items()))
    positions = {org: rows for a in answers for org, rows in a.items()}
    totals_of: dict[str, dict[str, int]] = {}
    for g in govs:
        kinds = {a.code: a.type for a in g.accounts}
        t = dict.fromkeys(("cash", "committed", "available", "restricted", "spendable"), 0)
        for p in positions[g.org_code]:
            if fiscal_year is not None and p["fiscal_year"] != fiscal_year:
                continue
            available = p["cash"] - p["committed"]
            t["cash"] += p["cash"]
            t["committed"] += p["committed"]
            t["available"] += available
            if kinds.get(p["account"]) == CUSTODY:
                t["restricted"] += p["cash"]
            else:
                t["spendable"] += available
        totals_of[g.org_code] = t
    body, _ = summarize(govs, totals_of, {}, scope)
    body |= _instant_fields(at, axis)
    return ExactJSONResponse(body)


RETIRED_DOC: Final = (
    "the fiscal year asked about is retired to its daily closings (reason history_retired): an "
    "instant inside one of its days, or the events behind its figures"
)


def at_instant_responses(live: str, at: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of a live read that also answers ``as_of`` / ``as_known_at``."""
    return {
        200: {
            "description": f"{live}; with as_of or as_known_at, {at} at that instant, from the "
            "history of the worker that owns each government"
        },
        304: {"description": "not modified: the figures are those of the ETag sent"},
        410: problem_doc(RETIRED_DOC),
        503: problem_doc(
            "with as_of or as_known_at: a government's history is not available now "
            "(reason history_unavailable)"
        ),
    }


def unavailable(detail: str) -> Problem:
    """The 503 of a history no caught-up owner answers for now."""
    return Problem("history_unavailable", detail, {"Retry-After": "2"})


def _owners(request: Request) -> Owners:
    st = request.app.state
    owners: Owners | None = getattr(st, "owners", None)
    if owners is None:
        owners = st.owners = Owners(st.redis, st.keys, st.settings.partitions)
    return owners


async def _get(request: Request, url: str, params: dict[str, Any], who: str) -> httpx.Response:
    try:
        return await _client(request).get(url, params=params)
    except httpx.HTTPError as exc:
        raise unavailable(f"{who} did not answer ({exc.__class__.__name__})") from None


def _client(request: Request) -> httpx.AsyncClient:
    st = request.app.state
    client: httpx.AsyncClient | None = getattr(st, "worker_client", None)
    if client is None:
        client = st.worker_client = httpx.AsyncClient(timeout=5.0)
    return client


def _gov(org_code: str) -> Government:
    g = governments().get(org_code)
    if g is None:
        raise Problem("not_found", f"unknown government {org_code}")
    return g


def instant_ms(text: str, name: str) -> int:
    """An instant given as RFC 3339 (a naive one is Korea time), as epoch ms."""
    try:
        return int(korea_time(text).timestamp() * 1000)
    except ValueError:
        raise Problem("invalid_request", f"{name}: {text!r} is not an RFC 3339 instant", field=name) from None


async def positions_as_of(
    request: Request, g: Government, at: int, axis: str, fiscal_year: int | None, account: str | None = None
) -> Response:
    """``GET /v1/positions/{org}[/{account}]?as_of=|as_known_at=``: every account (or one) as it
    stood at that instant of event time, or as cashpos knew it then."""
    body = await ask(request, g.org_code, "positions", _owner_params(at, axis))
    meta = {a.code: a for a in g.accounts}
    rows = []
    for p in body["positions"]:
        if fiscal_year is not None and p["fiscal_year"] != fiscal_year:
            continue
        if account is not None and p["account"] != account:
            continue
        a = meta.get(p["account"])
        rows.append(
            {
                "account": p["account"],
                "name": a.name if a else p["account"],
                "type": a.type if a else "",
                "fiscal_year": p["fiscal_year"],
                "cash": p["cash"],
                "committed": p["committed"],
                "available": p["cash"] - p["committed"],
                "events": p["events"],
            }
        )
    totals = {k: sum(r[k] for r in rows) for k in ("cash", "committed", "available")}
    return ExactJSONResponse(
        {
            "org_code": g.org_code,
            "name": g.name,
            **_instant_fields(at, axis),
            "accounts": rows,
            "totals": totals,
        }
    )


@router.get(
    "/v1/statements/{org_code}",
    summary="Daily statement: per day and account (or per day for the government, by=government), "
    "opening, receipts by category, payments, transfers, commitments, closing (JSON, or CSV with Korean headers)",
    response_model=Statement | GovernmentStatement,
    responses={
        200: {"content": {CSV: {"schema": {"type": "string"}}}, "description": "JSON, or CSV when asked"},
        503: problem_doc("the government's history is not available now (reason history_unavailable)"),
    },
    dependencies=[require(Permission.READ)],
)
async def get_statement(
    request: Request,
    org_code: str,
    from_: Annotated[dt.date, Query(alias="from", description="first day (Korean date)")],
    to: Annotated[dt.date, Query(description="last day (Korean date), at most 400 days after from")],
    account: Annotated[str | None, Query(description="one account only")] = None,
    format: Annotated[
        Literal["json", "csv"] | None, Query(description="csv: as text/csv (or Accept: text/csv)")
    ] = None,
    by: Annotated[
        Literal["account", "government"],
        Query(
            description="account: a row per day and account; government: a row per day, the accounts summed"
        ),
    ] = "account",
    fiscal_year: Annotated[
        int | None,
        Query(ge=1990, le=2200, description="only this fiscal year's accounts (default: every one)"),
    ] = None,
) -> Response:
    g = _gov(org_code)
    if to < from_ or (to - from_).days > MAX_STATEMENT_DAYS:
        raise Problem("invalid_request", f"to must be from..from+{MAX_STATEMENT_DAYS} days", field="to")
    if account is not None and account not in g.account_codes:
        raise Problem("not_found", f"{org_code} has no account {account}")
    if account is not None and by == BY_GOVERNMENT:
        raise Problem(
            "invalid_request", "by=government sums every account: ask without account", field="account"
        )
    csv_wanted = format == "csv" or (format is None and CSV in request.headers.get("accept", ""))
    # A statement changes only when one of the government's positions does (any applied event,
    # late ones included, moves a version): answers are kept per request and figures.
    live = await request.app.state.reader.government(org_code, None)
    key = (org_code, from_, to, account, csv_wanted, by, fiscal_year)
    figures = orjson.dumps(rows_key(live["accounts"]))
    cache = _statements(request)
    hit = cache.get(key)
    if hit is not None and hit[0] == figures:
        cache.move_to_end(key)
        return _again(hit[1])
    # One request to the owner per statement and figures: the reads that miss meanwhile (a live
    # stream moves the figures several times a second) wait for its answer, not ask again. The
    # request is a task of its own: a caller that goes away does not cancel the others' answer.
    flights = _statement_flights(request)
    flight = flights.get(key)
    if flight is None or flight[0] != figures:
        task = asyncio.create_task(
            _statement_from_owner(request, g, from_, to, account, by, fiscal_year, csv_wanted)
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # waited for or not
        flight = flights[key] = (figures, task)
    try:
        resp = await asyncio.shield(flight[1])
    finally:
        if flights.get(key) is flight and flight[1].done():
            del flights[key]  # answered (kept below) or failed (the next read asks again)
    cache[key] = (figures, resp)
    if len(cache) > STATEMENT_CACHE:
        cache.popitem(last=False)
    return _again(resp)


async def _statement_from_owner(
    request: Request,
    g: Government,
    from_: dt.date,
    to: dt.date,
    account: str | None,
    by: str,
    fiscal_year: int | None,
    csv_wanted: bool,
) -> Response:
    params: dict[str, Any] = {"from": date_day(from_), "to": date_day(to)}
    if account:
        params["account"] = account
    if by == BY_GOVERNMENT:
        params["by"] = by
    if fiscal_year is not None:
        params["fiscal_year"] = fiscal_year
    body = await ask(request, g.org_code, "statements", params)
    if by == BY_GOVERNMENT:
        return _government_statement_response(g, from_, to, fiscal_year, body["rows"], csv_wanted)
    return _statement_response(g, from_, to, body["rows"], csv_wanted)


def _statement_flights(request: Request) -> dict[tuple[Any, ...], tuple[bytes, asyncio.Task[Response]]]:
    st = request.app.state
    flights: dict[tuple[Any, ...], tuple[bytes, asyncio.Task[Response]]] | None = getattr(
        st, "statement_flights", None
    )
    if flights is None:
        flights = st.statement_flights = {}
    return flights


def _again(resp: Response) -> Response:
    """A new response of a kept one's body and headers (a response object is sent once)."""
    return Response(resp.body, status_code=resp.status_code, headers=dict(resp.headers))


def _statements(request: Request) -> OrderedDict[tuple[Any, ...], tuple[bytes, Response]]:
    st = request.app.state
    cache: OrderedDict[tuple[Any, ...], tuple[bytes, Response]] | None = getattr(st, "statements", None)
    if cache is None:
        cache = st.statements = OrderedDict()
    return cache


def _statement_response(
    g: Government, from_: dt.date, to: dt.date, raw_rows: list[dict[str, Any]], csv_wanted: bool
) -> Response:
    names = {a.code: a.name for a in g.accounts}
    rows = [
        {
            "date": day_date(r["day"]).isoformat(),
            "account": r["account"],
            "account_name": names.get(r["account"], ""),
            "fiscal_year": r["fiscal_year"],
            **{c: r[c] for c in STATEMENT_COLUMNS},
        }
        for r in raw_rows
    ]
    if csv_wanted:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow([CSV_HEADERS[k] for k in CSV_HEADERS])
        for r in rows:
            w.writerow([r[k] for k in CSV_HEADERS])
        filename = f"statement-{g.org_code}-{from_.isoformat()}-{to.isoformat()}.csv"
        # UTF-8 with a BOM: spreadsheets then read the Korean headers right
        return Response(
            ("\ufeff" + out.getvalue()).encode(),
            media_type=f"{CSV}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return ExactJSONResponse(
        {
            "org_code": g.org_code,
            "name": g.name,
            "time_axis": "event_time",
            "from": from_.isoformat(),
            "to": to.isoformat(),
            "rows": rows,
        }
    )


def _government_statement_response(
    g: Government,
    from_: dt.date,
    to: dt.date,
    fy: int | None,
    raw_rows: list[dict[str, Any]],
    csv_wanted: bool,
) -> Response:
    """``by=government``: the owner's rows (a Korean day and the summed columns) as dated rows."""
    rows = [{"date": day_date(r.pop("day")).isoformat(), **r} for r in raw_rows]
    if csv_wanted:
        out = io.StringIO()
        w = csv.writer(out)
        heads = ["date", *STATEMENT_COLUMNS]
        w.writerow([CSV_HEADERS[k] for k in heads])
        for r in rows:
            w.writerow([r[k] for k in heads])
        year = "" if fy is None else f"-{fy}"
        filename = f"statement-{g.org_code}-government{year}-{from_.isoformat()}-{to.isoformat()}.csv"
        return Response(
            ("\ufeff" + out.getvalue()).encode(),
            media_type=f"{CSV}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return ExactJSONResponse(
        {
            "org_code": g.org_code,
            "name": g.name,
            "time_axis": "event_time",
            "by": BY_GOVERNMENT,
            "fiscal_year": fy,
            "from": from_.isoformat(),
            "to": to.isoformat(),
            "rows": rows,
        }
    )


@router.get(
    "/v1/positions/{org_code}/{account}/events",
    summary="The events behind a figure, in event-time order, with running balance and running hash",
    response_model=EventsBehind,
    responses={
        410: problem_doc(RETIRED_DOC),
        503: problem_doc("the government's history is not available now (reason history_unavailable)"),
    },
    dependencies=[require(Permission.READ)],
)
async def get_events_behind(
    request: Request,
    org_code: str,
    account: str,
    fiscal_year: Annotated[int, Query(ge=1990, le=2200)],
    as_of: Annotated[str | None, Query(description="only events up to this instant (RFC 3339)")] = None,
    from_: Annotated[
        str | None,
        Query(alias="from", description="only events from this instant on (RFC 3339), e.g. 00:00 KST today"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    from serving import paging

    g = _gov(org_code)
    if account not in g.account_codes:
        raise Problem("not_found", f"{org_code} has no account {account}")
    at = instant_ms(as_of, "as_of") if as_of else None
    since = instant_ms(from_, "from") if from_ else None
    digest = paging.filters_digest(org=org_code, account=account, fy=fiscal_year, as_of=at, since=since)
    start = paging.decode(cursor, "events_behind", digest) or 0
    params: dict[str, Any] = {"start": start, "limit": limit}
    if at is not None:
        params["as_of"] = at
    if since is not None:
        params["from"] = since
    body = await ask(request, org_code, f"{account}/{fiscal_year}/events", params)
    lines = []
    for x in body["lines"]:
        x["occurred_at"] = utc_stamp(x.pop("occurred_ms"))
        if x.get("source") is not None:
            x["source"]["recorded_at"] = utc_stamp(x["source"].pop("recorded_ms"))
        lines.append(x)
    nxt = paging.encode("events_behind", body["next"], digest) if body["next"] is not None else None
    return ExactJSONResponse(
        {
            "org_code": org_code,
            "account": account,
            "fiscal_year": fiscal_year,
            "as_of": utc_stamp(at) if at is not None else None,
            "total": body["total"],
            "lines": lines,
            "next": nxt,
            "chain": body["chain"],
        },
        headers=paging.link_next(request, nxt),
    )
