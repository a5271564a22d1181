"""`cashpos run`: the whole service on one machine, for newcomers and demos.

The development stack (:mod:`cashpos.embedded`, :mod:`cashpos.devstack`) in the foreground:
checks its ports, starts (unless CASHPOS_KAFKA_BOOTSTRAP / CASHPOS_REDIS_URL point elsewhere; see
CASHPOS_EMBEDDED) a Tansu broker on CASHPOS_EMBEDDED_KAFKA_PORT and a redis-server on
CASHPOS_EMBEDDED_REDIS_PORT, gives that Redis its service accounts (default user off) and the
demo tokens, then a ledger worker and the API, waits until they are ready, and starts the
continuous reconciler (every 30 s unless CASHPOS_RECONCILE_INTERVAL_SECONDS says otherwise, so the
reconciliation's result and gauges exist from the start) and the simulator (CASHPOS_SIMULATOR=off
to skip it). Logs go to var/log/, credentials to var/secrets/.

It supervises the worker, the API and the reconciler like systemd's ``Restart=on-failure``: one
that dies (a crash, ``kill -9``, the OOM killer) is started again after a delay that doubles with each restart
(CASHPOS_RESTART_DELAY_SECONDS .. CASHPOS_RESTART_DELAY_MAX_SECONDS, back to the first once it ran
CASHPOS_RESTART_RESET_SECONDS), and the embedded broker and Redis, which hold everything in
memory, are never stopped because a child died. Ctrl-C or SIGTERM stops every child, then the
broker and Redis.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from cashpos.devstack import Stack
from cashpos.embedded import Port, PortInUse, start_infra
from cashpos.redis_acl import ROLES, create_accounts
from cashpos.settings import Settings, load

log = logging.getLogger("cashpos.run")
SUPERVISED = ("worker", "api", "reconcile")  # restarted when they die; not the simulator (it may finish)
RECONCILE_INTERVAL_S = "30"  # the embedded stack's: its gauges soon after the start
READY_TIMEOUT_S = 120

LOGS = Path("var/log")
SECRETS = Path("var/secrets")  # never committed (var/ is ignored); files are mode 0600
ADMIN_URL_FILE = SECRETS / "redis-admin.url"
PASSWORDS_FILE = SECRETS / "redis-passwords.json"
DEMO_TOKENS_FILE = SECRETS / "demo-tokens.json"
# (key, role, orgs, name, what the printout calls it)
DEMO_TOKENS: tuple[tuple[str, str, list[str], str, str], ...] = (
    ("national", "national", [], "demo national (ministry)", "national, all 243 governments, read-only"),
    (
        "finance_director",
        "finance_director",
        ["3000000"],
        "demo finance director 종로구",
        "finance director of 종로구 (3000000)",
    ),
)


def _secret_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _service_accounts(redis_url: str, namespace: str) -> dict[str, str]:
    """The embedded Redis's ACL users (passwords kept in var/secrets, the same on every start)
    with the password-less default user off. Returns role -> URL."""
    saved = orjson.loads(PASSWORDS_FILE.read_bytes()) if PASSWORDS_FILE.exists() else {}
    passwords = {role: saved.get(role) or secrets.token_urlsafe(24) for role in ROLES}
    urls = create_accounts(redis_url, namespace, passwords, default_off=True)
    _secret_file(PASSWORDS_FILE, orjson.dumps(passwords).decode())
    _secret_file(ADMIN_URL_FILE, urls["admin"])
    return urls


def _demo_tokens(stack: Stack) -> dict[str, str]:
    """The demo tokens: made on the first start, registered again (same secrets) on later ones."""
    from access.tokens import ScopeError

    saved = orjson.loads(DEMO_TOKENS_FILE.read_bytes()) if DEMO_TOKENS_FILE.exists() else {}
    tokens = {}
    for key, role, orgs, name, _ in DEMO_TOKENS:
        try:
            tokens[key] = stack.token(role, orgs, name, secret=saved.get(key))
        except ScopeError:  # already registered (a Redis that kept its data)
            tokens[key] = saved[key]
    _secret_file(DEMO_TOKENS_FILE, orjson.dumps(tokens, option=orjson.OPT_INDENT_2).decode())
    return tokens


def _embedded(variable: str) -> bool:
    """Start the embedded broker (Redis): CASHPOS_EMBEDDED=on always, off never, auto (the
    default) when ``variable`` does not point at an existing one."""
    mode = os.environ.get("CASHPOS_EMBEDDED", "auto").lower()
    return mode in ("on", "1", "true", "yes") or (mode == "auto" and variable not in os.environ)


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'signal SIGKILL' (Popen reports a signal as a negative code)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


EX_CONFIG = 78  # a refusal of the configuration (e.g. mismatched topics): a restart cannot help


def failed(returncode: int) -> bool:
    """Whether an exit is a failure to restart after (systemd's Restart=on-failure with
    RestartPreventExitStatus=78): not a clean exit, not the stop signals someone sends on
    purpose, not a refusal of the configuration."""
    if returncode in (0, EX_CONFIG):
        return False
    return -returncode not in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Backoff:
    """Restart delays of one child: ``first``, doubling up to ``cap``; a child that ran for
    ``reset`` seconds before it died starts again from ``first``."""

    def __init__(self, first: float, cap: float, reset: float) -> None:
        self.first, self.cap, self.reset = first, max(cap, first), reset
        self.failures = 0  # consecutive quick deaths
        self.restarts = 0  # all restarts

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset:
            self.failures = 0
        self.failures += 1
        self.restarts += 1
        return float(min(self.cap, self.first * 2 ** (self.failures - 1)))


def _event(message: str, event: str, name: str, p: subprocess.Popen[bytes], **fields: object) -> None:
    record = {"event": event, "child": name, "pid": p.pid, **fields}
    log.warning("%s: %s", message, name, extra={"supervisor": record})


def supervise(stack: Stack, s: Settings, stopping: Callable[[], bool]) -> None:
    """Restart the SUPERVISED children that fail, until ``stopping()``."""
    backoff = {
        name: Backoff(s.restart_delay_seconds, s.restart_delay_max_seconds, s.restart_reset_seconds)
        for name in SUPERVISED
    }
    due: dict[str, float] = {}  # child -> when it is started again
    gone: set[str] = set()  # stopped cleanly by someone: not restarted
    while not stopping():
        now = time.monotonic()
        for name in SUPERVISED:
            p = stack.procs[name]
            if name in gone:
                continue
            if name not in due and p.poll() is not None:
                if not failed(p.returncode):  # like systemd's on-failure: a clean stop stays
                    gone.add(name)
                    _event(
                        "child stopped, not restarted",
                        "child_stopped",
                        name,
                        p,
                        exit=describe_exit(p.returncode),
                    )
                    continue
                b = backoff[name]
                ran = now - stack.started[name]
                delay = b.next_delay(ran)
                due[name] = now + delay
                _event(
                    "child exited, restarting",
                    "child_exited",
                    name,
                    p,
                    exit=describe_exit(p.returncode),
                    ran_s=round(ran, 1),
                    restart=b.restarts,
                    delay_s=delay,
                    log=str(stack.root / f"{name}.log"),
                )
            elif name in due and now >= due[name]:
                del due[name]
                p = stack.restart(name)
                _event("child restarted", "child_restarted", name, p, restart=backoff[name].restarts)
        time.sleep(0.2)


def _print_banner(stack: Stack, tokens: dict[str, str]) -> None:
    base = stack.api
    print(f"dashboard {base}/dashboard/")
    print(f"api       {base}/v1/summary   {base}/v1/positions/6110000   docs {base}/docs")
    print(f"metrics   {base}/metrics      logs in {LOGS}/   Ctrl-C stops everything")
    print(f"sign in   every API call and the dashboard need a token (saved in {DEMO_TOKENS_FILE}):")
    for key, _, _, _, what in DEMO_TOKENS:
        print(f"          {tokens[key]}   {what}")
    print(f'          curl -H "Authorization: Bearer {tokens["national"]}" {base}/v1/summary')
    print("          more: cashpos token create --role ROLE --org CODE --name NAME")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_stack() -> int:
    s = load()
    kafka, redis = _embedded("CASHPOS_KAFKA_BOOTSTRAP"), _embedded("CASHPOS_REDIS_URL")
    signal.signal(signal.SIGTERM, _interrupt)  # while starting: stop what was started
    try:
        infra = start_infra(
            LOGS,
            s.embedded_kafka_port,
            s.embedded_redis_port,
            bootstrap=None if kafka else s.kafka_bootstrap,
            redis_url=None if redis else s.redis_url,
            also=(
                Port(s.api_port, "API", "CASHPOS_API_PORT", s.api_host),
                Port(s.worker_web_port, "worker web server", "CASHPOS_WORKER_WEB_PORT", s.worker_web_bind),
            ),
        )
    except PortInUse as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # stopped while starting: it stopped what it had started
        return 0
    stack: Stack | None = None
    try:
        if kafka:
            print(f"broker    kafka://{infra.bootstrap} (embedded Tansu, in memory)")
            shutil.rmtree(s.state_dir, ignore_errors=True)  # a fresh broker: so must the state be
            shutil.rmtree(s.reconcile_checkpoint_dir, ignore_errors=True)  # and the reconciler's
        if redis:
            urls = _service_accounts(infra.redis_url, s.namespace)
            print(
                f"redis     {infra.redis_url} (embedded; ACL users {s.namespace}-processor/-api/-admin, "
                f"default user off; credentials in {SECRETS}/)"
            )
        else:
            urls = dict.fromkeys(ROLES, s.redis_url)
        stack = Stack(infra, s.namespace, LOGS, urls, s.partitions, s.api_port, s.api_host)
        tokens = _demo_tokens(stack)
        try:
            stack.start("worker", "worker")
            stack.start_api(CASHPOS_API_PROCESSES=str(s.api_processes))  # default: one per core
            stack.wait_ready(READY_TIMEOUT_S, token=tokens["national"])
        except (RuntimeError, TimeoutError) as exc:  # a child that died, or never got ready
            print(exc if isinstance(exc, PortInUse) else f"cashpos: {exc}", file=sys.stderr)
            return 1
        interval = os.environ.get("CASHPOS_RECONCILE_INTERVAL_SECONDS", RECONCILE_INTERVAL_S)
        stack.start("reconcile", "reconcile", "--continuous", "--interval", interval)
        if os.environ.get("CASHPOS_SIMULATOR", "on").lower() not in ("off", "0", "false", "no"):
            stack.start(
                "simulator",
                "simulate",
                "--rate",
                os.environ.get("CASHPOS_SIMULATOR_RATE", "50"),
                "--speed",
                os.environ.get("CASHPOS_SIMULATOR_SPEED", "60"),
            )
        _print_banner(stack, tokens)
        stop = False

        def on_signal(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        supervise(stack, s, lambda: stop)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if stack is not None:
            stack.stop_all()
        infra.stop()
