"""History reads on a year of the busiest government's history (issue #16), next to the
current-position read in the same run, and the bytes of state per event.

    python -m bench.history --events 500000 [--without-history /tmp/x]

The year: the simulator's event mix (``cashpos.simulator``, seed ``--seed``) run from 1 January
to 31 December of ``--year`` at a national rate chosen so that the government ``--org`` (default
서울특별시, the busiest: about 6.4 % of the national stream) gets about ``--events`` events over
the 365 days; only that government's events are kept (with its accounts' opening balances), so
its history is self-consistent (commitments, payments against them, transfers, reversals, the
previous year's close on 21 January, prior-year events until 20 January). That is the year
compressed onto this machine: the real busiest government makes far more events a day.

They are published to a fresh broker and folded by a real ``cashpos worker`` (the path of every
event: contract, fold, history hook, RocksDB, Redis); then, with that worker and one ``cashpos
api`` process, ``--rate`` requests per second for ``--seconds`` each (latency from each request's
scheduled send, so a slow server cannot slow the client down and hide it), one kind after the
other:

* ``current``: ``GET /v1/positions/{org}`` (Redis only: the reference figure);
* ``as_of``: ``GET /v1/positions/{org}?as_of=<a random instant of the year>`` (API -> owner);
* ``statement``: ``GET /v1/statements/{org}?from=<1 January>&to=<31 December>`` (every account);
* ``statement_account``: the same for one account (``general``);
* ``statement_government``: the same with ``by=government`` (one row per day, the accounts
  summed: the owner's kept sums, ``state/statement.py``);
* ``statement_government_owner``: the same asked of the owning worker's endpoint directly;
* ``forecast``, ``forecast_account`` (``--kinds``): ``GET /v1/forecast/{org}`` and
  ``GET /v1/forecast/{org}/general`` (Redis: what the worker's forecast hook wrote).

A kind whose requests cannot keep up is stopped ``--grace`` seconds after its schedule ends: the
requests still waiting then count with their age so far (a lower bound), and the report says so.
With ``--live RATE``, each kind is then loaded again while receipts of the government are
published at RATE a second (a share ``--late-share`` of them on an earlier day of the year: late events; the others on
its last day, "today"), so every batch moves the figures and the kept answers; and then, one at a
time, the first read after a batch (one event published and applied) against the read again.

Then single requests, one at a time, split where the time goes (the owner's endpoint directly
vs. through the API; response bytes), and after the worker stopped, the store's pieces in this
process (flows scan, statement rows, JSON encoding).

State per event: the worker's RocksDB after a full compaction (``compact_range``), bytes on disk
divided by the events published; with ``--without-history DIR`` the same events are also folded
by a worker run from the source tree ``DIR`` (a worktree of a commit before the history, with
the built kernel copied in), in a namespace of its own on the same broker.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import orjson

from bench.common import BENCH_RATE_PER_S, percentile
from cashpos.calendar import KST, date_day
from cashpos.devstack import Stack, http_get, new_stack
from cashpos.embedded import Infra, start_infra
from cashpos.names import Topics
from state.history import DayTotals
from state.statement import GovernmentDays
from streams.publisher import Publisher
from streams.topics import ensure_topics

BUSIEST = "6110000"  # 서울특별시


def year_of(org: str, n: int, seed: int, year: int) -> list[bytes]:
    """About ``n`` events of ``org`` over the 365 days of ``year`` (see the module's doc)."""
    from cashpos.simulator import Simulator

    start = dt.datetime(year, 1, 1, tzinfo=KST)
    end = dt.datetime(year + 1, 1, 1, tzinfo=KST).timestamp() - 0.001
    pilot = Simulator(seed=seed, start=start, speed=1.0, rate=1.0).next_batch(100_000)
    share = sum(1 for r in pilot if orjson.loads(r)["org_code"] == org) / len(pilot)
    seconds = end - start.timestamp()
    sim = Simulator(seed=seed, start=start, speed=1.0, rate=n / share / seconds)
    needle = f'"org_code":"{org}"'.encode()
    out = [r for r in sim.opening_balances() if needle in r]
    while True:
        chunk = sim.until(end, 200_000)
        out += [r for r in chunk if needle in r]
        if len(chunk) < 200_000:
            return out


def topic_counts(raws: list[bytes], topics: Topics) -> dict[str, int]:
    """Records each input topic gets (a close goes to both)."""
    c: Counter[str] = Counter()
    for r in raws:
        for topic in topics.for_record(orjson.loads(r)["kind"]):
            c[topic] += 1
    return dict(c)


async def publish(st: Stack, raws: list[bytes]) -> float:
    await ensure_topics(st.settings)
    t = time.perf_counter()
    async with Publisher(st.settings, linger_ms=20) as pub:
        for i in range(0, len(raws), 50_000):
            await pub.send_many(raws[i : i + 50_000])
    return time.perf_counter() - t


def stored_offsets(state: Path) -> dict[str, int]:
    """Next offsets per topic in a worker's RocksDB (read-only beside it: flushed data only)."""
    from rocksdict import AccessType, Options, Rdict

    from state import layout

    db = Rdict(str(state / "ledger"), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        out: dict[str, int] = {}
        it = db.iter()
        it.seek(layout.OFFSET_TAG)
        while it.valid() and it.key().startswith(layout.OFFSET_TAG):
            topic, _ = layout.parse_offset_key(it.key())
            out[topic] = out.get(topic, 0) + layout.decode_int(it.value())
            it.next()
        return out
    finally:
        db.close()


def wait_folded(st: Stack, state: Path, want: dict[str, int], timeout: float = 1800) -> float:
    """Until the worker's stored offsets reach the end of what was published (a fresh
    namespace: each topic's offsets start at 0, one record an offset)."""
    t = time.monotonic()
    while True:
        try:
            got = stored_offsets(state)
        except Exception:  # noqa: BLE001 - not created yet, or mid-flush: look again
            got = {}
        if all(got.get(topic, 0) >= k for topic, k in want.items()):
            return time.monotonic() - t
        for name, p in st.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}); see {st.root / name}.log")
        if time.monotonic() - t > timeout:
            raise TimeoutError(f"not folded after {timeout}s: {got} of {want}")
        time.sleep(1)


