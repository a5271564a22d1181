"""The audit trail: balance reads by provincial and national roles, and every write
(acknowledgements, threshold changes, tokens, sessions, submitted events): who, what, when.

Records go to the append-only audit topic (``Topics.audit``, kept forever, one partition so the
log has one order) and to the structured log. ``cashpos audit`` prints them.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiokafka import AIOKafkaProducer

from access.policy import Principal
from cashpos.calendar import utc_stamp

log = logging.getLogger("cashpos.audit")


def record(
    p: Principal | None,
    action: str,
    *,
    method: str,
    path: str,
    org: str | None = None,
    outcome: str = "ok",
    detail: dict[str, object] | None = None,
    at_ms: int | None = None,
) -> dict[str, object]:
    """One audit entry (pure: the clock can be passed in)."""
    at = at_ms if at_ms is not None else int(time.time() * 1000)
    return {
        "at_ms": at,
        "at": utc_stamp(at),
        "token_id": p.token_id if p else None,
        "name": p.name if p else None,
        "role": str(p.role) if p else None,
        "action": action,
        "method": method,
        "path": path,
        "org_code": org,
        "outcome": outcome,
        **({"detail": detail} if detail else {}),
    }


class AuditLog:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def append(self, entry: dict[str, object], wait: bool) -> None:
        """Send one entry. Writes wait for the broker's ack (the caller answers 503 if it fails);
        reads do not hold up the response (a failure is logged, and counted by the caller)."""
        body = orjson.dumps(entry)
        log.info("audit %s %s", entry.get("action"), entry.get("outcome"), extra={"audit": entry})
        fut = await self.producer.send(self.topic, body, key=str(entry.get("token_id") or "").encode())
        if wait:
            await fut
