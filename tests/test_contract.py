"""The event contract: every stateless reason code, with concrete bad messages.

Expected reasons come from the contract's documented rules (REASONS and the semantics in the
module docstring), not from running the code.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.refdata import governments
from streams.contract import (
    REASONS,
    STATEFUL_REASONS,
    Event,
    Record,
    Rejection,
    YearClose,
    check_message,
    decode,
)

SEOUL = "6110000"
JONGNO = "3000000"  # 종로구, a basic government under Seoul
GOVS = governments()
SEOUL_ACCOUNTS = GOVS[SEOUL].account_codes
JONGNO_ACCOUNTS = GOVS[JONGNO].account_codes
# An account Seoul has but Jongno does not: "unknown for that government", not globally unknown.
FOREIGN_ACCOUNT = min(SEOUL_ACCOUNTS - JONGNO_ACCOUNTS)
UNKNOWN_ORG = next(f"{n:07d}" for n in range(9999999, 0, -1) if f"{n:07d}" not in GOVS)

STATEFUL = set(STATEFUL_REASONS)
# Decided by the worker from the record's partition, not by check_message.
WORKER_ONLY = {"wrong_partition", "missing_key", "internal_error"}
STATELESS = set(REASONS) - STATEFUL - WORKER_ONLY

SIDE = {
    "receipt": "revenue",
    "commitment": "expenditure",
    "commitment_cancel": "expenditure",
    "payment": "expenditure",
    "transfer": "expenditure",
    "commitment_carry_forward": "expenditure",
}

_DROP = object()


def body(kind: object = "receipt", **over: object) -> dict[str, object]:
    """A valid event of the given kind as a dict; ``field=_DROP`` removes a field."""
    d: dict[str, object] = {
        "event_id": "ev-1",
        "org_code": SEOUL,
        "account": "general",
        "fiscal_year": 2026,
        "kind": kind,
        "amount": 1_000,
        "occurred_at": "2026-03-02T10:00:00+09:00",
        "source": "test",
    }
    if kind == "receipt":
        d["category"] = "local_tax"
    if kind in ("commitment", "commitment_cancel"):
        d["commitment_id"] = "c-1"
    if kind == "commitment":
        d["due_date"] = "2026-04-30"
    if kind == "transfer":
        d["to_account"] = "custody"
    d.update(over)
    return {k: v for k, v in d.items() if v is not _DROP}


def raw(kind: object = "receipt", **over: object) -> bytes:
    return json.dumps(body(kind, **over)).encode()


def close_raw(**over: object) -> bytes:
    """A valid close of fiscal year 2026 for Seoul."""
    d: dict[str, object] = {
        "event_id": "close-2026",
        "org_code": SEOUL,
        "fiscal_year": 2026,
        "kind": "fiscal_year_close",
        "occurred_at": "2027-01-21T00:00:00+09:00",
        "source": "test",
    }
    d.update(over)
    return json.dumps(d).encode()


def check(value: bytes, key: bytes | None = None, side: str | None = None) -> Record | Rejection:
    return check_message(value, key, side)


def reason(value: bytes, key: bytes | None = None, side: str | None = None) -> str:
    res = check(value, key, side)
    assert isinstance(res, Rejection), f"accepted: {res!r}"
    assert res.reason in REASONS
    assert isinstance(res.detail, str) and res.detail
    return res.reason


def test_fixture_refdata_is_real() -> None:
    assert len(GOVS) == 243
    assert {"general", "custody"} <= SEOUL_ACCOUNTS
    assert FOREIGN_ACCOUNT in SEOUL_ACCOUNTS and FOREIGN_ACCOUNT not in JONGNO_ACCOUNTS
    assert {"general", "custody"} <= JONGNO_ACCOUNTS
    assert UNKNOWN_ORG not in GOVS


# -- every reason code, one table ------------------------------------------------------------

BIG = b" " * 9000

CASES: list[tuple[str, bytes, bytes | None, str | None, str]] = [
    # (id, value, key, side, expected reason)
    ("empty", b"", None, None, "empty"),
    ("oversized_padded", raw() + BIG, None, None, "oversized"),
    ("oversized_garbage", b"\xff" * 8193, None, None, "oversized"),
    ("not_utf8_bytes", b"\xff\xfe\xfd", None, None, "not_utf8"),
    ("not_utf8_latin1_json", '{"event_id": "é"'.encode("latin-1"), None, None, "not_utf8"),
    ("not_json_text", b"hello", None, None, "not_json"),
    ("not_json_truncated", raw()[:-1], None, None, "not_json"),
    ("not_json_trailing_comma", b'{"event_id": "x",}', None, None, "not_json"),
    ("not_object_array", b"[]", None, None, "not_object"),
    ("not_object_string", b'"receipt"', None, None, "not_object"),
    ("not_object_number", b"42", None, None, "not_object"),
    ("not_object_null", b"null", None, None, "not_object"),
    ("not_object_list_of_event", b"[" + raw() + b"]", None, None, "not_object"),
    ("unknown_field", raw(foo=1), None, None, "unknown_field"),
    ("unknown_field_typo", raw(ammount=5), None, None, "unknown_field"),
    ("amount_float", raw(amount=1000.0), None, None, "invalid_amount"),
    ("amount_fraction", raw(amount=10.5), None, None, "invalid_amount"),
    ("amount_exponent", raw().replace(b'"amount": 1000', b'"amount": 1e3'), None, None, "invalid_amount"),
    ("amount_string", raw(amount="1000"), None, None, "invalid_amount"),
    ("amount_true", raw(amount=True), None, None, "invalid_amount"),
    ("amount_false", raw(amount=False), None, None, "invalid_amount"),
    ("amount_null", raw(amount=None), None, None, "invalid_amount"),
    ("amount_negative", raw(amount=-1), None, None, "invalid_amount"),
    ("amount_zero", raw(amount=0), None, None, "invalid_amount"),
    ("amount_above_max", raw(amount=10**15 + 1), None, None, "invalid_amount"),
    ("amount_2_63", raw(amount=2**63), None, None, "invalid_amount"),
    ("amount_2_64", raw(amount=18446744073709551616), None, None, "invalid_amount"),
    ("amount_huge", raw(amount=10**40), None, None, "invalid_amount"),
    ("amount_minus_2_64", raw(amount=-(2**64)), None, None, "invalid_amount"),
    ("kind_unknown", raw(kind="refund"), None, None, "invalid_kind"),
    ("kind_upper", raw(kind="RECEIPT"), None, None, "invalid_kind"),
    ("kind_empty", raw(kind=""), None, None, "invalid_kind"),
    ("kind_number", raw(kind=1), None, None, "invalid_kind"),
    ("ts_garbage", raw(occurred_at="yesterday"), None, None, "invalid_timestamp"),
    ("ts_date_only", raw(occurred_at="2026-03-02"), None, None, "invalid_timestamp"),
    ("ts_month_13", raw(occurred_at="2026-13-02T10:00:00+09:00"), None, None, "invalid_timestamp"),
    ("ts_number", raw(occurred_at=1772413200), None, None, "invalid_timestamp"),
    ("ts_null", raw(occurred_at=None), None, None, "invalid_timestamp"),
    ("ts_naive", raw(occurred_at="2026-03-02T10:00:00"), None, None, "naive_timestamp"),
    # Instants with no Korean date (astimezone overflows): the worker once died on these.
    ("ts_year_1_east_of_utc", raw(occurred_at="0001-01-01T00:00:00+10:00"), None, None, "invalid_timestamp"),
    (
        "ts_year_9999_west_of_utc",
        raw(occurred_at="9999-12-31T23:00:00-05:00"),
        None,
        None,
        "invalid_timestamp",
    ),
    ("ts_year_9999_utc", raw(occurred_at="9999-12-31T23:59:59Z"), None, None, "invalid_timestamp"),
    ("ts_offset_without_colon", raw(occurred_at="2026-03-02T10:00:00+0900"), None, None, "invalid_timestamp"),
    ("ts_offset_escaped", raw().replace(b"+09:00", b"\\u002b0900"), None, None, "invalid_timestamp"),
    (
        "duplicate_amount",
        raw().replace(b'"amount": 1000', b'"amount": 1, "amount": 999'),
        None,
        None,
        "duplicate_key",
    ),
    (
        "duplicate_escaped_key",
        raw().replace(b'"amount": 1000', b'"amount": 1, "amo\\u0075nt": 1'),
        None,
        None,
        "duplicate_key",
    ),
    (
        "duplicate_same_value",
        raw().replace(b'"source": "test"', b'"source": "test", "source": "test"'),
        None,
        None,
        "duplicate_key",
    ),
    ("ts_naive_fraction", raw(occurred_at="2026-03-02T10:00:00.250"), None, None, "naive_timestamp"),
    ("org_code_short", raw(org_code="611000"), None, None, "invalid_field"),
    ("org_code_number", raw(org_code=6110000), None, None, "invalid_field"),
    (
        "account_upper",
        raw(account="General"),
        None,
        None,
        "unknown_account",
    ),  # codes are lowercase; checked against the chart
    ("event_id_empty", raw(event_id=""), None, None, "invalid_field"),
    ("event_id_65", raw(event_id="x" * 65), None, None, "invalid_field"),
    ("fiscal_year_string", raw(fiscal_year="2026"), None, None, "invalid_field"),
    ("fiscal_year_1800", raw(fiscal_year=1800), None, None, "invalid_field"),
    ("category_bogus", raw(category="bogus"), None, None, "invalid_field"),
    ("source_empty", raw(source=""), None, None, "invalid_field"),
    ("due_date_bad", raw("commitment", due_date="soon"), None, None, "invalid_field"),
    ("unknown_government", raw(org_code=UNKNOWN_ORG), None, None, "unknown_government"),
    ("unknown_account_foreign", raw(org_code=JONGNO, account=FOREIGN_ACCOUNT), None, None, "unknown_account"),
    ("unknown_account_made_up", raw(account="no_such_account"), None, None, "unknown_account"),
    ("fy_previous_year_in_march", raw(fiscal_year=2025), None, None, "period_closed"),
    ("fy_next_year", raw(fiscal_year=2027), None, None, "fiscal_year_mismatch"),
    (
        "fy_21_jan_kst",
        raw(fiscal_year=2026, occurred_at="2027-01-21T00:30:00+09:00"),
        None,
        None,
        "period_closed",
    ),
    (
        "fy_utc_already_21_jan_in_korea",
        raw(fiscal_year=2026, occurred_at="2027-01-20T16:00:00Z"),
        None,
        None,
        "period_closed",
    ),
    (
        "fy_20_jan_two_years_back",
        raw(fiscal_year=2025, occurred_at="2027-01-20T23:00:00+09:00"),
        None,
        None,
        "period_closed",
    ),
    (
        "fy_new_year_eve_in_new_york_is_jan_1_in_korea",
        raw(fiscal_year=2025, occurred_at="2026-12-31T20:00:00-05:00"),
        None,
        None,
        "period_closed",
    ),
    (
        "fy_new_commitment_after_31_dec",
        raw("commitment", fiscal_year=2026, occurred_at="2027-01-15T10:00:00+09:00", due_date="2027-01-19"),
        None,
        None,
        "period_closed",
    ),
    (
        "fy_new_commitment_1_jan_in_korea_is_after_31_dec",
        raw("commitment", fiscal_year=2026, occurred_at="2026-12-31T15:00:00Z"),
        None,
        None,
        "period_closed",
    ),
    ("close_on_20_jan", close_raw(occurred_at="2027-01-20T23:59:59+09:00"), None, None, "close_too_early"),
    ("close_in_december", close_raw(occurred_at="2026-12-31T23:00:00+09:00"), None, None, "close_too_early"),
    ("close_with_amount", close_raw(amount=5), None, None, "unknown_field"),
    ("close_unknown_government", close_raw(org_code=UNKNOWN_ORG), None, None, "unknown_government"),
    ("close_key_mismatch", close_raw(), JONGNO.encode(), "revenue", "key_mismatch"),
    (
        "carry_forward_without_basis",
        raw("commitment_carry_forward", commitment_id="c-1"),
        None,
        None,
        "missing_basis",
    ),
    ("basis_on_a_commitment", raw("commitment", basis="explicit"), None, None, "field_not_allowed"),
    (
        "carry_forward_without_commitment_id",
        raw("commitment_carry_forward", basis="accident"),
        None,
        None,
        "missing_commitment_id",
    ),
    (
        "fy_31_dec_kst_is_not_next_year",
        raw(fiscal_year=2027, occurred_at="2026-12-31T23:59:59+09:00"),
        None,
        None,
        "fiscal_year_mismatch",
    ),
    ("receipt_without_category", raw(category=_DROP), None, None, "missing_category"),
    ("receipt_null_category", raw(category=None), None, None, "missing_category"),
    ("commitment_without_id", raw("commitment", commitment_id=_DROP), None, None, "missing_commitment_id"),
    ("cancel_without_id", raw("commitment_cancel", commitment_id=_DROP), None, None, "missing_commitment_id"),
    ("transfer_without_to", raw("transfer", to_account=_DROP), None, None, "missing_to_account"),
    ("category_on_payment", raw("payment", category="grant"), None, None, "field_not_allowed"),
    ("category_on_commitment", raw("commitment", category="grant"), None, None, "field_not_allowed"),
    ("category_on_transfer", raw("transfer", category="grant"), None, None, "field_not_allowed"),
    ("commitment_id_on_receipt", raw(commitment_id="c-1"), None, None, "field_not_allowed"),
    ("commitment_id_on_transfer", raw("transfer", commitment_id="c-1"), None, None, "field_not_allowed"),
    ("due_date_on_payment", raw("payment", due_date="2026-04-30"), None, None, "field_not_allowed"),
    ("due_date_on_receipt", raw(due_date="2026-04-30"), None, None, "field_not_allowed"),
    ("due_date_on_cancel", raw("commitment_cancel", due_date="2026-04-30"), None, None, "field_not_allowed"),
    ("to_account_on_receipt", raw(to_account="custody"), None, None, "field_not_allowed"),
    ("to_account_on_payment", raw("payment", to_account="custody"), None, None, "field_not_allowed"),
    ("to_account_on_commitment", raw("commitment", to_account="custody"), None, None, "field_not_allowed"),
    ("transfer_to_itself", raw("transfer", to_account="general"), None, None, "transfer_same_account"),
    (
        "transfer_to_foreign_account",
        raw("transfer", org_code=JONGNO, to_account=FOREIGN_ACCOUNT),
        None,
        None,
        "unknown_to_account",
    ),
    ("transfer_to_made_up_account", raw("transfer", to_account="nowhere"), None, None, "unknown_to_account"),
    ("key_other_org", raw(), JONGNO.encode(), None, "key_mismatch"),
    ("key_empty", raw(), b"", None, "key_mismatch"),
    ("key_with_newline", raw(), SEOUL.encode() + b"\n", None, "key_mismatch"),
    ("receipt_on_expenditure", raw(), None, "expenditure", "wrong_topic"),
    ("payment_on_revenue", raw("payment"), None, "revenue", "wrong_topic"),
    ("commitment_on_revenue", raw("commitment"), None, "revenue", "wrong_topic"),
    ("transfer_on_revenue", raw("transfer"), None, "revenue", "wrong_topic"),
    ("cancel_on_revenue", raw("commitment_cancel"), None, "revenue", "wrong_topic"),
    # the known flows (contract version 3)
    ("order_without_pay_date", raw("payment_order", commitment_id="c-1"), None, None, "missing_pay_date"),
    (
        "order_without_commitment",
        raw("payment_order", pay_date="2026-12-01"),
        None,
        None,
        "missing_commitment_id",
    ),
    (
        "order_on_revenue",
        raw("payment_order", commitment_id="c-1", pay_date="2026-12-01"),
        None,
        "revenue",
        "wrong_topic",
    ),
    (
        "payment_order_id_without_commitment",
        raw("payment", order_id="o-1"),
        None,
        None,
        "missing_commitment_id",
    ),
    (
        "order_id_on_cancel",
        raw("commitment_cancel", commitment_id="c-1", order_id="o-1"),
        None,
        None,
        "field_not_allowed",
    ),
    ("pay_date_on_payment", raw("payment", pay_date="2026-12-01"), None, None, "field_not_allowed"),
    (
        "expected_without_schedule",
        raw("expected_receipt", category="grant", expected_date="2026-12-10", certainty="confirmed"),
        None,
        None,
        "missing_schedule_id",
    ),
    (
        "expected_without_date",
        raw("expected_receipt", category="grant", schedule_id="s-1", certainty="confirmed"),
        None,
        None,
        "missing_expected_date",
    ),
    (
        "expected_without_certainty",
        raw("expected_receipt", category="grant", schedule_id="s-1", expected_date="2026-12-10"),
        None,
        None,
        "missing_certainty",
    ),
    (
        "expected_without_category",
        raw("expected_receipt", schedule_id="s-1", expected_date="2026-12-10", certainty="estimated"),
        None,
        None,
        "missing_category",
    ),
    (
        "expected_on_expenditure",
        raw(
            "expected_receipt",
            category="grant",
            schedule_id="s-1",
            expected_date="2026-12-10",
            certainty="estimated",
        ),
        None,
        "expenditure",
        "wrong_topic",
    ),
    ("schedule_on_payment", raw("payment", schedule_id="s-1"), None, None, "field_not_allowed"),
    ("certainty_on_receipt", raw(certainty="confirmed"), None, None, "field_not_allowed"),
    ("expected_date_on_receipt", raw(expected_date="2026-12-10"), None, None, "field_not_allowed"),
    (
        "commitment_id_on_expected",
        raw(
            "expected_receipt",
            category="grant",
            schedule_id="s-1",
            expected_date="2026-12-10",
            certainty="estimated",
            commitment_id="c-1",
        ),
        None,
        None,
        "field_not_allowed",
    ),
    (
        "bad_certainty",
        raw(
            "expected_receipt",
            category="grant",
            schedule_id="s-1",
            expected_date="2026-12-10",
            certainty="likely",
        ),
        None,
        None,
        "invalid_field",
    ),
    (
        "bad_pay_date",
        raw("payment_order", commitment_id="c-1", pay_date="2026-02-30"),
        None,
        None,
        "invalid_field",
    ),
]

REQUIRED = ["event_id", "org_code", "account", "fiscal_year", "kind", "amount", "occurred_at", "source"]
CASES += [(f"missing_{f}", raw(**{f: _DROP}), None, None, "missing_field") for f in REQUIRED]


@pytest.mark.parametrize(
    ("value", "key", "side", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rejection_reason(value: bytes, key: bytes | None, side: str | None, expected: str) -> None:
    assert reason(value, key, side) == expected


def test_every_stateless_reason_has_a_case() -> None:
    covered = {c[4] for c in CASES}
    assert covered == STATELESS, (STATELESS - covered, covered - STATELESS)


def test_reasons_are_documented() -> None:
    assert STATEFUL <= set(REASONS)
    assert WORKER_ONLY <= set(REASONS)
    assert all(isinstance(v, str) and v for v in REASONS.values())


def test_invalid_utf8_inside_a_json_string_is_a_rejection() -> None:
    """decode() promises never to raise on bad input; a poison message must be dead-lettered."""
    value = b'{"event_id": "\xff"}'
    try:
        res = check(value)
    except UnicodeDecodeError as exc:  # pragma: no cover - documents the bug
        pytest.fail(f"check_message raised {exc!r} on {value!r}")
    assert isinstance(res, Rejection) and res.reason == "not_utf8"


def test_invalid_utf8_in_full_event_is_a_rejection() -> None:
    value = raw(source="\udcff").replace(b"\\udcff", b"\xff")
    assert b"\xff" in value
    try:
        res = check(value)
    except UnicodeDecodeError as exc:  # pragma: no cover - documents the bug
        pytest.fail(f"check_message raised {exc!r} on {value!r}")
    assert isinstance(res, Rejection) and res.reason == "not_utf8"


def test_reason_does_not_depend_on_the_bad_value_text() -> None:
    """The reason code must come from the error's location, not from text the sender chose."""
    assert reason(raw(kind="missing required field `amount`")) == "invalid_kind"
    assert reason(raw(kind="unknown field `x`")) == "invalid_kind"


