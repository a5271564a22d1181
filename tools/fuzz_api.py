"""Fuzz the HTTP API of a running stack with schemathesis, as every role and without a token.

``flock /tmp/cashpos-heavy.lock .venv/bin/python -m tools.fuzz_api`` starts a broker, Redis and a
stack of its own (one worker, the API), fuzzes it and prints the figures: operations, cases and
failures per check, with a reproduction (curl) of the first failure of each check and operation.
Exits 1 when a check failed. ``tests/test_api_fuzz.py`` runs the same against the test session's
infrastructure.

Cases come from the OpenAPI document the API serves (``/openapi.json``), in schemathesis's
positive and negative modes, with real government codes and accounts swapped in half the time (a
random 7-digit code is almost never a government, so reads would stop at 404). ``POST /v1/events``
(and ``POST /v1/events:batch`` when the API has it) also get near-valid events: a valid event with
one or two fields broken, so that both the acceptance and every kind of contract refusal happen.

Checks on every response: schemathesis's ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance`` and ``response_schema_conformance``; ``unauthenticated``: without a
token every non-public operation answers 401 (problem ``unauthorized``); ``event_contract``: an
event the API took (2xx) passes the contract validator ``streams.contract.check_message``, and one
the validator refuses is refused with the validator's reason code (a valid event of the token's
scope, sent with an ingest token, is taken).

``GET /v1/stream`` (SSE, never ends by itself) is read for at most ``STREAM_EVENTS`` events or
``STREAM_SECONDS`` seconds per case; schemathesis then checks the status, content type and the
events it read against the document.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.errors import UnsupportedSchema
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok

from access.policy import Role, resolve_scope
from cashpos.calendar import KST
from cashpos.refdata import governments
from cashpos.settings import Settings
from serving.security import is_public
from streams.contract import REASONS, STATEFUL_REASONS, Rejection, check_message

ANONYMOUS = "anonymous"
# Each role's scope (--org): one government, a province, a few, or all; every role
# (tests/test_api_fuzz.py holds it to access.policy.Role).
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "finance_director": ("3090000",),
    "viewer": ("3090000",),
    "provincial": ("6110000",),
    "national": (),
    "integration": ("3090000", "6260000"),
    "source": ("3090000", "6110000", "6260000"),
    "admin": (),
    "metrics": (),  # no government at all
}
CHECKS: dict[str, Callable[..., Any]] = {
    "not_a_server_error": not_a_server_error,
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
    "response_schema_conformance": response_schema_conformance,
}
CUSTOM_CHECKS = ("unauthenticated", "event_contract", "self_contained_document")
EVENT_PATHS = ("/v1/events", "/v1/events:batch")
STREAM_EVENTS = 2
STREAM_SECONDS = 1.5
REQUEST_SECONDS = 10.0
MAX_EVENT_BYTES = Settings().max_event_bytes  # the API's default (the harness does not change it)


@dataclass
class Report:
    """What a run did and found; :meth:`figures` is the text printed at the end."""

    operations: set[str] = field(default_factory=set)
    cases: Counter[str] = field(default_factory=Counter)  # per role
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # per check
    first: dict[tuple[str, str], str] = field(default_factory=dict)  # (check, op) -> reproduction
    skipped: list[str] = field(default_factory=list)  # (role, op) the budget left out
    ungenerated: dict[str, str] = field(default_factory=dict)  # op -> why schemathesis made no case
    events: Counter[str] = field(default_factory=Counter)  # accepted / refused:<reason>
    seconds: float = 0.0

    @property
    def total_cases(self) -> int:
        return sum(self.cases.values())

    @property
    def total_failures(self) -> int:
        return sum(self.failures.values())

    def fail(self, check: str, op: str, repro: str) -> None:
        self.failures[check] += 1
        self.first.setdefault((check, op), repro)

    def figures(self) -> str:
        lines = [
            (
                f"api fuzz: {len(self.operations)} operations, {self.total_cases} cases in "
                f"{self.seconds:.0f} s, {self.total_failures} failures"
            ),
            "cases per role: " + ", ".join(f"{r} {n}" for r, n in sorted(self.cases.items())),
            "statuses: " + ", ".join(f"{s} {n}" for s, n in sorted(self.statuses.items())),
            "events: " + ", ".join(f"{k} {n}" for k, n in sorted(self.events.items())),
            "failures per check:",
            *(f"  {c}: {self.failures[c]}" for c in (*CHECKS, *CUSTOM_CHECKS)),
        ]
        for op, why in sorted(self.ungenerated.items()):
            lines.append(f"no schemathesis case for {op}: {why}")
        if self.skipped:
            lines.append(f"left out by the time budget: {len(self.skipped)} (role, operation) pairs")
        for (check, op), repro in sorted(self.first.items()):
            lines += [f"--- first {check} failure on {op}:", repro]
        return "\n".join(lines)


@dataclass
class Target:
    base_url: str
    tokens: dict[str, str | None]  # role (or ANONYMOUS) -> bearer token


def _op_name(op: APIOperation) -> str:
    return f"{op.method.upper()} {op.path}"


def _curl(method: str, url: str, headers: dict[str, str], body: bytes | None) -> str:
    parts = [f"curl -sS -X {method} '{url}'"]
    for k, v in headers.items():
        v = "Bearer $TOKEN" if k.lower() == "authorization" else v
        parts.append(f"-H '{k}: {v}'")
    if body is not None:
        parts.append("--data-binary " + json.dumps(body.decode("utf-8", "backslashreplace")))
    return " ".join(parts)


def _problem_reason(content: bytes) -> str | None:
    try:
        body = json.loads(content)
    except ValueError:
        return None
    return body.get("reason") if isinstance(body, dict) else None


# -- the document ------------------------------------------------------------------------------------


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def self_contained(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The document with every ``$ref`` local, so that nothing is fetched from elsewhere, and the
    references that named no schema of the document (a finding each).

    A ``$ref`` to a URI is resolved, as OpenAPI 3.1 allows, to the schema of the document whose
    ``$id`` it is; the event contract's (``streams.contract.SCHEMA_ID``) is otherwise taken from
    ``streams.contract.json_schema()`` (what the reference means), anything else becomes ``{}``."""
    from streams import contract

    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    ids = {
        v["$id"]: f"#/components/schemas/{k}"
        for k, v in schemas.items()
        if isinstance(v, dict) and "$id" in v
    }
    contract_id = getattr(contract, "SCHEMA_ID", None)
    remote: list[str] = []
    for node in list(_walk(doc)):
        ref = node.get("$ref")
        if not isinstance(ref, str) or ref.startswith("#"):
            continue
        if ref in ids:
            node["$ref"] = ids[ref]
            continue
        if ref not in remote:
            remote.append(ref)
        if ref == contract_id:
            node["$ref"] = _embed_contract(schemas)
        else:
            del node["$ref"]
    for name in ids.values():  # the $id changes the base of the schema's own "#/$defs/..." references
        schema = schemas[name.rsplit("/", 1)[1]]
        schema.pop("$id")
    return doc, remote


