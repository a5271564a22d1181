"""The API's bodies as pydantic models: the OpenAPI document's schemas (``/docs``, generated
clients), never run on a read's hot path.

Reads answer ``serving.wire.ExactJSONResponse`` built from plain dicts (FastAPI's validation and
encoder would be most of a read's cost); the routes name these models (``response_model=``) so
the document is typed. That the bodies match them is tested against the running API
(tests/test_http_caching.py validates real bodies strictly: no unknown member, integers exact),
and the mirrors of msgspec structs against their fields (tests/test_openapi.py).

Money is integer KRW everywhere (``int``, JSON ``integer``, never ``number``); a total over many
governments may pass 2^53 (``serving.wire``). Optional members that a body leaves out rather than
sending ``null`` are marked so in their description.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, RootModel

from access.policy import Role

Stamp = str  # an instant as cashpos.calendar.utc_stamp (ISO 8601, UTC, milliseconds)
NEXT = Field(
    description="The cursor of the next page (pass it as ?cursor=), or null on the last page; "
    "the Link header (rel=next) carries the same page's URL"
)


# -- problems ------------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(description="the parameter at fault (dotted path)")
    in_: str = Field(alias="in", description="path | query | header | cookie | body")
    detail: str


class Problem(BaseModel):
    """An error (RFC 9457 problem details, ``application/problem+json``). Branch on ``reason``;
    ``GET type`` explains it. Members past ``field`` are sent by some problems only."""

    type: str = Field(description="/problems/{reason}: GET it for what the problem means")
    title: str
    status: int = Field(description="the HTTP status")
    detail: str = Field(description="for people; may change")
    reason: str = Field(description="stable code to branch on (the problem types: GET /problems/{reason})")
    instance: str | None = None
    field: str | None = Field(None, description="the request field at fault (left out: none)")
    errors: list[FieldError] | None = Field(
        None, description="invalid_request on parameters: every parameter at fault"
    )
    governments: list[str] | None = Field(
        None, description="not_ready: the governments being rebuilt (at most 20)"
    )
    alert: Alert | None = Field(None, description="alert_resolved: the alert as it is")
    limit: int | None = Field(None, description="too_many_streams: the streams allowed per token")
    ready: bool | None = Field(None, description="/readyz: false")
    processor: ProcessorStatus | None = Field(None, description="/readyz: the workers' liveness")

    model_config = {"extra": "allow", "populate_by_name": True}


class ProblemTypeInfo(BaseModel):
    """``GET /problems/{reason}``: what a problem type means and what to do about it."""

    type: str
    reason: str
    title: str
    status: int
    status_phrase: str
    description: str


# -- reference data ------------------------------------------------------------------------------


class ChartAccount(BaseModel):
    account: str = Field(description="account code (general, special_..., fund_..., custody)")
    name: str
    type: str = Field(description="general | special | fund | custody")


class GovernmentRef(BaseModel):
    org_code: str = Field(description="7-digit code of the local government")
    name: str
    level: str = Field(description="metropolitan | provincial | city | county | district")
    province_code: str
    province_name: str
    note: str | None = Field(None, description="left out when there is none")


class GovernmentDetail(GovernmentRef):
    accounts: list[ChartAccount]


class GovernmentList(BaseModel):
    governments: list[GovernmentRef] = Field(description="the governments in the caller's scope, in order")
    next: str | None = NEXT


# -- positions -----------------------------------------------------------------------------------


class Freshness(BaseModel):
    """How current the figures are: the newest event applied, the serving copy's last write, and
    whether the processor is alive."""

    last_event_at: Stamp | None = Field(description="occurred_at of the newest event applied (null: none)")
    last_write_at: Stamp | None = Field(description="when the processor last wrote these figures")
    write_age_seconds: float | None = Field(description="seconds since last_write_at, at answer time")
    stale: bool = Field(
        description="the figures may be behind: no live processor owns the government's partition, "
        "or its owner is catching up (stale_reason)"
    )
    stale_reason: Literal["no_processor", "no_owner", "catching_up"] | None = Field(
        None, description="why stale: no worker alive; none owns the partition now; the owner is catching up"
    )
    records_behind: int | None = Field(None, description="catching_up: records the owner has yet to fold")
    stale_governments: list[str] | None = Field(
        None, description="of several governments (a summary): the stale ones (at most 20)"
    )
    processor_heartbeat_age_seconds: float | None = Field(
        description="seconds since the newest worker heartbeat (null: none ever)"
    )


class MoneyTotals(BaseModel):
    cash: int = Field(description="KRW in the bank")
    committed: int = Field(description="KRW committed (contracts, orders) but not yet paid")
    available: int = Field(description="cash - committed")


class Totals(MoneyTotals):
    restricted: int = Field(description="custody cash (세입세출외현금): in the bank, not spendable")
    spendable: int = Field(description="available outside custody accounts")


class AccountPosition(MoneyTotals):
    """One account's position in one fiscal year."""

    account: str
    name: str
    type: str
    fiscal_year: int
    ordered: int = Field(
        0, description="KRW of open payment orders (지급명령), a part of committed (live figures only)"
    )
    version: int = Field(description="the position's version: increases with every change of it")
    last_event_at: Stamp | None
    final: bool = Field(description="its fiscal year is closed (carried forward, lapsed): no more events")


