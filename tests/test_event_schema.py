"""The published JSON Schema (docs/event.schema.json) against the validator (``check_message``).

Three claims, each by property tests (hypothesis) on unit level:

a. what the schema generates, the validator accepts, unless it refuses with a reason code the
   schema cannot decide (``SCHEMA_GAPS``), and those refusals stay a minority;
b. on broadly generated candidates (wrong, missing and extra fields, bad numbers and dates), every
   event the validator accepts is valid under the schema (so each the schema rejects is refused),
   and each the schema accepts is accepted, or refused for a gap;
c. the file in docs is ``schema_text()`` byte for byte, and names its ``$schema``, ``$id`` and
   contract version.

The message value only: ``check_message`` runs without key and topic (key_mismatch, missing_key,
wrong_topic, wrong_partition are about the Kafka record, listed as gaps).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed (types-jsonschema)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import utils as conjecture_utils
from hypothesis_jsonschema import _from_schema, from_schema

from cashpos.names import CLOSE_KIND
from cashpos.refdata import governments
from streams.contract import (
    CONTRACT_VERSION,
    REASONS,
    SCHEMA_GAPS,
    SCHEMA_ID,
    STATEFUL_REASONS,
    Record,
    Rejection,
    check_message,
    json_schema,
    schema_text,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "event.schema.json"
SCHEMA: dict[str, Any] = json_schema()
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
GOVS = governments()
ORGS = sorted(GOVS)
KINDS = ["receipt", "commitment", "commitment_cancel", "payment", "transfer", "commitment_carry_forward"]
CATEGORIES = ["local_tax", "non_tax", "grant", "subsidy", "bond", "other"]
BASES = ["explicit", "accident", "continuing"]


def verdict(doc: object) -> Record | Rejection:
    """The validator on ``doc`` as JSON bytes: UTF-8, or an unpaired surrogate as its escape."""
    try:
        raw = json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # raw, it would be bytes no UTF-8 decoder takes: test_close_not_utf8
        raw = json.dumps(doc).encode()
    return check_message(raw, None, None)


def schema_errors(doc: object) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def gap_explains(doc: dict[str, Any], rej: Rejection) -> bool:
    """Whether a refusal of a schema-valid ``doc`` is one the schema cannot decide."""
    if _unpaired_surrogate(doc):  # not_json; but a close is named invalid_kind: test_close_surrogate
        return rej.reason == "not_json" or (doc.get("kind") == CLOSE_KIND and rej.reason == "invalid_kind")
    if rej.reason not in SCHEMA_GAPS:
        return False
    if rej.reason == "invalid_timestamp":  # the gap is this narrow: a close at the end of 9999
        return doc.get("kind") == CLOSE_KIND and str(doc.get("occurred_at")).startswith("9999-12-3")
    return True


def _unpaired_surrogate(doc: dict[str, Any]) -> bool:
    try:
        json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


# -- c. the file, the identity, the list of gaps ---------------------------------------------------


def test_docs_file_is_the_generated_schema() -> None:
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    assert text == schema_text(), "docs/event.schema.json is stale: make schema"
    assert json.loads(text) == SCHEMA
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == SCHEMA_ID and SCHEMA_ID.endswith(f"/v{CONTRACT_VERSION}.json")
    assert SCHEMA["version"] == CONTRACT_VERSION
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert len(text.encode()) < 300_000


def test_gaps_are_reason_codes_listed_in_schema_and_docs() -> None:
    assert set(SCHEMA_GAPS) <= set(REASONS)
    assert STATEFUL_REASONS <= set(SCHEMA_GAPS)
    docs = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    section = docs[docs.index("## The JSON Schema") :]
    section = section[: section.index("\n## ", 4)]
    for reason in SCHEMA_GAPS:
        assert f"{reason}:" in SCHEMA["$comment"]
        assert f"`{reason}`" in section, f"docs/events.md, The JSON Schema, does not list {reason}"
    assert SCHEMA_ID in section and f'"version": {CONTRACT_VERSION}' in section


def test_integral_floats_are_the_one_number_difference() -> None:
    """JSON Schema's data model counts 1.0 as an integer (stated in the schema's $comment); the
    strict decoder does not. Everything else about numbers the schema decides."""
    doc = _valid_receipt()
    assert VALIDATOR.is_valid(doc) and not isinstance(verdict(doc), Rejection)
    for field, value, reason in [("amount", 5.0, "invalid_amount"), ("fiscal_year", 2026.0, "invalid_field")]:
        odd = {**doc, field: value}
        assert VALIDATOR.is_valid(odd)
        res = verdict(odd)
        assert isinstance(res, Rejection) and res.reason == reason
    assert "1.0" in SCHEMA["$comment"]


def test_close_not_utf8() -> None:
    """Found by the candidates below: a message naming fiscal_year_close whose Event decode fails
    before a string that is not UTF-8 made decode() try the close decoder, which raised
    UnicodeDecodeError: check_message raised instead of refusing with not_utf8."""
    res = check_message(b'{"kind":"fiscal_year_close","source":"\xff"}', None, None)
    assert isinstance(res, Rejection) and res.reason == "not_utf8"


def test_close_surrogate() -> None:
    """Found by the candidates below: a close whose string holds an unpaired surrogate escape was
    refused as invalid_kind (the Event decoder's error, after the close decoder's DecodeError);
    an event with the same string is not_json, and so is the close now."""
    close = b'{"event_id":"c","org_code":"6110000","fiscal_year":2026,"kind":"fiscal_year_close",'
    close += b'"occurred_at":"2027-01-21T00:00:00+09:00","source":"\\ud800"}'
    res = check_message(close, None, None)
    assert isinstance(res, Rejection) and res.reason == "not_json", res


def _valid_receipt() -> dict[str, Any]:
    return {
        "event_id": "ev-1",
        "org_code": "6110000",
        "account": "general",
        "fiscal_year": 2026,
        "kind": "receipt",
        "amount": 5,
        "occurred_at": "2026-03-02T10:00:00+09:00",
        "source": "test",
        "category": "local_tax",
    }


# -- a. generated from the schema ------------------------------------------------------------------


def _inline(node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by its target."""
    if isinstance(node, dict):
        if "$ref" in node:
            assert set(node) == {"$ref"}, node
            return _inline(SCHEMA["$defs"][node["$ref"].removeprefix("#/$defs/")])
        return {k: _inline(v) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v) for v in node]
    return node