def test_first_rejection_wins_for_oversized_before_decoding() -> None:
    value = raw() + b" " * (8192 - len(raw()))
    assert len(value) == 8192
    assert isinstance(check(value), Event)  # exactly the maximum is fine
    assert reason(value + b" ") == "oversized"
    assert isinstance(check_message(value + b" ", None, None, max_bytes=9000), Event)
    res = check_message(raw(), None, None, max_bytes=10)
    assert isinstance(res, Rejection) and res.reason == "oversized"


# -- the 20 January rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("occurred_at", "allowed"),
    [
        ("2027-01-20T23:00:00+09:00", {2026, 2027}),
        ("2027-01-21T00:30:00+09:00", {2027}),
        ("2027-01-20T16:00:00Z", {2027}),  # 2027-01-21 01:00 in Korea
        ("2027-01-20T14:59:59Z", {2026, 2027}),  # 2027-01-20 23:59:59 in Korea
        ("2027-01-20T15:00:00+00:00", {2027}),  # midnight in Korea
        ("2027-01-01T00:00:00+09:00", {2026, 2027}),
        ("2026-12-31T23:59:59+09:00", {2026}),
        ("2026-12-31T15:00:00Z", {2026, 2027}),  # 2027-01-01 00:00 in Korea
        ("2026-12-31T20:00:00-05:00", {2026, 2027}),  # 2027-01-01 10:00 in Korea
        ("2026-03-02T10:00:00+09:00", {2026}),
        ("2027-02-01T00:00:00+09:00", {2027}),
    ],
)
def test_fiscal_year_window(occurred_at: str, allowed: set[int]) -> None:
    for fy in range(2024, 2029):
        res = check(raw(fiscal_year=fy, occurred_at=occurred_at))
        if fy in allowed:
            assert isinstance(res, Event), (fy, res)
            assert res.fiscal_year == fy
        else:  # a year whose cash processing ended is closed; a later one does not exist yet
            expected = "period_closed" if fy < min(allowed) else "fiscal_year_mismatch"
            assert isinstance(res, Rejection) and res.reason == expected, (fy, res)