class FiscalYearTotals(Totals):
    fiscal_year: int
    final: bool = Field(description="every position of the year is final")


class GovernmentPositions(BaseModel):
    """Every account of one government; ``totals`` over all of them (while two fiscal years are
    open, the bank's cash: a close moves a year's cash into the next, never counted twice)."""

    org_code: str
    name: str
    province_code: str
    province_name: str
    as_of: Stamp | None = Field(description="the serving copy's last write")
    freshness: Freshness
    accounts: list[AccountPosition] = Field(description="newest fiscal year first, then chart order")
    totals: Totals
    fiscal_years: list[FiscalYearTotals] = Field(description="newest first")


class AccountPositions(BaseModel):
    """One account of one government, per fiscal year."""

    org_code: str
    name: str
    account: str
    account_name: str
    type: str
    as_of: Stamp | None
    freshness: Freshness
    fiscal_years: list[AccountPosition]
    totals: MoneyTotals


class ScopeTotals(Totals):
    governments: int = Field(description="how many governments the totals add")


class ProvinceTotals(ScopeTotals):
    province_code: str
    name: str


class GovernmentTotals(Totals):
    org_code: str
    name: str
    level: str
    province_code: str


class Summary(BaseModel):
    """Totals over the caller's scope: ``national`` for a caller who sees all 243 governments,
    else ``total`` (exactly one of the two is sent)."""

    as_of: Stamp | None
    scope: Literal["national", "partial"]
    national: ScopeTotals | None = Field(None, description="scope national only")
    total: ScopeTotals | None = Field(None, description="scope partial only")
    provinces: list[ProvinceTotals]
    governments: list[GovernmentTotals]
    freshness: Freshness


# -- operations ----------------------------------------------------------------------------------


class DeadLetterSource(BaseModel):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None


class DeadLetter(BaseModel):
    """A refused input (streams/deadletter.py): why, where from, its bytes."""

    reason: str = Field(description="the event contract's reason code (docs/events.md)")
    detail: str
    source: DeadLetterSource
    value_b64: str = Field(description="the original value (its first 16 KiB), base64")
    worker: str
    dead_lettered_ms: int
    value_length: int
    value_sha256: str
    value_truncated: bool
    key_length: int | None


class DeadLetterList(BaseModel):
    deadletters: list[DeadLetter] = Field(description="newest first")
    next: str | None = NEXT


class Difference(BaseModel):
    org_code: str
    account: str
    fiscal_year: int
    against: str = Field(description="redis | state")
    expected_cash: int
    expected_committed: int
    actual_cash: int | None
    actual_committed: int | None


class StateCheck(BaseModel):
    path: str
    mode: str = Field(description="owned | stored")
    partitions: list[int]
    positions_checked: int
    diff_krw: int
    behind: int | None