def state_bytes(state: Path) -> tuple[int, int, dict[str, int]]:
    """(bytes on disk after a full compaction, SST bytes RocksDB reports, key+value bytes per
    key tag before compression) of a stopped worker's store."""
    from rocksdict import Options, Rdict

    db = Rdict(str(state / "ledger"), Options(raw_mode=True))
    try:
        db.flush(True)
        db.compact_range(None, None)
        sst = int(db.property_int_value("rocksdb.total-sst-files-size") or 0)
        tags: Counter[str] = Counter()
        it = db.iter()
        it.seek_to_first()
        while it.valid():
            k = it.key()
            tags[k[:1].decode(errors="replace")] += len(k) + len(it.value())
            it.next()
    finally:
        db.close()
    disk = sum(f.stat().st_size for f in (state / "ledger").iterdir() if f.is_file())
    return disk, sst, dict(tags)


# -- the load ----------------------------------------------------------------------------------------


async def client(
    host: str,
    port: int,
    token: str,
    path: Callable[[], str],
    schedule: asyncio.Queue[float | None],
    lat: list[float],
    sizes: list[int],
    errors: list[int],  # the statuses other than 200
    pending: dict[int, float],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    me = id(asyncio.current_task())
    try:
        while True:
            due = await schedule.get()
            if due is None:
                break
            pending[me] = due
            writer.write(
                f"GET {path()} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
            )
            status, size = await read_response_sized(reader)
            del pending[me]
            lat.append(time.perf_counter() - due)
            sizes.append(size)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def read_response_sized(reader: asyncio.StreamReader) -> tuple[int, int]:
    """(status, body bytes) of one keep-alive response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    chunked = False
    for line in head.split(b"\r\n"):
        low = line.lower()
        if low.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
            chunked = True
    if length is not None:
        await reader.readexactly(length)
        return status, length
    size = 0
    while chunked:
        n = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(n + 2)
        size += n
        if n == 0:
            break
    return status, size


async def run_kind(
    api: str, token: str, path: Callable[[], str], rate: float, seconds: float, clients: int, grace: float
) -> dict[str, float]:
    u = urlparse(api)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    schedule: asyncio.Queue[float | None] = asyncio.Queue()
    lat: list[float] = []
    sizes: list[int] = []
    errors: list[int] = []
    pending: dict[int, float] = {}
    tasks = [
        asyncio.create_task(client(host, port, token, path, schedule, lat, sizes, errors, pending))
        for _ in range(clients)
    ]
    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        schedule.put_nowait(due)
    for _ in tasks:
        schedule.put_nowait(None)
    _, slow = await asyncio.wait(tasks, timeout=grace)
    now = time.perf_counter()
    unfinished = 0
    if slow:  # still waiting: their age so far, and the ones never sent, as latencies (lower bounds)
        left = []
        while not schedule.empty():
            d = schedule.get_nowait()
            if d is not None:
                left.append(d)
        ages = [now - d for d in [*pending.values(), *left]]
        unfinished = len(ages)
        lat += ages
        for t in slow:
            t.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    ms = [x * 1000 for x in lat]
    return {
        "requests": n,
        "completed": len(lat) - unfinished,
        "unfinished": unfinished,
        "errors": len(errors),
        "statuses": dict(Counter(errors)),  # type: ignore[dict-item]  # printed, not summed
        "p50": percentile(ms, 0.5),
        "p99": percentile(ms, 0.99),
        "max": max(ms) if ms else float("nan"),
        "bytes": statistics.median(sizes) if sizes else 0,
        "seconds": elapsed,
    }


def live_event(org: str, year: int, i: int, rnd: random.Random, late_share: float) -> bytes:
    """A receipt of ``org`` into its general account: on the year's last day ("today"), or (a
    share ``late_share``) on an earlier day of the year, a late event that moves every later
    day's opening."""
    day = dt.date(year, 12, 31)
    if rnd.random() < late_share:
        day = dt.date(year, 1, 1) + dt.timedelta(days=rnd.randrange(364))
    at = dt.datetime.combine(day, dt.time(12), KST) + dt.timedelta(milliseconds=i % 3_600_000)
    return orjson.dumps(
        {
            "event_id": f"bench-live-{time.time_ns()}-{i}",
            "org_code": org,
            "account": "general",
            "fiscal_year": year,
            "kind": "receipt",
            "amount": rnd.randrange(1, 10**6),
            "occurred_at": at.isoformat(timespec="milliseconds"),
            "source": "bench-history-live",
            "category": "local_tax",
        }
    )