def _embed_contract(schemas: dict[str, Any]) -> str:
    """The contract's schema as ``components/schemas/ContractEvent`` (its ``$defs`` beside it)."""
    from streams.contract import json_schema

    if "ContractEvent" not in schemas:
        schema = json.loads(json.dumps(json_schema()))
        defs = schema.pop("$defs", {})
        for key in ("$id", "$schema", "$comment"):
            schema.pop(key, None)
        schemas["ContractEvent"] = schema
        for name, sub in defs.items():
            schemas[f"ContractEvent_{name}"] = sub
        for node in _walk([schema, *defs.values()]):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/ContractEvent_" + ref.removeprefix("#/$defs/")
    return "#/components/schemas/ContractEvent"


# -- near-valid events ------------------------------------------------------------------------------


def _valid_event(org: str, account: str) -> dict[str, Any]:
    now = dt.datetime.now(KST).replace(microsecond=0)
    return {
        "event_id": f"fuzz-{uuid.uuid4().hex[:16]}",
        "org_code": org,
        "account": account,
        "fiscal_year": now.year,
        "kind": "receipt",
        "category": "local_tax",
        "amount": 1000,
        "occurred_at": now.isoformat(),
        "source": "tools.fuzz_api",
    }


_BAD_VALUES: dict[str, list[Any]] = {
    "amount": [0, -1, 1, 10**15, 10**15 + 1, 2**63, 2**64 + 1, 1.5, 1e3, "1000", True, None],
    "kind": ["payment", "commitment", "transfer", "commitment_carry_forward", "refund", "", 1],
    "org_code": ["0000000", "309000", "30900000", "abcdefg", 3090000, "6110000", "5000000"],
    "account": ["no_such", "", "GENERAL", "general", 1],
    "fiscal_year": [1989, 2025, 2027, 2201, "2026", 2026.0],
    "occurred_at": [
        "2026-11-20T10:00:00",
        "2026-11-20T10:00:00+0900",
        "2026-11-20T10:00:00Z",
        "2027-01-10T10:00:00+09:00",
        "2026-02-30T10:00:00+09:00",
        "9999-12-31T23:59:59Z",
        "yesterday",
    ],
    "category": ["local_tax", "grant", "fine", None],
    "commitment_id": ["c-1", ""],
    "due_date": ["2026-12-31", "soon"],
    "to_account": ["general", "no_such", "housing"],
    "basis": ["explicit", "because"],
    "reverses": ["e-1"],
    "source": ["", "x" * 129],
    "event_id": ["", "x" * 65],
    "surplus": [1],
}