INLINED = _inline(SCHEMA)


def _conjuncts(node: Any, known: dict[str, Any]) -> list[dict[str, Any]]:
    """The schemas an instance must meet, given the values of the properties in ``known``: each
    ``if`` that reads only those is decided, leaving its ``then`` or its ``else``; ``allOf`` is
    flattened. Mechanical, knows no contract rule: every constraint left is the schema's own."""
    if node is True:
        return []
    assert isinstance(node, dict), node
    node = dict(node)
    out: list[dict[str, Any]] = []
    if "if" in node:
        cond = node.pop("if")
        then, other = node.pop("then", True), node.pop("else", True)
        assert set(cond) <= {"properties", "required"} and set(cond["properties"]) <= set(known), cond
        out += _conjuncts(then if jsonschema.Draft202012Validator(cond).is_valid(known) else other, known)
    for sub in node.pop("allOf", []):
        out += _conjuncts(sub, known)
    if node:
        out.append(node)
    return out


def _specialised(known: dict[str, Any]) -> dict[str, Any]:
    """The schema for instances with these values of kind, org_code and fiscal_year, as one
    ``allOf`` without conditionals. hypothesis-jsonschema turns the whole schema's hundreds of
    if/then (kind, chart of accounts, fiscal year) into anyOf and then filters a product of
    them; decided first, what is left merges into a single object schema it generates from."""
    conjuncts = _conjuncts(INLINED, known)
    for part in conjuncts:  # a pinned property: its value, checked against its schema
        for name in set(part.get("properties", ())) & set(known):
            assert jsonschema.Draft202012Validator(part["properties"][name]).is_valid(known[name])
            part["properties"] = {**part["properties"], name: {"const": known[name]}}
    return {"allOf": conjuncts}


def _discriminators() -> st.SearchStrategy[dict[str, Any]]:
    event = INLINED["else"]["properties"]
    close = INLINED["then"]["properties"]
    return st.fixed_dictionaries(
        {
            "kind": from_schema({"enum": event["kind"]["enum"] + close["kind"]["enum"]}),
            "org_code": from_schema(event["org_code"]),
            "fiscal_year": from_schema(event["fiscal_year"]),
        }
    )