async def live_stream(st: Stack, make: Callable[[], bytes], rate: float, stop: asyncio.Event) -> int:
    """Publish ``rate`` events a second (a tenth every 0.1 s) until ``stop``; how many were sent."""
    n = 0
    async with Publisher(st.settings, linger_ms=5) as pub:
        t0 = time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - t0) * rate)
            if due > n:
                await pub.send_many([make() for _ in range(due - n)])
                n = due
            await asyncio.sleep(0.1)
    return n


def _versions(api: str, org: str, auth: dict[str, str]) -> list[tuple[str, int, int]]:
    status, body = http_get(f"{api}/v1/positions/{org}", auth, 60)
    assert status == 200, body[:300]
    return [(a["account"], a["fiscal_year"], a["version"]) for a in orjson.loads(body)["accounts"]]


async def first_reads(
    st: Stack, org: str, auth: dict[str, str], url: str, make: Callable[[], bytes], n: int = 10
) -> tuple[list[float], list[float]]:
    """(ms of the first read after a batch, ms of the same read again) ``n`` times: one event
    published, applied (a position's version moved), then the read twice, one at a time."""
    first: list[float] = []
    again: list[float] = []
    async with Publisher(st.settings, linger_ms=0) as pub:
        for _ in range(n):
            before = _versions(st.api, org, auth)
            await pub.send(make())
            deadline = time.monotonic() + 30
            while _versions(st.api, org, auth) == before:
                assert time.monotonic() < deadline, "the event was not applied in 30 s"
                await asyncio.sleep(0.02)
            for out in (first, again):
                t = time.perf_counter()
                status, body = http_get(url, auth, 60)
                out.append((time.perf_counter() - t) * 1000)
                assert status == 200, body[:300]
    return first, again


def timed_get(url: str, headers: dict[str, str] | None = None, n: int = 20) -> tuple[float, float, int]:
    """(median ms, max ms, body bytes) of ``n`` GETs one after the other."""
    ts = []
    size = 0
    for _ in range(n):
        t = time.perf_counter()
        status, body = http_get(url, headers, timeout=60)
        ts.append((time.perf_counter() - t) * 1000)
        assert status == 200, (url, status, body[:200])
        size = len(body.encode())
    return statistics.median(ts), max(ts), size


