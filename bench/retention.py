"""Bytes of state per event, online and retired (issue #16), in this process.

    python -m bench.retention --events 200000 [--online-years 1]

Two simulated years of one government (``bench.history.year_of``: ``--year`` and the next, each
with the previous year's close on 21 January) are folded the worker's way — ``fold_partition``
per topic and batch, the history hook (daily flows, chains, the known-at rows), one atomic
``Store.commit`` per batch — into a fresh store. Then the store's bytes per key tag (key + value,
before compression) and on disk after a full compaction, divided by the events; then the history
hook's retirer compacts the years ``--online-years`` leaves behind (the first year, with 1), and
the same again. No broker: bytes, not speed, are the point (the fold's speed is
``bench.processor``'s).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from agents.history import HistoryHook
from agents.hooks import FoldContext, HookHost
from bench.history import state_bytes, year_of
from cashpos.names import Topics, side_of_topic
from state import partition
from state.ledger import Ledger, Position, PosKey
from state.store import Store
from streams.lean_records import LeanRecord, RawRecord

BATCH = 5_000


def fold(store: Store, raws: list[bytes], topics: Topics, offsets: dict[str, int], hook: HistoryHook) -> None:
    """Fold ``raws`` (one government: one partition) the worker's way, batch by batch."""
    ledger = store.attach(Ledger())
    org = orjson.loads(raws[0])["org_code"]
    store.load(ledger, org)
    per_topic: dict[str, list[RawRecord]] = {}
    for raw in raws:
        e = orjson.loads(raw)
        for topic in topics.for_record(e["kind"]):
            rs = per_topic.setdefault(topic, [])
            ts = int(time.time() * 1000)
            rs.append(LeanRecord(offsets.get(topic, 0) + len(rs), ts, org.encode(), raw))
    # the two topics in alternating batches, as a worker reads them
    cursors = dict.fromkeys(per_topic, 0)
    while any(cursors[t] < len(rs) for t, rs in per_topic.items()):
        for topic, rs in per_topic.items():
            i = cursors[topic]
            if i >= len(rs):
                continue
            batch = rs[i : i + BATCH]
            partition.fold_partition(ledger, batch, topic, 0, side_of_topic(topic), {}, 64 * 1024)
            ch = ledger.take_changes()
            ctx = FoldContext(ch, ledger.positions, 0, lambda _: (), lambda *_: False)
            hook.after_fold(ctx)
            store.commit(ch, ledger.positions, {(topic, 0): batch[-1].offset + 1}, ctx.puts, ctx.deletes)
            asyncio.run(hook.after_commit())
            ledger.journal.clear()
            ledger.commitments.clear()
            cursors[topic] = i + len(batch)
    for topic, rs in per_topic.items():
        offsets[topic] = offsets.get(topic, 0) + len(rs)


def _host(store: Store, org: str, positions: dict[PosKey, Position]) -> HookHost:
    no = None  # no Redis or Kafka: the history hook uses neither
    return HookHost(store, no, no, positions, asyncio.Lock(), lambda: [org], lambda: 0, lambda _: ())  # type: ignore[arg-type]  # (above)


def report(label: str, path: Path, events: int) -> None:
    disk, _sst, tags = state_bytes(path)
    by_tag = ", ".join(f"{t} {v / events:.1f}" for t, v in sorted(tags.items(), key=lambda kv: -kv[1]) if v)
    print(
        f"{label}: on disk {disk:,} B = {disk / events:.1f} B/event; uncompressed by tag (B/event): {by_tag}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="events a year")
    ap.add_argument("--org", default="6110000")
    ap.add_argument("--year", type=int, default=2025)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--online-years", type=int, default=1)
    a = ap.parse_args()
    print(f"machine: {platform.machine()}, python {platform.python_version()}; one process, no broker")
    first, second = year_of(a.org, a.events, a.seed, a.year), year_of(a.org, a.events, a.seed + 1, a.year + 1)
    # the second year's events with its own close of the first on 21 January: 2 years, 1 close
    raws = first + second
    root = Path(tempfile.mkdtemp(prefix="cashpos-retention-"))
    try:
        store = Store(root)
        hook = HistoryHook(online_years=a.online_years)
        positions: dict[PosKey, Position] = {}
        host = _host(store, a.org, positions)
        asyncio.run(hook.on_assigned(host, [a.org]))
        t = time.perf_counter()
        offsets: dict[str, int] = {}
        fold(store, raws, Topics("bench"), offsets, hook)
        print(
            f"folded {len(raws):,} events ({len(first):,} of {a.year}, {len(second):,} of {a.year + 1}) in {time.perf_counter() - t:.1f}s"
        )
        positions.update(store.positions(a.org))
        closes = store.closes(a.org)
        store.close()
        report("online (every year in full)", root, len(raws))
        store = Store(root)
        host = _host(store, a.org, store.positions(a.org))
        hook = HistoryHook(online_years=a.online_years)
        asyncio.run(hook.on_assigned(host, [a.org]))
        through = hook.retirer.through(store, a.org)
        t = time.perf_counter()
        steps = 0
        while hook.retirer.due:
            asyncio.run(hook.housekeeping())
            steps += 1
        print(f"closed {closes}; retired through {through} in {steps} steps, {time.perf_counter() - t:.1f}s")
        store.close()
        report(f"after retiring (online years {a.online_years})", root, len(raws))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
