"""Pure ASGI middleware counting requests and timing them by route template; and putting
``Cache-Control`` on every read (``serving.caching``), since it sees every response anyway.

(FastAPI's ``@app.middleware("http")`` wraps every response in extra tasks and streams; at
thousands of requests per second that wrapper alone costs more than the handlers.)
"""

from __future__ import annotations

import time
from typing import Any

from cashpos.metrics import ApiMetrics
from serving.caching import add_cache_control, is_read

Scope = dict[str, Any]


class ObserveMiddleware:
    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t = time.perf_counter()
        status = 500
        read = is_read(scope)

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if read:
                    add_cache_control(message)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            if not path.startswith("/v1/stream"):
                self.metrics.latency.labels(path).observe(time.perf_counter() - t)
