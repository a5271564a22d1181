"""Shared fixtures: a real Tansu broker, a real redis-server, and the real processes.

One broker and one Redis per test session (Tansu never returns memory, so it is not shared
across sessions); every stack gets its own namespace, so tests do not see each other's data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cashpos.embedded import Service, free_port, start_redis, start_tansu, wait_port
from cashpos.settings import Settings


ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


@dataclass
class Infra:
    kafka: Service
    redis: Service

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    logs = tmp_path_factory.mktemp("infra")
    kafka = start_tansu(log_path=logs / "tansu.log")
    redis = start_redis(log_path=logs / "redis.log")
    yield Infra(kafka, redis)
    kafka.stop()
    redis.stop()


@dataclass
class Stack:
    """A namespace on the shared infra with its own workers and API, as real processes."""

    infra: Infra
    namespace: str
    root: Path
    partitions: int = 4
    api_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis_urls: dict[str, str] = field(default_factory=dict)  # service account -> URL (ACL users)
    _tokens: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """The namespace's Redis service accounts, as ``cashpos run`` makes them: the worker
        connects as ``{ns}-processor`` and the API as ``{ns}-api`` (the harness stays default)."""
        import redis

        from cashpos.redis_acl import apply

        r = redis.Redis.from_url(self.infra.redis_url)
        try:
            self.redis_urls = apply(r, self.namespace, self.infra.redis_url)
        finally:
            r.close()

    def token(self, role: str = "national", orgs: tuple[str, ...] | list[str] = (), name: str | None = None,
              **kw: object) -> str:
        """A real token of this namespace (created through ``access.tokens.TokenStore``); the
        same (role, orgs) gives the same token unless ``kw`` asks for a special one."""
        from access.tokens import create_sync

        key = (role, tuple(orgs))
        if key in self._tokens and not kw and name is None:
            return self._tokens[key]
        tok = create_sync(self.redis_urls["admin"], self.namespace, role, orgs,
                          name or f"test {role} {','.join(orgs)[:40]}", **kw)
        if not kw and name is None:
            self._tokens[key] = tok
        return tok

    def auth(self, role: str = "national", orgs: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, orgs)}"}

    @property
    def headers(self) -> dict[str, str]:
        """A national (read-only, all governments) token's header: the default reader."""
        return self.auth("national")

    @property
    def source_headers(self) -> dict[str, str]:
        """A source token for all 243 governments (the ingest gateway)."""
        from cashpos.refdata import governments

        return self.auth("source", tuple(governments()))

    @property
    def admin_headers(self) -> dict[str, str]:
        return self.auth("admin")

    def director_headers(self, org: str) -> dict[str, str]:
        return self.auth("finance_director", (org,))

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CASHPOS_KAFKA_BOOTSTRAP": self.infra.bootstrap,
            "CASHPOS_REDIS_URL": self.redis_urls["processor"],
            "CASHPOS_NAMESPACE": self.namespace,
            "CASHPOS_PARTITIONS": str(self.partitions),
            "CASHPOS_API_PORT": str(self.api_port),
            "CASHPOS_LOG_LEVEL": "INFO",
            **extra,
        }

    @property
    def settings(self) -> Settings:
        return Settings(kafka_bootstrap=self.infra.bootstrap, redis_url=self.infra.redis_url,
                        namespace=self.namespace, partitions=self.partitions,
                        state_dir=self.root / "state-inproc")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")
        p = subprocess.Popen([sys.executable, "-m", "cashpos.cli", *args], env=self.env(**env),
                             stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = p
        return p

    def start_worker(self, worker_id: str = "w1", web_port: int | None = None) -> subprocess.Popen[bytes]:
        return self.start(
            f"worker-{worker_id}", "worker",
            CASHPOS_WORKER_ID=worker_id,
            CASHPOS_STATE_DIR=str(self.root / f"state-{worker_id}"),
            CASHPOS_WORKER_WEB_PORT=str(web_port or free_port()),
        )

    def start_api(self) -> None:
        p = self.start("api", "api", CASHPOS_REDIS_URL=self.redis_urls["api"])
        wait_port(self.api_port, timeout=30, proc=p)

    def stop(self, name: str, kill: bool = False) -> None:
        p = self.procs.pop(name)
        if kill:
            p.kill()
        else:
            p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the API answers /readyz and every government is seeded."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.api}/readyz", timeout=2)
                if r.status_code == 200 and httpx.get(f"{self.api}/v1/summary", headers=self.headers,
                                                      timeout=5).status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise TimeoutError(f"stack not ready: {last}")


def new_stack(infra: Infra, tmp: Path, partitions: int = 4) -> Stack:
    return Stack(infra, f"t{uuid.uuid4().hex[:10]}", tmp, partitions, free_port())


@pytest.fixture(scope="session")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker and the API, shared by the read-only end-to-end tests of a session."""
    s = new_stack(infra, tmp_path_factory.mktemp("stack"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()
