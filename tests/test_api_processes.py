"""Several API processes behind one address (``cashpos api --processes 2``, SO_REUSEPORT).

Over many fresh connections both processes answer (each response names its process's pid in
``x-cashpos-process``), and every answer, a read, the summary and a problem alike, is the same
whichever process gave it, and the same as the single API process of the stack gives.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from cashpos.embedded import free_port, wait_port
from serving.server import PROCESS_HEADER

integration = pytest.mark.integration

PATHS = (
    "/v1/positions/6110000",  # 서울특별시
    "/v1/summary",
    "/v1/positions/3000000/no-such-account",  # a problem (404)
)
VOLATILE = {"write_age_seconds", "processor_heartbeat_age_seconds"}  # seconds since: move on


def _stable(value: Any) -> Any:
    """A body without the ages that grow between two requests."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def answer(base: str, path: str, token: str) -> tuple[str, tuple[int, str | None, Any]]:
    """One request on a connection of its own: (pid, (status, ETag, stable body))."""
    with httpx.Client(timeout=10) as c:  # a fresh connection: the kernel picks the process
        r = c.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})
    return r.headers[PROCESS_HEADER], (r.status_code, r.headers.get("etag"), _stable(orjson.loads(r.content)))


@integration
def test_two_processes_on_one_port_answer_alike(stack) -> None:
    port = free_port()
    proc = stack.start(
        "api-pair",
        "api",
        "--processes",
        "2",
        CASHPOS_REDIS_URL=stack.redis_urls["api"],
        CASHPOS_API_PORT=str(port),
    )
    try:
        wait_port(port, 60, proc, stack.api_connect_host, "api --processes 2")
        base = f"http://{stack.api_connect_host}:{port}"
        token = stack.token("national")
        single = {p: answer(stack.api, p, token)[1] for p in PATHS}
        assert single[PATHS[0]][0] == 200 and single[PATHS[1]][0] == 200 and single[PATHS[2]][0] == 404
        by_pid: dict[str, dict[str, tuple[int, str | None, Any]]] = {}
        for _ in range(40):
            for p in PATHS:
                pid, got = answer(base, p, token)
                by_pid.setdefault(pid, {})
                assert by_pid[pid].setdefault(p, got) == got, (pid, p)  # each process: one answer
                assert got == single[p], (pid, p)  # the same as the single process's
            if len(by_pid) == 2 and all(len(v) == len(PATHS) for v in by_pid.values()):
                break
        assert len(by_pid) == 2, f"one process answered every fresh connection: {list(by_pid)}"
        assert all(set(v) == set(PATHS) for v in by_pid.values()), by_pid.keys()
        assert str(proc.pid) not in by_pid  # the supervisor serves nothing itself
    finally:
        stack.stop("api-pair")
    assert proc.returncode == 0
