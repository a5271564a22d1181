"""Freshness under a steady load: from produce (acks=all) to the new balance visible in the API.

    python -m bench.freshness --rate 2000 --seconds 60

A realistic background stream runs at ``--rate`` events/s; a probe publishes a receipt to one
account every 100 ms and polls ``GET /v1/positions/{org}/{account}`` (with that government's
finance director's token) until the cash reflects it.
Prints p50/p99 (target p99 < 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time

import httpx
import orjson

from bench.common import bench_stack, percentile
from bench.processor import simulator
from streams.publisher import Publisher

PROBE_ORG, PROBE_ACCOUNT = "5260000", "custody"  # 울릉군: little background traffic


async def background(pub: Publisher, rate: int, stop: asyncio.Event) -> int:
    sim = simulator(5)
    await pub.send_many(sim.opening_balances())
    sent, t0, tick = 0, time.monotonic(), 0.05
    while not stop.is_set():
        due = int((time.monotonic() - t0) * rate) - sent
        if due > 0:
            futs = [await pub.producer.send(*_route(pub, raw)) for raw in sim.next_batch(due)]
            sent += len(futs)
        await asyncio.sleep(tick)
    return sent


def _route(pub: Publisher, raw: bytes):
    from streams.publisher import route

    (topic,), key = route(pub.topics, raw)  # the simulator's live events: one topic each
    return topic, raw, key


async def probe(pub: Publisher, api: str, seconds: float, headers: dict[str, str]) -> list[float]:
    """``headers``: the probe government's finance director's token (as its dashboard reads)."""
    lat: list[float] = []
    async with httpx.AsyncClient(timeout=5, headers=headers) as client:
        url = f"{api}/v1/positions/{PROBE_ORG}/{PROBE_ACCOUNT}"
        base = (await client.get(url)).json()["totals"]["cash"]
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            i += 1
            amount = 1_000 + i
            raw = orjson.dumps(
                {
                    "event_id": f"probe-{os.getpid()}-{i}",
                    "org_code": PROBE_ORG,
                    "account": PROBE_ACCOUNT,
                    "fiscal_year": 2026,
                    "kind": "receipt",
                    "amount": amount,
                    "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                    "source": "bench-probe",
                    "category": "other",
                }
            )
            t = time.perf_counter()
            await pub.send(raw)
            base += amount
            while (await client.get(url)).json()["totals"]["cash"] < base:
                if time.perf_counter() - t > 5:
                    break
                await asyncio.sleep(0.002)
            lat.append(time.perf_counter() - t)
            await asyncio.sleep(0.1)
    return lat


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    with bench_stack() as st:
        async with Publisher(st.settings) as pub:
            stop = asyncio.Event()
            bg = asyncio.create_task(background(pub, args.rate, stop))
            await asyncio.sleep(3)
            lat = await probe(pub, st.api, args.seconds, st.auth("finance_director", (PROBE_ORG,)))
            stop.set()
            sent = await bg
        ms = [x * 1000 for x in lat]
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores shared by broker, redis, worker, "
            f"API and this load generator"
        )
        print(
            f"background events={sent} over {args.seconds + 3:.0f}s ({sent / (args.seconds + 3):,.0f}/s), "
            f"probes={len(ms)}"
        )
        print(
            f"freshness_p50_ms={percentile(ms, 0.5):.1f} freshness_p99_ms={percentile(ms, 0.99):.1f} "
            f"max_ms={max(ms):.1f} target_p99_ms=100"
        )


if __name__ == "__main__":
    asyncio.run(main())
