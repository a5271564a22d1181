"""The development stack one run tests, its opening balances, and its counters at the end.

A fresh stack per run (``cashpos.devstack`` on ``cashpos.embedded``'s Tansu and redis-server, the
one development stack: the worker and the API connect to Redis as their own ACL users, as
``cashpos run`` sets up): one ledger worker and one API process, a fresh namespace, logs and
state in the run's directory. Tansu's in-memory storage never frees memory, so every run starts
its own broker.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx

from cashpos.devstack import Stack, new_stack
from cashpos.embedded import Infra, start_infra
from loadtest.console import log
from loadtest.plan import Plan
from loadtest.tokens import TOKEN_RATE_PER_S

ROOT = Path(__file__).resolve().parent.parent


def start_stack(root: Path, namespace: str, partitions: int, cpus: set[int] | None) -> Stack:
    """The development stack (cashpos.devstack) for one run: Tansu, redis-server, one ledger
    worker and the API, with its logs and state in ``root``, pinned to ``cpus``; stop it with
    ``stop_stack``."""
    infra = start_infra(root)
    stack = None
    try:
        for svc in (infra.kafka, infra.redis):
            if cpus and svc is not None:
                os.sched_setaffinity(svc.proc.pid, cpus)
        stack = new_stack(
            infra,
            root,
            partitions,
            namespace=namespace,
            cwd=ROOT,
            cpus=cpus,
            # thousands of simulated dashboards share one token per role and government
            extra_env={"CASHPOS_LOG_LEVEL": "WARNING", "CASHPOS_MAX_STREAMS_PER_TOKEN": "100000"},
            token_args={"expires_days": 1, "rate_per_s": TOKEN_RATE_PER_S},
        )
        stack.start_worker("w1")
        stack.start_api()
    except BaseException:
        stop_stack(stack, infra)
        raise
    return stack


def stop_stack(stack: Stack | None, infra: Infra) -> None:
    if stack is not None:
        stack.stop_all()
    infra.stop()


def stack_pids(stack: Stack) -> dict[str, int]:
    """The processes the monitor samples, by component."""
    services = {
        name: svc.proc.pid
        for name, svc in (("tansu", stack.infra.kafka), ("redis", stack.infra.redis))
        if svc is not None
    }
    return {**services, "worker": stack.procs["worker-w1"].pid, "api": stack.procs["api"].pid}


def publish_opening(stack: Stack, plan: Plan, run_id: str) -> tuple[int, int]:
    """The simulator's opening balances (one receipt per government and account, dated just
    before the run's simulated start): (events, total KRW)."""
    import orjson

    from cashpos.simulator import Simulator
    from streams.publisher import Publisher

    sim = Simulator(seed=0, start=plan.start_datetime(), id_prefix=f"{run_id}-o")
    raws = sim.opening_balances()
    total = sum(orjson.loads(r)["amount"] for r in raws)

    async def main() -> int:
        async with Publisher(stack.settings) as pub:
            return await pub.send_many(raws)

    n = asyncio.run(main())
    return n, total


def wait_cash(api: str, expected: int, headers: dict[str, str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    cash = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{api}/v1/summary", headers=headers, timeout=10)  # a national token
            if r.status_code == 200:
                cash = r.json()["national"]["cash"]
                if cash == expected:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"opening balances not visible: national cash {cash} != {expected}")


def scrape_metrics(api: str, headers: dict[str, str]) -> dict[str, float]:
    """A few totals from /metrics at the end of the run."""
    want = (
        "cashpos_events_applied_total",
        "cashpos_events_deadlettered_total",
        "cashpos_duplicates_dropped_total",
        "cashpos_api_events_ingested_total",
        "cashpos_api_events_rejected_total",
        "cashpos_consumer_lag_records",
        "cashpos_api_sse_connections",
    )
    out: dict[str, float] = {}
    try:
        r = httpx.get(f"{api}/metrics", headers=headers, timeout=10)  # a national token: operations
    except httpx.HTTPError:
        return out
    if r.status_code != 200:
        log(f"/metrics answered {r.status_code}: {r.text[:200]}")
        return out
    text = r.text
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in want:
            try:
                v = float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
            key = name
            if name == "cashpos_events_deadlettered_total" and 'reason="' in line:
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                key = f"{name}[{reason}]"
            out[key] = out.get(key, 0) + v
    return out