class _ManyWithMore:
    """hypothesis-jsonschema 0.23.1 (the latest) draws an object's properties with Hypothesis'
    internal ``many(...).more()``; Hypothesis 6.170 dropped ``more()`` for ``with many(...) as m:
    for _ in m:``. The old method on the new protocol, for that one loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._many = conjecture_utils.many(*args, **kwargs)
        self._steps = iter(self._many.__enter__())

    def more(self) -> bool:
        if next(self._steps, False) is None:
            return True
        self._many.__exit__(None)
        return False

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


class _Utils:
    many = _ManyWithMore


@pytest.fixture
def object_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(conjecture_utils.many, "more"):
        monkeypatch.setattr(_from_schema, "cu", _Utils)


def test_schema_generated_events_pass_the_validator(object_generation: None) -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def run(data: st.DataObject) -> None:
        known = data.draw(_discriminators(), label="kind, org_code, fiscal_year")
        doc = data.draw(from_schema(_specialised(known)), label="event")
        assert isinstance(doc, dict) and not schema_errors(doc), "generated outside the schema"
        res = verdict(doc)
        if isinstance(res, Rejection):
            assert gap_explains(doc, res), f"schema-valid event refused: {res}\n{doc}"
            seen[res.reason] += 1
        else:
            seen["accepted"] += 1

    run()
    # The fiscal-year patterns keep the gaps (mostly a date near the year's ends) from crowding
    # out acceptance: about half are accepted (46-55 % over runs); a third is the bound that a
    # generator drifting out of the year would break, and chance would not.
    assert 3 * seen["accepted"] >= seen.total(), seen


# -- b. broad candidates -----------------------------------------------------------------------------

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 10**15, 10**15 + 1, 2**63, 1989, 1990, 2200, 2201, 1.0, 5.0, 1.5, 2026.0]),
    st.text(max_size=70),
    st.sampled_from(["", "general", "custody", "GENERAL", "general\n", " general", "6110000", "\ud800"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` 19 times in 20: most candidates break one rule or none, so both verdicts come."""
    return st.integers(0, 19).flatmap(lambda n: bad if n == 19 else good)  # 0, the simplest: good


