"""`cashpos run` supervises its children: a worker killed with ``kill -9`` is started again
(with a delay that doubles per quick death), the API keeps serving, and the embedded broker and
Redis stay up with their data. Before, the whole stack exited within 1.5 s of the kill and the
next `make run` began from an empty broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from cashpos.embedded import free_port
from cashpos.settings import Settings
from cashpos.stack import Backoff, describe_exit, failed
from faults.common import wait_until
from streams.publisher import Publisher
from tests.events import event

pytestmark = pytest.mark.integration

ORG = "3000000"


def test_backoff_doubles_and_resets() -> None:
    b = Backoff(1, 8, 60)
    assert [b.next_delay(0.5) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert b.next_delay(61) == 1 and b.restarts == 6
    assert describe_exit(-9) == "signal SIGKILL" and describe_exit(3) == "exit code 3"
    assert failed(-signal.SIGKILL) and failed(1)
    assert not failed(0) and not failed(-signal.SIGTERM) and not failed(78)  # 78: a refused configuration


def _children(pid: int) -> dict[int, str]:
    """The direct children of ``pid``: pid -> command line."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def _child(pid: int, role: str) -> int | None:
    for cpid, cmd in _children(pid).items():
        if cmd.rstrip().endswith(f"cashpos.cli {role}"):
            return cpid
    return None


def test_a_killed_worker_is_restarted_and_the_broker_keeps_its_data(tmp_path: Path) -> None:
    kafka_port, redis_port, api_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("CASHPOS_KAFKA_BOOTSTRAP", "CASHPOS_REDIS_URL")},
        "CASHPOS_EMBEDDED_KAFKA_PORT": str(
            kafka_port
        ),  # the embedded broker and Redis, on ports of this test
        "CASHPOS_EMBEDDED_REDIS_PORT": str(redis_port),
        "CASHPOS_API_PORT": str(api_port),
        "CASHPOS_WORKER_WEB_PORT": str(free_port()),
        "CASHPOS_STATE_DIR": str(tmp_path / "var" / "state"),
        "CASHPOS_PARTITIONS": "4",
        "CASHPOS_SIMULATOR": "off",
        "CASHPOS_RESTART_DELAY_SECONDS": "0.5",
        "PYTHONUNBUFFERED": "1",  # its printout is read while it runs
    }
    out = open(tmp_path / "run.out", "wb")  # noqa: SIM115 - closed in finally
    run = subprocess.Popen(
        [sys.executable, "-m", "cashpos.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{kafka_port}", partitions=4)
    api = f"http://127.0.0.1:{api_port}"

    def text() -> str:
        return (tmp_path / "run.out").read_text(errors="replace")

    def cash() -> int | None:
        tokens = tmp_path / "var" / "secrets" / "demo-tokens.json"
        if not tokens.exists():
            return None
        token = orjson.loads(tokens.read_bytes())["national"]
        try:
            r = httpx.get(
                f"{api}/v1/positions/{ORG}", timeout=3, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        return int(r.json()["totals"]["cash"])

    async def publish(ids: range) -> None:
        async with Publisher(settings) as pub:
            await pub.send_many([event(f"sup-{i}", "receipt", 1_000, org=ORG) for i in ids])

    tansu: list[int] = []
    try:
        wait_until(
            lambda: "Ctrl-C stops everything" in text() or run.poll() is not None,
            90,
            0.2,
            "the stack to start",
        )
        assert run.poll() is None, text()
        wait_until(lambda: _child(run.pid, "worker"), 30, 0.2, "the worker process")
        wait_until(lambda: cash() is not None, 60, 0.3, "the API to serve positions")
        base = cash()
        assert base is not None
        asyncio.run(publish(range(10)))
        wait_until(lambda: cash() == base + 10_000, 60, 0.3, "the first events to show")
        tansu = [pid for pid, cmd in _children(run.pid).items() if "tansu" in cmd]
        worker = _child(run.pid, "worker")
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()

        restarted = wait_until(
            lambda: (p := _child(run.pid, "worker")) not in (None, worker) and p,
            30,
            0.1,
            "the worker to be restarted",
        )
        took = time.monotonic() - killed
        assert run.poll() is None, text()
        assert cash() == base + 10_000  # the API still serves, from the same Redis
        assert "child_exited" in text() and "signal SIGKILL" in text(), text()[-3000:]
        assert "child_restarted" in text(), text()[-3000:]
        # the broker kept its data: the restarted worker folds new events onto the old ones
        asyncio.run(publish(range(10, 15)))
        wait_until(lambda: cash() == base + 15_000, 60, 0.3, "new events after the restart")
        still = [pid for pid, cmd in _children(run.pid).items() if "tansu" in cmd]
        assert still == tansu, (still, tansu)  # the same broker process (when a child of run)
        print(f"worker {worker} -> {restarted} in {took:.1f}s")
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)  # stops every child, then the broker and Redis
            try:
                run.wait(40)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait()
        out.close()
    assert run.returncode == 0, text()[-3000:]
    for pid in tansu:  # Ctrl-C / SIGTERM still stops the embedded broker
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
