"""Per-stage cost of the ledger hot path, without Kafka or Redis: where the microseconds go.

    python -m bench.hotpath --events 300000

Runs the worker's stages over pre-generated realistic events in batches of 15,000 and prints
µs per event for each: strict decode + contract checks, the fold (including its point reads
of the journal and commitments), and the atomic RocksDB write. Stages are timed in CPU time of this thread
(``time.thread_time``), so the split stays comparable while other processes share the cores;
the wall-clock total is printed too.
"""

from __future__ import annotations

import argparse
import gc
import shutil
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
    gc.disable()  # as the worker does while it processes a batch
    clock = time.thread_time
    wall = time.perf_counter()
    t = clock()
    events = [(check_message(r, k, s), r) for r, k, s in meta]
    check = clock() - t
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-hotpath-"))
    store = Store(tmp)
    ledger = store.attach(Ledger())
    fold = write = 0.0
    for i in range(0, n, args.batch):
        chunk = events[i:i + args.batch]
        b = clock()
        ledger.fold([(e, r, ("t", 0, i + j)) for j, (e, r) in enumerate(chunk)])
        c = clock()
        store.commit(ledger.take_changes(), ledger.positions, {("t", 0): i + len(chunk)})
        ledger.journal.clear()
        ledger.commitments.clear()
        d = clock()
        fold, write = fold + c - b, write + d - c
    us = {k: v / n * 1e6 for k, v in
          {"check": check, "fold": fold, "state_write": write}.items()}
    total = sum(us.values())
    wall_us = (time.perf_counter() - wall) / n * 1e6
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)  # each run leaves ~30 MB of RocksDB otherwise
    print(" ".join(f"{k}_us={v:.2f}" for k, v in us.items()) +
          f" total_us={total:.2f} ceiling_events_per_s={1e6 / total:.0f} wall_us={wall_us:.2f}")


if __name__ == "__main__":
    main()