class ReconciliationReport(BaseModel):
    """The last ``cashpos reconcile`` (reconcile/run.py)."""

    finished_ms: int
    seconds: float
    records_in: int
    applied: int
    duplicates: int
    dead_letters: int
    positions_checked: int
    lagging: int
    unseeded: int
    diff_krw: int = Field(description="absolute KRW difference found (0: exact)")
    differences: list[Difference]
    state_behind: int
    states: list[StateCheck]
    mode: Literal["full", "incremental"] = Field(
        "full",
        description="full: a re-fold from offset 0 (cashpos reconcile); incremental: one interval of "
        "cashpos reconcile --continuous, from its checkpoint",
    )
    records_read: int = Field(0, description="records this run read (incremental: past its checkpoint)")
    checkpoint_bytes: int = Field(0, description="the size of the checkpoint it wrote (incremental)")


class Health(BaseModel):
    status: Literal["ok"]


class ProcessorStatus(BaseModel):
    workers: int = Field(description="workers with a heartbeat within the last 10 s")
    heartbeat_age_seconds: float | None
    stale: bool


class Readiness(BaseModel):
    ready: Literal[True]
    processor: ProcessorStatus


# -- access --------------------------------------------------------------------------------------


class Session(BaseModel):
    """Who the caller is: the token's role, permissions and the governments in scope."""

    token_id: str
    name: str
    role: Role
    permissions: list[str]
    all_governments: bool
    orgs: list[str] = Field(description="the governments in scope, in reference-data order")
    expires_ms: int | None = Field(None, description="POST only, when the token expires (left out: never)")


class SignedOut(BaseModel):
    signed_out: bool


class TokenInfo(BaseModel):
    """A token's record; never the token itself."""

    id: str
    name: str
    role: Role
    orgs: list[str]
    created_ms: int
    expires_ms: int = Field(description="0: never")
    rate_per_s: int
    revoked_ms: int | None = Field(None, description="left out: not revoked")
    status: Literal["active", "expired", "revoked"]


class CreatedToken(TokenInfo):
    token: str = Field(description="the token: shown this once only")


class TokenList(BaseModel):
    tokens: list[TokenInfo] = Field(description="oldest first")
    next: str | None = NEXT


# -- alerts --------------------------------------------------------------------------------------


class Driver(BaseModel):
    commitment_id: str = Field(
        description="the commitment; for another kind of flow its reference (order, schedule, learned pattern)"
    )
    open: int = Field(description="KRW it takes out")
    due_date: str | None
    kind: str | None = Field(
        None,
        description="the forecast flow's kind: order, commitment, receipt, recurring, baseline, new_commitments, pace",
    )


class Alert(BaseModel):
    """A funds or operational alert (docs/alerts.md). Members a rule does not use are left out."""

    id: str
    rule: str = Field(
        description="shortfall | below_floor | projected_shortfall | year_end | stale_data | processor_lag"
    )
    severity: str = Field(description="critical | warning | info")
    state: Literal["raised", "acknowledged", "resolved"]
    rev: int
    seq: int
    org_code: str = Field(description="empty for operational alerts (no government)")
    name: str | None = None
    province_code: str | None = None
    province_name: str | None = None
    account: str | None = None
    fiscal_year: int | None = None
    fiscal_years: list[int] | None = None
    raised_ms: int | None = None
    raised_at: Stamp
    opened_at: Stamp
    raised_event: str | None = None
    updated_ms: int | None = None
    resolved_ms: int | None = None
    resolved_at: Stamp | None = None
    resolved_event: str | None = None
    resolution: str | None = None
    cash: int | None = None
    committed: int | None = None
    available: int | None = None
    floor: int | None = None
    threshold: int | None = None
    resolve_at: int | None = None
    projected_date: str | None = None
    projected_cash: int | None = None
    trend_per_day: int | None = None
    drivers: list[Driver] | None = None
    stage_days: int | None = None
    open_commitments: int | None = None
    open_amount: int | None = None
    minutes: int | None = None
    lag_records: int | None = None
    worker: str | None = None
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    acknowledged_at: Stamp | None = None
    message: str | None = None
    change: str | None = Field(
        None, description="the last change: raised | updated | resolved | acknowledged"
    )


class AlertList(BaseModel):
    alerts: list[Alert] = Field(description="open before resolved, the most severe first, then the newest")
    count: int = Field(description="how many alerts match, over all pages")
    next: str | None = NEXT


