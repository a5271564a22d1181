"""The Faust application: worker lifecycle, CLI, timers and the low-volume agents.

The high-volume ledger path is not a Faust stream (its per-event path tops out near 13k
events/s here); it runs as a Faust Service (agents.service) owning its own aiokafka batch
consumer. Faust's own consumer carries only the dead-letter agent.
"""

from __future__ import annotations

import faust

from cashpos.names import Topics
from cashpos.settings import load

settings = load()
topics = Topics(settings.namespace)
settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates its datadir, not parents

app = faust.App(
    topics.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    autodiscover=False,
    store="memory://",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    # A short session keeps group joins quick (the broker delays a join by session_timeout/2).
    broker_session_timeout=settings.session_timeout_ms / 1000,
    broker_heartbeat_interval=settings.heartbeat_ms / 1000,
    web_port=settings.worker_web_port,
    web_host="127.0.0.1",
    web_enabled=False,
    datadir=str(settings.state_dir / "faust"),
)

# Importing registers the agents and services with the app.
from agents import deadletters, service  # noqa: E402,F401
