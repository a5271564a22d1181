"""API read latency with thousands of open dashboard streams.

    python -m bench.api --streams 5000 --rate 2000 --seconds 30

Opens ``--streams`` server-sent-event connections to /v1/stream (half national, with a national
token, half one government each, with its finance director's token) and keeps them drained, runs
a realistic background event stream, then issues ``GET /v1/positions/{org}`` (a random
government, with its director's token) at a fixed ``--rate`` over keep-alive connections. Latency is measured
from each request's *scheduled* send time, so a stalled server cannot hide behind a slowed-down
client (no coordinated omission). Target: p99 < 20 ms at 2,000 req/s with 5,000 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import time
from urllib.parse import urlparse

from bench.common import bench_stack, director_tokens, percentile
from bench.freshness import background
from cashpos.refdata import governments
from streams.publisher import Publisher


async def open_stream(
    host: str, port: int, path: str, token: str, stop: asyncio.Event, counts: list[int]
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        counts[1] += 1
        return
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError):
        head = b"HTTP/1.1 000 closed"
    if int(head.split(b" ", 2)[1]) != 200:  # refused (401, 404, 429) or closed: not an open stream
        counts[1] += 1
        writer.close()
        return
    counts[0] += 1
    try:
        while not stop.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                counts[2] += 1
                break
    except OSError:
        counts[2] += 1
    finally:
        writer.close()


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
    host: str, port: int, tokens: dict[str, str], schedule: asyncio.Queue, lat: list[float], errors: list[int]
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


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=5000)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=64, help="keep-alive connections for the reads")
    ap.add_argument("--events-per-s", type=int, default=200, help="background event rate")
    args = ap.parse_args()
    with bench_stack() as st:
        u = urlparse(st.api)
        host, port = u.hostname or "127.0.0.1", u.port or 80
        stop = asyncio.Event()
        counts = [0, 0, 0]  # opened, failed, dropped
        orgs = list(governments())
        directors = director_tokens(st)
        national = st.token("national")
        streams = []
        for i in range(args.streams):
            org = orgs[i % len(orgs)]
            path, token = ("/v1/stream", national) if i % 2 else (f"/v1/stream?org={org}", directors[org])
            streams.append(asyncio.create_task(open_stream(host, port, path, token, stop, counts)))
            if i % 200 == 199:
                await asyncio.sleep(0.05)
        await asyncio.sleep(3)
        async with Publisher(st.settings) as pub:
            bg_stop = asyncio.Event()
            bg = asyncio.create_task(background(pub, args.events_per_s, bg_stop))
            schedule: asyncio.Queue = asyncio.Queue()
            lat: list[float] = []
            errors = [0]
            clients = [
                asyncio.create_task(reader_client(host, port, directors, schedule, lat, errors))
                for _ in range(args.clients)
            ]
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
            bg_stop.set()
            events = await bg
        stop.set()
        for t in streams:
            t.cancel()
        ms = [x * 1000 for x in lat]
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores shared by broker, redis, worker, "
            f"one API process and this load generator"
        )
        print(
            f"streams opened={counts[0]} failed={counts[1]} dropped={counts[2]}; background events={events}"
        )
        print(f"reads={len(ms)} in {elapsed:.1f}s ({len(ms) / elapsed:,.0f}/s) errors={errors[0]}")
        print(
            f"api_p50_ms={percentile(ms, 0.5):.1f} api_p99_ms={percentile(ms, 0.99):.1f} "
            f"target_p99_ms=20 at {args.rate}/s with {args.streams} streams"
        )


if __name__ == "__main__":
    asyncio.run(main())