def _serialise(event: dict[str, Any], raw: str) -> bytes:
    body = json.dumps(event, ensure_ascii=False).encode()
    if raw == "duplicate_key":
        return body[:-1] + b', "amount": 999999}'
    if raw == "not_json":
        return body[:-3]
    if raw == "array":
        return b"[" + body + b"]"
    if raw == "not_utf8":
        return body.replace(b'"fuzz-', b'"\xff\xfe-', 1)
    if raw == "empty":
        return b""
    if raw == "oversized":
        return json.dumps({**event, "source": "x" * MAX_EVENT_BYTES}).encode()
    return body


def near_valid_events(orgs: list[str]) -> st.SearchStrategy[bytes]:
    """A valid event of one of ``orgs`` (or of any government), then up to two fields changed
    (a value from ``_BAD_VALUES``, or the field dropped), sometimes mangled as bytes."""
    govs = governments()

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        org = draw(st.sampled_from(orgs or list(govs)))
        account = draw(st.sampled_from(sorted(govs[org].account_codes)))
        event = _valid_event(org, account)
        for _ in range(draw(st.integers(0, 2))):
            name = draw(st.sampled_from(sorted(_BAD_VALUES)))
            if draw(st.integers(0, 5)) == 0:
                event.pop(name, None)
            else:
                event[name] = draw(st.sampled_from(_BAD_VALUES[name]))
        raw = draw(
            st.sampled_from(["plain"] * 14 + ["duplicate_key", "not_json", "array", "not_utf8", "empty"])
        )
        return _serialise(event, raw)

    return build()


# -- checks of our own ------------------------------------------------------------------------------


def check_unauthenticated(op_path: str, method: str, status: int, content: bytes) -> str | None:
    """Without a token a non-public operation answers 401 with the problem ``unauthorized``."""
    if is_public(method, op_path):
        return None
    if status != 401:
        return f"no token, yet {status} (expected 401)"
    if _problem_reason(content) != "unauthorized":
        return f"401 without the problem reason unauthorized: {content[:200]!r}"
    return None


def check_event(raw: bytes, status: int, content: bytes, may_ingest: bool, scope: set[str] | None) -> str:
    """The verdict on one event sent to POST /v1/events: "" when the answer agrees with the
    contract validator, else what is wrong. ``scope``: the token's governments (None: all)."""
    verdict = check_message(raw, None, None, MAX_EVENT_BYTES)
    reason = _problem_reason(content)
    if 200 <= status < 300:
        if isinstance(verdict, Rejection):
            return f"invalid event accepted ({status}); the contract says {verdict.reason}: {verdict.detail}"
        return ""
    if status in (401, 413, 415, 429) or (status == 403 and not may_ingest):
        return ""  # refused before the contract is consulted (size, media type, token, role)
    if isinstance(verdict, Rejection):
        if reason != verdict.reason:
            return f"refused {status} {reason!r}; the contract's reason is {verdict.reason!r}"
        return ""
    if status == 409 and reason in STATEFUL_REASONS:
        return ""  # event_id_conflict: the id was submitted before with other content
    if reason in REASONS:
        return f"valid event refused {status} with the contract reason {reason!r}"
    in_scope = scope is None or verdict.org_code in scope
    if may_ingest and in_scope and status != 409:
        return f"valid event of the token's scope refused: {status} {content[:200]!r}"
    if may_ingest and not in_scope and not (status == 403 and reason == "forbidden_government"):
        return f"event outside the token's scope answered {status} {reason!r} (expected forbidden_government)"
    return ""