# -- valid events of every kind ---------------------------------------------------------------

VALID = {
    "receipt": body("receipt", category="grant"),
    "commitment": body("commitment", commitment_id="c-9", due_date="2026-05-31"),
    "commitment_no_due": body("commitment", due_date=_DROP),
    "commitment_cancel": body("commitment_cancel", commitment_id="c-9"),
    "payment": body("payment"),
    "payment_on_commitment": body("payment", commitment_id="c-9"),
    "transfer": body("transfer", account="general", to_account="custody"),
    "reversal_of_receipt": body("receipt", event_id="ev-2", reverses="ev-1"),
    "reversal_of_transfer": body("transfer", event_id="ev-2", reverses="ev-1"),
    "reversal_of_commitment": body("commitment", event_id="ev-2", reverses="ev-1"),
    "min_amount": body("payment", amount=1),
    "max_amount": body("receipt", amount=10**15),
    "jongno_receipt": body("receipt", org_code=JONGNO, account=min(GOVS[JONGNO].account_codes)),
    "prior_year_in_january": body("payment", fiscal_year=2026, occurred_at="2027-01-20T23:00:00+09:00"),
    "utc_timestamp": body("payment", occurred_at="2026-03-02T01:00:00Z"),
    "explicit_null_optional": body("payment", commitment_id=None, to_account=None, reverses=None),
    "carry_forward_in_december": body(
        "commitment_carry_forward",
        commitment_id="c-9",
        basis="explicit",
        occurred_at="2026-12-28T10:00:00+09:00",
    ),
    "carry_forward_on_20_january": body(
        "commitment_carry_forward",
        commitment_id="c-9",
        basis="accident",
        occurred_at="2027-01-20T23:00:00+09:00",
    ),
}


