"""Faust Service wrapping the ledger worker so it starts and stops with the Faust worker."""

from __future__ import annotations

from mode import Service

from agents.ledger import LedgerWorker
from cashpos.app import app, settings
from streams.topics import ensure_topics


@app.service
class LedgerService(Service):
    worker: LedgerWorker

    async def on_start(self) -> None:
        await ensure_topics(settings)
        self.worker = LedgerWorker(settings)
        await self.worker.start()

    @Service.task
    async def _consume(self) -> None:
        await self.worker.run()

    async def on_stop(self) -> None:
        await self.worker.stop()
