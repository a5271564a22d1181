"""The public event contract: one JSON object per Kafka message, keyed by ``org_code``.

Decoding is strict (msgspec): an amount must be a JSON integer (not a float, string or bool, and
never silently widened past 64 bits), unknown fields are refused, timestamps must carry an offset.
``check`` returns either a validated :class:`Event` or a :class:`Rejection` with a stable reason
code; it never raises on bad input. Stateful rules (duplicates, commitments, reversals) live in
the ledger fold, ``state.ledger``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, final, get_args

import msgspec

from cashpos.calendar import KST, close_date, fiscal_years_for, korean_date
from cashpos.names import CLOSE_KIND, EXPENDITURE_KINDS, REVENUE_KINDS, side_of_kind
from cashpos.refdata import account_sets

MAX_AMOUNT: Final = 10**15
# Each side's net contribution to a position's cash (revenue: receipts; expenditure: payments and
# transfers), and its committed amount, stay within ±MAX_SIDE_TOTAL; an event that would leave
# that range is dead-lettered ``position_out_of_range``. Checked per side, so the verdict depends
# only on that side's own stream (deterministic whatever the interleaving of the two topics).
# Hence |cash| <= 2e18, 0 <= committed <= 1e18 and |available| <= 3e18: inside a signed 64-bit
# integer (9.22e18), the widest integer the C kernel, msgpack, orjson and Redis carry.
MAX_SIDE_TOTAL: Final = 10**18

Kind = Literal[
    "receipt", "commitment", "commitment_cancel", "payment", "transfer", "commitment_carry_forward"
]
# Why a commitment moves into the next fiscal year (이월): 명시이월 (authorised in the budget),
# 사고이월 (committed, unpaid for a reason beyond control), 계속비이월 (multi-year works).
CarryBasis = Literal["explicit", "accident", "continuing"]
Category = Literal["local_tax", "non_tax", "grant", "subsidy", "bond", "other"]
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
    "missing_commitment_id": "commitment and commitment_cancel need a commitment_id",
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
            except msgspec.DecodeError:
                pass
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
    if kind == "receipt":
        if ev.category is None:
            return Rejection("missing_category", "receipt without category")
    elif ev.category is not None:
        return Rejection("field_not_allowed", f"category is only for receipts, not {kind}")
    if kind in ("commitment", "commitment_cancel", "commitment_carry_forward") and ev.commitment_id is None:
        return Rejection("missing_commitment_id", f"{kind} without commitment_id")
    if ev.commitment_id is not None and kind in ("receipt", "transfer"):
        return Rejection("field_not_allowed", f"commitment_id is not allowed on {kind}")
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
    ):
        if kind == "receipt":
            if ev.category is not None and ev.commitment_id is None and ev.due_date is None:
                return ev
        elif ev.category is None:
            if kind == "payment":
                if ev.due_date is None:
                    return ev
            elif kind == "commitment":
                if ev.commitment_id is not None:
                    return ev
            elif kind == "commitment_cancel" and ev.commitment_id is not None and ev.due_date is None:
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


def json_schema() -> dict[str, object]:
    """The JSON Schema shipped as docs/event.schema.json: an event, or a year's close."""
    (event, close), defs = msgspec.json.schema_components([Event, YearClose])
    schema: dict[str, Any] = {"anyOf": [event, close], "$defs": defs}
    schema["$comment"] = "cashpos event contract; message key = org_code"
    for struct in ("Event", "YearClose"):
        props = schema["$defs"][struct]["properties"]
        for name, pattern in _PATTERNS.items():
            target = props.get(name)
            for alt in target.get("anyOf", [target]) if target else ():
                if alt.get("type") == "string":
                    alt["pattern"] = pattern
    return schema


assert REVENUE_KINDS | EXPENDITURE_KINDS == set(get_args(Kind))
