"""The public event contract: one JSON object per Kafka message, keyed by ``org_code``.

Decoding is strict (msgspec): an amount must be a JSON integer (not a float, string or bool, and
never silently widened past 64 bits), unknown fields are refused, timestamps must carry an offset.
``check`` returns either a validated :class:`Event` or a :class:`Rejection` with a stable reason
code; it never raises on bad input. Stateful rules (duplicates, commitments, reversals) live in
the ledger fold, ``state.ledger``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, final, get_args

import msgspec

from cashpos.calendar import KST, close_date, fiscal_years_for, korean_date
from cashpos.names import CLOSE_KIND, EXPENDITURE_KINDS, REVENUE_KINDS, side_of_kind
from cashpos.refdata import account_sets, governments

MAX_AMOUNT: Final = 10**15
# Each side's net contribution to a position's cash (revenue: receipts; expenditure: payments and
# transfers), and its committed amount, stay within ±MAX_SIDE_TOTAL; an event that would leave
# that range is dead-lettered ``position_out_of_range``. Checked per side, so the verdict depends
# only on that side's own stream (deterministic whatever the interleaving of the two topics).
# Hence |cash| <= 2e18, 0 <= committed <= 1e18 and |available| <= 3e18: inside a signed 64-bit
# integer (9.22e18), the widest integer the C kernel, msgpack, orjson and Redis carry.
MAX_SIDE_TOTAL: Final = 10**18

Kind = Literal[
    "receipt",
    "commitment",
    "commitment_cancel",
    "payment",
    "transfer",
    "commitment_carry_forward",
    "payment_order",
    "expected_receipt",
]
# Why a commitment moves into the next fiscal year (이월): 명시이월 (authorised in the budget),
# 사고이월 (committed, unpaid for a reason beyond control), 계속비이월 (multi-year works).
CarryBasis = Literal["explicit", "accident", "continuing"]
Category = Literal["local_tax", "non_tax", "grant", "subsidy", "bond", "other"]
# How sure an expected receipt is: ``confirmed`` (notified: a 지방교부세 or 보조금 instalment) or
# ``estimated`` (e.g. a tax due date's expected yield).
Certainty = Literal["confirmed", "estimated"]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# org_code and account codes are checked against the reference data (unknown_government,
# unknown_account), which implies their format; regex patterns in the decoder would cost about
# 1 µs per event on the hot path, so they appear only in the published schema (json_schema).
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_PATTERNS = {"org_code": "^[0-9]{7}$", "account": "^[a-z0-9_]+$", "to_account": "^[a-z0-9_]+$"}


class Event(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One revenue or expenditure event. Money is integer KRW."""

    event_id: Id
    org_code: Annotated[str, msgspec.Meta(min_length=7, max_length=7)]
    account: Code
    fiscal_year: Annotated[int, msgspec.Meta(ge=1990, le=2200)]
    kind: Kind
    amount: Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT)]
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    category: Category | None = None
    commitment_id: Id | None = None
    due_date: dt.date | None = None
    to_account: Code | None = None
    reverses: Id | None = None
    basis: CarryBasis | None = None  # commitment_carry_forward only
    # Known future flows (contract version 3): a payment_order's pay date; the order a payment
    # executes; an expected_receipt's schedule, date and certainty (a receipt may name the
    # schedule it realises).
    pay_date: dt.date | None = None
    order_id: Id | None = None
    schedule_id: Id | None = None
    expected_date: dt.date | None = None
    certainty: Certainty | None = None