@pytest.mark.parametrize(
    "occurred_at", ["2027-01-21T00:00:00+09:00", "2027-01-20T15:00:00Z", "2027-02-10T18:00:00+09:00"]
)
def test_a_close_from_21_january_is_valid_on_either_topic(occurred_at: str) -> None:
    for key in (None, SEOUL.encode()):
        for side in (None, "revenue", "expenditure"):
            res = check(close_raw(occurred_at=occurred_at), key, side)
            assert isinstance(res, YearClose), (occurred_at, key, side, res)
            assert (res.fiscal_year, res.org_code) == (2026, SEOUL)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_event_passes(name: str) -> None:
    d = VALID[name]
    value = json.dumps(d).encode()
    for key in (None, str(d["org_code"]).encode()):
        for side in (None, SIDE[str(d["kind"])]):
            ev = check(value, key, side)
            assert isinstance(ev, Event), (name, key, side, ev)
            assert ev.event_id == d["event_id"]
            assert ev.org_code == d["org_code"]
            assert ev.account == d["account"]
            assert ev.kind == d["kind"]
            assert type(ev.amount) is int and ev.amount == d["amount"]
            assert type(ev.fiscal_year) is int and ev.fiscal_year == d["fiscal_year"]
            assert ev.occurred_at.tzinfo is not None
            assert ev.occurred_at == dt.datetime.fromisoformat(str(d["occurred_at"]))  # "Z" too
            for opt in ("category", "commitment_id", "to_account", "reverses"):
                assert getattr(ev, opt) == d.get(opt)
            if d.get("due_date"):
                assert ev.due_date == dt.date.fromisoformat(str(d["due_date"]))


