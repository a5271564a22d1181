"""The development stack checks its ports before it starts anything: a taken one is named in one
line, with what it was for and the setting that moves it (before, `cashpos run` next to another
Redis on its port died with a Redis authentication traceback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cashpos.embedded import Port, PortInUse, check_free, free_port, start_infra


@pytest.fixture()
def taken() -> Iterator[int]:
    """A port another process (this one) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_taken_port_is_named_with_its_setting(taken: int) -> None:
    check_free(Port(free_port(), "embedded Redis", "CASHPOS_EMBEDDED_REDIS_PORT"))  # a free one passes
    with pytest.raises(PortInUse) as err:
        check_free(
            Port(free_port(), "API", "CASHPOS_API_PORT"),
            Port(taken, "embedded Redis", "CASHPOS_EMBEDDED_REDIS_PORT"),
        )
    assert str(err.value) == (
        f"cashpos: port {taken} (embedded Redis) is in use by another process; "
        "set CASHPOS_EMBEDDED_REDIS_PORT"
    )


def test_start_infra_starts_nothing_when_a_port_is_taken(taken: int, tmp_path: Path) -> None:
    with pytest.raises(
        PortInUse, match=f"port {taken} \\(embedded Kafka broker\\).*CASHPOS_EMBEDDED_KAFKA_PORT"
    ):
        start_infra(tmp_path / "logs", kafka_port=taken)
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("variable", "what"),
    [
        ("CASHPOS_EMBEDDED_KAFKA_PORT", "embedded Kafka broker"),
        ("CASHPOS_EMBEDDED_REDIS_PORT", "embedded Redis"),
        ("CASHPOS_API_PORT", "API"),
        ("CASHPOS_WORKER_WEB_PORT", "worker web server"),
    ],
)
def test_cashpos_run_names_a_taken_port_in_one_line(
    taken: int, tmp_path: Path, variable: str, what: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASHPOS_")}
    env.update(
        {
            name: str(free_port())
            for name in (
                "CASHPOS_EMBEDDED_KAFKA_PORT",
                "CASHPOS_EMBEDDED_REDIS_PORT",
                "CASHPOS_API_PORT",
                "CASHPOS_WORKER_WEB_PORT",
            )
        }
    )
    env[variable] = str(taken)
    p = subprocess.run(
        [sys.executable, "-m", "cashpos.cli", "run"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stdout == ""
    # one line: a JSON log line (every process logs JSON), the message whole in msg
    (line,) = p.stderr.splitlines()
    assert (
        orjson.loads(line)["msg"]
        == f"cashpos: port {taken} ({what}) is in use by another process; set {variable}"
    )
    assert not (tmp_path / "var").exists()  # nothing started, nothing written
