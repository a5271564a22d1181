"""The worker: the Faust application (lifecycle, CLI, signals, logging) and its ledger service.

The ledger path is not a Faust stream (its per-event path tops out near 13k events/s here); it
runs as a Faust Service (``LedgerService`` below) owning its own aiokafka batch consumer, which is the
worker's only consumer group (``Topics.ledger_group``). Faust's own Kafka consumer and producer
are not started: a consumer group of Faust's would have to be joined (and, after a crash, wait
for the dead member's session to expire) before Faust starts any service, which made a restart
take ~16 s instead of ~4 s (docs/reliability.md, B3). Dead letters reach the Redis recent list
from the ledger batch that produces them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import click
import faust
import mode
from faust.app.base import BootStrategy
from faust.cli import worker as faust_worker_command
from mode import Service

from agents import history_web
from agents.alerting import AlertingHook
from agents.derived import derived_hooks
from agents.forecast import ForecastHook
from agents.ledger import LedgerWorker
from cashpos.logs import capture_std_streams, dict_config
from cashpos.metrics import ProcessorMetrics
from cashpos.names import Topics
from cashpos.settings import load
from streams.cluster_check import worker_refusal

log = logging.getLogger("cashpos.worker")

settings = load()
topics = Topics(settings.namespace)
settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates its datadir, not parents


class LifecycleOnly(BootStrategy):
    """Start no Faust Kafka client (so no group join, no table recovery to wait for): the
    services registered with ``@app.service`` start as soon as the worker does."""

    enable_kafka = False


WILDCARDS = ("", "0.0.0.0", "::")  # addresses that mean every interface
STOP_WAIT_S = 15.0  # for the ledger loop's last batch on a stop (the harness kills after 20 s)


app = faust.App(
    topics.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    autodiscover=False,
    store="memory://",
    # Faust's web server (/router/, /table/) runs in every worker: `faust worker` turns it on
    # whatever the app says (its --with-web default). It binds to web_bind (Faust's default is
    # every interface); web_host only names it in URLs and the banner.
    web_enabled=True,
    web_port=settings.worker_web_port,
    web_bind=settings.worker_web_bind,
    web_host=settings.worker_web_bind if settings.worker_web_bind not in WILDCARDS else socket.gethostname(),
    datadir=str(settings.state_dir / "faust"),
    logging_config=dict_config(),  # Faust applies it instead of its colour handler: JSON lines
)
app.boot_strategy = LifecycleOnly(app)


def banner_facts(rows: list[tuple[str, str]]) -> dict[str, str]:
    """Faust's banner table (``worker._banner_data``) as fields; an indented row belongs to the
    row above it ("  transport" under "drivers" is ``drivers_transport``)."""
    facts: dict[str, str] = {}
    parent = ""
    for key, value in rows:
        name = key.strip().strip("+").strip()
        if key.startswith(" ") and parent:
            name = f"{parent}_{name or 'extra'}"
        else:
            parent = name
        if str(value).strip():
            facts[name] = str(value).strip()
    return facts


class worker(faust_worker_command.worker):
    """Start worker instance for given app (Faust's ``worker`` command; it replaces it)."""

    # One capture of stdout/stderr for the process's whole life (Faust's ends with the worker).
    redirect_stdouts = False

    def __init__(self, ctx: click.Context, *args: Any, **kwargs: Any) -> None:
        super().__init__(ctx, *args, **kwargs)
        self.quiet = True  # no text banner, spinner or "OK ^": the banner's facts are logged

    def on_worker_created(self, worker: mode.Worker) -> None:
        capture_std_streams()
        facts = banner_facts([(str(k), str(v)) for k, v in self._banner_data(worker)])
        log.info("faust worker %s starting", facts.get("id", ""), extra={"faust": facts})


def advertised(where: list[str]) -> str | None:
    """The address other processes reach this worker's web server at: the bound one, or for a
    wildcard bind this host's name and the port (the API asks it for history)."""
    if not where:
        return None
    if settings.worker_web_bind in WILDCARDS:
        return f"{socket.gethostname()}:{where[0].rsplit(':', 1)[1]}"
    return where[0]


def web_addresses() -> list[str]:
    """Where the worker's web server really listens ("host:port" per bound socket; empty
    before it started). Read from aiohttp's runner, not from the settings."""
    runner = getattr(app.web, "_runner", None)
    out = []
    for addr in getattr(runner, "addresses", None) or ():
        if isinstance(addr, tuple) and len(addr) >= 2:
            host = f"[{addr[0]}]" if ":" in str(addr[0]) else str(addr[0])
            out.append(f"{host}:{addr[1]}")
        else:
            out.append(str(addr))
    return out


# The worker the history pages answer from, once started (pages are added before the web
# server starts: aiohttp freezes its router then).
RUNNING: dict[type[LedgerWorker], LedgerWorker] = {}
history_web.install(app, lambda: RUNNING.get(LedgerWorker))


@app.service
class LedgerService(Service):
    worker: LedgerWorker
    alerting: AlertingHook
    forecast: ForecastHook

    async def on_start(self) -> None:
        where = web_addresses()  # Faust started its web server before the app's services
        log.info(
            "worker web server (Faust: /router/, /table/) listening on %s",
            ", ".join(where) or "nothing (not started)",
        )
        why = await worker_refusal(settings)  # creates missing topics, checks the rest
        if why:
            log.critical(why)
            logging.shutdown()
            # Exit now with EX_CONFIG (78): a supervisor (systemd RestartPreventExitStatus) can
            # tell that a restart will not help.
            os._exit(78)
        metrics = ProcessorMetrics()
        self.forecast, self.alerting = derived_hooks(settings, metrics)
        self.worker = LedgerWorker(settings, metrics, hooks=[self.forecast, self.alerting])
        self.worker.web_address = advertised(where)
        RUNNING[LedgerWorker] = self.worker
        await self.worker.start()

    _consuming: asyncio.Task[None] | None = None

    @Service.task
    async def _consume(self) -> None:
        self._consuming = asyncio.current_task()
        await self.worker.run()

    async def on_stop(self) -> None:
        # A stop while on_start still waits (e.g. for the broker) finds neither yet.
        if hasattr(self, "worker"):
            await self._consuming_stopped()
            await self.worker.stop()
        if hasattr(self, "alerting"):
            await self.alerting.stop()

    async def _consuming_stopped(self) -> None:
        """Let the ledger loop finish the batch it holds and return before the worker closes
        its store (mode stops a service's tasks only after ``on_stop``): a batch taken from the
        consumer after ``stop()`` found the store closed, and SIGTERM ended in a crash (exit
        code 1, DbClosedError). Now the loop folds and writes that batch, sees the stop and
        returns; then the worker commits and closes."""
        task = self._consuming
        if task is None or task.done():
            return
        self.worker._stopping = True  # LedgerWorker.run's loop condition (stop() sets it too)
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_S)
        except TimeoutError:
            log.warning("the ledger loop did not return within %s s of the stop", STOP_WAIT_S)
        except Exception:  # noqa: BLE001, S110 - the task's own failure: mode reports it
            pass
