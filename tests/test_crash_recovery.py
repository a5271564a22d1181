"""kill -9 of the processor in the middle of a 100k-event stream, then a restart: the
positions are exact (nothing lost, nothing applied twice).

The expected positions come from the independent reference fold (reconcile.reference) over the
very bytes that were published; "applied twice" would show as a wrong balance and as a wrong
version (the number of events that changed a position).
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from bench.processor import simulator as bench_simulator
from faults.common import expected_view, redis_view
from streams.publisher import Publisher
from tests.conftest import Stack, new_stack

pytestmark = pytest.mark.integration

N = 100_000


def applied_so_far(stack: Stack) -> int:
    return sum(v for _, _, v in redis_view(stack).values())


@pytest.fixture()
def crash_stack(infra, tmp_path):
    s = new_stack(infra, tmp_path)
    yield s
    s.stop_all()


def test_kill9_mid_stream_then_restart_is_exact(crash_stack: Stack):
    s = crash_stack
    sim = bench_simulator(11)
    raws = sim.opening_balances() + sim.next_batch(N)
    s.start_worker("w1")
    s.start_api()
    s.wait_ready()

    async def publish() -> None:
        async with Publisher(s.settings) as pub:
            await pub.send_many(raws)

    publisher = threading.Thread(target=lambda: asyncio.run(publish()))
    publisher.start()
    # Kill while events are still streaming in and the worker is part-way through them.
    deadline = time.monotonic() + 60
    while applied_so_far(s) < 5_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    s.stop("worker-w1", kill=True)
    killed_at = applied_so_far(s)
    want = expected_view(raws)
    total = sum(v for _, _, v in want.values())
    assert 0 < killed_at < total, f"kill did not land mid-stream ({killed_at} of {total})"
    s.start_worker("w1")
    publisher.join()
    deadline = time.monotonic() + 120
    got = {}
    while time.monotonic() < deadline:
        got = redis_view(s)
        if got == want:
            break
        time.sleep(0.5)
    diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
    assert not diff, f"{len(diff)} positions differ after kill -9 at ~{killed_at}: {list(diff.items())[:5]}"
    # And the API serves those same numbers.
    body = httpx.get(f"{s.api}/v1/positions/6110000", headers=s.headers, timeout=5).json()
    for a in body["accounts"]:
        cash, committed, _ = want[("6110000", a["account"], a["fiscal_year"])]
        assert (a["cash"], a["committed"]) == (cash, committed)