def batch_items(raw: bytes) -> list[bytes]:
    """The events of a batch body as the API splits it: a JSON array's elements (their own
    bytes), else the non-empty NDJSON lines."""
    text = raw.strip()
    if text.startswith(b"["):
        try:
            return [bytes(x) for x in msgspec.json.decode(text, type=list[msgspec.Raw])]
        except msgspec.DecodeError:
            return []
    return [line.strip() for line in text.split(b"\n") if line.strip()]


# -- the run ----------------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, target: Target, examples: int, budget_s: float, seed_: int = 0) -> None:
        self.target = target
        self.examples = examples
        self.deadline = time.monotonic() + budget_s
        self.seed = seed_
        self.report = Report()
        self.cannot: set[tuple[str, GenerationMode]] = set()  # (op, mode) with no case to make
        config = schemathesis.Config.from_dict(
            {
                "base-url": target.base_url,
                "max-stream-events": STREAM_EVENTS,
                "request-timeout": STREAM_SECONDS,
                # no made-up credentials for the security schemes: each role sends its own
                # token, the anonymous run none at all
                "generation": {"with-security-parameters": False},
            }
        )
        self.http = httpx.Client(base_url=target.base_url, timeout=REQUEST_SECONDS, trust_env=False)
        served = self.http.get("/openapi.json")
        served.raise_for_status()
        doc, remote = self_contained(served.json())
        for ref in remote:
            self.report.fail(
                "self_contained_document", "/openapi.json", f"$ref {ref} names no schema of the document"
            )
        self.schema = schemathesis.openapi.from_dict(doc, config=config)
        self.scopes: dict[str, set[str] | None] = {ANONYMOUS: None}
        for role, orgs in ROLE_SCOPES.items():
            scope = resolve_scope(Role(role), orgs)
            self.scopes[role] = None if scope is None else set(scope)

    def operations(self) -> Iterator[APIOperation]:
        for result in self.schema.get_all_operations():
            if not isinstance(result, Ok):
                raise result.err()  # the document itself is broken: nothing to fuzz against
            yield result.ok()

    def headers(self, role: str) -> dict[str, str]:
        token = self.target.tokens.get(role)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def run(self, roles: list[str]) -> Report:
        start = time.monotonic()
        ops = list(self.operations())
        for op in ops:
            self.report.operations.add(_op_name(op))
        for role in roles:
            for op in ops:
                if time.monotonic() > self.deadline:
                    self.report.skipped.append(f"{role} {_op_name(op)}")
                    continue
                self.fuzz_operation(role, op)
                if op.method.upper() == "POST" and op.path in EVENT_PATHS:
                    self.fuzz_events(role, op)
        self.report.seconds = time.monotonic() - start
        self.http.close()
        return self.report

    # schemathesis's cases

    def _strategy(self, role: str, op: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
        scope = self.scopes[role]
        orgs = sorted(scope) if scope else ["3090000", "6110000", "6260000"]
        govs = governments()

        def real_ids(case: Case, org: str, pick: int) -> Case:
            params = case.path_parameters
            if params and pick % 2 == 0:
                if "org_code" in params:
                    params["org_code"] = org
                if "account" in params:
                    accounts = sorted(govs[org].account_codes)
                    params["account"] = accounts[pick % len(accounts)]
            return case

        return st.builds(real_ids, op.as_strategy(mode), st.sampled_from(orgs), st.integers(0, 99))

    def fuzz_operation(self, role: str, op: APIOperation) -> None:
        """Positive cases, then negative ones (where the document leaves anything to negate)."""
        examples = max(2, self.examples // 3) if role == ANONYMOUS else self.examples
        for mode, n in (
            (GenerationMode.POSITIVE, examples),
            (GenerationMode.NEGATIVE, max(1, examples // 2)),
        ):
            if (_op_name(op), mode) in self.cannot:
                continue
            try:
                self._fuzz_mode(role, op, mode, n)
            except Unsatisfiable:
                # negative: nothing in the operation's document can be made invalid (finding
                # that out costs about a second: not again for the next role)
                self.cannot.add((_op_name(op), mode))
            except UnsupportedSchema as exc:
                # A schema schemathesis cannot generate from (not a fault of the API): noted,
                # and the operation's own cases (near-valid events) still run.
                self.report.ungenerated.setdefault(_op_name(op), str(exc).splitlines()[0])
                self.cannot.add((_op_name(op), mode))

    def _fuzz_mode(self, role: str, op: APIOperation, mode: GenerationMode, examples: int) -> None:
        name = _op_name(op)
        headers = self.headers(role)

        @seed(self.seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=self._strategy(role, op, mode))
        def one(case: Case) -> None:
            if time.monotonic() > self.deadline:
                return
            timeout = STREAM_SECONDS if op.path == "/v1/stream" else REQUEST_SECONDS
            try:
                response = case.call(headers=headers, timeout=timeout)
            except Exception as exc:  # noqa: BLE001  no answer at all: a server error too
                self.report.cases[role] += 1
                self.report.fail("not_a_server_error", name, f"{role}: no answer: {exc!r}")
                return
            self.report.cases[role] += 1
            self.report.statuses[response.status_code] += 1
            for check_name, check in CHECKS.items():
                try:
                    case.validate_response(response, checks=[check], headers=headers)
                except (Failure, FailureGroup, AssertionError) as exc:
                    self.report.fail(check_name, name, f"as {role}:\n{exc}")
            if role == ANONYMOUS:
                problem = check_unauthenticated(
                    op.path, op.method.upper(), response.status_code, response.content
                )
                if problem:
                    repro = case.as_curl_command(headers=headers, base_url=self.target.base_url)
                    self.report.fail("unauthenticated", name, f"{problem}\n{repro}")
            if op.method.upper() == "POST" and op.path in EVENT_PATHS:
                raw = response.request.body
                sent = raw if isinstance(raw, bytes) else raw.encode() if isinstance(raw, str) else b""
                self._judge_events(role, op, sent, response.status_code, response.content, headers)

        one()

    # near-valid events, sent as they are (bytes a generator from the schema would not make)

    def fuzz_events(self, role: str, op: APIOperation) -> None:
        name = _op_name(op)
        headers = {**self.headers(role), "Content-Type": "application/json"}
        scope = self.scopes[role]
        orgs = sorted(scope) if scope else []
        batch = op.path.endswith(":batch")
        events = near_valid_events(orgs)
        bodies = st.lists(events, min_size=1, max_size=5).map(lambda xs: b"\n".join(xs)) if batch else events

        @seed(self.seed + 1)
        @settings(
            # the ingest role's cases are the ones the contract judges: most of them go there
            max_examples=self.examples * (10 if role == "source" else 1),
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(body=bodies)
        def one(body: bytes) -> None:
            if time.monotonic() > self.deadline:
                return
            hdrs = dict(headers)
            if batch:
                hdrs["Content-Type"] = "application/x-ndjson"
            response = self.http.post(op.path, content=body, headers=hdrs)
            self.report.cases[role] += 1
            self.report.statuses[response.status_code] += 1
            case = op.Case(body=body, media_type=hdrs["Content-Type"], headers=hdrs)
            repro = _curl("POST", f"{self.target.base_url}{op.path}", hdrs, body)
            for check_name, check in CHECKS.items():
                try:
                    case.validate_response(response, checks=[check], headers=hdrs)
                except (Failure, FailureGroup, AssertionError) as exc:
                    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    self.report.fail(check_name, name, f"as {role}: {first_line}\n{repro}")
            self._judge_events(role, op, body, response.status_code, response.content, hdrs)

        one()

    def _judge_events(
        self, role: str, op: APIOperation, sent: bytes, status: int, content: bytes, headers: dict[str, str]
    ) -> None:
        if role == ANONYMOUS:
            return
        may_ingest = role == "source"
        scope = self.scopes[role]
        repro = _curl("POST", f"{self.target.base_url}{op.path}", headers, sent)
        if not op.path.endswith(":batch"):
            if may_ingest:
                key = "accepted" if 200 <= status < 300 else f"refused:{_problem_reason(content)}"
                self.report.events[key] += 1
            problem = check_event(sent, status, content, may_ingest, scope)
            if problem:
                self.report.fail("event_contract", _op_name(op), f"as {role}: {problem}\n{repro}")
            return
        self._judge_batch(role, op, sent, status, content, may_ingest, scope, repro)

    def _judge_batch(
        self,
        role: str,
        op: APIOperation,
        sent: bytes,
        status: int,
        content: bytes,
        may_ingest: bool,
        scope: set[str] | None,
        repro: str,
    ) -> None:
        """A batch's results line up with its events (``index``): each is judged as POST
        /v1/events would be, by its ``status`` (accepted, duplicate: 2xx) and ``reason``."""
        if not (200 <= status < 300):
            return
        try:
            body = json.loads(content)
        except ValueError:
            return  # content_type/response schema checks report it
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            return
        raws = batch_items(sent)
        for item in results:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("index"), int)
                or item["index"] >= len(raws)
            ):
                self.report.fail(
                    "event_contract", _op_name(op), f"as {role}: a result without its event: {item}\n{repro}"
                )
                continue
            taken = item.get("status") in ("accepted", "duplicate")
            if may_ingest:
                self.report.events["batch:" + str(item.get("status"))] += 1
            answer = json.dumps({"reason": item.get("reason")}).encode()
            problem = check_event(
                raws[item["index"]],
                202 if taken else int(item.get("http_status") or 422),
                answer,
                may_ingest,
                scope,
            )
            if problem:
                self.report.fail(
                    "event_contract",
                    _op_name(op),
                    f"as {role}: batch item {item['index']}: {problem}\n{repro}",
                )


def wait_serving(base_url: str, token: str, timeout: float = 90.0) -> None:
    """Until a worker beats and the history of a government answers (its owner caught up): a
    503 before that is the stack warming up, not a fault for the fuzzer to find."""
    deadline = time.monotonic() + timeout
    last = ""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, timeout=10, trust_env=False) as http:
        while time.monotonic() < deadline:
            ready = http.get("/readyz")
            processor = ready.json().get("processor") or {} if ready.status_code == 200 else {}
            if processor.get("workers") and not processor.get("stale"):
                day = dt.datetime.now(KST).date().isoformat()
                r = http.get("/v1/statements/3090000", params={"from": day, "to": day}, headers=headers)
                if r.status_code != 503:
                    return
                last = f"history: {r.status_code} {r.text[:200]}"
            else:
                last = f"/readyz: {ready.status_code} {ready.text[:200]}"
            time.sleep(0.5)
    raise TimeoutError(f"the stack did not start serving in {timeout:.0f} s: {last}")


def role_tokens(make_token: Callable[..., str]) -> dict[str, str | None]:
    """A token per role (``make_token(role, orgs, rate_per_s=...)``, e.g. ``Stack.token``) with a
    rate limit no fuzz run reaches, and none for ANONYMOUS."""
    tokens: dict[str, str | None] = {
        role: make_token(role, orgs, rate_per_s=100_000) for role, orgs in ROLE_SCOPES.items()
    }
    tokens[ANONYMOUS] = None
    return tokens


def fuzz(
    base_url: str,
    tokens: dict[str, str | None],
    *,
    examples: int = 6,
    budget_s: float = 150.0,
    roles: list[str] | None = None,
    seed_: int = 0,
) -> Report:
    """Fuzz the API at ``base_url`` as each of ``roles`` (default: every role, then ANONYMOUS)."""
    fuzzer = Fuzzer(Target(base_url, tokens), examples, budget_s, seed_)
    return fuzzer.run(roles or [*ROLE_SCOPES, ANONYMOUS])


@contextmanager
def own_stack(root: Path) -> Iterator[tuple[str, dict[str, str | None]]]:
    """A broker, Redis and a stack (one worker, the API) of its own: (API address, tokens)."""
    from cashpos.devstack import new_stack
    from cashpos.embedded import start_infra

    with start_infra(root / "infra") as infra:
        stack = new_stack(infra, root / "stack")
        try:
            stack.start_worker()
            stack.start_api()
            stack.wait_ready()
            wait_serving(stack.api, stack.token("national"))
            yield stack.api, role_tokens(stack.token)
        finally:
            stack.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fuzz_api", description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=6, help="cases per operation and role (default 6)")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for the whole run (default 150)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--role", action="append", help="only these roles (repeatable; 'anonymous': no token)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cashpos-fuzz-") as tmp, own_stack(Path(tmp)) as (url, tokens):
        report = fuzz(
            url, tokens, examples=args.examples, budget_s=args.budget, roles=args.role, seed_=args.seed
        )
    print(report.figures())
    return 1 if report.total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