@final  # no subclass: ``type(x) is YearClose`` tells a close from an Event, for mypy too
class YearClose(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """The close of fiscal year ``fiscal_year`` for one government (출납정리기한 passed):
    published on both input topics; each side closes its own share. From then on the year takes
    no event; its open commitments lapse and its cash carries into the next year."""

    event_id: Id
    org_code: Annotated[str, msgspec.Meta(min_length=7, max_length=7)]
    fiscal_year: Annotated[int, msgspec.Meta(ge=1990, le=2200)]
    kind: Literal["fiscal_year_close"]
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


Record = Event | YearClose  # what the contract accepts from an input topic


@final  # no subclass: ``type(x) is Rejection`` tells a verdict from an event, for mypy too
class Rejection(msgspec.Struct, frozen=True):
    reason: str  # one of REASONS
    detail: str


# Stable reason codes: dashboards, alerts and the `cashpos dlq` tool match on them.
REASONS: Final = {
    "empty": "the message has no bytes",
    "oversized": "the message is larger than the accepted maximum",
    "not_utf8": "the message is not valid UTF-8",
    "not_json": "the message is not valid JSON",
    "not_object": "the JSON value is not an object",
    "missing_field": "a required field is missing",
    "unknown_field": "the object has a field the contract does not define",
    "invalid_amount": "amount is not an integer between 1 and 10^15",
    "invalid_kind": "kind is not one of the contract's kinds",
    "invalid_timestamp": "occurred_at is not an RFC 3339 timestamp (with a ±hh:mm or Z offset) in range",
    "naive_timestamp": "occurred_at has no UTC offset",
    "invalid_field": "a field has the wrong type or format",
    "duplicate_key": "the JSON object names a field twice",
    "unknown_government": "org_code is not one of the 243 governments",
    "unknown_account": "account is not in the government's chart of accounts",
    "fiscal_year_mismatch": "fiscal_year does not match occurred_at (Korea time, 20 Jan rule)",
    "period_closed": "the fiscal year takes no such event any more: a commitment dated after 31 December, "
    "anything dated after 20 January of the next year, or anything after its close",
    "close_too_early": "a fiscal_year_close is dated before the end of 20 January of the next year",
    "missing_basis": "a commitment_carry_forward needs a basis (explicit, accident or continuing)",
    "missing_category": "a receipt needs a category",
    "missing_commitment_id": "commitment, commitment_cancel and payment_order need a commitment_id "
    "(and so does a payment that names an order_id)",
    "missing_pay_date": "a payment_order needs a pay_date",
    "missing_schedule_id": "an expected_receipt needs a schedule_id",
    "missing_expected_date": "an expected_receipt needs an expected_date",
    "missing_certainty": "an expected_receipt needs a certainty (confirmed or estimated)",
    "missing_to_account": "a transfer needs to_account",
    "field_not_allowed": "the field is not allowed for this kind",
    "transfer_same_account": "to_account equals account",
    "unknown_to_account": "to_account is not in the government's chart of accounts",
    "key_mismatch": "the message key is not the event's org_code",
    "missing_key": "the Kafka message has no key (the contract requires key = org_code)",
    "wrong_topic": "the event's kind belongs on the other topic",
    "wrong_partition": "the record's partition is not the one its org_code hashes to (murmur2)",
    # Stateful, decided by the ledger fold:
    "event_id_conflict": "the event_id was applied before with different content",
    "commitment_id_reused": "the commitment_id is already open or was used before",
    "unknown_commitment": "the commitment_id names no commitment of this government",
    "commitment_mismatch": "the commitment belongs to another account or fiscal year",
    "unknown_reversal_target": "reverses names no applied event of this government",
    "already_reversed": "the event named by reverses was already reversed",
    "reversal_mismatch": "a reversal must match the original's kind, account and amount",
    "reversal_not_possible": "the original cannot be undone exactly any more",
    "position_out_of_range": "the event would take a position past the contract's bound (±10^18 per side)",
    "unknown_order": "order_id names no payment order of this government",
    "order_mismatch": "the payment order belongs to another commitment, or is reversed",
    "order_exceeds_commitment": "the payment order is larger than its commitment's open amount not "
    "already ordered",
    "unknown_schedule": "schedule_id names no expected receipt of this government",
    "schedule_mismatch": "the schedule belongs to another account, fiscal year or category",
    # Raised by the worker, never by a rule: deciding or folding the record failed unexpectedly.
    "internal_error": "processing this record raised an unexpected error (a defect; see detail)",
}

# Reasons only the ledger fold can decide (they depend on what was applied before).
STATEFUL_REASONS: Final = frozenset(
    {
        "event_id_conflict",
        "commitment_id_reused",
        "unknown_commitment",
        "commitment_mismatch",
        "unknown_reversal_target",
        "already_reversed",
        "reversal_mismatch",
        "reversal_not_possible",
        "position_out_of_range",
        "unknown_order",
        "order_mismatch",
        "order_exceeds_commitment",
        "unknown_schedule",
        "schedule_mismatch",
    }
)

_MISSING = re.compile(r"missing required field `(\w+)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_AT = re.compile(r" - at `\$\.(\w+)[^`]*`$")

_decoder = msgspec.json.Decoder(Event, strict=True)
_close_decoder = msgspec.json.Decoder(YearClose, strict=True)
_CLOSE_TOKEN: Final = f'"{CLOSE_KIND}"'.encode()
_encoder = msgspec.json.Encoder()


def _reason_for(err: msgspec.ValidationError) -> Rejection:
    msg = str(err)
    # Match the message's own structure only: a bad *value* quoted in it must not steer the reason.
    if msg.startswith("Object missing required field") and (m := _MISSING.match(msg, 7)):
        return Rejection("missing_field", f"missing field `{m.group(1)}`")
    if msg.startswith("Object contains unknown field") and (m := _UNKNOWN.match(msg, 16)):
        return Rejection("unknown_field", f"unknown field `{m.group(1)}`")
    if msg.startswith("Expected `object`"):
        return Rejection("not_object", msg)
    at = m.group(1) if (m := _AT.search(msg)) else ""
    if at == "amount":
        return Rejection("invalid_amount", msg)
    if at == "kind":
        return Rejection("invalid_kind", msg)
    if at == "occurred_at":
        if "timezone" in msg:
            return Rejection("naive_timestamp", msg)
        return Rejection("invalid_timestamp", msg)
    return Rejection("invalid_field", msg)


def decode(raw: bytes, max_bytes: int = 8192) -> Record | Rejection:
    """Strictly decode one message value; never raises on bad input."""
    if not raw:
        return Rejection("empty", "empty message")
    if len(raw) > max_bytes:
        return Rejection("oversized", f"{len(raw)} bytes > {max_bytes}")
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as err:
        if _CLOSE_TOKEN in raw:  # rare: a year's close is no Event; judge it by its own shape
            try:
                return _close_decoder.decode(raw)
            except msgspec.ValidationError as close_err:
                return _reason_for(close_err)
            except UnicodeDecodeError:
                return Rejection("not_utf8", "message is not valid UTF-8")
            except msgspec.DecodeError as close_err:  # not JSON after all (e.g. a lone surrogate)
                return Rejection("not_json", str(close_err))
        return _reason_for(err)
    except UnicodeDecodeError:  # msgspec raises it for invalid UTF-8 inside a string
        return Rejection("not_utf8", "message is not valid UTF-8")
    except msgspec.DecodeError as err:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("not_utf8", "message is not valid UTF-8")
        return Rejection("not_json", str(err))


# A JSON string token and whether a colon follows it (then it is a key). Applied to a value the
# strict decoder accepted as an Event (a flat object of scalars), finditer meets every string in
# order and only strings: numbers, literals and punctuation hold no quote.
_STRING = re.compile(rb'"([^"\\]*(?:\\.[^"\\]*)*)"[ \t\r\n]*(:?)')
_RFC3339_OFFSET = re.compile(r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$")
_FIELD_TOKENS = tuple(f'"{name}"'.encode() for name in Event.__struct_fields__)


def _unescape(s: bytes) -> str:
    return msgspec.json.decode(b'"' + s + b'"', type=str) if b"\\" in s else s.decode()


def check_raw(raw: bytes) -> Rejection | None:
    """What the decoder cannot see in a message it accepted: a field named twice (the decoder
    keeps the last one, so ``{"amount":1,"amount":999}`` would apply 999) and an offset in a
    form RFC 3339 does not allow (``+0900``)."""
    if b"\\" not in raw and all(raw.count(t) < 2 for t in _FIELD_TOKENS):
        # No escape: every token is spelt as is. Unknown fields were refused, so no field token
        # twice means no key twice; and the one "occurred_at" is the key, its value the next string.
        at = raw.find(b'"', raw.find(b":", raw.find(b'"occurred_at"') + 13)) + 1
        value = raw[at : raw.find(b'"', at)]
        if value[-1:] in b"Zz" or (value[-6:-5] in (b"+", b"-") and value[-3:-2] == b":"):
            return None
    seen: set[str] = set()
    key = ""
    for name, colon in _STRING.findall(raw):
        if colon:
            key = _unescape(name)
            if key in seen:
                return Rejection("duplicate_key", f"field `{key}` appears more than once")
            seen.add(key)
        elif key == "occurred_at" and not _RFC3339_OFFSET.search(_unescape(name)):
            return Rejection("invalid_timestamp", "occurred_at's offset is not RFC 3339 (±hh:mm or Z)")
    return None


def check_stateless(ev: Event, accounts: dict[str, frozenset[str]] | None = None) -> Rejection | None:
    """Rules that need only the event and the reference data."""
    charts = account_sets() if accounts is None else accounts
    chart = charts.get(ev.org_code)
    if chart is None:
        return Rejection("unknown_government", f"org_code {ev.org_code} is not a known government")
    if ev.account not in chart:
        return Rejection("unknown_account", f"{ev.org_code} has no account {ev.account!r}")
    try:
        years = fiscal_years_for(ev.occurred_at)
    except OverflowError:  # 0001-01-01T00:00:00+10:00, 9999-12-31T23:59:59Z: no Korean date
        return Rejection(
            "invalid_timestamp", f"occurred_at {ev.occurred_at.isoformat()} has no date in Korea time"
        )
    kind = ev.kind
    if ev.fiscal_year not in years:
        if ev.fiscal_year < min(years):
            return Rejection(
                "period_closed",
                f"fiscal year {ev.fiscal_year} took its last cash processing "
                f"on 20 January {ev.fiscal_year + 1}; occurred_at is {ev.occurred_at.isoformat()}",
            )
        return Rejection(
            "fiscal_year_mismatch",
            f"fiscal_year {ev.fiscal_year} invalid for {ev.occurred_at.isoformat()}",
        )
    if kind == "commitment" and ev.fiscal_year < max(years):
        return Rejection(
            "period_closed",
            f"fiscal year {ev.fiscal_year} closed its books on 31 December: "
            f"no new commitment on {ev.occurred_at.isoformat()}",
        )
    if kind in ("receipt", "expected_receipt"):
        if ev.category is None:
            return Rejection("missing_category", f"{kind} without category")
    elif ev.category is not None:
        return Rejection("field_not_allowed", f"category is only for receipts, not {kind}")
    if ev.commitment_id is None and (
        kind in ("commitment", "commitment_cancel", "commitment_carry_forward", "payment_order")
        or ev.order_id is not None
    ):
        return Rejection("missing_commitment_id", f"{kind} without commitment_id")
    if ev.commitment_id is not None and kind in ("receipt", "transfer", "expected_receipt"):
        return Rejection("field_not_allowed", f"commitment_id is not allowed on {kind}")
    if (bad := _known_flow_fields(ev)) is not None:
        return bad
    if ev.due_date is not None and kind != "commitment":
        return Rejection("field_not_allowed", f"due_date is only for commitments, not {kind}")
    if kind == "commitment_carry_forward":
        if ev.basis is None:
            return Rejection("missing_basis", "commitment_carry_forward without basis")
    elif ev.basis is not None:
        return Rejection("field_not_allowed", f"basis is only for commitment_carry_forward, not {kind}")
    if kind == "transfer":
        if ev.to_account is None:
            return Rejection("missing_to_account", "transfer without to_account")
        if ev.to_account == ev.account:
            return Rejection("transfer_same_account", f"transfer from {ev.account} to itself")
        if ev.to_account not in chart:
            return Rejection("unknown_to_account", f"{ev.org_code} has no account {ev.to_account!r}")
    elif ev.to_account is not None:
        return Rejection("field_not_allowed", f"to_account is only for transfers, not {kind}")
    return None


def _known_flow_fields(ev: Event) -> Rejection | None:
    """The fields of the known future flows: each on its own kinds only."""
    kind = ev.kind
    if kind == "payment_order":
        if ev.pay_date is None:
            return Rejection("missing_pay_date", "payment_order without pay_date")
    elif ev.pay_date is not None:
        return Rejection("field_not_allowed", f"pay_date is only for payment orders, not {kind}")
    if ev.order_id is not None and kind != "payment":
        return Rejection("field_not_allowed", f"order_id is only for payments, not {kind}")
    if kind == "expected_receipt":
        if ev.schedule_id is None:
            return Rejection("missing_schedule_id", "expected_receipt without schedule_id")
        if ev.expected_date is None:
            return Rejection("missing_expected_date", "expected_receipt without expected_date")
        if ev.certainty is None:
            return Rejection("missing_certainty", "expected_receipt without certainty")
        return None
    if ev.schedule_id is not None and kind != "receipt":
        return Rejection(
            "field_not_allowed", f"schedule_id is only for receipts and expected receipts, not {kind}"
        )
    if ev.expected_date is not None or ev.certainty is not None:
        field = "expected_date" if ev.expected_date is not None else "certainty"
        return Rejection("field_not_allowed", f"{field} is only for expected receipts, not {kind}")
    return None


# The timezone object msgspec gives every "+09:00" timestamp (it caches them): an identity test
# is ~6x cheaper than utcoffset() == 9 h. Another object for KST only means the general path.
_KST_TZ: Final = msgspec.json.decode(b'"2026-01-01T00:00:00+09:00"', type=dt.datetime).tzinfo
_SIDE: Final = {k: side_of_kind(k) for k in get_args(Kind)}
_refs: tuple[dict[str, frozenset[str]], dict[str, bytes]] | None = None


def _reference() -> tuple[dict[str, frozenset[str]], dict[str, bytes]]:
    """Charts of accounts and the expected message key per org_code (loaded on first use)."""
    global _refs
    if _refs is None:
        charts = account_sets()
        _refs = charts, {org: org.encode() for org in charts}
    return _refs


def hot_rules() -> tuple[
    Callable[[bytes], Event], dict[str, frozenset[str]], dict[str, bytes], dt.tzinfo | None
]:
    """What the hot path of ``check_message`` tests against (the strict decoder, the charts of
    accounts, the expected message key per org_code, msgspec's "+09:00" tzinfo), for the C
    kernel in ``state/partition.py``, which must accept only what that hot path accepts."""
    charts, org_keys = _refs or _reference()
    return _decoder.decode, charts, org_keys, _KST_TZ


def check_message(
    raw: bytes, key: bytes | None, topic_side: str | None, max_bytes: int = 8192
) -> Record | Rejection:
    """Decode and validate one Kafka message. ``topic_side`` is "revenue", "expenditure" or None."""
    if not raw or len(raw) > max_bytes:
        return decode(raw, max_bytes)
    try:
        ev = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        res = decode(raw, max_bytes)  # bad input or a year's close: decode again to tell which
        if res.__class__ is YearClose:
            return check_raw(raw) or check_close(res, key)
        return res
    return check_decoded(ev, raw, key, topic_side)


def check_close(c: YearClose, key: bytes | None) -> YearClose | Rejection:
    """The stateless rules of a year's close (either topic takes it)."""
    if c.org_code not in (_refs or _reference())[0]:
        return Rejection("unknown_government", f"org_code {c.org_code} is not a known government")
    try:
        day = korean_date(c.occurred_at)
    except OverflowError:
        return Rejection(
            "invalid_timestamp", f"occurred_at {c.occurred_at.isoformat()} has no date in Korea time"
        )
    if day < close_date(c.fiscal_year):
        return Rejection(
            "close_too_early",
            f"fiscal year {c.fiscal_year} takes cash processing until "
            f"20 January {c.fiscal_year + 1}; the close is dated {day.isoformat()}",
        )
    if key is not None and key != c.org_code.encode():
        return Rejection("key_mismatch", f"key {key[:16]!r} != org_code {c.org_code}")
    return c


def check_decoded(
    ev: Event, raw: bytes, key: bytes | None, topic_side: str | None, *, raw_checked: bool = False
) -> Event | Rejection:
    """``check_message`` for ``raw`` already decoded by the strict decoder into ``ev`` (its size
    within the maximum). ``raw_checked``: the caller knows ``check_raw(raw)`` finds nothing
    (the C kernel's faster test of the same, ``state/partition.py``)."""
    if not raw_checked and (bad := check_raw(raw)) is not None:
        return bad
    # Hot path: accept the common shapes with a few identity and set tests. Anything else (a
    # rule broken, a prior-year event in January, another UTC offset) goes through the full
    # rules, which name the reason; this block only ever accepts what they accept.
    charts, org_keys = _refs or _reference()
    org = ev.org_code
    chart = charts.get(org)
    kind = ev.kind
    at = ev.occurred_at
    if (
        chart is not None
        and ev.account in chart
        and at.tzinfo is _KST_TZ
        and ev.fiscal_year == at.year
        and (key is None or key == org_keys[org])
        and (topic_side is None or topic_side == _SIDE[kind])
        and ev.to_account is None
        and ev.basis is None
        and ev.pay_date is None
        and ev.expected_date is None
        and ev.certainty is None
    ):
        if kind == "receipt":
            if (
                ev.category is not None
                and ev.commitment_id is None
                and ev.due_date is None
                and ev.order_id is None
            ):
                return ev
        elif ev.category is None and ev.schedule_id is None:
            if kind == "payment":
                if ev.due_date is None and (ev.order_id is None or ev.commitment_id is not None):
                    return ev
            elif kind == "commitment":
                if ev.commitment_id is not None and ev.order_id is None:
                    return ev
            elif (
                kind == "commitment_cancel"
                and ev.commitment_id is not None
                and ev.due_date is None
                and ev.order_id is None
            ):
                return ev
            # transfers always take the full rules (to_account: 1% of the stream)
    return _full_rules(ev, key, topic_side)


def epoch_ms(at: dt.datetime) -> int:
    """``occurred_at`` in epoch milliseconds (floor), in integers (no float rounding)."""
    if at.tzinfo is _KST_TZ:  # the norm; plain arithmetic is ~2x cheaper than timestamp()
        return (
            (at.toordinal() - 719_163) * 86_400_000
            - 32_400_000
            + ((at.hour * 60 + at.minute) * 60 + at.second) * 1000
            + at.microsecond // 1000
        )
    return (at - _EPOCH) // _MS


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)


def _full_rules(ev: Event, key: bytes | None, topic_side: str | None) -> Event | Rejection:
    """Every stateless rule, without the hot path's shortcut; names the reason."""
    bad = check_stateless(ev)
    if bad is not None:
        return bad
    if key is not None and key != ev.org_code.encode():
        return Rejection("key_mismatch", f"key {key[:16]!r} != org_code {ev.org_code}")
    if topic_side is not None and side_of(ev.kind) != topic_side:
        return Rejection("wrong_topic", f"{ev.kind} belongs on the {side_of(ev.kind)} topic")
    return ev


side_of = side_of_kind  # the side of a kind: ``cashpos.names`` owns it


def encode(ev: Record) -> bytes:
    return _encoder.encode(ev)


def year_close(org: str, year: int) -> bytes:
    """The close of ``year`` for ``org`` as ``cashpos close-year`` publishes it: dated at the start
    of the first day it may be (21 January, 00:00 KST) and named ``close-{year}``, so a second
    run is a duplicate, not a second close."""
    d = close_date(year)
    return encode(
        YearClose(
            f"close-{year}",
            org,
            year,
            "fiscal_year_close",
            dt.datetime(d.year, d.month, d.day, tzinfo=KST),
            "cashpos close-year",
        )
    )


# -- The published JSON Schema (docs/event.schema.json, `cashpos schema`) --------------------------
# Schema only: the rules above decide; tests/test_event_schema.py holds the schema equal to them.

# docs/events.md: version 2 the fiscal year and its close; 3 the known future flows (payment_order,
# expected_receipt, a payment's order_id, a receipt's schedule_id).
CONTRACT_VERSION: Final = 3
SCHEMA_ID: Final = f"https://cashpos.example/schemas/event/v{CONTRACT_VERSION}.json"

# What the schema cannot decide, by reason code: the one list (the schema's $comment, the test,
# docs/events.md "The JSON Schema"). Every other reason code of REASONS the schema decides exactly.
SCHEMA_GAPS: Final = {
    "empty": "no bytes: not a JSON value",
    "oversized": "a size in bytes: a schema judges the value, not its encoding",
    "not_utf8": "not UTF-8: not a JSON text",
    "not_json": "not JSON, including a string with an unpaired surrogate escape (\\ud800)",
    "duplicate_key": "a field named twice: a schema sees the parsed object, one value per name",
    "invalid_timestamp": "only for a close dated in the last two days of year 9999 (no date in "
    "Korea time, or its fraction rounds past the year); the pattern decides every other case",
    "fiscal_year_mismatch": "fiscal_year against occurred_at's date in Korea time (the schema holds "
    "occurred_at's own date to 30 December before the year .. 21 January after it)",
    "period_closed": "a commitment dated after 31 December, anything after 20 January of the next "
    "year, in Korea time (the schema bounds the date as written); or after the close (stateful)",
    "close_too_early": "a close dated before 21 January after its year, in Korea time",
    "transfer_same_account": "to_account equal to account",
    "key_mismatch": "the Kafka record's key, not its value",
    "missing_key": "the Kafka record's key, not its value",
    "wrong_topic": "the Kafka record's topic, not its value",
    "wrong_partition": "the Kafka record's partition, not its value",
    **{reason: "stateful: decided by the ledger fold" for reason in sorted(STATEFUL_REASONS)},
    "internal_error": "a defect while processing, no rule",
}
# JSON Schema's data model has one kind of number: 1.0 and 1e3 are integers to it, while the strict
# decoder takes only integer tokens (1.0 is invalid_amount, or invalid_field for fiscal_year).
SCHEMA_NUMBER_NOTE: Final = (
    "JSON Schema counts 1.0 and 1e3 as integers; the contract takes integer tokens only "
    "(amount 1.0 is invalid_amount, fiscal_year 2026.0 invalid_field)."
)

# Per kind: the optional fields it must carry, and those it may carry; every other optional field
# must be absent or null (check_stateless is the rule; the test compares the two).
_KIND_FIELDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "receipt": (("category",), ("reverses", "schedule_id")),
    "commitment": (("commitment_id",), ("due_date", "reverses")),
    "commitment_cancel": (("commitment_id",), ("reverses",)),
    "payment": ((), ("commitment_id", "reverses", "order_id")),
    "transfer": (("to_account",), ("reverses",)),
    "commitment_carry_forward": (("commitment_id", "basis"), ("reverses",)),
    "payment_order": (("commitment_id", "pay_date"), ("reverses",)),
    "expected_receipt": (("category", "schedule_id", "expected_date", "certainty"), ("reverses",)),
}
_END = r"$(?!\n)"  # the end, in ECMA-262 and in Python's re too (its $ also matches before a final \n)
_TIME = (  # as msgspec reads it: T, t or a space; seconds 00-59, any fraction; Z, z or ±hh:mm
    r"[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def _month_days(leap: bool) -> list[str]:
    """MM-DD of a year, exactly (31-day months, 30-day months, February)."""
    feb = "2[0-9]" if leap else "2[0-8]"
    return [
        "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
        "(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
        f"02-(?:0[1-9]|1[0-9]|{feb})",
    ]


def _any_date(years: str, leap_years: str) -> str:
    """A calendar date (YYYY-MM-DD) in ``years``; 29 February only in ``leap_years``."""
    return f"(?:{years}-(?:{'|'.join(_month_days(False))})|{leap_years}-02-29)"


# Years 0001-9999 and their leap years (divisible by 4, centuries only by 400), for due_date.
_ALL_DATES = _any_date(
    "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])",
    "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)",
)
# A close: its Korean date is on or after 21 January 1991, so its own date is in 1991-9999.
_CLOSE_DATES = _any_date(
    "(?:199[1-9]|[2-9][0-9]{3})",
    "(?:199[26]|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[3579][26])00)",
)


def _fiscal_year_dates(year: int) -> str:
    """The dates ``occurred_at`` may be written with for fiscal year ``year``: its Korean date is
    in 1 January ``year`` .. 20 January ``year + 1``, and a date as written is at most two days
    before (an offset down to -23:59) or one after its Korean date (up to +23:59)."""
    alts = [f"{year - 1}-12-3[01]"]
    alts += [f"{year}-{md}" for md in _month_days(calendar.isleap(year))]  # most weight: the year
    alts.append(f"{year + 1}-01-(?:0[1-9]|1[0-9]|2[01])")
    return "(?:" + "|".join(alts) + ")"


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """msgspec's ``anyOf: [X, null]`` as one schema (X's enum or type, plus null): each rule on
    the property then merges into one (hypothesis-jsonschema generates from it directly)."""
    (alt,) = (a for a in prop["anyOf"] if a.get("type") != "null")
    if "enum" in alt:
        return {**alt, "enum": [*alt["enum"], None], "default": None}
    return {**alt, "type": [alt["type"], "null"], "default": None}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) shipped as docs/event.schema.json: one message value, an event
    or a year's close, with every stateless rule it can express (SCHEMA_GAPS: the others)."""
    (event_ref, close_ref), defs = msgspec.json.schema_components([Event, YearClose])
    event, close = defs["Event"], defs["YearClose"]
    gov = governments()
    defs["org_code"] = {
        "description": "one of the 243 governments (GET /v1/governments)",
        "type": "string",
        "enum": list(gov),
    }
    for struct in (event, close):
        struct["description"] = inspect.cleandoc(struct["description"])
        struct["properties"]["org_code"] = {"$ref": "#/$defs/org_code"}
    props = event["properties"]
    for name, prop in props.items():
        if "anyOf" in prop:
            props[name] = _nullable(prop)
    props["account"]["pattern"] = props["to_account"]["pattern"] = f"^[a-z0-9_]+{_END}"
    for name in ("due_date", "pay_date", "expected_date"):
        props[name]["pattern"] = f"^{_ALL_DATES}{_END}"
    props["occurred_at"] = {
        "description": "RFC 3339 with an offset (T, t or a space; Z, z or ±hh:mm), its date "
        "bounded by fiscal_year ($defs/fiscal_year_rules)",
        "type": "string",
    }
    close["properties"]["occurred_at"] = {
        "description": "RFC 3339 with an offset (T, t or a space; Z, z or ±hh:mm)",
        "type": "string",
        "pattern": f"^{_CLOSE_DATES}{_TIME}{_END}",
    }
    event["allOf"] = [
        {"$ref": "#/$defs/kind_rules"},
        {"$ref": "#/$defs/chart_rules"},
        {"$ref": "#/$defs/fiscal_year_rules"},
    ]
    optional = [name for name in props if name not in event["required"]]

    def when(name: str, value: object, then: dict[str, Any]) -> dict[str, Any]:
        return {"if": {"properties": {name: {"const": value}}, "required": [name]}, "then": then}

    kind_rules = []
    for kind, (required, allowed) in _KIND_FIELDS.items():
        then: dict[str, Any] = {
            "properties": {
                name: {"not": {"type": "null"}} if name in required else {"type": "null"}
                for name in optional
                if name not in allowed
            }
        }
        if required:
            then["required"] = list(required)
        if kind == "payment":  # one that executes an order names the order's commitment
            then["anyOf"] = [
                {"properties": {"order_id": {"type": "null"}}},
                {"properties": {"commitment_id": {"not": {"type": "null"}}}, "required": ["commitment_id"]},
            ]
        kind_rules.append(when("kind", kind, then))
    defs["kind_rules"] = {
        "description": "per kind, the optional fields it must carry (not null) and those it must "
        "not (absent or null); an order_id needs a commitment_id",
        "allOf": kind_rules,
    }
    chart_rules = []
    for org, g in gov.items():
        chart = f"#/$defs/chart_{org}"
        defs[f"chart_{org}"] = {"title": g.name, "enum": [a.code for a in g.accounts]}
        chart_rules.append(
            when(
                "org_code",
                org,
                {
                    "properties": {
                        "account": {"$ref": chart},
                        "to_account": {"anyOf": [{"type": "null"}, {"$ref": chart}]},
                    }
                },
            )
        )
    defs["chart_rules"] = {
        "description": "account and to_account are in the government's chart of accounts",
        "allOf": chart_rules,
    }
    fy = props["fiscal_year"]
    defs["fiscal_year_rules"] = {
        "description": "occurred_at's date as written, for each fiscal year (SCHEMA_GAPS: the "
        "exact rule, in Korea time, is fiscal_year_mismatch / period_closed)",
        "allOf": [
            when(
                "fiscal_year",
                year,
                {"properties": {"occurred_at": {"pattern": f"^{_fiscal_year_dates(year)}{_TIME}{_END}"}}},
            )
            for year in range(fy["minimum"], fy["maximum"] + 1)
        ],
    }
    gaps = "; ".join(f"{reason}: {why}" for reason, why in SCHEMA_GAPS.items())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"cashpos event, contract version {CONTRACT_VERSION}",
        "description": "One message value on cashpos.events.revenue or cashpos.events.expenditure "
        "(Kafka key = org_code; the body of POST /v1/events): an event or a year's close. "
        "docs/events.md is the contract in prose.",
        "version": CONTRACT_VERSION,
        "$comment": f"Not decided by this schema (dead-letter reason codes): {gaps}. {SCHEMA_NUMBER_NOTE}",
        # A close or else an event, told by kind: a validator reports the errors of that one.
        "if": {"properties": {"kind": {"const": CLOSE_KIND}}, "required": ["kind"]},
        "then": close_ref,
        "else": event_ref,
        "$defs": defs,
    }


def schema_text() -> str:
    """``json_schema()`` as ``cashpos schema`` prints it: two-space indent, but an object or a
    list that fits in 480 characters on one line (one rule a line: the file stays small)."""

    def flat(value: object) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{_json(k)}: {flat(v)}" for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(flat(v) for v in value) + "]"
        return _json(value)

    def dump(value: object, indent: str) -> str:
        one_line = flat(value)
        if len(one_line) <= 480 or not isinstance(value, dict | list):
            return one_line
        inner = indent + "  "
        if isinstance(value, dict):
            items = ",\n".join(f"{inner}{_json(k)}: {dump(v, inner)}" for k, v in value.items())
            return "{\n" + items + f"\n{indent}}}"
        if all(not isinstance(v, dict | list) for v in value):
            return one_line  # a chart, the 243 codes
        return "[\n" + ",\n".join(inner + dump(v, inner) for v in value) + f"\n{indent}]"

    return dump(json_schema(), "") + "\n"


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


assert REVENUE_KINDS | EXPENDITURE_KINDS == set(get_args(Kind))
