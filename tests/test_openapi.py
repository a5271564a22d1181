"""The OpenAPI document is a contract integrators can build on: every operation (whoever adds it)
has a typed success body, its security, its errors as problems, its request body; no money is a
``number``. No stack: the document ``serving.app.create_app`` serves.

The checks walk the whole document, so an operation added later is held to the same rules; each
check is also run on a document broken on purpose, to show it can fail.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from fastapi.routing import APIRoute

from serving import models
from serving.app import create_app
from serving.problems import PROBLEM_JSON
from serving.security import SESSION_COOKIE, is_public

WRITES = {"post", "put", "patch"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app()


@pytest.fixture(scope="module")
def doc(app: Any) -> dict[str, Any]:
    return app.openapi()


def _walk(routes: list[Any]) -> Iterator[APIRoute]:
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from _walk(inner.routes)
        elif isinstance(r, APIRoute) and r.include_in_schema:
            yield r


def guarded_operations(app: Any) -> set[tuple[str, str]]:
    """(path, method) of every documented operation that requires a permission (the route
    depends on ``serving.security.require``), found from the routes, not from the document."""
    out = set()
    for r in _walk(app.routes):
        names = [getattr(d.call, "__name__", "") for d in r.dependant.dependencies]
        if any(n.startswith("require_") for n in names):
            out |= {(r.path, m.lower()) for m in r.methods or ()}
    return out


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method in METHODS:
                yield path, method, op


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/"), ref
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def is_object(doc: dict[str, Any], schema: dict[str, Any]) -> bool:
    """An object with properties (directly or by $ref), or a choice (anyOf/oneOf) of such."""
    choice = schema.get("anyOf") or schema.get("oneOf")
    if choice and "$ref" not in schema:
        return all(is_object(doc, s) for s in choice)
    schema = resolve(doc, schema)
    return schema.get("type") == "object" and bool(schema.get("properties"))


def typed_success(doc: dict[str, Any], op: dict[str, Any]) -> bool:
    """A 2xx response whose body schema is an object with properties."""
    for status, resp in op.get("responses", {}).items():
        if not status.startswith("2"):
            continue
        for media in resp.get("content", {}).values():
            if is_object(doc, media.get("schema") or {}):
                return True
    return False


def bodies(op: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, schema) of every body an operation documents, request and responses."""
    for media, m in op.get("requestBody", {}).get("content", {}).items():
        yield f"requestBody {media}", m.get("schema") or {}
    for status, resp in op.get("responses", {}).items():
        for media, m in resp.get("content", {}).items():
            yield f"{status} {media}", m.get("schema") or {}


def is_problem(resp: dict[str, Any]) -> bool:
    content = resp.get("content", {})
    return set(content) == {PROBLEM_JSON} and content[PROBLEM_JSON].get("schema") == {"$ref": PROBLEM_REF}


