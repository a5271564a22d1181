"""API read latency with thousands of open dashboard streams.

    python -m bench.api --streams 5000 --rate 2000 --seconds 20 [--processes 2]

Opens ``--streams`` server-sent-event connections to /v1/stream (half national, with a national
token, half one government each, with its finance director's token) and keeps them drained, runs
a realistic background event stream, then issues ``GET /v1/positions/{org}`` (a random
government, with its director's token) at a fixed ``--rate`` over keep-alive connections. Latency
is measured from each request's *scheduled* send time, so a stalled server cannot hide behind a
slowed-down client (no coordinated omission). Target: p99 < 20 ms at 2,000 req/s with 5,000
streams. The API runs ``--processes`` processes on its one port (``cashpos api --processes``).
Two phases in one run: the reads with no stream open (the reference), then with the streams.
The API's garbage-collection pauses over 50 ms (its log) are counted.

The load generator runs on the same machine: it drains the streams with a bare asyncio protocol
(no task or buffer per stream, it only counts bytes) and prints the CPU it used, next to the API
processes', the worker's, Redis's and the broker's over the measured interval.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import psutil

from bench.common import BENCH_RATE_PER_S, director_tokens, percentile
from bench.freshness import background
from cashpos.devstack import Stack, new_stack
from cashpos.embedded import Infra, start_infra
from cashpos.refdata import governments
from streams.publisher import Publisher


@contextmanager
def api_stack(processes: int) -> Iterator[tuple[Stack, Infra]]:
    """``bench.common.bench_stack`` with ``processes`` API processes on the API's port."""
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-"))
    try:
        with start_infra(tmp) as infra:
            st = new_stack(
                infra,
                tmp,
                12,
                namespace="bench",
                extra_env={"CASHPOS_MAX_STREAMS_PER_TOKEN": "100000"},  # dashboards share a token
                token_args={"expires_days": 1, "rate_per_s": BENCH_RATE_PER_S},
            )
            try:
                st.start_worker()
                st.start_api(CASHPOS_API_PROCESSES=str(processes))
                st.wait_ready(90)
                yield st, infra
            finally:
                st.stop_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Drain(asyncio.Protocol):
    """One open stream: sends its request, checks the status line, then only counts bytes."""

    def __init__(self, request: bytes, counts: list[int], done: asyncio.Future[None]) -> None:
        self.request = request
        self.counts = counts  # opened, failed, dropped, bytes
        self.done = done
        self.head = b""
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.counts[3] += len(data)
        if self.open:
            return
        self.head += data
        if b"\r\n" not in self.head:
            return
        if self.head.split(b" ", 2)[1] == b"200":
            self.open = True
            self.counts[0] += 1
        else:  # refused (401, 404, 429, 503): not an open stream
            self.counts[1] += 1
            assert self.transport is not None
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.counts[2] += 1
        elif not self.done.done():
            self.counts[1] += 1
        if not self.done.done():
            self.done.set_result(None)


