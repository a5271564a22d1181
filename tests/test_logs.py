"""Every process logs JSON lines (issue #19, item 5): ``ts`` in the one timestamp format, ``level``,
``logger``, ``msg``, structured fields. The worker's Faust banner, mode's and aiokafka's lines,
uvicorn's access and error lines, Python warnings, stray prints and uncaught tracebacks, audit
entries as an ``audit`` object; and a worker stopped (SIGTERM) while it waits for the broker
exits cleanly (it used to raise ``AttributeError: 'LedgerService' object has no attribute
'worker'``)."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cashpos.calendar import utc_stamp
from cashpos.embedded import free_port
from cashpos.logs import JsonFormatter
from tests.conftest import ROOT, new_stack
from tests.events import event

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
REQUIRED = ("ts", "level", "logger", "msg")


def records(text: str, where: str) -> list[dict[str, Any]]:
    """Every non-empty line of a log, each required to be a JSON object with the required keys."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"{where}:{n} is not JSON: {line[:300]!r}") from None
        assert isinstance(rec, dict), f"{where}:{n} is not an object: {line[:300]!r}"
        missing = [k for k in REQUIRED if k not in rec]
        assert not missing, f"{where}:{n} lacks {missing}: {line[:300]!r}"
        assert STAMP.match(rec["ts"]), f"{where}:{n} ts {rec['ts']!r} is not utc_stamp's format"
        out.append(rec)
    return out


# -- the formatter, in process ----------------------------------------------------------------------


def _format(record: logging.LogRecord) -> dict[str, Any]:
    out = orjson.loads(JsonFormatter().format(record))
    assert isinstance(out, dict)
    return out


def test_a_record_is_one_json_object_with_its_extra_fields() -> None:
    rec = logging.LogRecord("cashpos.x", logging.WARNING, __file__, 1, "moved %d of %s", (3, "p1"), None)
    rec.created = 1_765_000_000.123
    rec.audit = {"action": "read", "org_code": "3000000"}
    rec.big = 2**70  # beyond what orjson writes
    out = _format(rec)
    assert out == {
        "ts": utc_stamp(1_765_000_000_123),
        "level": "warning",
        "logger": "cashpos.x",
        "msg": "moved 3 of p1",
        "audit": {"action": "read", "org_code": "3000000"},
        "big": 2**70,
    }


def test_a_traceback_is_a_field_and_an_access_line_has_its_parts() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("cashpos.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = _format(rec)
    assert (
        out["msg"] == "failed"
        and "ValueError: boom" in out["exc"]
        and "\n" not in JsonFormatter().format(rec)
    )
    access = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/summary", "1.1", 200),
        None,
    )
    out = _format(access)
    assert out["msg"] == '127.0.0.1:5000 - "GET /v1/summary HTTP/1.1" 200'
    assert out["http"] == {
        "client": "127.0.0.1:5000",
        "method": "GET",
        "path": "/v1/summary",
        "version": "1.1",
        "status": 200,
    }


