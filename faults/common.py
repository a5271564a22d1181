"""The harness shared by the fault scenarios and their CI tests.

Everything runs as real processes on loopback: the development stack (``cashpos.embedded``: a
Tansu broker and redis-server(s); ``cashpos.devstack``: ledger workers and the API). The expected
balances come from the independent reference fold (``reconcile.reference``); every scenario ends
with :func:`reconcile_quiet`: Redis and each worker's RocksDB state against a re-fold of the
topics, after the system is quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.typing import EncodableT

from bench.processor import simulator as bench_simulator
from cashpos.devstack import Stack, new_stack
from cashpos.embedded import Infra, start_infra
from cashpos.names import META_FIELD, RedisKeys, Topics
from cashpos.redis_acl import create_accounts
from cashpos.refdata import governments
from reconcile.reference import Reference
from reconcile.run import _state_view, behind, reconcile, topic_ends
from state.projection import decode_position, parse_field
from streams.contract import side_of
from streams.publisher import Publisher
from streams.reader import Record, read_topics
from streams.topics import ensure_topics

PosKey = tuple[str, str, int]
View = dict[PosKey, tuple[int, int, int]]
TokenRecords = dict[EncodableT, EncodableT]  # a Redis hash, in the types HSET takes


# -- input ----------------------------------------------------------------------------------------


def workload(seed: int, events: int) -> list[bytes]:
    """``events`` realistic events: each account's opening balance, then a business week."""
    sim = bench_simulator(seed)
    raws = sim.opening_balances()
    return raws + sim.next_batch(max(0, events - len(raws)))


class Feeder(threading.Thread):
    """Publishes ``raws`` in order from a background thread (its own event loop), paced at
    ``rate`` events per second (None: as fast as the broker takes them)."""

    def __init__(
        self, settings: Any, raws: list[bytes], rate: float | None = None, step_s: float = 0.05
    ) -> None:
        super().__init__(daemon=True, name="feeder")
        self.settings = settings
        self.raws = raws
        self.rate = rate
        self.step_s = step_s
        self.sent = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.marks: list[tuple[float, int]] = []  # (monotonic time acknowledged, events sent)
        self.acked_at: list[float] = []  # wall-clock time (epoch s) of each mark
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - the thread's outcome, raised again by wait()
            self.error = exc

    async def _main(self) -> None:
        async with Publisher(self.settings) as pub:
            self.started_at = time.monotonic()
            if not self.rate:
                self.sent = await pub.send_many(self.raws)
                self.marks.append((time.monotonic(), self.sent))
                self.acked_at.append(time.time())
            else:
                chunk = max(1, int(self.rate * self.step_s))
                for i in range(0, len(self.raws), chunk):
                    self.sent += await pub.send_many(self.raws[i : i + chunk])
                    now = time.monotonic()
                    self.marks.append((now, self.sent))
                    self.acked_at.append(time.time())
                    delay = self.started_at + self.sent / self.rate - now
                    if delay > 0:
                        await asyncio.sleep(delay)
            self.finished_at = time.monotonic()

    def wait(self, timeout: float = 600) -> None:
        self.join(timeout)
        if self.error is not None:
            raise RuntimeError("publishing failed") from self.error
        if self.is_alive():
            raise TimeoutError(f"publisher still running after {timeout}s ({self.sent} sent)")

    @property
    def done(self) -> bool:
        return self.finished_at is not None or self.error is not None


def publish(settings: Any, raws: list[bytes]) -> float:
    """Publish everything now (acknowledged on return); returns the seconds it took."""
    f = Feeder(settings, raws)
    t = time.monotonic()
    f.start()
    f.wait(3600)
    return time.monotonic() - t


# -- access and topics ---------------------------------------------------------------------------


def access_backup(stack: Stack) -> TokenRecords:
    """The namespace's token records (hash of the token -> record), as an operator's backup."""
    r = _redis(stack)
    try:
        return {k: v for k, v in r.hgetall(RedisKeys(stack.namespace).tokens).items()}
    finally:
        r.close()


