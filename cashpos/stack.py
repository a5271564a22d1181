"""`cashpos run`: the whole service on one machine, for newcomers and demos.

Starts (unless CASHPOS_KAFKA_BOOTSTRAP / CASHPOS_REDIS_URL point elsewhere) a Tansu broker and a
redis-server, then a ledger worker, the API and the simulator (CASHPOS_SIMULATOR=off to skip
it), each as its own process. Ctrl-C stops every child.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from cashpos.embedded import Service, start_redis, start_tansu, wait_port
from cashpos.settings import Settings, load

SECRETS = Path("var/secrets")  # never committed (var/ is ignored); files are mode 0600
ADMIN_URL_FILE = SECRETS / "redis-admin.url"
DEMO_TOKENS_FILE = SECRETS / "demo-tokens.json"
DEMO_TOKENS = (  # (key, role, orgs, name, what the printout calls it)
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


def run_stack() -> int:
    s = load()
    var = Path("var")
    (var / "log").mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    env = dict(os.environ)
    try:
        if "CASHPOS_KAFKA_BOOTSTRAP" not in os.environ:
            services.append(start_tansu(_port(s.kafka_bootstrap), var / "log" / "tansu.log"))
            print(f"broker    kafka://{s.kafka_bootstrap} (embedded Tansu, in memory)")
        worker_env, api_env = dict(env), dict(env)
        admin_url = s.redis_url
        if "CASHPOS_REDIS_URL" not in os.environ:
            services.append(start_redis(_port(s.redis_url), var / "log" / "redis.log"))
            urls = _service_accounts(s)
            worker_env["CASHPOS_REDIS_URL"], api_env["CASHPOS_REDIS_URL"] = urls["processor"], urls["api"]
            admin_url = urls["admin"]
            print(f"redis     {s.redis_url} (embedded; ACL users {s.namespace}-processor/-api/-admin, "
                  "default user off; credentials in var/secrets/)")
        tokens = _demo_tokens(s, admin_url)
        # The embedded broker keeps nothing across restarts, so neither may the state.
        if "CASHPOS_KAFKA_BOOTSTRAP" not in os.environ:
            import shutil

            shutil.rmtree(s.state_dir, ignore_errors=True)
        py = sys.executable
        procs: list[tuple[str, subprocess.Popen[bytes]]] = []

        def spawn(name: str, *args: str, env: dict[str, str] = env) -> None:
            log = open(var / "log" / f"{name}.log", "ab")
            procs.append((name, subprocess.Popen([py, "-m", "cashpos.cli", *args], env=env,
                                                 stdout=log, stderr=subprocess.STDOUT)))

        spawn("worker", "worker", env=worker_env)
        spawn("api", "api", env=api_env)
        wait_port(s.api_port, timeout=60, proc=procs[-1][1])
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
        while not stop:
            for name, p in procs:
                if p.poll() is not None and name != "simulator":
                    print(f"{name} exited with {p.returncode}; see var/log/{name}.log")
                    stop = True
            time.sleep(0.5)
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        return 0
    finally:
        for svc in reversed(services):
            svc.stop()
