"""The hot reads without FastAPI's routing and dependency solving.

``GET /v1/positions/{org}`` and ``GET /v1/summary`` are what thousands of dashboards and
systems ask for all day. Through FastAPI a read costs ~280 µs of CPU, most of it routing,
dependency solving and the request's exception/exit-stack layers, not the handler. This
innermost middleware (inside authentication, limits and observation) answers the plain form of
those two reads with the route's own handler code (``serving.app``); every other request, and
every one of those two that is not plain, goes to the app as before. "Plain" means: GET, no
query string, no ``If-None-Match``, no root path, a caller the access policy allows without an
audit record (``access.policy.decide`` is asked exactly as ``require`` asks it; a refusal or an
audited read takes the ordinary path, which answers or records it as it always has). A handler
that cannot answer (a government not ready, Redis down) returns None, and the ordinary path
answers the problem. The response is the same bytes and headers; the route is put in the scope,
so the metrics count it under its template as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response

POSITIONS = "/v1/positions/"
SUMMARY = "/v1/summary"

Handler = Callable[[Request, str], Awaitable[Response | None]]


@dataclass
class FastRoutes:
    """The handlers (set by ``create_app`` once the routes exist) and the routes they stand for."""

    positions: Handler | None = None
    summary: Handler | None = None
    routes: dict[str, Any] = field(default_factory=dict)  # template -> the app's route object


class FastReads:
    def __init__(self, app: Any, fast: FastRoutes) -> None:
        self.app = app
        self.fast = fast

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            path: str = scope["path"]
            handler: Handler | None = None
            template = ""
            arg = ""
            if path.startswith(POSITIONS):
                arg = path[len(POSITIONS) :]
                if arg and "/" not in arg:
                    handler, template = self.fast.positions, "/v1/positions/{org_code}"
            elif path == SUMMARY:
                handler, template = self.fast.summary, SUMMARY
            if (
                handler is not None
                and not scope.get("root_path")
                and not any(k == b"if-none-match" for k, _ in scope["headers"])
            ):
                response = await handler(Request(scope, receive), arg)
                if response is not None:
                    scope["route"] = self.fast.routes.get(template)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