def test_every_kind_has_a_valid_example() -> None:
    assert {d["kind"] for d in VALID.values()} == set(SIDE)


def test_decode_is_key_order_and_whitespace_insensitive() -> None:
    d = body("transfer")
    a = decode(json.dumps(d).encode())
    b = decode(json.dumps(dict(reversed(list(d.items()))), indent=2).encode())
    assert isinstance(a, Event) and a == b


# -- never raises ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(sorted(SIDE)))
    d = body(kind)
    for _ in range(draw(st.integers(0, 3))):
        field = draw(
            st.sampled_from(
                REQUIRED + ["category", "commitment_id", "due_date", "to_account", "reverses", "extra"]
            )
        )
        if draw(st.booleans()):
            d.pop(field, None)
        else:
            d[field] = draw(json_values)
    return json.dumps(d).encode()  # json: integers beyond 64 bits too


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.binary(max_size=64) | mutated_events(),
    key=st.none() | st.binary(max_size=8),
    side=st.sampled_from([None, "revenue", "expenditure"]),
)
def test_check_message_never_raises(value: bytes, key: bytes | None, side: str | None) -> None:
    res = check_message(value, key, side)
    if isinstance(res, Rejection):
        assert res.reason in STATELESS
    else:
        assert isinstance(res, Event)
        assert 1 <= res.amount <= 10**15 and type(res.amount) is int


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_check_message_never_raises_on_bytes_in_a_string(junk: bytes) -> None:
    value = b'{"event_id": "' + junk.replace(b'"', b"").replace(b"\\", b"") + b'"}'
    res = check_message(value, None, None)
    assert isinstance(res, Rejection) and res.reason in STATELESS


