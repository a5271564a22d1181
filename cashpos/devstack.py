"""One development stack: a namespace on a broker and Redis (:class:`cashpos.embedded.Infra`)
with its Redis service accounts, access tokens, processes and readiness check.

Every process is ``python -m cashpos.cli ...`` with its settings in CASHPOS_* variables, logging
to ``{root}/{name}.log``: ledger workers connect to Redis as the namespace's ``processor``
account, the API as its ``api`` account (:mod:`cashpos.redis_acl`); the harness makes tokens
with the ``admin`` account. Used by ``cashpos run`` (cashpos/stack.py, which adds supervision),
the test fixtures (tests/conftest.py), the benchmarks (bench/common.py), the load test
(loadtest/stack.py) and the fault scenarios (faults/common.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cashpos.embedded import Infra, Port, check_free, free_port, wait_port
from cashpos.redis_acl import create_accounts
from cashpos.settings import Settings

WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the stack is local


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when there was no answer (the body then says why)."""
    try:
        with _NO_PROXY.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:  # URLError, refused, timed out
        return 0, repr(exc)


@dataclass
class Stack:
    """A namespace on ``infra`` with its own processes (workers, the API, the simulator)."""

    infra: Infra
    namespace: str
    root: Path  # the processes' logs, and the workers' state directories unless given
    redis_urls: dict[str, str]  # service account (processor, api, admin) -> Redis URL
    partitions: int = 4
    api_port: int = 0  # 0: a free port
    api_host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)  # CASHPOS_* of every process
    token_args: dict[str, object] = field(default_factory=dict)  # of every token token() makes
    cwd: Path | None = None  # of the processes (None: this one's)
    cpus: set[int] | None = None  # pin the processes to these CPUs
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # name -> monotonic start
    _commands: dict[str, tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=dict)
    _tokens: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api_port = self.api_port or free_port()

    # -- settings and addresses --------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """A process's environment: the stack's addresses and namespace, then ``extra``."""
        return {
            **os.environ,
            "CASHPOS_KAFKA_BOOTSTRAP": self.infra.bootstrap,
            "CASHPOS_REDIS_URL": self.redis_urls["processor"],
            "CASHPOS_NAMESPACE": self.namespace,
            "CASHPOS_PARTITIONS": str(self.partitions),
            "CASHPOS_API_HOST": self.api_host,
            "CASHPOS_API_PORT": str(self.api_port),
            **self.extra_env,
            **extra,
        }

    @property
    def settings(self) -> Settings:
        """Settings for an in-process client of the stack (the harness's: Redis's admin user)."""
        return Settings(
            kafka_bootstrap=self.infra.bootstrap,
            redis_url=self.infra.redis_url,
            namespace=self.namespace,
            partitions=self.partitions,
            state_dir=self.root / "state-inproc",
        )

    @property
    def api_connect_host(self) -> str:
        """Where a client on this machine reaches the API."""
        return "127.0.0.1" if self.api_host in WILDCARD_HOSTS else self.api_host

    @property
    def api(self) -> str:
        return f"http://{self.api_connect_host}:{self.api_port}"

    # -- processes -----------------------------------------------------------------------------------

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """``cashpos <args>`` as the process ``name`` (replacing one of that name)."""
        full_env = self.env(**env)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{name}.log", "ab") as out:  # the child keeps its own descriptor
            p = subprocess.Popen(
                [sys.executable, "-m", "cashpos.cli", *args],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
            )
        if self.cpus:
            os.sched_setaffinity(p.pid, self.cpus)  # before it starts any thread
        self.procs[name] = p
        self.started[name] = time.monotonic()
        self._commands[name] = (args, env)
        return p

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """``name`` again, as it was started."""
        args, env = self._commands[name]
        return self.start(name, *args, **env)

    def start_worker(self, worker_id: str = "w1", **env: str) -> subprocess.Popen[bytes]:
        """A ledger worker ``worker-{worker_id}`` with its state in ``{root}/state-{worker_id}``
        and its web server on a free port, unless ``env`` (CASHPOS_* settings) says otherwise."""
        env = {
            "CASHPOS_WORKER_ID": worker_id,
            "CASHPOS_STATE_DIR": str(self.root / f"state-{worker_id}"),
            "CASHPOS_WORKER_WEB_PORT": str(free_port()),
            **env,
        }
        check_free(Port(int(env["CASHPOS_WORKER_WEB_PORT"]), "worker web server", "CASHPOS_WORKER_WEB_PORT"))
        return self.start(f"worker-{worker_id}", "worker", **env)

    def start_api(self, timeout: float = 60, **env: str) -> subprocess.Popen[bytes]:
        """The API (as the ``api`` account), once it accepts connections."""
        check_free(Port(self.api_port, "API", "CASHPOS_API_PORT", self.api_host))
        # One API process unless ``env`` asks for more: a test counts one hub's subscription,
        # streams and metrics (``cashpos run`` passes its CASHPOS_API_PROCESSES).
        env = {"CASHPOS_API_PROCESSES": "1", **env}
        p = self.start("api", "api", CASHPOS_REDIS_URL=self.redis_urls["api"], **env)
        wait_port(self.api_port, timeout, p, self.api_connect_host, f"api (see {self.root / 'api.log'})")
        return p

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
        """SIGTERM to every process, then wait for each (SIGKILL after 20 s)."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    # -- access tokens -------------------------------------------------------------------------------

    def token(
        self,
        role: str = "national",
        orgs: tuple[str, ...] | list[str] = (),
        name: str | None = None,
        **kw: object,
    ) -> str:
        """A real token of this namespace (``access.tokens.create_sync``, with ``token_args``);
        the same (role, orgs) gives the same token unless ``name`` or ``kw`` ask for another."""
        from access.tokens import create_sync

        key = (role, tuple(orgs))
        plain = not kw and name is None
        if plain and key in self._tokens:
            return self._tokens[key]
        tok = create_sync(
            self.redis_urls["admin"],
            self.namespace,
            role,
            orgs,
            name or f"harness {role} {','.join(orgs)[:40]}",
            **{**self.token_args, **kw},
        )
        if plain:
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

    # -- readiness -----------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60, token: str | None = None) -> None:
        """Until the API answers /readyz (Redis answers, a worker is alive) and, with a national
        ``token`` (else one of the harness's), /v1/summary (every government seeded). Raises
        when one of the stack's processes exits first, or after ``timeout`` seconds."""
        headers = {"Authorization": f"Bearer {token or self.token('national')}"}
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {p.returncode} before the stack was ready; "
                        f"see {self.root / name}.log"
                    )
            status, body = http_get(f"{self.api}/readyz", timeout=2)
            if status == 200:
                status, body = http_get(f"{self.api}/v1/summary", headers, timeout=5)
                if status == 200:
                    return
                last = f"/v1/summary answered {status}: {body[:200]}"
            else:
                last = f"/readyz answered {status}: {body[:200]}"
            time.sleep(0.3)
        raise TimeoutError(f"stack not ready after {timeout:.0f}s: {last}")


def new_stack(
    infra: Infra,
    root: Path,
    partitions: int = 4,
    *,
    namespace: str | None = None,
    extra_env: dict[str, str] | None = None,
    token_args: dict[str, object] | None = None,
    cwd: Path | None = None,
    cpus: set[int] | None = None,
) -> Stack:
    """A stack on ``infra`` in a namespace of its own (default: a fresh one, so that stacks on
    one broker and Redis do not see each other's data) on a free API port, with the namespace's
    Redis service accounts made."""
    ns = namespace or f"t{uuid.uuid4().hex[:10]}"
    return Stack(
        infra,
        ns,
        root,
        create_accounts(infra.redis_url, ns),
        partitions,
        extra_env=extra_env or {},
        token_args=token_args or {},
        cwd=cwd,
        cpus=cpus,
    )
