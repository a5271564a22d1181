"""The Faust application: worker lifecycle, CLI, signals and logging.

The ledger path is not a Faust stream (its per-event path tops out near 13k events/s here); it
runs as a Faust Service (agents.service) owning its own aiokafka batch consumer, which is the
worker's only consumer group (``Topics.ledger_group``). Faust's own Kafka consumer and producer
are not started: a consumer group of Faust's would have to be joined (and, after a crash, wait
for the dead member's session to expire) before Faust starts any service, which made a restart
take ~16 s instead of ~4 s (docs/reliability.md, B3). Dead letters reach the Redis recent list
from the ledger batch that produces them.
"""

from __future__ import annotations

import faust
from faust.app.base import BootStrategy

from cashpos.names import Topics
from cashpos.settings import load

settings = load()
topics = Topics(settings.namespace)
settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates its datadir, not parents


class LifecycleOnly(BootStrategy):
    """Start no Faust Kafka client (so no group join, no table recovery to wait for): the
    services registered with ``@app.service`` start as soon as the worker does."""

    enable_kafka = False


app = faust.App(
    topics.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    autodiscover=False,
    store="memory://",
    web_port=settings.worker_web_port,
    web_host="127.0.0.1",
    web_enabled=False,
    datadir=str(settings.state_dir / "faust"),
)
app.boot_strategy = LifecycleOnly(app)

# Importing registers the ledger service with the app.
from agents import service  # noqa: E402,F401