def schemas_in(node: Any, name: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (property name, schema) below ``node``, however nested (anyOf, items, ...)."""
    if isinstance(node, dict):
        if name:
            yield name, node
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                for prop, s in v.items():
                    yield from schemas_in(s, prop)
            elif k in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(v, list):
                for s in v:
                    yield from schemas_in(s, name)
            elif k in ("items", "additionalProperties") and isinstance(v, dict):
                yield from schemas_in(v, name)


def allows_number(schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    return t == "number" or (isinstance(t, list) and "number" in t)


def findings(doc: dict[str, Any], guarded: set[tuple[str, str]]) -> list[str]:
    """Everything in the document that breaks the contract's rules (empty: none)."""
    out: list[str] = []
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        responses = op.get("responses", {})
        if not typed_success(doc, op):
            out.append(f"{where}: no typed success response")
        if (path, method) in guarded:
            if not op.get("security"):
                out.append(f"{where}: guarded but no security")
            for status in ("401", "403"):
                if status not in responses:
                    out.append(f"{where}: guarded but no {status}")
        elif op.get("security"):
            out.append(f"{where}: public but lists security")
        if (op.get("parameters") or op.get("requestBody")) and (
            "422" not in responses or not is_problem(responses["422"])
        ):
            out.append(f"{where}: parameters without a problem-typed 422")
        if "{" in path and "404" not in responses:
            out.append(f"{where}: names a resource but no 404")
        if method in WRITES:
            body = op.get("requestBody", {}).get("content", {})
            if not any(m.get("schema") for m in body.values()):
                out.append(f"{where}: a write without a requestBody schema")
        for status, resp in responses.items():
            if status[0] in "45" and not is_problem(resp):
                out.append(f"{where}: {status} is not a problem")
        for what, schema in bodies(op):
            # a $ref with sibling keywords means both at once (JSON Schema 2020-12): what FastAPI
            # writes when a route has a response_model and a hand-written schema for one status
            if "$ref" in schema and {"anyOf", "oneOf", "allOf", "type", "properties"} & set(schema):
                out.append(f"{where}: {what} is a $ref with sibling keywords")
    components = doc.get("components", {}).get("schemas", {}).values()
    for name, schema in (found for component in components for found in schemas_in(component)):
        # Only durations may be numbers; money (and every other count) is an integer.
        if allows_number(schema) and not name.endswith("seconds"):
            out.append(f"schema property {name} is a number")
    return out


def test_the_document_keeps_the_contract(app: Any, doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    assert findings(doc, guarded_operations(app)) == []


async def test_the_served_document_is_the_completed_one(doc: dict[str, Any]) -> None:
    """/openapi.json (what /docs and clients read) is the completed document, public."""
    import httpx

    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        r = await c.get("/openapi.json")
        assert r.status_code == 200 and r.json() == doc
        assert (await c.get("/docs")).status_code == 200


def test_the_checks_can_fail(app: Any, doc: dict[str, Any]) -> None:
    guarded = guarded_operations(app)
    bad = copy.deepcopy(doc)
    summary = bad["paths"]["/v1/summary"]["get"]
    summary["responses"]["200"]["content"]["application/json"]["schema"] = {"type": "object"}
    del summary["security"]
    summary["responses"]["422"]["content"] = {"application/json": {"schema": {"type": "object"}}}
    del bad["paths"]["/v1/tokens"]["post"]["requestBody"]
    del bad["paths"]["/v1/alerts/{alert_id}"]["get"]["responses"]["404"]
    bad["components"]["schemas"]["Totals"]["properties"]["spendable"] = {"type": "number"}
    bad["paths"]["/healthz"]["get"]["security"] = [{"bearerAuth": []}]
    session = bad["paths"]["/v1/session"]["get"]["responses"]["200"]["content"]["application/json"]
    session["schema"]["anyOf"] = [{"$ref": "#/components/schemas/SignedOut"}]
    found = findings(bad, guarded)
    for expected in (
        "GET /v1/summary: no typed success response",
        "GET /v1/summary: guarded but no security",
        "GET /v1/summary: parameters without a problem-typed 422",
        "GET /v1/summary: 422 is not a problem",
        "POST /v1/tokens: a write without a requestBody schema",
        "GET /v1/alerts/{alert_id}: names a resource but no 404",
        "schema property spendable is a number",
        "GET /healthz: public but lists security",
        "GET /v1/session: 200 application/json is a $ref with sibling keywords",
    ):
        assert expected in found, (expected, found)


def test_security_schemes(app: Any, doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    cookie = [s for s in schemes.values() if s.get("in") == "cookie"]
    assert [c["name"] for c in cookie] == [SESSION_COOKIE]
    csrf = next(k for k, s in schemes.items() if s.get("in") == "header")
    assert schemes[csrf]["name"] == "X-CSRF-Token"
    cookie_name = next(k for k, s in schemes.items() if s.get("in") == "cookie")
    guarded = guarded_operations(app)
    assert len(guarded) >= 15
    for path, method, op in operations(doc):
        if (path, method) not in guarded:
            assert is_public(method.upper(), path), (method, path)
            continue
        # bearer alone suffices; the cookie needs the CSRF header for a write (not for a read)
        assert {"bearerAuth": []} in op["security"], (method, path)
        with_cookie = [req for req in op["security"] if cookie_name in req]
        assert with_cookie, (method, path)
        needs_csrf = method not in ("get", "head")
        assert all((csrf in req) == needs_csrf for req in with_cookie), (method, path, op["security"])
    # the ones the middleware lets through unauthenticated list none
    for path, method in (("/healthz", "get"), ("/readyz", "get"), ("/v1/session", "post")):
        assert "security" not in doc["paths"][path][method]
    assert "security" not in doc["paths"]["/problems/{reason}"]["get"]


def test_errors_are_problems(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "reason"}
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert "HTTPValidationError" not in str(doc)
    ops = doc["paths"]
    for status in ("401", "403", "429", "503", "422", "404"):
        assert is_problem(ops["/v1/positions/{org_code}"]["get"]["responses"][status]), status
    assert is_problem(ops["/v1/alerts/{alert_id}/ack"]["post"]["responses"]["409"])
    for status in ("413", "431"):
        assert is_problem(ops["/v1/thresholds/{org_code}/{account}"]["put"]["responses"][status])


def test_request_bodies_are_the_decoders_types(doc: dict[str, Any]) -> None:
    """The writes' bodies are the msgspec structs they decode (strict, unknown members refused)."""
    from alerts.config import Override
    from serving.alerts import AckBody
    from serving.session import NewToken, SignIn

    ops = doc["paths"]
    expected = {
        ("/v1/session", "post"): SignIn,
        ("/v1/tokens", "post"): NewToken,
        ("/v1/thresholds/{org_code}/{account}", "put"): Override,
        ("/v1/alerts/{alert_id}/ack", "post"): AckBody,
    }
    for (path, method), struct in expected.items():
        body = ops[path][method]["requestBody"]
        schema = resolve(doc, body["content"]["application/json"]["schema"])
        assert set(schema["properties"]) == set(struct.__struct_fields__), path
        assert schema["additionalProperties"] is False
    assert ops["/v1/alerts/{alert_id}/ack"]["post"]["requestBody"]["required"] is False
    floor = resolve(
        doc,
        ops["/v1/thresholds/{org_code}/{account}"]["put"]["requestBody"]["content"]["application/json"][
            "schema"
        ],
    )["properties"]["floor_krw"]
    assert {"integer", "null"} == {s["type"] for s in floor["anyOf"]}


def test_lists_page(doc: dict[str, Any]) -> None:
    """Every list (a body with ``next``) takes ``limit`` (default and maximum documented) and
    ``cursor``."""
    lists = []
    for path, method, op in operations(doc):
        schema = resolve(
            doc,
            op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {}),
        )
        if "next" not in schema.get("properties", {}):
            continue
        lists.append(path)
        params = {p["name"]: p for p in op["parameters"]}
        limit = params["limit"]["schema"]
        assert limit["type"] == "integer" and limit["default"] >= 1 and limit["maximum"] >= limit["default"]
        assert "cursor" in params, path
        assert "Link" in op["responses"]["200"]["headers"], path
    assert {"/v1/governments", "/v1/deadletters", "/v1/alerts", "/v1/tokens"} <= set(lists)


def test_conditional_reads(doc: dict[str, Any]) -> None:
    """The reads that answer 304 document If-None-Match and the ETag."""
    conditional = [
        "/v1/positions/{org_code}",
        "/v1/positions/{org_code}/{account}",
        "/v1/summary",
        "/v1/alerts",
        "/v1/alerts/{alert_id}",
    ]
    for path in conditional:
        op = doc["paths"][path]["get"]
        assert "If-None-Match" in {p["name"] for p in op["parameters"]}, path
        assert {"ETag", "Cache-Control"} <= set(op["responses"]["200"]["headers"]), path
        assert "ETag" in op["responses"]["304"]["headers"] and "content" not in op["responses"]["304"]


def _fields(model: type[Any]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_models_mirror_the_structs_they_describe() -> None:
    """The response models that describe msgspec structs name every field of them."""
    from access.tokens import TokenRecord
    from alerts.config import Override, Thresholds
    from alerts.model import Alert, Driver
    from reconcile.run import Difference, Report, StateCheck
    from streams.deadletter import DeadLetter, Source

    def fields(s: type[msgspec.Struct]) -> set[str]:
        return set(s.__struct_fields__)

    assert _fields(models.ThresholdSettings) == fields(Thresholds)
    assert _fields(models.ThresholdOverride) == fields(Override)
    assert _fields(models.TokenInfo) == fields(TokenRecord) | {"status"}
    assert _fields(models.DeadLetter) == fields(DeadLetter)
    assert _fields(models.DeadLetterSource) == fields(Source)
    assert _fields(models.ReconciliationReport) == fields(Report)
    assert _fields(models.Difference) == fields(Difference)
    assert _fields(models.StateCheck) == fields(StateCheck)
    assert _fields(models.Driver) == fields(Driver)
    public = {"name", "province_code", "province_name", "raised_at", "opened_at", "resolved_at"}
    assert _fields(models.Alert) == fields(Alert) | public | {"acknowledged_at", "change"}


def test_money_is_integer_in_the_models() -> None:
    """The money members (KRW) of the bodies are ``int``: JSON integers, exact."""
    money = {"cash", "committed", "available", "restricted", "spendable"}
    for model in (models.Totals, models.FiscalYearTotals, models.ScopeTotals, models.GovernmentTotals):
        for name in money:
            assert model.model_fields[name].annotation is int, (model, name)
    for name in ("cash", "committed", "available"):
        assert models.AccountPosition.model_fields[name].annotation is int, name
    for name in ("floor", "threshold", "projected_cash", "open_amount", "resolve_at", "trend_per_day"):
        assert models.Alert.model_fields[name].annotation == int | None, name
    # a float figure is refused, as it would be by a strict client
    with pytest.raises(ValueError):
        models.Totals.model_validate(
            {"cash": 1.5, "committed": 0, "available": 0, "restricted": 0, "spendable": 0}, strict=True
        )
