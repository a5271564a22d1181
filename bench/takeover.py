"""Takeover time at two history sizes (issue #19, item 1): three workers, one killed.

    flock /tmp/cashpos-heavy.lock .venv/bin/python -m bench.takeover --history 1000000 10000000

Per history size H, on a fresh broker and Redis: H events of the simulator's mix are published
(before any worker runs), three ``cashpos worker`` processes (w1, w2, w3; 12 partitions) fold
them, each also keeping warm the partitions it would get if another died (``agents.standby``;
``--standby 0``: none, the re-fold-from-0 reference). Once every position is served and every
standby has caught up, a steady stream starts (``--rate`` events/s); after ``--before`` seconds
w2 is killed (kill -9). Its partitions move to w1 and w3; for each moved partition the time from
its assignment (the new owner's log line) to its governments' figures in Redis being served
(seeded), not stale (the owner's heartbeat does not list the partition as behind) and at least
as recent as the stream at the assignment (every position's version at least the independent
reference fold's, ``reconcile.reference``, over the events acknowledged by then). After the
stream stops, the moved governments' figures must equal the reference's over everything.

Printed per size: the history's fold time (three workers, events/s), the takeover time per moved
partition and its maximum; then the ratio of the maxima (largest / smallest history).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.processor import simulator
from cashpos.devstack import Stack, new_stack
from cashpos.embedded import start_infra
from cashpos.names import META_FIELD, RedisKeys, Topics
from cashpos.refdata import governments
from faults.common import Feeder, heartbeats, live_owners, wait_until, worker_metric_totals
from reconcile.reference import Reference
from state.projection import decode_position, parse_field
from streams.contract import side_of
from streams.publisher import Publisher, route
from streams.topics import ensure_topics, partition_for

PARTITIONS = 12
WORKERS = ("w1", "w2", "w3")
VICTIM = "w2"
_ASSIGNED = re.compile(
    r'"ts":"([^"]+)".*assigned \[(.*?)\] resuming at[^\n]*?(?:after ([\d.]+) s of loading)?"'
)
View = dict[tuple[str, str, int], tuple[int, int, int]]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _org(topics: Topics, raw: bytes) -> str | None:
    key = route(topics, raw)[1]
    return key.decode() if key is not None else None


class Expected:
    """The reference fold of the events of some governments only (the rules are per government,
    so their positions are the same as in a fold of everything)."""

    def __init__(self, orgs: set[str], topics: Topics) -> None:
        self.orgs = orgs
        self.topics = topics
        self.ref = Reference()
        self.versions: dict[tuple[str, str, int], int] = {}
        self._seen = 0

    def feed(self, raws: list[bytes]) -> None:
        ref = self.ref
        for raw in raws:
            if _org(self.topics, raw) in self.orgs:
                ref.feed(raw, side_of(orjson.loads(raw)["kind"]))
        for acc in ref.log[self._seen :]:
            for pk, _, _ in acc.deltas:
                self.versions[pk] = self.versions.get(pk, 0) + 1
        self._seen = len(ref.log)

    def view(self) -> View:
        return {
            pk: (cash, committed, self.versions.get(pk, 0))
            for pk, (cash, committed) in self.ref.positions().items()
            if self.versions.get(pk, 0)
        }


async def publish_history(st: Stack, n: int, seed: int, expected: Expected) -> tuple[float, Any]:
    """Publish ``n`` simulator events (fast); the reference takes the moved governments' ones.
    Returns the seconds and the simulator (the stream continues it)."""
    sim = simulator(seed)
    t = time.perf_counter()
    async with Publisher(st.settings, linger_ms=20) as pub:
        first = sim.opening_balances()
        expected.feed(first)
        sent = await pub.send_many(first)
        last_log = time.monotonic()
        while sent < n:
            batch = sim.next_batch(min(50_000, n - sent))
            expected.feed(batch)
            sent += await pub.send_many(batch)
            if time.monotonic() - last_log > 30:
                last_log = time.monotonic()
                log(f"  published {sent:,} of {n:,}")
    return time.perf_counter() - t, sim


def _redis(st: Stack) -> redis.Redis:
    return redis.Redis.from_url(st.infra.redis_url, socket_timeout=5, socket_connect_timeout=5)


def served(r: redis.Redis, keys: RedisKeys, orgs: list[str]) -> tuple[View, set[str]]:
    """The positions Redis serves for ``orgs`` and the governments it serves (marker set)."""
    pipe = r.pipeline(transaction=False)
    for org in orgs:
        pipe.hgetall(keys.positions(org))
    out: View = {}
    seeded: set[str] = set()
    for org, h in zip(orgs, pipe.execute(), strict=True):
        for f, v in h.items():
            name = f.decode() if isinstance(f, bytes) else f
            if name == META_FIELD:
                seeded.add(org)
                continue
            account, fy = parse_field(name)
            version, body = decode_position(v)
            out[(org, account, fy)] = (body["cash"], body["committed"], version)
    return out, seeded


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def assignments_after(st: Stack, worker: str, since: float) -> list[tuple[float, set[int]]]:
    """(wall time, partitions) of each assignment of ``worker`` logged after ``since``: when the
    assignment reached the worker (the line is logged once its state is loaded, and says how
    long that took)."""
    out = []
    for m in _ASSIGNED.finditer(st.log(f"worker-{worker}")):
        t = _ts(m.group(1)) - float(m.group(3) or 0)
        if t >= since:
            parts = {int(x.rsplit(":", 1)[1].strip("'")) for x in m.group(2).split(", ") if x}
            out.append((t, parts))
    return out


def run_one(history: int, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-takeover-", dir=args.tmp))
    try:
        with start_infra(tmp) as infra:
            st = new_stack(infra, tmp, PARTITIONS, namespace="takeover")
            try:
                return _measure(st, history, args)
            finally:
                st.stop_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(st: Stack, history: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {"CASHPOS_STANDBY_REPLICAS": str(args.standby)}
    st.root.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(st.settings))
    topics = Topics(st.settings.namespace)
    keys = RedisKeys(st.settings.namespace)
    # Range over w1 < w2 < w3: w2 owns partitions 4-7 (checked below)
    victim_parts = set(range(4, 8))
    moved_orgs = {o for o in governments() if partition_for(o, PARTITIONS) in victim_parts}
    expected = Expected(moved_orgs, topics)
    log(f"H={history:,}: publishing the history")
    pub_s, sim = asyncio.run(publish_history(st, history, args.seed, expected))
    log(f"  published in {pub_s:.0f} s ({history / pub_s:,.0f} events/s)")
    want_history = expected.view()
    t0 = time.monotonic()
    for w in WORKERS:
        st.start_worker(w, **env)
    r = _redis(st)
    orgs = sorted(moved_orgs)

    everyone = sorted(governments())

    def history_served() -> bool:
        got, seeded = served(r, keys, everyone)
        if len(seeded) < len(everyone) or any(got.get(pk) != v for pk, v in want_history.items()):
            return False
        m = worker_metric_totals(st)  # every owner at its high watermarks
        return all(m.get(w, {}).get("cashpos_consumer_lag_records", 1) == 0 for w in WORKERS)

    wait_until(history_served, args.timeout, 1.0, "the history to be served")
    fold_s = time.monotonic() - t0
    log(f"  history served after {fold_s:.0f} s ({history / fold_s:,.0f} events/s, three workers)")
    owners = live_owners(st, 5.0)
    if owners.get(VICTIM) != victim_parts:
        raise RuntimeError(f"{VICTIM} owns {owners.get(VICTIM)}, not {sorted(victim_parts)}")

    def warm() -> bool:
        m = worker_metric_totals(st)
        return all(
            m.get(w, {}).get("cashpos_standby_partitions", 0) > 0
            and m[w].get("cashpos_standby_lag_records", 1) == 0
            for w in WORKERS
        )

    if args.standby:
        wait_until(warm, args.timeout, 1.0, "the standbys to catch up")
    warm_s = time.monotonic() - t0
    log(f"  standbys warm after {warm_s:.0f} s" if args.standby else "  no standbys")
    m = worker_metric_totals(st)
    standby_folded = sum(m.get(w, {}).get("cashpos_standby_records_folded_total", 0) for w in WORKERS)
    disk = {w: _du(st.root / f"state-{w}") for w in WORKERS}

    stream = sim.next_batch(int(args.rate * (args.before + args.after)))
    feeder = Feeder(st.settings, stream, args.rate)
    feeder.start()
    time.sleep(args.before)
    killed = time.time()
    st.stop(f"worker-{VICTIM}", kill=True)
    log(f"  kill -9 {VICTIM} at {args.before:.0f} s into the stream")
    samples: list[Sample] = []

    def sample() -> None:
        got, seeded = served(r, keys, orgs)
        samples.append((time.time(), got, seeded, heartbeats(st)))

    per: dict[int, dict[str, Any]] = {}  # each moved partition's first assignment after the kill

    def assigned() -> bool:
        per.clear()
        for w in WORKERS:
            if w != VICTIM:
                for t_assign, parts in assignments_after(st, w, killed):
                    for p in parts & victim_parts:
                        if p not in per or t_assign < per[p]["assigned_at"]:
                            per[p] = {"owner": w, "assigned_at": t_assign}
        return set(per) == victim_parts

    deadline = time.monotonic() + args.timeout
    while not (feeder.done and assigned()) and time.monotonic() < deadline:
        sample()
        time.sleep(0.1)
    feeder.wait(args.timeout)

    # the reference at the end of the stream, and at each moved partition's assignment
    cuts = {}
    for p, info in per.items():
        acked = [
            n for (_, n), at in zip(feeder.marks, feeder.acked_at, strict=True) if at <= info["assigned_at"]
        ]
        cuts[p] = max(acked or [0])
    views_at: dict[int, View] = {}
    done = 0
    for p, cut in sorted(cuts.items(), key=lambda kv: kv[1]):
        expected.feed(stream[done:cut])
        done = cut
        views_at[p] = {pk: v for pk, v in expected.view().items() if partition_for(pk[0], PARTITIONS) == p}
    expected.feed(stream[done:])
    want_end = expected.view()

    def exact_now() -> bool:
        sample()
        _, got, seeded, _ = samples[-1]
        return seeded == moved_orgs and all(got.get(pk) == v for pk, v in want_end.items())

    try:
        wait_until(exact_now, args.timeout, 0.2, "the moved governments' figures to be exact")
        exact = True
    except TimeoutError:
        exact = False
    exact_s = time.time() - killed
    takeover: dict[str, Any] = {}
    for p, info in sorted(per.items()):
        ready = _ready_at(samples, p, info, views_at[p])
        takeover[str(p)] = {
            "owner": info["owner"],
            "assigned_after_kill_s": round(info["assigned_at"] - killed, 2),
            "stream_events_acked_by_then": cuts[p],
            "served_exact_after_assignment_s": None
            if ready is None
            else round(ready - info["assigned_at"], 2),
        }
    times = [v["served_exact_after_assignment_s"] for v in takeover.values()]
    m = worker_metric_totals(st)
    result = {
        "history_events": history,
        "standby_replicas": args.standby,
        "publish_s": round(pub_s, 1),
        "history_fold_s": round(fold_s, 1),
        "history_fold_events_per_s": round(history / fold_s),
        "standbys_warm_s": round(warm_s, 1),
        "standby_records_folded": standby_folded,
        "state_bytes_before_kill": disk,
        "moved_partitions": sorted(per),
        "takeover": takeover,
        "max_takeover_s": None if None in times or not times else max(times),
        "moved_figures_exact_at_end": exact,
        "exact_after_kill_s": round(exact_s, 1),
        "takeover_refold_records": {
            w: m.get(w, {}).get("cashpos_takeover_refold_records_total") for w in WORKERS if w != VICTIM
        },
    }
    log(f"  {json.dumps(result)}")
    return result


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.stdout else 0


Sample = tuple[float, View, set[str], dict[str, Any]]  # (wall time, served, seeded, heartbeats)


def _ready_at(samples: list[Sample], p: int, info: dict[str, Any], want: View) -> float | None:
    """The first sample after the assignment at which partition ``p``'s governments are served,
    not behind in their owner's heartbeat, and at least as recent as ``want``."""
    orgs = {pk[0] for pk in want}
    for t, got, seeded, beats in samples:
        if t < info["assigned_at"] or not orgs <= seeded:
            continue
        beat = beats.get(info["owner"], {})
        if p not in beat.get("partitions", []) or str(p) in beat.get("behind", {}):
            continue
        if all(got.get(pk, (0, 0, 0))[2] >= v[2] for pk, v in want.items()):
            return t
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--history", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--standby", type=int, default=1, help="CASHPOS_STANDBY_REPLICAS (0: re-fold from 0)")
    ap.add_argument("--rate", type=float, default=500.0, help="the steady stream, events/s")
    ap.add_argument("--before", type=float, default=5.0, help="stream seconds before the kill")
    ap.add_argument("--after", type=float, default=40.0, help="stream seconds after the kill")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--tmp", default=None, help="where the broker's and workers' data go")
    ap.add_argument(
        "--reference", type=int, default=0, help="then this history without standby (re-fold from 0); 0: skip"
    )
    args = ap.parse_args()
    out = [run_one(h, args) for h in args.history]
    ref = None
    if args.reference:  # the same run's re-fold from offset 0: no standby
        ref = run_one(args.reference, argparse.Namespace(**{**vars(args), "standby": 0}))
    print(json.dumps({"runs": out, "reference_no_standby": ref}, indent=1))
    for o in [*out, *([ref] if ref else [])]:
        print(
            f"history {o['history_events']:>12,} standby {o['standby_replicas']}: history folded at "
            f"{o['history_fold_events_per_s']:,} events/s; takeover max {o['max_takeover_s']} s after "
            f"the assignment; moved figures exact at the end: {o['moved_figures_exact_at_end']}"
        )
    maxima = [o["max_takeover_s"] for o in out]
    if len(out) > 1 and all(maxima):
        print(f"ratio (largest / smallest history): {maxima[-1] / maxima[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