def test_fast_acceptance_agrees_with_the_full_rules() -> None:
    """check_message accepts the common shapes without running every rule; over every
    combination of the fields the rules look at, it must answer exactly what the full rules
    (decode + check_stateless + key + topic) answer."""
    import itertools

    from streams.contract import _full_rules

    cases = 0
    for kind, cat, cid, due, to, (at, fy), key, side in itertools.product(
        SIDE,
        [None, "grant"],
        [None, "c-9"],
        [None, "2026-04-30"],
        [None, "custody", "general"],
        [
            ("2026-03-02T10:00:00+09:00", 2026),
            ("2026-03-02T10:00:00+09:00", 2025),
            ("2026-01-15T10:00:00+09:00", 2025),
            ("2026-01-25T10:00:00+09:00", 2025),
            ("2026-12-31T20:00:00Z", 2027),
            ("2026-12-31T20:00:00Z", 2026),
            ("2026-03-02T10:00:00+00:00", 2026),
        ],
        [None, SEOUL.encode(), b"3000000"],
        [None, "revenue", "expenditure"],
    ):
        value = raw(
            kind,
            category=cat or _DROP,
            commitment_id=cid or _DROP,
            due_date=due or _DROP,
            to_account=to or _DROP,
            occurred_at=at,
            fiscal_year=fy,
        )
        full = decode(value)
        if isinstance(full, Event):
            full = _full_rules(full, key, side)
        assert check_message(value, key, side) == full, (value, key, side)
        cases += 1
    assert cases == len(SIDE) * 2 * 2 * 2 * 3 * 7 * 3 * 3