def restore_access(stack: Stack, tokens: TokenRecords) -> None:
    """What an operator restores into a Redis that came back empty (or was flushed): the
    service accounts (ACL users, with the passwords the processes already hold) and the token
    records. Neither is part of the serving copy, which the processor re-seeds itself."""
    from urllib.parse import unquote, urlsplit

    passwords = {role: unquote(urlsplit(url).password or "") for role, url in stack.redis_urls.items()}
    create_accounts(stack.infra.redis_url, stack.namespace, passwords)
    if tokens:
        r = _redis(stack)
        try:
            r.hset(RedisKeys(stack.namespace).tokens, mapping=tokens)
        finally:
            r.close()


def prepare(stack: Stack) -> None:
    stack.root.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(stack.settings))


@contextmanager
def prepared_stack(infra: Infra, root: Path, partitions: int) -> Iterator[Stack]:
    """A scenario's stack on ``infra`` (its directory and topics :func:`prepare`-d); every
    process it started is stopped on the way out."""
    s = new_stack(infra, root, partitions)
    prepare(s)
    try:
        yield s
    finally:
        s.stop_all()


# -- observing the system -------------------------------------------------------------------------


def wait_until(
    pred: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _redis(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.infra.redis_url, socket_timeout=2, socket_connect_timeout=2)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def redis_view(stack: Stack) -> View:
    """Every position the namespace serves from Redis: (cash, committed, version)."""
    r = _redis(stack)
    keys = RedisKeys(stack.namespace)
    out: View = {}
    try:
        for org in governments():
            for f, v in r.hgetall(keys.positions(org)).items():
                if _text(f) == META_FIELD:
                    continue
                account, fy = parse_field(_text(f))
                version, body = decode_position(v if isinstance(v, bytes) else v.encode())
                out[(org, account, fy)] = (body["cash"], body["committed"], version)
    finally:
        r.close()
    return out


def expected_view(raws: list[bytes]) -> View:
    """What :func:`redis_view` must show once ``raws`` are folded: the reference fold's positions
    and versions (the number of events that changed each)."""
    ref = Reference()
    for raw in raws:
        ref.feed(raw, side_of(orjson.loads(raw)["kind"]))
    versions: dict[PosKey, int] = {}
    for acc in ref.log:
        for pk, _, _ in acc.deltas:
            versions[pk] = versions.get(pk, 0) + 1
    return {
        pk: (cash, committed, versions.get(pk, 0))
        for pk, (cash, committed) in ref.positions().items()
        if versions.get(pk, 0)
    }


def heartbeats(stack: Stack) -> dict[str, dict[str, Any]]:
    r = _redis(stack)
    try:
        raw = r.hgetall(RedisKeys(stack.namespace).freshness)
    finally:
        r.close()
    return {_text(k): orjson.loads(v) for k, v in raw.items()}


def live_owners(stack: Stack, max_age_s: float = 2.5) -> dict[str, set[int]]:
    """Partitions per worker, from the heartbeats of the workers alive in the last seconds."""
    now = time.time() * 1000
    return {
        w: set(b.get("partitions", []))
        for w, b in heartbeats(stack).items()
        if now - b.get("heartbeat_ms", 0) < max_age_s * 1000
    }


def wait_up(stack: Stack, worker_id: str, since_ms: int, timeout: float = 90) -> float:
    """Until the worker's heartbeat (newer than ``since_ms``) lists partitions; returns when."""
    proc = stack.procs.get(f"worker-{worker_id}")

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker {worker_id} exited with {proc.returncode}")
        b = heartbeats(stack).get(worker_id)
        return bool(b and b.get("heartbeat_ms", 0) > since_ms and b.get("partitions"))

    wait_until(up, timeout, 0.1, f"{worker_id} to own partitions")
    return time.monotonic()


def versions_sum(view: View) -> int:
    return sum(v for _, _, v in view.values())


def checksum(view: View) -> str:
    """sha256 over the sorted (org, account, fiscal year, cash, committed, version) rows."""
    h = hashlib.sha256()
    for (org, account, fy), (cash, committed, version) in sorted(view.items()):
        h.update(f"{org}|{account}|{fy}|{cash}|{committed}|{version}\n".encode())
    return h.hexdigest()


def _totals(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def worker_metric_totals(stack: Stack) -> dict[str, dict[str, float]]:
    """Per worker: every sample name summed over its labels (the worker's own exposition,
    which it refreshes in Redis every second)."""
    r = _redis(stack)
    keys = RedisKeys(stack.namespace)
    try:
        names = sorted(r.keys(keys.worker_metrics_pattern))
        texts = r.mget(names) if names else []
    finally:
        r.close()
    prefix = len(keys.worker_metrics(""))
    return {_text(n)[prefix:]: _totals(_text(t)) for n, t in zip(names, texts, strict=True) if t}


def worker_histogram(stack: Stack, worker: str, name: str) -> dict[str, float]:
    """One of a worker's histograms: upper bound ("le") -> cumulative count."""
    r = _redis(stack)
    try:
        text = r.get(RedisKeys(stack.namespace).worker_metrics(worker))
    finally:
        r.close()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(_text(text or b"")):
        for smp in fam.samples:
            if smp.name == f"{name}_bucket":
                out[smp.labels["le"]] = out.get(smp.labels["le"], 0.0) + smp.value
    return out


def api_metric_totals(stack: Stack) -> dict[str, float]:
    """The API's /metrics (which re-exports every worker's metrics), summed over all labels."""
    r = httpx.get(f"{stack.api}/metrics", headers=stack.headers, timeout=10)  # national: operations
    r.raise_for_status()
    return _totals(r.text)


def state_view(path: Path, attempts: int = 20) -> tuple[View, dict[tuple[str, int], int]]:
    """A worker's positions and stored offsets, read-only beside the running worker (what the
    worker has flushed: without a WAL, the memtable is invisible to another process)."""
    for i in range(attempts):
        try:
            return _state_view(path)
        except Exception:  # a compaction removed a file while opening: try again
            if i == attempts - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def read_records(stack: Stack) -> list[Record]:
    return asyncio.run(read_topics(stack.settings, list(Topics(stack.namespace).sources)))


# -- the closing reconciliation ---------------------------------------------------------------------


@dataclass
class Reconciliation:
    records_in: int
    applied: int
    duplicates: int
    dead_letters: int
    positions_checked: int
    lagging: int
    unseeded: int
    diff_krw: int
    state_diff_krw: int
    state_positions: int
    state_behind: int
    seconds: float
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"}

    def outcome(self) -> dict[str, Any]:
        """The figures every scenario reports: the difference and where each record ended."""
        return {
            "diff_krw": self.diff_krw,
            "lagging": self.lagging,
            "unseeded": self.unseeded,
            "records_in": self.records_in,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
        }


def reconcile_quiet(
    stack: Stack,
    states: dict[str, Path],
    *,
    published: int | None = None,
    owned: dict[str, set[int]] | None = None,
    timeout: float = 90,
) -> Reconciliation:
    """The closing check of every scenario, run once the input has been published.

    1. Waits until each state directory has flushed the end of every partition its worker owns
       (``owned``, from the heartbeats; all partitions when None: one worker): the system is
       quiet.
    2. ``reconcile.run.reconcile`` in owned mode: Redis, and each state for exactly the
       partitions its worker owns (a worker that lost a partition keeps stale data for it),
       against an independent re-fold of the whole topics; diff_krw, lagging, unseeded and
       state_behind must all be 0.
    3. With ``owned``, every partition must have exactly one owner.
    4. counts in = applied + duplicates + dead letters, and = what was published.
    """
    t0 = time.monotonic()
    n = stack.partitions
    problems: list[str] = []
    if owned is not None:
        counts: dict[int, int] = {}
        for parts in owned.values():
            for p in parts:
                counts[p] = counts.get(p, 0) + 1
        if sorted(counts) != list(range(n)) or any(c != 1 for c in counts.values()):
            problems.append(f"partitions not owned exactly once: {owned}")
    parts_of = {wid: owned[wid] if owned is not None else set(range(n)) for wid in states}
    ends = topic_ends(read_records(stack))
    for wid, d in states.items():
        deadline = time.monotonic() + timeout
        while True:
            late = behind(ends, state_view(d)[1], parts_of[wid])
            if not late:
                break
            if time.monotonic() > deadline:
                problems.append(f"{wid}: state not at the end of its partitions: {late}")
                break
            time.sleep(0.5)
    rep = asyncio.run(
        reconcile(stack.settings, publish=True, owned={d: parts_of[wid] for wid, d in states.items()})
    )
    state_krw = sum(sc.diff_krw for sc in rep.states)
    if rep.diff_krw or rep.differences:
        problems.append(
            f"reconcile: diff_krw={rep.diff_krw} (states {state_krw}), e.g. {rep.differences[:3]}"
        )
    if rep.state_behind:
        problems.append(f"reconcile: states {rep.state_behind} records behind the topics")
    if rep.lagging:
        problems.append(f"reconcile: {rep.lagging} positions lagging")
    if rep.unseeded:
        problems.append(f"reconcile: {rep.unseeded} governments unseeded")
    if rep.records_in != rep.applied + rep.duplicates + rep.dead_letters:
        problems.append(
            f"counts: {rep.records_in} in != {rep.applied} applied + "
            f"{rep.duplicates} duplicates + {rep.dead_letters} dead letters"
        )
    if published is not None and rep.records_in != published:
        problems.append(f"counts: {rep.records_in} records on the topics, {published} published")
    return Reconciliation(
        records_in=rep.records_in,
        applied=rep.applied,
        duplicates=rep.duplicates,
        dead_letters=rep.dead_letters,
        positions_checked=rep.positions_checked,
        lagging=rep.lagging,
        unseeded=rep.unseeded,
        diff_krw=rep.diff_krw,
        state_diff_krw=state_krw,
        state_positions=sum(sc.positions_checked for sc in rep.states),
        state_behind=rep.state_behind,
        seconds=round(time.monotonic() - t0, 2),
        problems=problems,
    )


# -- scripts --------------------------------------------------------------------------------------


def base_args(description: str, events: int = 1_000_000) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--events", type=int, default=events, help="events in the stream")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, state)")
    return ap


def add_session_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--session-timeout-ms",
        type=int,
        default=None,
        help="the workers' CASHPOS_SESSION_TIMEOUT_MS (default: the product's)",
    )


