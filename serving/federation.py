"""Expose the processor workers' metrics (and the last reconciliation) through the API's /metrics.

Each worker stores its Prometheus exposition in Redis every second; a scrape reads them with the
API's asyncio Redis client (never a blocking call on the event loop), re-emits their families
with a bounded ``worker`` label, and merges them with the API process's own: one family per
name (``process_*`` holds the API's series and each worker's), so one scrape of the API sees
the whole service. Parsing and rendering run in a thread: with many workers they are
milliseconds of CPU that the loop's other requests should not wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from cashpos.metrics import RECONCILIATION_DIFF_KRW, RECONCILIATION_LAST_RUN
from cashpos.names import RedisKeys

# The workers' families the API re-emits: its own, the process collectors' and python_info.
FEDERATED_PREFIXES = ("cashpos_", "process_", "python_")


class WorkerExpositions:
    """What one scrape read from Redis: each worker's exposition text and the last
    reconciliation's report (raw)."""

    def __init__(self, texts: dict[str, str], reconciliation: bytes | None) -> None:
        self.texts = texts
        self.reconciliation = reconciliation

    @classmethod
    async def fetch(cls, r: aioredis.Redis, keys: RedisKeys) -> WorkerExpositions:
        """Nothing when Redis does not answer: the API's own metrics are still served."""
        try:
            # SCAN, not KEYS: KEYS blocks Redis and is denied to the API's ACL user
            names = sorted([n async for n in r.scan_iter(match=keys.worker_metrics_pattern, count=1000)])
            values = await r.mget(names) if names else []
            rec = await r.get(keys.reconciliation)
        except aioredis.RedisError:
            return cls({}, None)
        prefix = len(keys.worker_metrics(""))
        texts = {}
        for name, text in zip(names, values):
            if text:
                worker = (name.decode() if isinstance(name, bytes) else name)[prefix:]
                texts[worker] = text.decode() if isinstance(text, bytes) else text
        return cls(texts, rec.encode() if isinstance(rec, str) else rec)

    def families(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker, exposition in self.texts.items():
            for fam in text_string_to_metric_families(exposition):
                if not fam.name.startswith(FEDERATED_PREFIXES):
                    continue
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp)
        yield from merged.values()
        yield from self._reconciliation()

    def _reconciliation(self) -> Iterator[Metric]:
        if not self.reconciliation:
            return
        rep = orjson.loads(self.reconciliation)
        diff = GaugeMetricFamily(
            RECONCILIATION_DIFF_KRW,
            "Absolute KRW difference found by the last reconciliation (0 = exact)",
        )
        diff.add_metric([], rep["diff_krw"])
        yield diff
        at = GaugeMetricFamily(RECONCILIATION_LAST_RUN, "When the last reconciliation finished")
        at.add_metric([], rep["finished_ms"] / 1000)
        yield at


class _Families(Collector):
    """A collector over a fixed list of families (generate_latest reads a registry)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(own: CollectorRegistry, workers: WorkerExpositions) -> bytes:
    """The exposition of the API's registry and the workers' families, one family per name
    (the text format allows a family's TYPE line once)."""
    merged: dict[str, Metric] = {}
    for fam in [*own.collect(), *workers.families()]:
        out = merged.get(fam.name)
        if out is None:
            merged[fam.name] = fam
        elif out.type == fam.type:
            out.samples.extend(fam.samples)
        # a name with two types (a defect in one process) keeps the API's: never an invalid page
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Families(merged.values()))
    return generate_latest(reg)


async def exposition(own: CollectorRegistry, r: aioredis.Redis, keys: RedisKeys) -> bytes:
    """The API's /metrics body: the Redis reads awaited, parsing and rendering in a thread."""
    workers = await WorkerExpositions.fetch(r, keys)
    return await asyncio.to_thread(render, own, workers)