def _text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Lengths in range, or one past either end; astral characters count once."""
    alphabet = st.one_of(st.characters(), st.sampled_from("a-_😀"))
    return _mostly(
        st.text(alphabet, min_size=min_size, max_size=max_size),
        st.text(alphabet, min_size=max_size + 1, max_size=max_size + 1) | st.just(""),
    )


@st.composite
def _timestamps(draw: st.DrawFn, near: dt.date) -> str:
    """occurred_at around ``near``: every form msgspec takes, or one part in a form it does not."""

    def around(days: int) -> st.SearchStrategy[dt.date]:
        lo, hi = near.toordinal() - days, near.toordinal() + days
        return st.dates(
            dt.date.fromordinal(max(lo, 1)), dt.date.fromordinal(min(hi, dt.date.max.toordinal()))
        )

    d = draw(st.one_of(around(2), around(30), around(30), st.dates()))
    y, m = d.year, d.month
    part = {
        "date": st.just(d.isoformat()),
        "sep": st.sampled_from(["T", "T", "t", " "]),
        "hh": st.sampled_from(["00", "09", "15", "23"]),
        "mm": st.sampled_from(["00", "30", "59"]),
        "ss": st.sampled_from([":00", ":59"]),
        "frac": st.sampled_from(["", "", ".5", ".123456", ".9999994", ".9999996", ".99999999999"]),
        "off": st.sampled_from(["+09:00", "+09:00", "Z", "z", "-00:00", "+23:59", "-23:59", "-05:00"]),
    }
    bad = {
        "date": st.sampled_from(
            [
                f"{y:04d}-02-29" if not calendar.isleap(y) else f"{y:04d}-02-30",
                f"{y:04d}-{m:02d}-32",
                f"{y:04d}-04-31",
                f"{y:04d}-13-01",
                f"{y:04d}-00-10",
                f"{y:04d}-{m:02d}-00",
                f"{y:04d}-{m}-5",
                f"{y:04d}{m:02d}15",
                "0000-01-01",
                f"+{y:04d}-{m:02d}-01",
            ]
        ),
        "sep": st.sampled_from(["_", "", "TT", "\t"]),
        "hh": st.sampled_from(["24", "7", "99"]),
        "mm": st.sampled_from(["60", "5"]),
        "ss": st.sampled_from([":60", "", ":5"]),
        "frac": st.sampled_from([".", ",5", ".5.5"]),
        "off": st.sampled_from(["+24:00", "+09:60", "+0900", "+09", "", " +09:00", "+09:00\n", "UTC"]),
    }
    broken = draw(_mostly(st.none(), st.sampled_from(list(part))))
    got = {k: draw(bad[k] if k == broken else v) for k, v in part.items()}
    return f"{got['date']}{got['sep']}{got['hh']}:{got['mm']}{got['ss']}{got['frac']}{got['off']}"


def _fields(chart: list[str], other: list[str]) -> dict[str, st.SearchStrategy[Any]]:
    """Per field, its values: valid 19 times in 20 (whether the kind takes it: ``candidates``)."""
    return {
        "event_id": _text(1, 64),
        "account": _mostly(
            st.sampled_from(chart), st.sampled_from(other) | st.from_regex(r"\A[a-z_]{1,8}\Z")
        ),
        "amount": _mostly(st.integers(1, 10**15), st.integers(-5, 0) | st.integers(10**15 - 1, 10**15 + 2)),
        "source": _text(1, 128),
        "category": _mostly(st.sampled_from(CATEGORIES), st.sampled_from(["LOCAL_TAX", "tax", ""])),
        "commitment_id": _text(1, 64),
        "due_date": _mostly(
            st.dates().map(dt.date.isoformat),
            st.sampled_from(["2026-02-29", "2024-02-29", "2026-04-31", "0000-01-01", "2026-1-5", "20260105"])
            | st.sampled_from(["2026-03-02T00:00:00+09:00", "2026-03-02\n"]),
        ),
        "to_account": _mostly(st.sampled_from(chart), st.sampled_from(other) | st.just("")),
        "reverses": _text(1, 64),
        "basis": _mostly(st.sampled_from(BASES), st.sampled_from(["Explicit", "other", ""])),
    }


# The optional fields each kind carries by design (the prose of docs/events.md, Fields), to lean
# the candidates towards valid events; the schema and the validator decide, not this table.
MEANT = {
    "receipt": {"category"},
    "commitment": {"commitment_id", "due_date"},
    "commitment_cancel": {"commitment_id"},
    "payment": {"commitment_id"},
    "transfer": {"to_account"},
    "commitment_carry_forward": {"commitment_id", "basis"},
}
OPTIONAL = ["category", "commitment_id", "due_date", "to_account", "reverses", "basis"]


@st.composite
def candidates(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 49)) == 0:
        return draw(st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=5), st.none()))
    kind = draw(_mostly(st.sampled_from([*KINDS, CLOSE_KIND]), st.sampled_from(["refund", "Receipt", ""])))
    org = draw(st.sampled_from(ORGS))
    chart = [a.code for a in GOVS[org].accounts]
    other = sorted({a.code for g in GOVS.values() for a in g.accounts} - set(chart)) or chart
    year = draw(_mostly(st.integers(1990, 2200), st.sampled_from([1989, 2201, 0, -1])))
    near = dt.date(min(max(year, 1), 9998), 1, 1) + dt.timedelta(days=draw(st.integers(0, 385)))
    if kind == CLOSE_KIND:
        after = dt.date(min(max(year, 1), 9998) + 1, 1, 21) + dt.timedelta(days=draw(st.integers(0, 3000)))
        near = draw(st.sampled_from([after, after, dt.date(9999, 12, 30), near]))
    fields = _fields(chart, other)
    doc: dict[str, Any] = {
        "event_id": draw(fields["event_id"]),
        "org_code": draw(_mostly(st.just(org), st.sampled_from(["0000000", "611000", org + " ", int(org)]))),
        "fiscal_year": year,
        "kind": kind,
        "occurred_at": draw(_timestamps(near)),
        "source": draw(fields["source"]),
    }
    if kind != CLOSE_KIND or draw(st.integers(0, 19)) == 0:
        doc["account"] = draw(fields["account"])
        doc["amount"] = draw(fields["amount"])
    for name in OPTIONAL:
        meant = name in MEANT.get(kind, ())
        choice = draw(st.integers(0, 39))
        if choice < 2:  # null: absent for the decoder, so allowed wherever absence is
            doc[name] = None
        elif (choice < 38) == meant or name == "reverses" and choice < 6:
            doc[name] = draw(fields[name])
    if kind == "transfer" and draw(st.integers(0, 9)) == 0:
        doc["to_account"] = doc.get("account")
    if draw(st.integers(0, 4)) == 0:  # a field dropped, made junk, or one added
        action = draw(st.sampled_from(["drop", "junk", "extra"]))
        if action == "drop":
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif action == "junk":
            doc[draw(st.sampled_from(sorted(doc)))] = draw(JUNK)
        else:
            doc[draw(st.sampled_from(["note", "Amount", "amount ", "fiscal_year_close", ""]))] = draw(JUNK)
    return doc


def _integral_float(doc: dict[str, Any]) -> bool:
    return any(isinstance(v, float) and v.is_integer() for v in doc.values())


def test_validator_and_schema_agree_on_broad_candidates() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(candidates())
    def run(doc: object) -> None:
        res = verdict(doc)
        errors = schema_errors(doc)
        if not isinstance(res, Rejection):
            # Accepted by the validator: valid under the schema (equally: a schema rejection is
            # a refusal). Exact, no exception.
            assert not errors, f"accepted, but the schema rejects it: {errors}\n{doc}"
            seen["accepted"] += 1
            return
        seen["refused"] += 1
        if errors:
            seen["both reject"] += 1
            return
        # The converse: the schema accepts, the validator refuses: only for a gap, or for the one
        # difference of data model (an integral float; test_integral_floats_... above).
        assert isinstance(doc, dict), doc
        if res.reason in ("invalid_amount", "invalid_field") and _integral_float(doc):
            seen["integral float"] += 1
            return
        assert gap_explains(doc, res), f"schema-valid, refused not for a gap: {res}\n{doc}"
        seen[f"gap {res.reason}"] += 1

    run()
    # Both sides exercised, and the candidates are no mere noise.
    assert seen["accepted"] >= 50 and seen["both reject"] >= 100, seen
