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
import redis

from cashpos.names import RedisKeys
from cashpos.refdata import governments
from bench.processor import simulator as bench_simulator
from reconcile.reference import Reference
from state.projection import decode_position
from streams.contract import side_of
from streams.publisher import Publisher
from tests.conftest import Stack, new_stack

pytestmark = pytest.mark.integration

N = 100_000


def redis_view(stack: Stack) -> dict[tuple[str, str, int], tuple[int, int, int]]:
    r = redis.Redis.from_url(stack.infra.redis_url)
    keys = RedisKeys(stack.namespace)
    out = {}
    for org in governments():
        for f, v in r.hgetall(keys.positions(org)).items():
            if f == b"_meta":
                continue
            account, _, fy = f.decode().partition("|")
            version, body = decode_position(v)
            out[(org, account, int(fy))] = (body["cash"], body["committed"], version)
    return out


def expected_view(raws: list[bytes]) -> dict[tuple[str, str, int], tuple[int, int, int]]:
    import orjson

    ref = Reference()
    for raw in raws:
        ref.feed(raw, side_of(orjson.loads(raw)["kind"]))
    versions: dict[tuple[str, str, int], int] = {}
    for acc in ref.log:
        for pk, _, _ in acc.deltas:
            versions[pk] = versions.get(pk, 0) + 1
    return {pk: (cash, committed, versions.get(pk, 0)) for pk, (cash, committed) in ref.positions().items()
            if versions.get(pk, 0)}


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
