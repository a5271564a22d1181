"""One incremental reconciliation against a full re-fold of the same history:
``python -m bench.reconcile [--events 300000] [--new 1000,10000] [--seed 1]``.

A fresh broker, Redis and one worker (12 partitions); ``--events`` simulated events (every
account's opening balance, then business days) are published and folded by the worker. Then, in
this process and in this order:

* ``cashpos reconcile --continuous``'s first interval: no checkpoint, a fold from offset 0, the
  checkpoint written (its size per event of history is printed);
* a restart: the checkpoint read back;
* an interval with nothing new;
* for each N of ``--new``: N more events published, then at once one interval (it reads the N
  records only; the worker is still folding them, so some positions are lagging);
* the one-shot ``cashpos reconcile`` (every record of both topics, in memory) over the same
  history, as the reference.

Every interval and the full run must find no difference; the script exits 1 otherwise.
Memory: the process's resident size after each step (VmRSS; it never shrinks, so a step's peak
shows only when it is the largest so far: the full re-fold runs last for that reason).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import shutil
import tempfile
import time
from pathlib import Path

from cashpos.devstack import new_stack
from cashpos.embedded import start_infra
from faults.common import publish, wait_until, worker_metric_totals, workload
from reconcile.continuous import Reconciler
from reconcile.run import Report, reconcile
from streams.topics import ensure_topics

JUDGED = (
    "cashpos_events_applied_total",
    "cashpos_duplicates_dropped_total",
    "cashpos_events_deadlettered_total",
)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def line(what: str, rep: Report, seconds: float) -> None:
    print(
        f"{what:<34} {seconds:8.2f} s  read {rep.records_read:>9,}  history {rep.records_in:>9,}  "
        f"diff_krw {rep.diff_krw}  lagging {rep.lagging:>4}  positions {rep.positions_checked:>6,}  "
        f"checkpoint {rep.checkpoint_bytes / 1e6:7.1f} MB  rss {rss_mb():7.0f} MB",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000, help="events of history")
    ap.add_argument("--new", default="1000,10000", help="new events per measured interval")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=12)
    args = ap.parse_args()
    news = [int(n) for n in args.new.split(",") if n]
    raws = workload(args.seed, args.events + sum(news))
    history, rest = raws[: args.events], raws[args.events :]
    del raws
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-reconcile-"))
    bad = 0
    try:
        with start_infra(tmp) as infra:
            st = new_stack(infra, tmp, args.partitions, namespace="bench")
            settings = dataclasses.replace(st.settings, reconcile_checkpoint_dir=tmp / "checkpoint")
            try:
                asyncio.run(ensure_topics(settings))
                st.start_worker()
                print(
                    f"history: {len(history):,} events published in {publish(settings, history):.1f} s",
                    flush=True,
                )

                n_expected = len(history)

                def folded() -> bool:
                    """Every published record judged by the worker (applied, duplicate or dead letter)."""
                    t = worker_metric_totals(st).get("w1", {})
                    judged = sum(t.get(k, 0.0) for k in JUDGED)
                    return judged >= n_expected and t.get("cashpos_consumer_lag_records", 1.0) == 0

                wait_until(folded, 1800, 1.0, "the worker to fold the history")
                del history  # the resident size from here on is the reconcilers' (and the rest)
                gc.collect()
                print(f"worker caught up  rss {rss_mb():.0f} MB", flush=True)

                t = time.perf_counter()
                rec = Reconciler(settings)
                rep = asyncio.run(rec.run_once(publish=False))
                line("first interval (from offset 0)", rep, time.perf_counter() - t)
                bad += bool(rep.diff_krw or rep.differences)
                print(
                    f"checkpoint: {rep.checkpoint_bytes:,} bytes for {rep.records_in:,} records "
                    f"({rep.applied:,} applied): {rep.checkpoint_bytes / rep.records_in:.0f} bytes per event "
                    f"of history",
                    flush=True,
                )
                del rec
                t = time.perf_counter()
                rec = Reconciler(settings)
                print(
                    f"restart: checkpoint read back in {time.perf_counter() - t:.2f} s  rss {rss_mb():.0f} MB"
                )
                assert rec.resumed
                t = time.perf_counter()
                rep = asyncio.run(rec.run_once(publish=False))
                line("interval, nothing new", rep, time.perf_counter() - t)
                bad += bool(rep.diff_krw or rep.differences)
                at = 0
                for n in news:
                    publish(settings, rest[at : at + n])
                    at += n
                    t = time.perf_counter()
                    rep = asyncio.run(rec.run_once(publish=False))
                    line(f"interval, {n:,} new events", rep, time.perf_counter() - t)
                    bad += bool(rep.diff_krw or rep.differences)
                t = time.perf_counter()
                full = asyncio.run(reconcile(settings, publish=False))
                line("full re-fold (cashpos reconcile)", full, time.perf_counter() - t)
                bad += bool(full.diff_krw or full.differences)
            finally:
                st.stop_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