class ThresholdSettings(BaseModel):
    """The effective thresholds of one (government, account) (alerts/config.py ``Thresholds``)."""

    floor_krw: int | None
    floor_months: int
    outflow_days: int
    min_history_days: int
    margin_krw: int
    margin_pct: int
    horizon_days: int
    trend: bool
    projected_against_floor: bool
    year_end_days: list[int]
    stale_minutes: int
    enabled: bool


class ThresholdOverride(BaseModel):
    """The stored override (alerts/config.py ``Override``): only the members it sets."""

    floor_krw: int | None = None
    floor_months: int | None = None
    outflow_days: int | None = None
    min_history_days: int | None = None
    margin_krw: int | None = None
    margin_pct: int | None = None
    horizon_days: int | None = None
    trend: bool | None = None
    projected_against_floor: bool | None = None
    year_end_days: list[int] | None = None
    stale_minutes: int | None = None
    enabled: bool | None = None


class ThresholdsView(BaseModel):
    org_code: str
    account: str = Field(description="an account code, or * (government-wide)")
    effective: ThresholdSettings
    override: ThresholdOverride | None = Field(description="null: none set through the API")


# -- the forecast (state/forecast.py; served by serving/forecast.py) ------------------------------

IsoDate = str  # a Korean calendar date, YYYY-MM-DD


class ForecastFlow(BaseModel):
    """One flow behind the forecast: on ``date``, ``cash`` and ``committed`` change by these
    amounts (``available`` by ``cash - committed``)."""

    date: IsoDate
    cash: int
    committed: int
    available: int
    kind: str = Field(
        description="order (지급명령, on its pay date) | commitment (the open part not ordered, on its due "
        "date; without one, 31 December of its fiscal year) | receipt (세입 예정, on its expected date) | "
        "recurring | baseline | new_commitments | pace (learned from the account's own history)"
    )
    certainty: str = Field(description="confirmed | estimated | learned")
    ref: str = Field(
        description="the order's, commitment's or schedule's id; for a learned flow what it was learned as"
    )
    account: str | None = Field(
        description="its account (null: a government's learned flows summed over its accounts)"
    )


class ForecastBand(BaseModel):
    """Projected closing figures, one per day from ``today`` (``horizon_days`` of them)."""

    cash: list[int]
    available: list[int]


class ForecastBands(BaseModel):
    confirmed: ForecastBand = Field(description="the position and the confirmed flows only")
    expected: ForecastBand = Field(description="every flow: also estimated receipts and learned flows")


class ForecastCrossing(BaseModel):
    """The first day the expected figure is below ``threshold``, its value then, and the flows
    on or before that day that lower it most (at most 5, largest first)."""

    date: IsoDate
    days: int = Field(description="days from today")
    value: int
    threshold: int
    drivers: list[ForecastFlow]


class ForecastCrossings(BaseModel):
    cash_below_zero: ForecastCrossing | None
    cash_below_floor: ForecastCrossing | None = Field(description="null also without a floor")
    available_below_zero: ForecastCrossing | None
    available_below_floor: ForecastCrossing | None = Field(description="null also without a floor")


class IdleTerm(BaseModel):
    term_days: int
    amount: int = Field(description="KRW above the floor on every one of the first term_days days")


class IdleCash(BaseModel):
    """Cash the forecast says is not needed over the whole (90-day) horizon, whatever
    ``horizon_days`` was asked: information, with its assumptions (state/forecast.py idle_cash)."""

    floor: int
    amount: int = Field(
        description="the lowest expected closing cash over the horizon less the floor, at least 0"
    )
    days: int = Field(description="days from today on which some cash stays above the floor")
    ladder: list[IdleTerm]


class RecurringFlow(BaseModel):
    series: str = Field(description="in | out")
    day_of_month: int = Field(description="31: the month's last business day")
    amount: int
    ref: str


class LearnedFlows(BaseModel):
    observed_days: int = Field(
        description="days of the account's history learned from (fewer than 7: nothing)"
    )
    recurring: list[RecurringFlow]


