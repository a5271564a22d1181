"""Faust Service wrapping the ledger worker so it starts and stops with the Faust worker."""

from __future__ import annotations

import logging

from mode import Service

from agents.alerting import AlertingHook
from agents.ledger import LedgerWorker
from cashpos.app import app, settings, web_addresses
from cashpos.metrics import ProcessorMetrics
from streams.topics import ensure_topics

log = logging.getLogger("cashpos.worker")


@app.service
class LedgerService(Service):
    worker: LedgerWorker
    alerting: AlertingHook

    async def on_start(self) -> None:
        where = web_addresses()  # Faust started its web server before the app's services
        log.info("worker web server (Faust: /router/, /table/) listening on %s",
                 ", ".join(where) or "nothing (not started)")
        await ensure_topics(settings)
        metrics = ProcessorMetrics()
        self.alerting = AlertingHook(settings, metrics)  # alerts, in the ledger's atomic batch
        self.worker = LedgerWorker(settings, metrics, hooks=[self.alerting])
        await self.worker.start()

    @Service.task
    async def _consume(self) -> None:
        await self.worker.run()

    async def on_stop(self) -> None:
        await self.worker.stop()
        await self.alerting.stop()
