"""A fresh embedded stack for benchmarks: broker, Redis, one worker process and the API.

As ``cashpos run`` sets it up: the worker and the API connect to Redis as their own ACL users, and
every API call needs a token: :meth:`BenchStack.token` makes one (through
``access.tokens.TokenStore``, with a rate limit high enough not to be what a benchmark measures).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cashpos.embedded import free_port, start_redis, start_tansu, wait_port
from cashpos.settings import Settings


BENCH_RATE_PER_S = 100_000  # a token's rate limit (one benchmark client is many users)


@dataclass
class BenchStack:
    settings: Settings
    api: str
    tmp: Path
    broker_pid: int
    redis_urls: dict[str, str] = field(default_factory=dict)  # service account -> URL (ACL users)
    _tokens: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    def token(self, role: str = "national", orgs: tuple[str, ...] = ()) -> str:
        """A token of ``role`` for ``orgs`` (the same one for the same arguments)."""
        key = (role, tuple(orgs))
        if key not in self._tokens:
            self._tokens[key] = make_token(self.redis_urls["admin"], self.settings.namespace, role, orgs)
        return self._tokens[key]

    def auth(self, role: str = "national", orgs: tuple[str, ...] = ()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, orgs)}"}

    def director_tokens(self) -> dict[str, str]:
        """Each government's finance director's token (reads of that government, unaudited)."""
        from cashpos.refdata import governments

        return {o: self.token("finance_director", (o,)) for o in governments()}


def make_token(admin_url: str, namespace: str, role: str, orgs: tuple[str, ...] | list[str] = ()) -> str:
    from access.tokens import create_sync

    return create_sync(admin_url, namespace, role, orgs, f"bench {role} {','.join(orgs)[:40]}",
                       expires_days=1, rate_per_s=BENCH_RATE_PER_S)


def _service_accounts(namespace: str, base_url: str) -> dict[str, str]:
    import redis as redis_sync

    from cashpos.redis_acl import apply

    r = redis_sync.Redis.from_url(base_url)
    try:
        return apply(r, namespace, base_url)
    finally:
        r.close()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


@contextmanager
def bench_stack(partitions: int = 12) -> Iterator[BenchStack]:
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-"))
    kafka = start_tansu(log_path=tmp / "tansu.log")
    redis = start_redis(log_path=tmp / "redis.log")
    api_port = free_port()
    base_url = f"redis://127.0.0.1:{redis.port}/0"
    urls = _service_accounts("bench", base_url)
    env = {**os.environ, "CASHPOS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka.port}",
           "CASHPOS_REDIS_URL": base_url, "CASHPOS_NAMESPACE": "bench",
           "CASHPOS_PARTITIONS": str(partitions), "CASHPOS_API_PORT": str(api_port),
           "CASHPOS_STATE_DIR": str(tmp / "state"), "CASHPOS_WORKER_WEB_PORT": str(free_port()),
           "CASHPOS_MAX_STREAMS_PER_TOKEN": "100000"}  # many simulated dashboards share a token
    procs = [subprocess.Popen([sys.executable, "-m", "cashpos.cli", cmd],
                              env={**env, "CASHPOS_REDIS_URL": urls[account]},
                              stdout=open(tmp / f"{cmd}.log", "wb"), stderr=subprocess.STDOUT)
             for cmd, account in (("worker", "processor"), ("api", "api"))]
    try:
        wait_port(api_port, timeout=60, proc=procs[1])
        api = f"http://127.0.0.1:{api_port}"
        settings = Settings(kafka_bootstrap=env["CASHPOS_KAFKA_BOOTSTRAP"], redis_url=base_url,
                            namespace="bench", partitions=partitions, state_dir=tmp / "state-client")
        st = BenchStack(settings, api, tmp, kafka.proc.pid, urls)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/v1/summary", headers=st.auth(), timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield st
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
