"""The OpenAPI 3.1 document (``/openapi.json``, ``/docs``): FastAPI's, completed.

FastAPI writes the paths, parameters and the success bodies (the routes' ``response_model``\\ s,
``serving.models``). :func:`install` completes the document once, when it is first asked for:

* **Security.** Two ways to authenticate (``serving.security``): ``bearerAuth``
  (``Authorization: Bearer <token>``) and ``sessionCookie`` (the HttpOnly cookie set by
  ``POST /v1/session``), which for a write also needs ``csrfHeader`` (``X-CSRF-Token``). Every
  operation whose route ``require``\\ s a permission lists them; public ones list none.
* **Errors.** Every error is a problem (``application/problem+json``, the ``Problem`` schema):
  401, 403, 429 and 503 on guarded operations (the middleware refuses before any route; 503:
  the token store, or the serving store, does not answer), 404 where the path names a resource
  (and where a query names a government), 422 on every operation with parameters or a body
  (FastAPI's own ``HTTPValidationError`` is replaced: the API never answers it), 409 where a
  route declares it, 413 and 408 on operations with a body, 431 on every one
  (``serving.limits``). A route's own description of a status is kept.
* **Request bodies.** The writes decode their bodies with msgspec (strict: no coercion, unknown
  members refused); :func:`json_body` declares such a body on a route from the very
  ``msgspec.Struct`` it decodes, so the schema cannot drift from what is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from serving.models import Problem, StreamData, StreamEvent
from serving.problems import PROBLEM_JSON, PROBLEM_REF

COMPONENTS = "#/components/schemas/{name}"
SAFE = frozenset({"get", "head", "options"})
BEARER = "bearerAuth"
COOKIE = "sessionCookie"
CSRF = "csrfHeader"
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token (`cashpos token create`, or POST /v1/tokens by an admin).",
    },
    COOKIE: {
        "type": "apiKey",
        "in": "cookie",
        "name": "cashpos_session",
        "description": "The dashboard's session (POST /v1/session sets it, HttpOnly).",
    },
    CSRF: {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": "With the session cookie, a write sends the cashpos_csrf cookie's value here.",
    },
}

_BODIES: dict[str, type[msgspec.Struct]] = {}  # every msgspec body a route declared (json_body)

# status -> (reasons, description) of the errors added where they apply
_AUTH = {
    "401": "no token, or an unknown, expired or revoked one (reason unauthorized)",
    "403": "the token's role lacks the permission (reason forbidden), or a cookie session's write "
    "without its X-CSRF-Token (reason csrf_mismatch)",
    "429": "the token's rate limit is spent (reason rate_limited; Retry-After)",
    "503": "a store the request needs does not answer (reason unavailable), or the serving copy "
    "is being rebuilt (reason not_ready, with governments); Retry-After",
}
_NOT_FOUND = "no such resource, or one outside the token's scope (reason not_found)"
_INVALID = (
    "a parameter or the body is invalid (reason invalid_request, field the one at fault, errors "
    "every one), or a paging cursor is not this list's (reason invalid_cursor)"
)
_BODY = {
    "408": "the body did not arrive in time (reason request_timeout)",
    "413": "the body is larger than the endpoint takes (reason body_too_large)",
}
_HEADERS = "the request line and headers are too large (reason headers_too_large)"
_CACHE_CONTROL = {
    "description": "private, no-cache: keep the body, but ask again (If-None-Match) before using it",
    "schema": {"type": "string"},
}
_ETAG = {
    "description": "the representation's validator (serving/caching.py: weak on positions and "
    "summary, over the figures; strong on alerts, over the bytes)",
    "schema": {"type": "string"},
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "ETags the client holds (a list, or *): a match answers 304 without a body",
    "schema": {"type": "string"},
}
_LINK = {
    "description": '<url>; rel="next": the next page (sent when there is one; the body\'s next)',
    "schema": {"type": "string"},
}


def json_body(struct: type[msgspec.Struct], description: str, required: bool = True) -> dict[str, Any]:
    """A route's ``openapi_extra`` declaring the JSON body it decodes as ``struct``."""
    _BODIES[struct.__name__] = struct
    return {
        "requestBody": {
            "description": description,
            "required": required,
            "content": {"application/json": {"schema": {"$ref": COMPONENTS.format(name=struct.__name__)}}},
        }
    }