def in_process(state: Path, org: str, year: int, with_as_of: bool = True) -> dict[str, float]:
    """Where a statement's and an as-of answer's time goes inside the owner (its store read in
    this process after the worker stopped), ms, median of 10."""
    from agents.history_web import positions_as_of
    from cashpos.calendar import date_day
    from state.history import statement_rows
    from state.ledger import Ledger
    from state.store import Store

    store = Store(state)
    try:
        first, last = date_day(dt.date(year, 1, 1)), date_day(dt.date(year, 12, 31))
        out: dict[str, list[float]] = {}

        def clock(name: str, t: float) -> None:
            out.setdefault(name, []).append((time.perf_counter() - t) * 1000)

        ledger = Ledger()
        store.load(ledger, org)
        totals = DayTotals(store.flows(org))  # what the worker keeps for a government asked about
        history = SimpleNamespace(totals_for=lambda _org: totals)
        owner = SimpleNamespace(store=store, ledger=ledger, history=history)  # what positions_as_of reads
        rnd = random.Random(1)
        lo = int(dt.datetime(year, 1, 1, tzinfo=KST).timestamp() * 1000)
        hi = int(dt.datetime(year + 1, 1, 1, tzinfo=KST).timestamp() * 1000)
        body: list[dict[str, object]] = []
        for _ in range(10):
            t = time.perf_counter()
            kept = GovernmentDays(store.flows(org))
            clock("government statement: sums from the store (once per government)", t)
            t = time.perf_counter()
            summed = kept.rows(first, last)
            clock("government statement: rows, made", t)
            t = time.perf_counter()
            summed = kept.rows(first, last)
            clock("government statement: rows, kept", t)
            t = time.perf_counter()
            orjson.dumps({"rows": [{"day": d, **c} for d, c in summed]})
            clock("government statement: to JSON", t)
            t = time.perf_counter()
            flows = list(store.flows(org))
            clock("statement: scan the flows", t)
            t = time.perf_counter()
            rows = statement_rows(flows, first, last)
            clock("statement: rows", t)
            t = time.perf_counter()
            body = [{"day": d, "account": pk[1], "fiscal_year": pk[2], **c} for d, pk, c in rows]
            orjson.dumps({"rows": body})
            clock("statement: to JSON", t)
            if with_as_of:
                t = time.perf_counter()
                positions_as_of(owner, org, rnd.randrange(lo, hi))  # type: ignore[arg-type]  # duck-typed owner
                clock("as_of: whole answer", t)
        stats = {k: statistics.median(v) for k, v in out.items()}
        stats["statement rows"] = len(body)
        stats["government statement rows"] = len(kept.rows(first, last))
        stats["positions"] = len({pk for pk in ledger.positions if pk[0] == org})
        return stats
    finally:
        store.close()


# -- the runs ---------------------------------------------------------------------------------------------


