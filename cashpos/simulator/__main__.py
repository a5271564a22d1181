"""``python -m cashpos.simulator [n] [--known-flows]``: the generation rate."""

from __future__ import annotations

import argparse
import time

from cashpos.simulator.generator import Simulator


def _measure(n: int = 1_000_000, *, known_flows: bool = False, seed: int = 1) -> None:
    """Quick check: prints the generation rate of ``n`` events."""
    sim = Simulator(seed=seed, speed=3600.0, rate=20.0, known_flows=known_flows)
    t = time.perf_counter()
    size = 0
    for raw in sim.events(n):
        size += len(raw)
    dt_ = time.perf_counter() - t
    print(
        f"{n} events in {dt_:.2f}s: {n / dt_:,.0f} events/s, {size / n:.0f} bytes/event, "
        f"simulated until {sim.clock.isoformat()}, open commitments {sim.open_commitments}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m cashpos.simulator",
        description="Generate events (speed 3600, rate 20; nothing is published) and print the rate.",
    )
    p.add_argument("n", nargs="?", type=int, default=1_000_000, help="events to generate (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--known-flows",
        action="store_true",
        help="also payment orders and expected receipts (contract version 3; cashpos.simulator.known)",
    )
    args = p.parse_args(argv)
    _measure(args.n, known_flows=args.known_flows, seed=args.seed)


if __name__ == "__main__":
    main()
