"""Freshness probes: how long from a source system's 202 until the officials see the event.

1 in ``LOADTEST_PROBE_EVERY`` posts that the processor cannot legitimately refuse
(:func:`probeable`: no reversal, no commitment follow-up) is probed (:func:`probe`): before
posting, the prober opens the government's stream with a snapshot (the account's version v0);
after the 202 it polls ``GET /v1/positions/{org}/{account}?fiscal_year=`` and reads the stream
until the row shows version > v0 with ``last_event_at`` >= the event's ``occurred_at``. Two
``FRESHNESS`` samples per probe, ``api`` and ``stream`` (ms from the 202); one not seen within
``LOADTEST_FRESHNESS_TIMEOUT_S`` (30 s) is a failure.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

import gevent
import orjson
from gevent.pool import Group
from locust.contrib.fasthttp import FastHttpSession

from loadtest.locust_env import FRESHNESS_TIMEOUT_S, director_auth
from loadtest.recording import COUNTS, fire
from loadtest.sse import SSE


class Poster(Protocol):
    """A source system: its client, and ``post`` (the monotonic time of the 202, or None)."""

    client: FastHttpSession

    def post(self, raw: bytes) -> float | None: ...


PROBES = Group()


def _iso_ms(s: str | None) -> int:
    if not s:
        return 0
    return int(datetime.fromisoformat(s).timestamp() * 1000)  # "Z" too (Python 3.11)


def _row(rows: list[dict[str, Any]], account: str, fy: int) -> tuple[int, int]:
    """``rows``: the API's decoded JSON."""
    for r in rows:
        if r.get("account") == account and r.get("fiscal_year") == fy:
            return int(r.get("version") or 0), _iso_ms(r.get("last_event_at"))
    return 0, 0


def probeable(ev: dict[str, Any]) -> bool:
    """Events whose effect cannot legitimately be refused by the processor's stateful rules."""
    if ev.get("reverses"):
        return False
    kind = ev.get("kind")
    return not (kind == "commitment_cancel" or (kind == "payment" and ev.get("commitment_id")))


def probe(user: Poster, raw: bytes, ev: dict[str, Any]) -> None:
    """Post ``raw`` (``ev``: it decoded) and measure when its effect is visible through the API
    and the stream."""
    org, account, fy = str(ev["org_code"]), str(ev["account"]), int(ev["fiscal_year"])
    ours = _iso_ms(str(ev["occurred_at"]))
    client = user.client
    auth = director_auth(org)  # what the government's own director sees
    sse: SSE | None = None
    poller: gevent.Greenlet | None = None
    api_name, stream_name = "api: 202 -> GET shows it", "stream: 202 -> SSE frame shows it"
    try:
        resp = client.get(
            f"/v1/stream?org={org}&snapshot=1", stream=True, headers=auth, name="probe: /v1/stream?org=[org]"
        )
        if resp.status_code != 200:
            COUNTS["probe_stream_failed"] += 1
            user.post(raw)  # still a transaction
            return
        sse = SSE(resp)
        v0 = None
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:  # the first frame after `retry:` is the snapshot
            kind, data = sse.next()
            if kind == "snapshot":
                body = orjson.loads(data)["governments"].get(org)
                v0 = _row(body["accounts"], account, fy)[0] if body else 0
                break
        if v0 is None:
            COUNTS["probe_no_snapshot"] += 1
            user.post(raw)
            return
        accepted_at = user.post(raw)
        if accepted_at is None:
            return
        t_end = accepted_at + FRESHNESS_TIMEOUT_S

        def poll() -> None:
            n = 0
            while time.monotonic() < t_end:
                r = client.get(
                    f"/v1/positions/{org}/{account}?fiscal_year={fy}",
                    headers=auth,
                    name="probe: /v1/positions/[org]/[account]",
                )
                if r.status_code == 200:
                    v, last = _row(orjson.loads(r.content)["fiscal_years"], account, fy)
                    if v > v0 and last >= ours:
                        fire("FRESHNESS", api_name, (time.monotonic() - accepted_at) * 1000)
                        return
                n += 1
                gevent.sleep(0.05 if n < 40 else 0.25)
            fire(
                "FRESHNESS",
                api_name,
                FRESHNESS_TIMEOUT_S * 1000,
                TimeoutError(f"not visible through the API in {FRESHNESS_TIMEOUT_S:g}s"),
            )

        poller = gevent.spawn(poll)
        seen = False
        while time.monotonic() < t_end:  # heartbeats (~2 s) bound the wait past t_end
            kind, data = sse.next()
            if kind not in ("positions", "snapshot"):
                continue
            body = orjson.loads(data)["governments"].get(org)
            if body:
                v, last = _row(body["accounts"], account, fy)
                if v > v0 and last >= ours:
                    fire("FRESHNESS", stream_name, (time.monotonic() - accepted_at) * 1000)
                    seen = True
                    break
        if not seen:
            fire(
                "FRESHNESS",
                stream_name,
                FRESHNESS_TIMEOUT_S * 1000,
                TimeoutError(f"not on the stream in {FRESHNESS_TIMEOUT_S:g}s"),
            )
        sse.close()
        sse = None
        poller.join()
        poller = None
    except EOFError as exc:  # the server ended the probe's stream
        fire("FRESHNESS", stream_name, 0, exc)
    finally:
        if sse is not None:
            sse.close()
        if poller is not None:
            poller.kill(block=False)
