"""Expose the processor workers' metrics (and the last reconciliation) through the API's /metrics.

Each worker stores its Prometheus exposition in Redis every second; this collector re-emits
those families with a bounded ``worker`` label, so one scrape of the API sees the whole service.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from cashpos.metrics import RECONCILIATION_DIFF_KRW, RECONCILIATION_LAST_RUN
from cashpos.names import RedisKeys


class WorkerMetricsCollector:
    def __init__(self, redis_url: str, keys: RedisKeys) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self.keys = keys

    def collect(self) -> Iterator[Metric]:
        try:
            # SCAN, not KEYS: KEYS blocks Redis and is denied to the API's ACL user
            names = sorted(self.redis.scan_iter(match=self.keys.worker_metrics_pattern, count=1000))
            texts = self.redis.mget(names) if names else []
        except redis.RedisError:
            return
        merged: dict[str, Metric] = {}
        prefix = len(self.keys.worker_metrics(""))
        for name, text in zip(names, texts):
            if not text:
                continue
            worker = name.decode()[prefix:]
            exposition = text.decode() if isinstance(text, bytes) else text  # bytes: no decode_responses
            for fam in text_string_to_metric_families(exposition):
                if not fam.name.startswith("cashpos_"):
                    continue
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp)
        yield from merged.values()
        yield from self._reconciliation()

    def _reconciliation(self) -> Iterator[Metric]:
        try:
            raw = self.redis.get(self.keys.reconciliation)
        except redis.RedisError:
            return
        if not raw:
            return
        rep = orjson.loads(raw)
        diff = GaugeMetricFamily(
            RECONCILIATION_DIFF_KRW,
            "Absolute KRW difference found by the last reconciliation (0 = exact)",
        )
        diff.add_metric([], rep["diff_krw"])
        yield diff
        at = GaugeMetricFamily(RECONCILIATION_LAST_RUN, "When the last reconciliation finished")
        at.add_metric([], rep["finished_ms"] / 1000)
        yield at