def _stack(infra: Infra, root: Path, ns: str, cwd: Path | None = None) -> Stack:
    extra = {"PYTHONPATH": str(cwd)} if cwd else {}
    return new_stack(
        infra,
        root,
        12,
        namespace=ns,
        extra_env=extra,
        token_args={"expires_days": 1, "rate_per_s": BENCH_RATE_PER_S},
        cwd=cwd,
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500_000, help="events of the government over the year")
    ap.add_argument("--org", default=BUSIEST)
    ap.add_argument("--year", type=int, default=2026)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second, each kind")
    ap.add_argument("--seconds", type=float, default=30.0, help="of each kind")
    ap.add_argument("--clients", type=int, default=32, help="keep-alive connections")
    ap.add_argument("--grace", type=float, default=20.0, help="seconds a kind may run past its schedule")
    ap.add_argument(
        "--kinds",
        default="current,as_of,statement,statement_account",
        help="which reads to load, comma-separated (in this order)",
    )
    ap.add_argument("--live", type=float, default=0.0, help="events/s of the government published meanwhile")
    ap.add_argument("--late-share", type=float, default=0.1, help="of the live events, on an earlier day")
    ap.add_argument(
        "--without-history",
        type=Path,
        metavar="DIR",
        help="also fold the events with a worker run from this source tree (bytes per event only)",
    )
    args = ap.parse_args()
    org, year = args.org, args.year
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
        "broker, redis, the worker, the API and this load generator share the cores "
        "(and other work on the machine)"
    )
    t = time.perf_counter()
    raws = year_of(org, args.events, args.seed, year)
    first = min(orjson.loads(r)["occurred_at"] for r in raws)
    last = max(orjson.loads(r)["occurred_at"] for r in raws)
    kinds = Counter(orjson.loads(r)["kind"] for r in raws)
    print(
        f"the year: {len(raws):,} events of {org} ({first} .. {last}), made in {time.perf_counter() - t:.0f}s: "
        + ", ".join(f"{k} {v:,}" for k, v in kinds.most_common())
    )
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-history-"))
    try:
        with start_infra(tmp / "infra") as infra:
            sizes: dict[str, tuple[int, int, dict[str, int]]] = {}
            st = _stack(infra, tmp / "head", "hist")
            try:
                st.start_worker()
                st.start_api()
                st.wait_ready(120)
                pub_s = await publish(st, raws)
                fold_s = wait_folded(st, st.root / "state-w1", topic_counts(raws, Topics(st.namespace)))
                print(f"published in {pub_s:.0f}s; folded by the worker {fold_s:.0f}s after (HEAD)")
                token = st.token("finance_director", (org,))
                lo = int(dt.datetime(year, 1, 1, tzinfo=KST).timestamp() * 1000)
                hi = int(dt.datetime(year + 1, 1, 1, tzinfo=KST).timestamp() * 1000)
                rnd = random.Random(args.seed)

                def as_of() -> str:
                    at = rnd.randrange(lo, hi)
                    stamp = dt.datetime.fromtimestamp(at / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
                    return f"/v1/positions/{org}?as_of={stamp}.{at % 1000:03d}Z"

                span = f"from={year}-01-01&to={year}-12-31"
                paths: dict[str, Callable[[], str]] = {
                    "current": lambda: f"/v1/positions/{org}",
                    "as_of": as_of,
                    "statement": lambda: f"/v1/statements/{org}?{span}",
                    "statement_account": lambda: f"/v1/statements/{org}?{span}&account=general",
                    "statement_government": lambda: f"/v1/statements/{org}?{span}&by=government",
                    # the forecast (issue #18): the government's 90 days, and one account's
                    "forecast": lambda: f"/v1/forecast/{org}",
                    "forecast_account": lambda: f"/v1/forecast/{org}/general",
                    # the owner's endpoint itself, the API bypassed (where a tail comes from)
                    "statement_government_owner": lambda: (
                        f"/cashpos/history/{org}/statements?from={days[0]}&to={days[1]}&by=government"
                    ),
                }
                days = (date_day(dt.date(year, 1, 1)), date_day(dt.date(year, 12, 31)))
                base = {"statement_government_owner": f"http://{_owner_web(st)}"}
                for name, path in paths.items():
                    status, body = http_get(
                        base.get(name, st.api) + path(), {"Authorization": f"Bearer {token}"}, 60
                    )
                    assert status == 200, (name, status, body[:300])  # warm, and answering
                results: dict[str, dict[str, float]] = {}
                live_rnd = random.Random(args.seed + 1)
                sent = 0

                def make() -> bytes:
                    nonlocal sent
                    sent += 1
                    return live_event(org, year, sent, live_rnd, args.late_share)

                # each kind without a stream, then (--live) each again while the stream flows
                for rate in [0.0] + ([args.live] if args.live else []):
                    for kind in args.kinds.split(","):
                        name = f"{kind}+live" if rate else kind
                        stop = asyncio.Event()
                        live = asyncio.create_task(live_stream(st, make, rate, stop)) if rate else None
                        r = await run_kind(
                            base.get(kind, st.api),
                            token,
                            paths[kind],
                            args.rate,
                            args.seconds,
                            args.clients,
                            args.grace,
                        )
                        stop.set()
                        if live is not None:
                            r["live_events"] = await live
                        results[name] = r
                        print(
                            f"{name:18s} {r['completed']:.0f}/{r['requests']:.0f} done in {r['seconds']:.0f}s "
                            f"(unfinished {r['unfinished']:.0f}, errors {r['errors']:.0f} {r['statuses'] or ''}); "
                            f"p50={r['p50']:.1f}ms p99={r['p99']:.1f}ms max={r['max']:.1f}ms; "
                            f"body {r['bytes'] / 1024:.0f} KiB"
                            + (f"; {r['live_events']:.0f} live events meanwhile" if rate else "")
                        )
                auth = {"Authorization": f"Bearer {token}"}
                if args.live:
                    for name in ("statement_government", "statement_account", "statement"):
                        if name in args.kinds.split(","):
                            first_ms, again_ms = await first_reads(
                                st, org, auth, st.api + paths[name](), make
                            )
                            print(
                                f"first read after a batch {name:20s} median {statistics.median(first_ms):.1f}ms "
                                f"max {max(first_ms):.1f}ms; the same read again median "
                                f"{statistics.median(again_ms):.1f}ms (10 events, one at a time)"
                            )
                # one request at a time: the owner directly vs. through the API
                web = _owner_web(st)
                first_day, last_day = date_day(dt.date(year, 1, 1)), date_day(dt.date(year, 12, 31))
                at = (lo + hi) // 2
                for name, direct, through in (
                    (
                        "statement",
                        f"http://{web}/cashpos/history/{org}/statements?from={first_day}&to={last_day}",
                        f"{st.api}/v1/statements/{org}?{span}",
                    ),
                    (
                        "as_of",
                        f"http://{web}/cashpos/history/{org}/positions?as_of={at}",
                        f"{st.api}/v1/positions/{org}?as_of="
                        + dt.datetime.fromtimestamp(at / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    ),
                    (
                        "statement_account",
                        (
                            f"http://{web}/cashpos/history/{org}/statements?from={first_day}&to={last_day}"
                            "&account=general"
                        ),
                        f"{st.api}/v1/statements/{org}?{span}&account=general",
                    ),
                    (
                        "statement_government",
                        (
                            f"http://{web}/cashpos/history/{org}/statements?from={first_day}&to={last_day}"
                            "&by=government"
                        ),
                        f"{st.api}/v1/statements/{org}?{span}&by=government",
                    ),
                    ("current", None, f"{st.api}/v1/positions/{org}"),
                ):
                    line = f"serial {name:18s}"
                    if direct:
                        m, mx, b = timed_get(direct)
                        line += f" owner endpoint median {m:.1f}ms max {mx:.1f}ms ({b / 1024:.0f} KiB);"
                    m, mx, b = timed_get(through, auth)
                    line += f" through the API median {m:.1f}ms max {mx:.1f}ms ({b / 1024:.0f} KiB)"
                    print(line)
            finally:
                st.stop_all()
            for k, v in in_process(st.root / "state-w1", org, year, "as_of" in args.kinds.split(",")).items():
                print(f"in process: {k} {v:.1f}" + (" ms" if ":" in k else ""))
            sizes["HEAD (with the history)"] = state_bytes(st.root / "state-w1")
            if args.without_history:
                old = _stack(infra, tmp / "old", "nohist", args.without_history.resolve())
                try:
                    old.start_worker()
                    await publish(old, raws)
                    fold_s = wait_folded(
                        old, old.root / "state-w1", topic_counts(raws, Topics(old.namespace))
                    )
                    print(f"folded by the worker of {args.without_history} in {fold_s:.0f}s")
                finally:
                    old.stop_all()
                sizes[f"{args.without_history} (without)"] = state_bytes(old.root / "state-w1")
            for name, (disk, sst, tags) in sizes.items():
                print(
                    f"state {name}: {disk:,} bytes on disk after compaction ({sst:,} in SST files) = "
                    f"{disk / len(raws):.0f} bytes per event ({sst / len(raws):.0f} SST); uncompressed "
                    "key+value bytes per event by key tag: "
                    + " ".join(
                        f"{t}={b / len(raws):.1f}" for t, b in sorted(tags.items(), key=lambda x: -x[1])
                    )
                )
            print(
                " ".join(f"{k}_p99_ms={v['p99']:.1f}" for k, v in results.items())
                + f" target_p99_ms=20 rate={args.rate:g}/s events={len(raws)}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _owner_web(st: Stack) -> str:
    """The worker's web address from its heartbeat (the one worker owns every partition)."""
    import redis

    from cashpos.names import RedisKeys

    r = redis.Redis.from_url(st.infra.redis_url)
    try:
        beats = r.hgetall(RedisKeys(st.namespace).freshness)
    finally:
        r.close()
    return next(str(orjson.loads(v)["web"]) for v in beats.values() if orjson.loads(v).get("web"))


if __name__ == "__main__":
    asyncio.run(main())
