"""``python -m cashpos.simulator [n]``: the generation rate."""

from __future__ import annotations

import sys
import time

from cashpos.simulator.generator import Simulator


def _measure(n: int = 1_000_000) -> None:
    """Quick check: ``python -m cashpos.simulator [n]`` prints the generation rate."""
    sim = Simulator(seed=1, speed=3600.0, rate=20.0)
    t = time.perf_counter()
    size = 0
    for raw in sim.events(n):
        size += len(raw)
    dt_ = time.perf_counter() - t
    print(
        f"{n} events in {dt_:.2f}s: {n / dt_:,.0f} events/s, {size / n:.0f} bytes/event, "
        f"simulated until {sim.clock.isoformat()}, open commitments {sim.open_commitments}"
    )


if __name__ == "__main__":
    _measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