class Forecast(BaseModel):
    """A government's (``account`` null: the sum of its accounts) or an account's cash forecast
    from its ``today``: the government's clock, the Korean day of its latest event."""

    org_code: str
    account: str | None
    today: IsoDate
    horizon_days: int
    position: MoneyTotals = Field(description="the position now (every open fiscal year)")
    floor: int | None = Field(description="the floor the alert rules use (a government: its accounts' sum)")
    bands: ForecastBands
    crossings: ForecastCrossings
    flows: list[ForecastFlow] = Field(
        description="every flow within the horizon, by date (a government's learned flows summed per day)"
    )
    idle_cash: IdleCash | None
    learned: LearnedFlows | None = Field(description="an account only")


class ForecastMark(BaseModel):
    date: IsoDate
    days: int = Field(description="days from the government's today")
    value: int = Field(description="the expected closing cash that day")


class ForecastSummary(BaseModel):
    """One government's forecast in brief (its whole forecast: GET /v1/forecast/{org_code})."""

    org_code: str
    today: IsoDate
    horizon_days: int
    cash: int
    available: int
    floor: int | None
    cash_below_zero: ForecastMark | None = Field(
        description="the projected shortfall: null, none within the horizon"
    )
    cash_below_floor: ForecastMark | None
    lowest_cash: ForecastMark = Field(description="the lowest expected closing cash (its first day)")
    idle_cash: int | None


class ForecastSummaryList(BaseModel):
    governments: list[ForecastSummary] = Field(
        description="the caller's governments that have a forecast, in reference-data order"
    )


class HorizonAccuracy(BaseModel):
    days_ahead: int = Field(description="how far ahead the forecast was made (1, 7, 30)")
    days: int = Field(description="days scored")
    mean_abs_error: int = Field(description="KRW, floored")
    mean_error: int = Field(
        description="forecast minus actual closing cash, KRW, floored (positive: too high)"
    )


class GovernmentAccuracy(BaseModel):
    org_code: str
    horizons: list[HorizonAccuracy]


class ForecastAccuracyList(BaseModel):
    governments: list[GovernmentAccuracy] = Field(
        description="the caller's governments with a scored day, in reference-data order"
    )


# -- the live stream -----------------------------------------------------------------------------


class StreamEvent(BaseModel):
    """One server-sent event of ``/v1/stream`` (text/event-stream: ``id:``, ``event:``, ``data:``
    lines). ``data`` is JSON: a positions/snapshot frame, an alert, a heartbeat or the closing
    reason (serving/live.py)."""

    id: str = Field(description="{seq}-{ms}")
    event: Literal["positions", "snapshot", "alerts", "heartbeat", "closed"]
    data: str = Field(
        description="JSON (one line): StreamData, by event: positions and snapshot a "
        "PositionsFrame, alerts an Alert, heartbeat a Heartbeat, closed a Closed",
        json_schema_extra={
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/StreamData"},
        },
    )
    retry: int | None = Field(None, description="sent once, first: reconnect delay in ms")


class CompactGovernment(BaseModel):
    org_code: str
    as_of: Stamp | None
    last_event_at: Stamp | None
    totals: Totals


class StreamGovernment(CompactGovernment):
    """With ``?org=``: the full body (the /v1/positions/{org} shape, without freshness)."""

    name: str | None = None
    province_code: str | None = None
    province_name: str | None = None
    accounts: list[AccountPosition] | None = None
    fiscal_years: list[FiscalYearTotals] | None = None


class PositionsFrame(BaseModel):
    orgs: list[str]
    governments: dict[str, StreamGovernment]
    written_ms: int
    last_event_ms: int
    not_ready: list[str]
    seq: int
    snapshot: bool | None = Field(None, description="snapshot frames only: true")


class Heartbeat(BaseModel):
    server_ms: int
    server_time: Stamp | None
    seq: int
    last_write_ms: int
    last_event_ms: int
    live: bool


class Closed(BaseModel):
    reason: Literal["token_revoked", "token_expired", "token_invalid"]
    server_ms: int


class StreamData(RootModel[PositionsFrame | Alert | Heartbeat | Closed]):
    """The JSON ``data`` of a /v1/stream event (StreamEvent)."""


Problem.model_rebuild()
StreamEvent.model_rebuild()
StreamData.model_rebuild()
