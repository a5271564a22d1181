"""Per-stage cost of the ledger hot path, without Kafka or Redis: where the microseconds go.

    python -m bench.hotpath --events 300000

Runs the worker's stages over pre-generated realistic events in batches of 15,000 and prints
µs per event for each: strict decode + contract checks, the journal/commitment multi-get,
the pure fold, and the atomic RocksDB write.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import orjson

from bench.processor import simulator
from state.ledger import Ledger
from state.store import Store
from streams.contract import check_message, side_of


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=15_000)
    args = ap.parse_args()
    sim = simulator(3)
    raws = sim.opening_balances() + sim.next_batch(args.events)
    meta = []
    for r in raws:
        d = orjson.loads(r)
        meta.append((r, d["org_code"].encode(), side_of(d["kind"])))
    n = len(raws)
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)  # as the worker does
    t = time.perf_counter()
    events = [(check_message(r, k, s), r) for r, k, s in meta]
    check = time.perf_counter() - t
    store = Store(Path(tempfile.mkdtemp(prefix="cashpos-hotpath-")))
    ledger = Ledger()
    pre = fold = write = 0.0
    for i in range(0, n, args.batch):
        chunk = events[i:i + args.batch]
        a = time.perf_counter()
        ev_keys, c_keys = ledger.wants([e for e, _ in chunk])
        store.preload(ledger, ev_keys, c_keys)
        b = time.perf_counter()
        for j, (e, r) in enumerate(chunk):
            ledger.update(e, r, ("t", 0, i + j))
        c = time.perf_counter()
        store.commit(ledger.take_changes(), ledger.positions, {("t", 0): i + len(chunk)})
        ledger.journal.clear()
        ledger.commitments.clear()
        d = time.perf_counter()
        pre, fold, write = pre + b - a, fold + c - b, write + d - c
    us = {k: v / n * 1e6 for k, v in
          {"check": check, "preload": pre, "fold": fold, "state_write": write}.items()}
    total = sum(us.values())
    print(" ".join(f"{k}_us={v:.2f}" for k, v in us.items()) +
          f" total_us={total:.2f} ceiling_events_per_s={1e6 / total:.0f}")


if __name__ == "__main__":
    main()