async def open_stream(
    host: str, port: int, path: str, token: str, counts: list[int]
) -> asyncio.Transport | None:
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    done: asyncio.Future[None] = loop.create_future()
    try:
        transport, _ = await loop.create_connection(lambda: Drain(request, counts, done), host, port)
    except OSError:
        counts[1] += 1
        return None
    return transport


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def reader_client(
    host: str,
    port: int,
    tokens: dict[str, str],
    schedule: asyncio.Queue[float | None],
    lat: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    orgs = list(governments())
    while True:
        due = await schedule.get()
        if due is None:
            break
        org = random.choice(orgs)
        writer.write(
            f"GET /v1/positions/{org} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tokens[org]}\r\n\r\n".encode()
        )
        status = await read_response(reader)
        lat.append(time.perf_counter() - due)
        if status != 200:
            errors[0] += 1
    writer.close()


async def loop_lag(lags: list[float], stop: asyncio.Event, tick: float = 0.005) -> None:
    """How late this process's own event loop wakes up: a stalled load generator would show up
    in the latencies it measures, so it is measured too."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(tick)
        lags.append(time.perf_counter() - t - tick)


def cpu_seconds(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    out = {}
    for name, ps in procs.items():
        total = 0.0
        for p in ps:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        out[name] = total
    return out


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(
    host: str,
    port: int,
    args: argparse.Namespace,
    directors: dict[str, str],
    procs: dict[str, list[psutil.Process]],
    counts: list[int],
) -> dict[str, object]:
    """One phase: ``--rate`` reads a second for ``--seconds`` over ``--clients`` connections."""
    schedule: asyncio.Queue[float | None] = asyncio.Queue()
    lat: list[float] = []
    errors = [0]
    clients = [
        asyncio.create_task(reader_client(host, port, directors, schedule, lat, errors))
        for _ in range(args.clients)
    ]
    lags: list[float] = []
    lag_stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lags, lag_stop))
    cpu0, self0, bytes0 = cpu_seconds(procs), self_cpu(), counts[3]
    t0 = time.perf_counter()
    n = int(args.rate * args.seconds)
    for i in range(n):
        due = t0 + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        schedule.put_nowait(due)
    for _ in clients:
        schedule.put_nowait(None)
    await asyncio.gather(*clients)
    elapsed = time.perf_counter() - t0
    cpu1, self1, bytes1 = cpu_seconds(procs), self_cpu(), counts[3]
    lag_stop.set()
    await lag_task
    ms = [x * 1000 for x in lat]
    lag_ms = [x * 1000 for x in lags]
    cpu = {k: (cpu1[k] - cpu0[k]) / elapsed for k in cpu0} | {"load generator": (self1 - self0) / elapsed}
    return {
        "reads": len(ms),
        "rate": len(ms) / elapsed,
        "errors": errors[0],
        "p50": percentile(ms, 0.5),
        "p99": percentile(ms, 0.99),
        "p999": percentile(ms, 0.999),
        "max": max(ms, default=float("nan")),
        "cpu": ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()),
        "lag": f"p99 {percentile(lag_ms, 0.99):.1f} ms, max {max(lag_ms, default=float('nan')):.1f} ms",
        "stream_mb_s": (bytes1 - bytes0) / elapsed / 1e6,
    }


def report(label: str, r: dict[str, object]) -> None:
    print(
        f"[{label}] reads={r['reads']} ({r['rate']:,.0f}/s) errors={r['errors']} "
        f"api_p50_ms={r['p50']:.1f} api_p99_ms={r['p99']:.1f} api_p999_ms={r['p999']:.1f} "
        f"api_max_ms={r['max']:.1f}"
    )
    print(f"[{label}] cpu (cores busy): {r['cpu']}; load generator loop lag {r['lag']}")
    print(f"[{label}] stream bytes received {r['stream_mb_s']:.1f} MB/s")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=5000)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=30, help="of each phase (0 streams, then --streams)")
    ap.add_argument("--clients", type=int, default=64, help="keep-alive connections for the reads")
    ap.add_argument("--events-per-s", type=int, default=200, help="background event rate")
    ap.add_argument("--processes", type=int, default=1, help="API processes on the API's port")
    args = ap.parse_args()
    with api_stack(args.processes) as (st, infra):
        u = urlparse(st.api)
        host, port = u.hostname or "127.0.0.1", u.port or 80
        counts = [0, 0, 0, 0]  # opened, failed, dropped, bytes received on the streams
        orgs = list(governments())
        directors = director_tokens(st)
        national = st.token("national")
        api = psutil.Process(st.procs["api"].pid)
        procs = {
            "api": [api, *api.children()],
            "worker": [psutil.Process(p.pid) for n, p in st.procs.items() if n.startswith("worker")],
            "redis": [psutil.Process(infra.redis.proc.pid)] if infra.redis else [],
            "broker": [psutil.Process(infra.kafka.proc.pid)] if infra.kafka else [],
        }
        async with Publisher(st.settings) as pub:
            bg_stop = asyncio.Event()
            bg = asyncio.create_task(background(pub, args.events_per_s, bg_stop))
            await asyncio.sleep(2)
            # The reference, in the same run: the same reads with no stream open.
            reference = await measure(host, port, args, directors, procs, counts)
            transports = []
            for i in range(args.streams):
                org = orgs[i % len(orgs)]
                path, token = ("/v1/stream", national) if i % 2 else (f"/v1/stream?org={org}", directors[org])
                transports.append(await open_stream(host, port, path, token, counts))
                if i % 200 == 199:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(3)
            loaded = await measure(host, port, args, directors, procs, counts)
            bg_stop.set()
            events = await bg
        for t in transports:
            if t is not None:
                t.close()
        pauses = [float(m) for m in re.findall(r"gc pause (\d+) ms", st.log("api"))]
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores shared by broker, redis, worker, "
            f"{args.processes} API process(es) and this load generator; background events={events}"
        )
        report("0 streams", reference)
        print(f"streams opened={counts[0]} failed={counts[1]} dropped={counts[2]}")
        report(f"{args.streams} streams", loaded)
        print(
            f"API gc pauses over 50 ms (whole run): {len(pauses)}, longest {max(pauses, default=0):.0f} ms; "
            f"target: p99 < 20 ms at {args.rate}/s with {args.streams} streams"
        )


if __name__ == "__main__":
    asyncio.run(main())
