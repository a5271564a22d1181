"""The access tokens the simulated users carry, and the file that hands them to Locust.

The runner makes them (:func:`provision_tokens`: on the embedded stack with the stack's token
store, against ``--host`` through the admin API with :class:`ApiTokens`) and writes them to a
0600 file (:func:`write_tokens`, never in the reports); every Locust process reads that file,
named by ``LOADTEST_TOKENS`` (:func:`load_tokens`). The format (:class:`Tokens`)::

    {"national": t, "integration": t, "source": t, "directors": {org: t, ...}}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import httpx
import orjson

from loadtest.console import log

# Many simulated users share one token (every director of a government, every source system):
# the tokens' rate limit must not be what the load test measures.
TOKEN_RATE_PER_S = 100_000


class Tokens(TypedDict):
    """The tokens file."""

    national: str
    integration: str
    source: str
    directors: dict[str, str]  # org_code -> that government's finance_director token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def provision_tokens(create: Callable[[str, list[str], str], str], run_id: str) -> Tokens:
    """The tokens the simulated users carry, made with ``create(role, orgs, name) -> token``:

    ``{"national": t, "integration": t, "source": t, "directors": {org: t, ...}}``: the national
    view and the /metrics scrape; one integration system serving every government; every source
    system (one gateway, all governments); the finance director of each of the 243 governments."""
    from cashpos.refdata import governments

    orgs = list(governments())
    return {
        "national": create("national", [], f"loadtest {run_id} national"),
        "integration": create("integration", orgs, f"loadtest {run_id} integration"),
        "source": create("source", orgs, f"loadtest {run_id} source"),
        "directors": {o: create("finance_director", [o], f"loadtest {run_id} director {o}") for o in orgs},
    }


class ApiTokens:
    """Provision through an existing deployment's admin API (``POST /v1/tokens``); the tokens
    expire after a day and :meth:`revoke` revokes them after the run."""

    def __init__(self, host: str, admin_token: str) -> None:
        self.client = httpx.Client(base_url=host, timeout=10, headers=bearer(admin_token))
        self.ids: list[str] = []

    def _call(self, method: str, url: str, json: dict[str, Any] | None = None) -> httpx.Response:
        for _ in range(60):
            r = self.client.request(method, url, json=json)
            if r.status_code != 429:  # the admin token's own rate limit: wait and go on
                return r
            time.sleep(float(r.headers.get("retry-after", "1")))
        return r

    def create(self, role: str, orgs: list[str], name: str) -> str:
        r = self._call(
            "POST",
            "/v1/tokens",
            json={
                "role": role,
                "orgs": orgs,
                "name": name,
                "expires_days": 1,
                "rate_per_s": TOKEN_RATE_PER_S,
            },
        )
        if r.status_code != 201:
            raise RuntimeError(f"POST /v1/tokens ({role}) answered {r.status_code}: {r.text[:200]}")
        body = r.json()
        self.ids.append(body["id"])
        return str(body["token"])

    def revoke(self) -> None:
        for i in self.ids:
            try:
                self._call("DELETE", f"/v1/tokens/{i}")
            except httpx.HTTPError as exc:
                log(f"could not revoke token {i}: {exc!r}")
        self.client.close()


def write_tokens(path: Path, tokens: Tokens) -> None:
    """The tokens for the Locust processes: a secret file (0600), never in the reports."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps(tokens))


def load_tokens(path: str | None) -> Tokens:
    """The tokens file a Locust process is given (``LOADTEST_TOKENS``)."""
    if not path:
        raise RuntimeError(
            "LOADTEST_TOKENS is not set: the API needs tokens. python -m loadtest.run "
            "provisions them (or give it --tokens FILE / --admin-token)"
        )
    d = orjson.loads(Path(path).read_bytes())
    missing = [k for k in ("national", "integration", "source", "directors") if not d.get(k)]
    if missing:
        raise RuntimeError(f"{path}: no {', '.join(missing)} token(s)")
    return d
