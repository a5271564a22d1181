"""What a year's close costs the worker: ``python -m bench.close [--rate R]``.

Simulates 20 December to 20 January (all 243 governments, the year-end rush, December
commitments carried forward or left open), folds it through the worker's path into a real RocksDB
store (``fold_partition``, a write per batch, as the worker does), then folds the 486 close
records (every government, both topics) as one batch and prints the time per close and in
total, next to the time per event of the month before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from cashpos.calendar import KST
from cashpos.names import CLOSE_KIND, Topics, side_of_kind
from cashpos.simulator import Simulator
from state.ledger import Ledger
from state.partition import fold_partition
from state.store import Store
from streams.lean_records import LeanRecord as Rec
from streams.lean_records import RawRecord


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=0.3, help="simulated events per simulated second")
    ap.add_argument("--batch", type=int, default=20_000)
    args = ap.parse_args()
    topics = Topics("bench")
    sim = Simulator(seed=3, start=dt.datetime(2026, 12, 20, tzinfo=KST), speed=1.0, rate=args.rate)
    end = dt.datetime(2027, 1, 21, tzinfo=KST).timestamp()
    by_side: dict[str, list[RawRecord]] = {"revenue": [], "expenditure": []}
    for raw in sim.opening_balances() + sim.until(end - 1, 10**8):
        side = side_of_kind(orjson.loads(raw)["kind"])
        by_side[side].append(Rec(len(by_side[side]), 0, orjson.loads(raw)["org_code"].encode(), raw))
    closes = sim.until(end + 1, 10**6)
    assert all(CLOSE_KIND.encode() in c for c in closes) and len(closes) == 243, len(closes)

    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-close-"))
    store = Store(tmp)
    ledger = store.attach(Ledger())
    try:
        n = 0
        t0 = time.perf_counter()
        for side, recs in by_side.items():
            topic = topics.for_side(side)
            for i in range(0, len(recs), args.batch):
                batch = recs[i : i + args.batch]
                applied, dead = fold_partition(ledger, batch, topic, 0, side, {}, 8192)
                assert not dead, dead[:3]
                n += applied
                store.commit(ledger.take_changes(), ledger.positions, {(topic, 0): batch[-1].offset + 1})
                ledger.journal.clear()
                ledger.commitments.clear()
        month = time.perf_counter() - t0
        open_commitments = sum(
            1
            for org in {r.key for r in by_side["expenditure"]}
            for _, c in store.commitments((org or b"").decode())
            if c.open
        )
        t1 = time.perf_counter()
        for side in ("revenue", "expenditure"):
            topic = topics.for_side(side)
            base = len(by_side[side])
            close_recs: list[RawRecord] = [
                Rec(base + i, 0, orjson.loads(c)["org_code"].encode(), c) for i, c in enumerate(closes)
            ]
            applied, dead = fold_partition(ledger, close_recs, topic, 0, side, {}, 8192)
            assert applied == 243 and not dead, dead[:3]
            store.commit(ledger.take_changes(), ledger.positions, {(topic, 0): close_recs[-1].offset + 1})
        close = time.perf_counter() - t1
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"month before the close: {n:,} events in {month:.2f}s ({month / n * 1e6:.2f} µs/event), "
        f"{len(ledger.positions):,} positions, {open_commitments:,} commitments open (all years) at the close"
    )
    print(
        f"the close: 486 records (243 governments x 2 topics) in {close * 1000:.1f} ms, "
        f"{close / 486 * 1e6:,.0f} µs per record incl. the write = {close / (month / n):,.0f} events' worth"
    )


if __name__ == "__main__":
    main()
