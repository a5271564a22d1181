"""The publishing loop: ``run`` sends a simulator's events paced in wall time (the package's
only I/O)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Protocol

from cashpos.simulator.generator import Simulator


class _Sender(Protocol):
    async def send_many(self, raws: list[bytes]) -> int: ...


async def run(
    publisher: _Sender,
    sim: Simulator,
    *,
    total: int | None = None,
    until: dt.datetime | None = None,
    stop: asyncio.Event | None = None,
    tick: float = 0.1,
    pace: str = "rate",
    max_lag: float = 2.0,
) -> int:
    """Publish ``sim``'s events via ``publisher.send_many`` every ``tick`` seconds until
    ``total`` events are sent, the simulated clock passes ``until`` or ``stop`` is set; returns
    the number sent.

    ``pace="rate"``: a steady ``sim.rate`` events per wall second. ``pace="clock"``: events
    are released when wall time reaches their simulated time divided by ``sim.speed``, so the
    wall rate follows the calendar rhythm (busy office hours, quiet nights) and averages
    ``sim.rate``. If publishing falls behind by more than ``max_lag`` seconds, the backlog
    is dropped from the schedule (never burst).
    """
    if pace not in ("rate", "clock"):
        raise ValueError("pace must be 'rate' or 'clock'")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sim_t0 = sim.next_time if pace == "clock" else 0.0
    max_batch = max(1, int(sim.rate * max_lag))
    sent = 0
    credit = 0  # events the schedule skipped (lag) in rate mode
    while True:
        if stop is not None and stop.is_set():
            break
        left = None if total is None else total - sent
        if left is not None and left <= 0:
            break
        if until is not None and sim.next_time > until.timestamp():
            break
        elapsed = loop.time() - t0
        limit = max_batch if left is None else min(max_batch, left)
        if pace == "rate":
            due = int(elapsed * sim.rate) - credit - sent
            if due > max_batch:
                credit += due - max_batch
                due = max_batch
            batch = sim.next_batch(min(due, limit)) if due > 0 else []
        else:
            horizon = sim_t0 + elapsed * sim.speed
            batch = sim.until(horizon, limit)
            if len(batch) == limit and sim.next_time < horizon - max_lag * sim.speed:
                sim_t0 = sim.next_time - elapsed * sim.speed  # behind: move the schedule
        if batch:
            sent += await publisher.send_many(batch)
        delay = tick - ((loop.time() - t0) % tick)
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(delay)
    return sent
