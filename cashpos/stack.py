"""`cashpos run`: the whole service on one machine, for newcomers and demos.

Starts (unless CASHPOS_KAFKA_BOOTSTRAP / CASHPOS_REDIS_URL point elsewhere) a Tansu broker and a
redis-server, then a ledger worker, the API and the simulator (CASHPOS_SIMULATOR=off to skip
it), each as its own process. Ctrl-C stops every child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cashpos.embedded import Service, start_redis, start_tansu, wait_port
from cashpos.settings import load


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
        if "CASHPOS_REDIS_URL" not in os.environ:
            services.append(start_redis(_port(s.redis_url), var / "log" / "redis.log"))
            print(f"redis     {s.redis_url} (embedded)")
        # The embedded broker keeps nothing across restarts, so neither may the state.
        if "CASHPOS_KAFKA_BOOTSTRAP" not in os.environ:
            import shutil

            shutil.rmtree(s.state_dir, ignore_errors=True)
        py = sys.executable
        procs: list[tuple[str, subprocess.Popen[bytes]]] = []

        def spawn(name: str, *args: str) -> None:
            log = open(var / "log" / f"{name}.log", "ab")
            procs.append((name, subprocess.Popen([py, "-m", "cashpos.cli", *args], env=env,
                                                 stdout=log, stderr=subprocess.STDOUT)))

        spawn("worker", "worker")
        spawn("api", "api")
        wait_port(s.api_port, timeout=60, proc=procs[-1][1])
        if os.environ.get("CASHPOS_SIMULATOR", "on").lower() not in ("off", "0", "false", "no"):
            spawn("simulator", "simulate", "--rate", os.environ.get("CASHPOS_SIMULATOR_RATE", "50"),
                  "--speed", os.environ.get("CASHPOS_SIMULATOR_SPEED", "60"))
        base = f"http://{s.api_host}:{s.api_port}"
        print(f"dashboard {base}/dashboard/")
        print(f"api       {base}/v1/summary   {base}/v1/positions/6110000   docs {base}/docs")
        print(f"metrics   {base}/metrics      logs in var/log/   Ctrl-C stops everything")
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
