"""A fresh embedded stack for benchmarks: broker, Redis, one worker process and the API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cashpos.embedded import free_port, start_redis, start_tansu, wait_port
from cashpos.settings import Settings


@dataclass
class BenchStack:
    settings: Settings
    api: str
    tmp: Path
    broker_pid: int


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


@contextmanager
def bench_stack(partitions: int = 12) -> Iterator[BenchStack]:
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-"))
    kafka = start_tansu(log_path=tmp / "tansu.log")
    redis = start_redis(log_path=tmp / "redis.log")
    api_port = free_port()
    env = {**os.environ, "CASHPOS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka.port}",
           "CASHPOS_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "CASHPOS_NAMESPACE": "bench",
           "CASHPOS_PARTITIONS": str(partitions), "CASHPOS_API_PORT": str(api_port),
           "CASHPOS_STATE_DIR": str(tmp / "state"), "CASHPOS_WORKER_WEB_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, "-m", "cashpos.cli", cmd], env=env,
                              stdout=open(tmp / f"{cmd}.log", "wb"), stderr=subprocess.STDOUT)
             for cmd in ("worker", "api")]
    try:
        wait_port(api_port, timeout=60, proc=procs[1])
        api = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/v1/summary", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        settings = Settings(kafka_bootstrap=env["CASHPOS_KAFKA_BOOTSTRAP"], redis_url=env["CASHPOS_REDIS_URL"],
                            namespace="bench", partitions=partitions, state_dir=tmp / "state-client")
        yield BenchStack(settings, api, tmp, kafka.proc.pid)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        kafka.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
