"""Processor throughput, end to end (Kafka -> fold -> RocksDB -> Redis), next to a plain
aiokafka consume of the same topics in the same run.

    python -m bench.processor --events 1000000

Starts a fresh Tansu broker and redis-server, pre-produces realistic simulator events, then
(1) consumes them with a bare aiokafka loop (the reference: decode nothing, store nothing),
(2) runs one ledger worker over them from empty state (``--alerts``: with the forecast and alerting hooks, as
``cashpos worker`` runs it); both ``--rounds`` times (default 3, each
round as the first: empty state, empty Redis, a consumer group of its own), because one 10-second
sample on shared cores swings by ±10 %. The last line reads
``processor_events_per_s=N reference_events_per_s=M ratio=R`` (medians of the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from agents.derived import derived_hooks
from agents.hooks import BatchHook
from agents.ledger import LedgerWorker
from cashpos.embedded import start_infra
from cashpos.metrics import ProcessorMetrics
from cashpos.names import Topics
from cashpos.settings import Settings
from streams.publisher import Publisher
from streams.topics import ensure_topics


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def simulator(seed: int, start: str | None = None):
    """A business week from Monday 09:00 at the national rate: 600k events per simulated day
    (speed / rate = 0.144 simulated seconds per event). ``start`` (ISO, Korea time): another
    start, e.g. ``2027-01-20T09:00`` to put every government's year close (00:00 KST on
    21 January, on both topics) inside the run."""
    import datetime as dt

    from cashpos.calendar import KST, korea_time
    from cashpos.simulator import Simulator

    at = korea_time(start) if start else dt.datetime(2026, 11, 16, 9, 0, tzinfo=KST)
    return Simulator(seed=seed, start=at, speed=144.0, rate=1000.0)


def _sample_total(registry: CollectorRegistry, name: str) -> float:
    """The sum of a registry's samples of this name."""
    return sum(x.value for m in registry.collect() for x in m.samples if x.name == name)


async def produce(settings: Settings, n: int, seed: int, start: str | None = None) -> float:
    sim = simulator(seed, start)
    t = time.perf_counter()
    async with Publisher(settings, linger_ms=20) as pub:
        sent = await pub.send_many(sim.opening_balances())
        while sent < n:
            batch = sim.next_batch(min(50_000, n - sent))
            sent += await pub.send_many(batch)
    return time.perf_counter() - t


async def reference_consume(settings: Settings, n: int) -> float:
    """A plain aiokafka loop over both topics: the ceiling of the client on this machine."""
    c = AIOKafkaConsumer(
        **settings.kafka_client_args(),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await c.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in (f"{settings.namespace}.events.revenue", f"{settings.namespace}.events.expenditure")
            for p in sorted(c.partitions_for_topic(t) or ())
        ]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        got = 0
        t = time.perf_counter()
        while got < n:
            batch = await c.getmany(timeout_ms=1000, max_records=20_000)
            got += sum(len(v) for v in batch.values())
        return time.perf_counter() - t
    finally:
        await c.stop()


async def processor(
    settings: Settings, n: int, round_no: int = 0, alerts: bool = False
) -> tuple[float, float, LedgerWorker]:
    metrics = ProcessorMetrics()
    hooks: list[BatchHook] = [*derived_hooks(settings, metrics)] if alerts else []
    w = LedgerWorker(settings, metrics, hooks=hooks)
    w.topics = RoundTopics(settings.namespace, round_no)
    t_start = time.perf_counter()
    await w.start()
    assert w.consumer is not None
    first = None
    while True:
        batch = await w.consumer.getmany(
            timeout_ms=settings.batch_timeout_ms, max_records=settings.batch_max_records
        )
        if batch:
            if first is None:
                first = time.perf_counter()
            await w.process(batch)
        await w.housekeeping()
        if sum(w.next_offsets.values()) >= n and w.next_offsets:
            break
    end = time.perf_counter()
    assert first is not None
    for hook in hooks:
        await hook.stop()
    return end - first, end - t_start, w


@dataclass(frozen=True)
class RoundTopics(Topics):
    """The same topics; a consumer group of its own per round, so that every round starts as
    the first (a group that had committed offsets would make the worker treat its partitions
    as a rebuild in progress)."""

    round: int = 0

    @property
    def ledger_group(self) -> str:
        return f"{super().ledger_group}-round{self.round}"


async def new_round(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    await r.flushdb()  # an empty serving copy, as in the first round
    await r.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="reference and processor runs over the same events; medians are reported",
    )
    ap.add_argument(
        "--start",
        help="simulated start, ISO in Korea time (default 2026-11-16T09:00); "
        "2027-01-20T09:00 puts the year's close in the run",
    )
    ap.add_argument(
        "--alerts",
        action="store_true",
        help="run the worker with the alerting hook, as `cashpos worker` does",
    )
    args = ap.parse_args()
    n = args.events
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-"))
    infra = start_infra(tmp)
    try:
        redis_url = infra.redis_url
        base = Settings(
            kafka_bootstrap=infra.bootstrap,
            redis_url=redis_url,
            namespace="bench",
            partitions=args.partitions,
            state_dir=tmp / "state-0",
        )
        await ensure_topics(base)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}; broker, redis and this process share the cores"
        )
        t = await produce(base, n, args.seed, args.start)
        print(f"produced {n} events in {t:.1f}s ({n / t:,.0f}/s)")
        p_rates: list[float] = []
        r_rates: list[float] = []
        for i in range(args.rounds):
            s = replace(base, state_dir=tmp / f"state-{i}")
            if i:
                await new_round(redis_url)
            ref = await reference_consume(s, n)
            busy, total, w = await processor(s, n, i, args.alerts)
            total_of = partial(_sample_total, w.metrics.registry)
            per_event = {
                name: total_of(f"cashpos_{name}_duration_seconds_sum") / n * 1e6
                for name in ("batch", "state_write", "redis_write")
            }
            await w.stop()
            p_rates.append(n / busy)
            r_rates.append(n / ref)
            print(
                f"round {i + 1}: reference {n / ref:,.0f} events/s ({ref:.2f}s); processor "
                f"{n / busy:,.0f} events/s ({busy:.2f}s after the first batch, {total:.2f}s "
                f"incl. start and group join); applied={total_of('cashpos_events_applied_total'):.0f} "
                f"dead_lettered={total_of('cashpos_events_deadlettered_total'):.0f} "
                f"duplicates={total_of('cashpos_duplicates_dropped_total'):.0f} "
                f"batches={w.processed_batches}"
            )
            print(
                "  inside the worker, µs per event: "
                + " ".join(f"{k}={v:.2f}" for k, v in per_event.items())
                + f" outside_batches={busy / n * 1e6 - per_event['batch']:.2f}"
            )
        if infra.kafka is not None:
            print(f"broker rss: {rss_mb(infra.kafka.proc.pid):,.0f} MB")
        p_rate, r_rate = statistics.median(p_rates), statistics.median(r_rates)
        print(
            f"processor_events_per_s={p_rate:.0f} reference_events_per_s={r_rate:.0f} "
            f"ratio={p_rate / r_rate:.2f}"
        )
    finally:
        infra.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