def session_env(args: argparse.Namespace) -> dict[str, str]:
    """The workers' environment for ``--session-timeout-ms`` (heartbeat a quarter of it)."""
    if not args.session_timeout_ms:
        return {}
    return {
        "CASHPOS_SESSION_TIMEOUT_MS": str(args.session_timeout_ms),
        "CASHPOS_HEARTBEAT_MS": str(max(100, args.session_timeout_ms // 4)),
    }


def script_main(
    name: str, args: argparse.Namespace, scenario: Callable[..., dict[str, Any]], **options: Any
) -> int:
    """Run ``scenario(infra, root, events=, seed=, partitions=, **options)`` (the
    :func:`base_args`) on an infra of its own; print its figures; 0 when every check held."""
    root = Path(tempfile.mkdtemp(prefix=f"cashpos-{name}-"))
    print(
        f"{name}: {' '.join(sys.argv[1:])} (work dir {root}; {os.cpu_count()} cores shared "
        f"by broker, redis, workers, API and this script)",
        flush=True,
    )
    t = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        with start_infra(root) as infra:
            figures = scenario(
                infra, root, events=args.events, seed=args.seed, partitions=args.partitions, **options
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    figures["script_seconds"] = round(time.monotonic() - t, 1)
    problems = figures.pop("problems", [])
    for k, v in figures.items():
        print(f"  {k} = {v}")
    print(("FAIL: " + "; ".join(problems)) if problems else "PASS", flush=True)
    print("figures " + json.dumps({"scenario": name, **figures, "problems": problems}, default=str))
    return 1 if problems else 0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rng(seed: int, salt: str) -> random.Random:
    return random.Random(f"{salt}:{seed}")