def struct_schema(*structs: type[msgspec.Struct]) -> dict[str, Any]:
    """A schema naming msgspec structs (added to the components): one, or any of several."""
    refs = []
    for struct in structs:
        _BODIES[struct.__name__] = struct
        refs.append({"$ref": COMPONENTS.format(name=struct.__name__)})
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}}


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        elif isinstance(r, APIRoute) and r.include_in_schema:
            yield r


def guarded(route: APIRoute) -> bool:
    """The route ``require``\\ s a permission (``serving.security.require``)."""
    return any(getattr(d.call, "__name__", "").startswith("require_") for d in route.dependant.dependencies)


def _is_validation_error(resp: dict[str, Any]) -> bool:
    schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("/HTTPValidationError")


def complete(doc: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Add security, problem responses and the msgspec body schemas to FastAPI's document."""
    comps = doc.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    _, defs = models_json_schema(
        [
            (Problem, "serialization"),
            (StreamEvent, "serialization"),
            (StreamData, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    for name, s in defs.get("$defs", {}).items():
        schemas.setdefault(name, s)
    _, bodies = msgspec.json.schema_components(list(_BODIES.values()), ref_template=COMPONENTS)
    for name, s in bodies.items():
        schemas.setdefault(name, s)
    comps["securitySchemes"] = SECURITY_SCHEMES

    guard = {(r.path, m.lower()) for r in _routes(routes) if guarded(r) for m in r.methods or ()}
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            responses: dict[str, Any] = op.setdefault("responses", {})
            has_body = "requestBody" in op
            params = op.get("parameters", [])
            if (path, method) in guard:
                op["security"] = (
                    [{BEARER: []}, {COOKIE: []}] if method in SAFE else [{BEARER: []}, {COOKIE: [], CSRF: []}]
                )
                for status, desc in _AUTH.items():
                    responses.setdefault(status, problem(desc))
            names_resource = "{" in path or any(p.get("name") == "org" for p in params)
            if names_resource:
                responses.setdefault("404", problem(_NOT_FOUND))
            if params or has_body:
                if "422" not in responses or _is_validation_error(responses["422"]):
                    responses["422"] = problem(_INVALID)
            else:
                responses.pop("422", None)
            if has_body:
                for status, desc in _BODY.items():
                    responses.setdefault(status, problem(desc))
            responses.setdefault("431", problem(_HEADERS))
            _document_headers(doc, method, op)
            # every error answered is a problem, whatever a route wrote for it
            for status, resp in responses.items():
                if status[0] in "45" and PROBLEM_JSON not in resp.get("content", {}):
                    resp["content"] = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _document_headers(doc: dict[str, Any], method: str, op: dict[str, Any]) -> None:
    """The caching and paging headers: Cache-Control on reads, ETag and If-None-Match where a
    304 is documented, Link on lists (a body with ``next``)."""
    responses = op["responses"]
    ok = next((responses[s] for s in ("200", "201") if s in responses), None)
    if method != "get" or ok is None or "application/json" not in ok.get("content", {}):
        return  # (the live stream sends its own: no-cache, no-transform)
    headers = ok.setdefault("headers", {})
    headers["Cache-Control"] = _CACHE_CONTROL
    if "304" in responses:
        headers["ETag"] = _ETAG
        responses["304"]["headers"] = {"ETag": _ETAG, "Cache-Control": _CACHE_CONTROL}
        if not any(p.get("name") == "If-None-Match" for p in op.get("parameters", [])):
            op.setdefault("parameters", []).append(_IF_NONE_MATCH)
    schema = ok.get("content", {}).get("application/json", {}).get("schema", {})
    ref = str(schema.get("$ref", ""))
    body = doc["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}) if ref else schema
    if "next" in body.get("properties", {}):
        headers["Link"] = _LINK


def install(app: FastAPI) -> None:
    """Serve the completed document (built once, on first use)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(build(), app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI documents this override
