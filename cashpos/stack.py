"""`cashpos run`: the whole service on one machine, for newcomers and demos.

Starts (unless CASHPOS_KAFKA_BOOTSTRAP / CASHPOS_REDIS_URL point elsewhere, or
CASHPOS_EMBEDDED=on asks for them at those addresses) a Tansu broker and a redis-server, then a
ledger worker, the API and the simulator (CASHPOS_SIMULATOR=off to skip it), each as its own
process. It supervises the worker and the API like systemd's ``Restart=on-failure``: one that
dies (a crash, ``kill -9``, the OOM killer) is started again after a delay that doubles with each
restart (CASHPOS_RESTART_DELAY_SECONDS .. CASHPOS_RESTART_DELAY_MAX_SECONDS, back to the first
once it ran CASHPOS_RESTART_RESET_SECONDS), and the embedded broker and Redis — which hold
everything in memory — are never stopped because a child died. Ctrl-C or SIGTERM stops every
child, then the broker and Redis.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from cashpos.embedded import Service, start_redis, start_tansu, wait_port
from cashpos.settings import Settings, load

log = logging.getLogger("cashpos.run")
SUPERVISED = ("worker", "api")  # restarted when they die; the simulator is not (it may finish)

SECRETS = Path("var/secrets")  # never committed (var/ is ignored); files are mode 0600
ADMIN_URL_FILE = SECRETS / "redis-admin.url"
DEMO_TOKENS_FILE = SECRETS / "demo-tokens.json"
DEMO_TOKENS: tuple[tuple[str, str, list[str], str, str], ...] = (  # (key, role, orgs, name, what the printout calls it)
    ("national", "national", [], "demo national (ministry)", "national, all 243 governments, read-only"),
    ("finance_director", "finance_director", ["3000000"], "demo finance director 종로구",
     "finance director of 종로구 (3000000)"),
)


def _secret_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _service_accounts(s: Settings) -> dict[str, str]:
    """Give the embedded Redis its ACL users (passwords kept in var/secrets) and switch the
    password-less default user off. Returns role -> URL."""
    import orjson
    import redis

    from cashpos.redis_acl import ROLES, apply, disable_default_user

    pw_file = SECRETS / "redis-passwords.json"
    saved = orjson.loads(pw_file.read_bytes()) if pw_file.exists() else {}
    passwords = {role: saved.get(role) or secrets.token_urlsafe(24) for role in ROLES}
    r = redis.Redis.from_url(s.redis_url)
    try:
        urls = apply(r, s.namespace, s.redis_url, passwords)
        disable_default_user(r)
    finally:
        r.close()
    _secret_file(pw_file, orjson.dumps(passwords).decode())
    _secret_file(ADMIN_URL_FILE, urls["admin"])
    return urls


def _demo_tokens(s: Settings, redis_url: str) -> dict[str, str]:
    """The demo tokens: made on the first start, registered again (same secrets) on later ones."""
    import asyncio

    import orjson
    import redis.asyncio as aioredis

    from access.tokens import ScopeError, TokenStore
    from cashpos.names import RedisKeys

    saved = orjson.loads(DEMO_TOKENS_FILE.read_bytes()) if DEMO_TOKENS_FILE.exists() else {}

    async def main() -> dict[str, str]:
        r = aioredis.from_url(redis_url)
        store = TokenStore(r, RedisKeys(s.namespace))
        out = {}
        try:
            for key, role, orgs, name, _ in DEMO_TOKENS:
                try:
                    out[key], _rec = await store.create(role, orgs, name, None, None, saved.get(key))
                except ScopeError:  # already registered (a Redis that kept its data)
                    out[key] = saved[key]
        finally:
            await r.aclose()
        return out

    tokens = asyncio.run(main())
    _secret_file(DEMO_TOKENS_FILE, orjson.dumps(tokens, option=orjson.OPT_INDENT_2).decode())
    return tokens


def _port(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1].split("/")[0])


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


def failed(returncode: int) -> bool:
    """Whether an exit is a failure to restart after (systemd's Restart=on-failure): not a clean
    exit, nor the stop signals someone sends on purpose."""
    return returncode != 0 and -returncode not in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


def run_stack() -> int:
    s = load()
    var = Path("var")
    (var / "log").mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    env = dict(os.environ)
    try:
        if _embedded("CASHPOS_KAFKA_BOOTSTRAP"):
            services.append(start_tansu(_port(s.kafka_bootstrap), var / "log" / "tansu.log"))
            print(f"broker    kafka://{s.kafka_bootstrap} (embedded Tansu, in memory)")
        worker_env, api_env = dict(env), dict(env)
        admin_url = s.redis_url
        if _embedded("CASHPOS_REDIS_URL"):
            services.append(start_redis(_port(s.redis_url), var / "log" / "redis.log"))
            urls = _service_accounts(s)
            worker_env["CASHPOS_REDIS_URL"], api_env["CASHPOS_REDIS_URL"] = urls["processor"], urls["api"]
            admin_url = urls["admin"]
            print(f"redis     {s.redis_url} (embedded; ACL users {s.namespace}-processor/-api/-admin, "
                  "default user off; credentials in var/secrets/)")
        tokens = _demo_tokens(s, admin_url)
        # The embedded broker keeps nothing across restarts, so neither may the state.
        if _embedded("CASHPOS_KAFKA_BOOTSTRAP"):
            import shutil

            shutil.rmtree(s.state_dir, ignore_errors=True)
        py = sys.executable
        procs: dict[str, subprocess.Popen[bytes]] = {}
        commands: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        started: dict[str, float] = {}

        def spawn(name: str, *args: str, env: dict[str, str] = env) -> None:
            commands[name] = (args, env)
            with open(var / "log" / f"{name}.log", "ab") as out:  # the child keeps its own fd
                procs[name] = subprocess.Popen([py, "-m", "cashpos.cli", *args], env=env,
                                               stdout=out, stderr=subprocess.STDOUT)
            started[name] = time.monotonic()

        spawn("worker", "worker", env=worker_env)
        spawn("api", "api", env=api_env)
        wait_port(s.api_port, timeout=60, proc=procs["api"])
        if os.environ.get("CASHPOS_SIMULATOR", "on").lower() not in ("off", "0", "false", "no"):
            spawn("simulator", "simulate", "--rate", os.environ.get("CASHPOS_SIMULATOR_RATE", "50"),
                  "--speed", os.environ.get("CASHPOS_SIMULATOR_SPEED", "60"))
        base = f"http://{s.api_host}:{s.api_port}"
        print(f"dashboard {base}/dashboard/")
        print(f"api       {base}/v1/summary   {base}/v1/positions/6110000   docs {base}/docs")
        print(f"metrics   {base}/metrics      logs in var/log/   Ctrl-C stops everything")
        print("sign in   every API call and the dashboard need a token (saved in var/secrets/demo-tokens.json):")
        for key, _, _, _, what in DEMO_TOKENS:
            print(f"          {tokens[key]}   {what}")
        print(f'          curl -H "Authorization: Bearer {tokens["national"]}" {base}/v1/summary')
        print("          more: cashpos token create --role ROLE --org CODE --name NAME")
        stop = False

        def on_signal(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        backoff = {name: Backoff(s.restart_delay_seconds, s.restart_delay_max_seconds,
                                 s.restart_reset_seconds) for name in SUPERVISED}
        due: dict[str, float] = {}  # child -> when it is started again
        gone: set[str] = set()  # stopped cleanly by someone: not restarted
        while not stop:
            now = time.monotonic()
            for name in SUPERVISED:
                p = procs[name]
                if stop or name in gone:
                    continue
                if name not in due and p.poll() is not None:
                    if not failed(p.returncode):  # like systemd's on-failure: a clean stop stays
                        gone.add(name)
                        log.warning("child stopped, not restarted %s", orjson.dumps({
                            "event": "child_stopped", "child": name, "pid": p.pid,
                            "exit": describe_exit(p.returncode)}).decode())
                        continue
                    b = backoff[name]
                    delay = b.next_delay(now - started[name])
                    due[name] = now + delay
                    log.warning("child exited, restarting %s", orjson.dumps({
                        "event": "child_exited", "child": name, "pid": p.pid,
                        "exit": describe_exit(p.returncode), "ran_s": round(now - started[name], 1),
                        "restart": b.restarts, "delay_s": delay, "log": f"var/log/{name}.log",
                    }).decode())
                elif name in due and now >= due[name]:
                    del due[name]
                    spawn(name, *commands[name][0], env=commands[name][1])
                    log.warning("child restarted %s", orjson.dumps({
                        "event": "child_restarted", "child": name, "pid": procs[name].pid,
                        "restart": backoff[name].restarts,
                    }).decode())
            time.sleep(0.2)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        return 0
    finally:
        for svc in reversed(services):
            svc.stop()
