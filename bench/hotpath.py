"""Per-stage cost of the ledger hot path, without Kafka or Redis: where the microseconds go.

    python -m bench.hotpath --events 300000
    CASHPOS_PURE_PYTHON=1 python -m bench.hotpath --events 300000   # without the C kernel

Runs the worker's stages over pre-generated realistic events in batches of 15,000 (split over the
two topics as the simulator splits them) and prints µs per event for each: decode + contract
checks + the fold (``state.partition.fold_partition``, including its point reads of the journal
and commitments), and the atomic RocksDB write. Stages are timed in CPU time of this thread
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
from state import partition
from state.ledger import Ledger
from state.store import Store
from streams.contract import side_of
from streams.lean_records import LeanRecord as Record
from streams.lean_records import RawRecord


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=15_000)
    args = ap.parse_args()
    fold = partition.fold_partition
    sim = simulator(3)
    raws = sim.opening_balances() + sim.next_batch(args.events)
    topics: dict[str, list[RawRecord]] = {"revenue": [], "expenditure": []}
    for r in raws:
        d = orjson.loads(r)
        queue = topics[side_of(d["kind"])]
        queue.append(Record(len(queue), 0, d["org_code"].encode(), r))
    n = len(raws)
    share = len(topics["revenue"]) / n
    gc.freeze()
    gc.disable()  # as the worker does while it processes a batch
    clock = time.thread_time
    wall = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-hotpath-"))
    store = Store(tmp)
    ledger = store.attach(Ledger())
    folding = write = 0.0
    at = {"revenue": 0, "expenditure": 0}
    while at["revenue"] < len(topics["revenue"]) or at["expenditure"] < len(topics["expenditure"]):
        b = clock()
        for side, count in (
            ("revenue", round(args.batch * share)),
            ("expenditure", round(args.batch * (1 - share))),
        ):
            chunk = topics[side][at[side] : at[side] + count]
            at[side] += count
            if chunk:
                fold(ledger, chunk, f"cashpos.events.{side}", 0, side, {}, 8192)
        c = clock()
        store.commit(ledger.take_changes(), ledger.positions, {})
        ledger.journal.clear()
        ledger.commitments.clear()
        d = clock()
        folding, write = folding + c - b, write + d - c
    us = {"check_and_fold": folding / n * 1e6, "state_write": write / n * 1e6}
    total = sum(us.values())
    wall_us = (time.perf_counter() - wall) / n * 1e6
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)  # each run leaves ~30 MB of RocksDB otherwise
    print(
        f"path={fold.__name__} "
        + " ".join(f"{k}_us={v:.2f}" for k, v in us.items())
        + f" total_us={total:.2f} ceiling_events_per_s={1e6 / total:.0f} wall_us={wall_us:.2f}"
    )


if __name__ == "__main__":
    main()