def test_warnings_prints_and_an_uncaught_exception_become_json_lines(tmp_path: Path) -> None:
    script = (
        "import sys, warnings\n"
        "from cashpos.logs import setup_logging, capture_std_streams\n"
        "setup_logging(); capture_std_streams()\n"
        "warnings.warn('an old way', DeprecationWarning)\n"
        "print('hello from print')\n"
        "sys.stderr.write('half a line, ')\n"
        "sys.stderr.write('then the rest\\n')\n"
        "raise RuntimeError('never caught')\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "always"}
    p = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert p.stdout == ""  # stdout's lines went to the log
    recs = records(p.stderr, "stderr")
    by_logger = {r["logger"]: r for r in recs}
    assert "DeprecationWarning: an old way" in by_logger["py.warnings"]["msg"]
    assert by_logger["py.warnings"]["level"] == "warning"
    assert by_logger["stdout"]["msg"] == "hello from print" and by_logger["stdout"]["level"] == "info"
    assert by_logger["stderr"]["msg"] == "half a line, then the rest"
    crash = by_logger["cashpos"]
    assert crash["level"] == "critical" and "RuntimeError: never caught" in crash["exc"]


# -- SIGTERM while the worker waits for the broker ----------------------------------------------------


def _worker_waiting_for(bootstrap: str, root: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = root / "worker.log"
    env = {
        **os.environ,
        "CASHPOS_KAFKA_BOOTSTRAP": bootstrap,
        "CASHPOS_REDIS_URL": "redis://127.0.0.1:1",
        "CASHPOS_STATE_DIR": str(root / "state"),
        "CASHPOS_WORKER_WEB_PORT": str(free_port()),
        "CASHPOS_NAMESPACE": "tsigterm",
    }
    with open(log, "wb") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "cashpos.cli", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    return p, log


def _stop_when(p: subprocess.Popen[bytes], log: Path, marker: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while marker not in log.read_text(errors="replace"):
        assert p.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no {marker!r} after {timeout}s"
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError("the worker did not stop within 30 s of SIGTERM") from None


@pytest.mark.parametrize("broker", ["refused", "silent"])
def test_sigterm_while_waiting_for_the_broker_exits_cleanly(tmp_path: Path, broker: str) -> None:
    """``refused``: nothing listens (each attempt fails at once, the worker retries every second);
    ``silent``: a listener that never answers (the worker hangs in its first request)."""
    listener = None
    if broker == "silent":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        bootstrap, marker = f"127.0.0.1:{listener.getsockname()[1]}", "[^--LedgerService]: Starting"
    else:
        bootstrap, marker = "127.0.0.1:1", "waiting for broker"
    try:
        p, log = _worker_waiting_for(bootstrap, tmp_path)
        if broker == "silent":
            time.sleep(1.0)  # inside its first request to the broker
        rc = _stop_when(p, log, marker)
    finally:
        if listener is not None:
            listener.close()
    text = log.read_text(errors="replace")
    assert rc in (0, -signal.SIGTERM), (rc, text[-3000:])
    assert "Traceback" not in text and "AttributeError" not in text, text[-3000:]
    recs = records(text, "worker.log")
    assert any(r["msg"].endswith("Stopping...") for r in recs), text[-3000:]


# -- a real worker and API ------------------------------------------------------------------------------


@pytest.mark.integration
def test_every_line_of_the_worker_and_api_logs_is_json(infra, tmp_path: Path) -> None:
    s = new_stack(infra, tmp_path)
    try:
        s.start_worker("w1")
        # PYTHONWARNINGS: whatever warnings the API's libraries raise are shown (and logged)
        s.start_api(PYTHONWARNINGS="always")
        s.wait_ready()
        r = httpx.get(f"{s.api}/v1/summary", headers=s.headers, timeout=10)  # national: audited
        assert r.status_code == 200
        bad = event("bad-1", "receipt", 5, org="3000000")[:-1] + b',"amount":6}'  # a duplicate key
        r = httpx.post(
            f"{s.api}/v1/events",
            content=bad,
            headers={**s.source_headers, "content-type": "application/json"},
            timeout=10,
        )
        assert 400 <= r.status_code < 500, r.text
        with socket.create_connection((s.api_connect_host, s.api_port), timeout=5) as c:
            c.sendall(b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn's own warning
            c.recv(4096)
        _publish_raw(s, b'{"event_id": "x", "kind": "nonsense"}')  # a dead letter for the worker
        time.sleep(2)
    finally:
        s.stop_all()

    worker = records(s.log("worker-w1"), "worker-w1.log")
    banner = [r for r in worker if "faust" in r]
    assert len(banner) == 1 and banner[0]["faust"]["id"] and banner[0]["faust"]["pid"], banner
    assert any(r["msg"].startswith("ledger worker w1 started") for r in worker)

    api = records(s.log("api"), "api.log")
    audits = [r["audit"] for r in api if "audit" in r]
    reads = [a for a in audits if a["action"] == "read" and a["path"] == "/v1/summary"]
    assert reads and reads[0]["role"] == "national" and reads[0]["outcome"] == "ok", audits
    assert isinstance(reads[0]["at_ms"], int) and reads[0]["at"] == utc_stamp(reads[0]["at_ms"])
    access = [r["http"] for r in api if r["logger"] == "uvicorn.access"]
    assert any(a["method"] == "GET" and a["path"] == "/v1/summary" and a["status"] == 200 for a in access)
    assert any(a["method"] == "POST" and 400 <= a["status"] < 500 for a in access), access
    warnings = [r for r in api if r["level"] == "warning"]
    assert any(r["logger"] == "uvicorn.error" and "Invalid HTTP request" in r["msg"] for r in warnings)
    print(f"worker: {len(worker)} JSON lines; api: {len(api)} JSON lines, {len(audits)} audit entries")


def _publish_raw(s: Any, value: bytes) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    from cashpos.names import Topics

    async def main() -> None:
        producer = AIOKafkaProducer(**s.settings.kafka_client_args())
        await producer.start()
        try:
            await producer.send_and_wait(Topics(s.namespace).sources[0], value, key=b"3000000")
        finally:
            await producer.stop()

    asyncio.run(main())
