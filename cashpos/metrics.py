"""Every Prometheus metric cashpos exports. Names follow Prometheus conventions: the
``cashpos_`` prefix, base units (seconds, bytes, KRW), ``_total`` for counters, and no
per-government labels (243 x accounts would explode cardinality).

Every labelled family whose label values are known in advance (dead-letter and refusal reasons,
alert rules) starts with each value at 0: a series that appears only on its first increment
shows as "no data" on a dashboard and defeats ``rate()`` over that first increment.
Each process also exports ``process_*`` and ``python_info`` (prometheus_client's collectors)
and ``cashpos_build_info``."""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from alerts.model import RULES
from cashpos import __version__
from streams.contract import REASONS, STATEFUL_REASONS

# `_created` series double the exposition for no use in dashboards or alert rules.
disable_created_metrics()

# Gauges the API derives from the last reconciliation (serving/federation.py emits them).
RECONCILIATION_DIFF_KRW = "cashpos_reconciliation_diff_krw"
RECONCILIATION_LAST_RUN = "cashpos_reconciliation_last_run_timestamp_seconds"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _process_and_build(r: CollectorRegistry, component: str) -> None:
    """process_* (CPU, memory, open files, start time), python_info, and cashpos_build_info."""
    ProcessCollector(registry=r)
    PlatformCollector(registry=r)
    Gauge(
        "cashpos_build_info",
        "Always 1; the labels say which build of cashpos this process runs",
        ["version", "python", "component"],
        registry=r,
    ).labels(__version__, platform.python_version(), component).set(1)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        _process_and_build(r, "worker")
        self.events_applied = Counter(
            "cashpos_events_applied_total", "Events applied to positions", ["topic"], registry=r
        )
        self.events_deadlettered = Counter(
            "cashpos_events_deadlettered_total",
            "Events sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.forecast_abs_error = Counter(
            "cashpos_forecast_abs_error_krw_total",
            "Absolute error of governments' expected closing cash forecasts, summed (KRW), per days ahead",
            ["horizon_days"],
            registry=r,
        )
        self.forecast_errors = Counter(
            "cashpos_forecast_errors_total",
            "Forecasts held against the actual closing cash, per days ahead",
            ["horizon_days"],
            registry=r,
        )
        self.duplicates_dropped = Counter(
            "cashpos_duplicates_dropped_total", "Repeated events (same id and content) dropped", registry=r
        )
        self.replayed_skipped = Counter(
            "cashpos_replayed_records_skipped_total",
            "Records below the state's stored offset, skipped on replay",
            registry=r,
        )
        self.batch_size = Histogram(
            "cashpos_batch_events",
            "Records per processed batch",
            buckets=(1, 10, 100, 500, 1000, 5000, 10000, 20000, 50000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "cashpos_batch_duration_seconds",
            "Time to fold, store and project one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.state_write_seconds = Histogram(
            "cashpos_state_write_duration_seconds",
            "RocksDB write of one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_write_seconds = Histogram(
            "cashpos_redis_write_duration_seconds",
            "Redis projection of one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "cashpos_redis_errors_total", "Failed Redis projections (re-seeded later)", registry=r
        )
        self.redis_reseeds = Counter(
            "cashpos_redis_reseeds_total", "Governments re-seeded into Redis from state", registry=r
        )
        self.fates_dropped = Counter(
            "cashpos_event_fates_dropped_total",
            "Event verdicts not recorded for GET /v1/events (Redis down past the held bound)",
            registry=r,
        )
        self.event_to_visible = Histogram(
            "cashpos_event_to_redis_seconds",
            "From the Kafka record timestamp to its balance written to Redis",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "cashpos_consumer_lag_records", "Records behind the high watermark", ["topic"], registry=r
        )
        self.last_applied = Gauge(
            "cashpos_last_event_applied_timestamp_seconds",
            "Kafka timestamp of the latest applied record (freshness = now - this)",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "cashpos_assigned_partitions", "Source partitions this worker owns", registry=r
        )
        self.standby_partitions = Gauge(
            "cashpos_standby_partitions",
            "Source partitions this worker keeps warm as a standby (agents.standby)",
            registry=r,
        )
        self.standby_records = Counter(
            "cashpos_standby_records_folded_total",
            "Records folded into this worker's state for partitions it stands by for",
            registry=r,
        )
        self.standby_lag = Gauge(
            "cashpos_standby_lag_records",
            "Records the standby partitions are behind their high watermarks",
            registry=r,
        )
        self.takeover_records = Counter(
            "cashpos_takeover_refold_records_total",
            "Records a newly assigned partition had to fold past its stored offsets to reach the "
            "group's committed offset, counted at assignment (0 when a warm standby took over)",
            registry=r,
        )
        self.rebuild_records = Counter(
            "cashpos_rebuild_records_total",
            "Records re-folded while catching up to the group's committed offset",
            registry=r,
        )
        self.alerts_raised = Counter(
            "cashpos_alerts_raised_total", "Alerts raised (published)", ["rule"], registry=r
        )
        self.alerts_resolved = Counter(
            "cashpos_alerts_resolved_total", "Alerts resolved (published)", ["rule"], registry=r
        )
        self.alerts_open = Gauge(
            "cashpos_alerts_open", "Alerts currently raised or acknowledged", ["rule"], registry=r
        )
        self.alert_publish_errors = Counter(
            "cashpos_alert_publish_errors_total",
            "Failed attempts to publish alert changes (kept in the outbox and retried)",
            registry=r,
        )
        self.alert_errors = Counter(
            "cashpos_alert_evaluation_errors_total", "Batches whose alert evaluation failed", registry=r
        )
        self.alert_webhook = Counter(
            "cashpos_alert_webhook_deliveries_total",
            "Alert webhook deliveries by outcome (delivered, failed, dropped)",
            ["outcome"],
            registry=r,
        )
        for reason in REASONS:
            self.events_deadlettered.labels(reason)
        for rule in RULES:
            self.alerts_raised.labels(rule)
            self.alerts_resolved.labels(rule)
            self.alerts_open.labels(rule)
        for outcome in ("delivered", "failed", "dropped"):
            self.alert_webhook.labels(outcome)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        _process_and_build(r, "api")
        self.requests = Counter(
            "cashpos_api_requests_total", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "cashpos_api_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ingested = Counter(
            "cashpos_api_events_ingested_total", "Events accepted by the ingest gateway", registry=r
        )
        self.ingest_rejected = Counter(
            "cashpos_api_events_rejected_total",
            "Events refused by the ingest gateway",
            ["reason"],
            registry=r,
        )
        self.processor_workers = Gauge(
            "cashpos_api_processor_workers",
            "Processor workers with a heartbeat in the last 10 s, as this API process saw at /readyz",
            registry=r,
        )
        self.sse_connections = Gauge(
            "cashpos_api_sse_connections", "Open server-sent-event streams", registry=r
        )
        self.alerts_acknowledged = Counter(
            "cashpos_api_alerts_acknowledged_total", "Alerts acknowledged through the API", registry=r
        )
        self.auth_failures = Counter(
            "cashpos_api_auth_failures_total", "Requests refused for their token", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "cashpos_api_rate_limited_total", "Requests refused by a token's rate limit", registry=r
        )
        self.forbidden = Counter(
            "cashpos_api_ingest_forbidden_total",
            "Events refused for a government outside the token's scope",
            registry=r,
        )
        self.audit_errors = Counter(
            "cashpos_api_audit_errors_total", "Audit records that could not be written", registry=r
        )
        for reason in REASONS.keys() - STATEFUL_REASONS:  # the gateway decides the stateless ones
            self.ingest_rejected.labels(reason)


class ReconcilerMetrics:
    """`cashpos reconcile --continuous`: published to Redis with the worker expositions (the API
    re-emits them, labelled worker="reconcile"); the result itself is the report's gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        _process_and_build(r, "reconcile")
        self.runs = Counter(
            "cashpos_reconcile_runs_total",
            "Incremental reconciliations by result (exact, difference, failed)",
            ["result"],
            registry=r,
        )
        self.records_read = Counter(
            "cashpos_reconcile_records_read_total",
            "Input records read and folded past the checkpoint",
            registry=r,
        )
        self.records_folded = Gauge(
            "cashpos_reconcile_records_folded",
            "Input records the reference fold holds, since offset 0 (the checkpoint's history)",
            registry=r,
        )
        self.run_seconds = Gauge(
            "cashpos_reconcile_last_run_duration_seconds",
            "Time of the last incremental reconciliation (read, fold, compare, checkpoint)",
            registry=r,
        )
        self.checkpoint_bytes = Gauge(
            "cashpos_reconcile_checkpoint_bytes", "Size of the last checkpoint written", registry=r
        )
        self.full_refolds = Counter(
            "cashpos_reconcile_full_refolds_total",
            "Folds from offset 0: no checkpoint, or one discarded (other version, topics behind it)",
            registry=r,
        )
        for result in ("exact", "difference", "failed"):
            self.runs.labels(result)
