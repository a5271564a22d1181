"""Honest staleness (issue #19): a government's figures say stale, why and how far behind when
no live worker owns its partition or its owner is catching up; never an old figure as fresh."""

from __future__ import annotations

import time

import httpx
import pytest

from serving.staleness import CATCHING_UP, NO_OWNER, NO_PROCESSOR, STALE_AFTER_MS, Heartbeats
from tests.conftest import Stack, new_stack

NOW = 1_800_000_000_000


def test_why_stale_from_the_heartbeats() -> None:
    beats = [
        {"heartbeat_ms": NOW - 500, "partitions": [0, 1], "behind": {"1": 42_000}},
        {"heartbeat_ms": NOW - STALE_AFTER_MS - 1, "partitions": [2]},  # dead: its partition has no owner
        {"heartbeat_ms": NOW - 900, "partitions": [3], "behind": {}},
    ]
    hb = Heartbeats.read(beats, NOW)
    assert hb.workers == 2 and hb.newest_ms == NOW - 500
    assert hb.why_stale(0) == (None, None)
    assert hb.why_stale(1) == (CATCHING_UP, 42_000)
    assert hb.why_stale(2) == (NO_OWNER, None)
    assert hb.why_stale(3) == (None, None)
    assert dict(hb.web) == {}  # none published a web address: no history owner known
    assert Heartbeats.read(beats[1:2], NOW).why_stale(2) == (NO_PROCESSOR, None)
    assert Heartbeats.read([], NOW).why_stale(0) == (NO_PROCESSOR, None)
    # the history's owners: the live workers' web addresses by partition (a dead one's none)
    with_web = [{**beats[0], "web": "10.0.0.1:6066"}, {**beats[1], "web": "10.0.0.2:6066"}]
    assert dict(Heartbeats.read(with_web, NOW).web) == {0: "10.0.0.1:6066", 1: "10.0.0.1:6066"}


@pytest.mark.integration
def test_a_dead_worker_makes_its_figures_stale_until_one_serves_them_again(
    infra: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    s: Stack = new_stack(infra, tmp_path_factory.mktemp("stale"))  # type: ignore[arg-type]  # the session's Infra
    try:
        s.start_worker("w1")
        s.start_api()
        s.wait_ready()
        org = "3090000"
        url = f"{s.api}/v1/positions/{org}"
        with httpx.Client(timeout=10) as c:
            # just after start the worker may still report its partitions as catching up (no
            # fetch answered yet): wait until it has caught up
            deadline = time.monotonic() + 30
            while (fresh := c.get(url, headers=s.headers).json()["freshness"])["stale"]:
                assert time.monotonic() < deadline, fresh
                time.sleep(0.3)
            assert fresh["stale_reason"] is None
            etag = c.get(url, headers=s.headers).headers["etag"]
            s.stop("worker-w1", kill=True)
            deadline = time.monotonic() + STALE_AFTER_MS / 1000 + 10
            while not (f := c.get(url, headers=s.headers).json()["freshness"])["stale"]:
                assert time.monotonic() < deadline, f
                time.sleep(0.5)
            assert f["stale_reason"] == NO_PROCESSOR
            # a client holding the fresh representation's ETag gets the stale one, not a 304
            r = c.get(url, headers={**s.headers, "If-None-Match": etag})
            assert r.status_code == 200 and r.json()["freshness"]["stale"] is True
            summary = c.get(f"{s.api}/v1/summary", headers=s.headers).json()["freshness"]
            assert summary["stale"] is True and len(summary["stale_governments"]) == 20
            s.start_worker("w1")
            deadline = time.monotonic() + 60
            while c.get(url, headers=s.headers).json()["freshness"]["stale"]:
                assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        s.stop_all()
