"""Run a load test against a fresh embedded stack and judge it.

    python -m loadtest.run --compress 48            # the payroll day in 30 minutes (make loadtest)
    python -m loadtest.run --compress 288           # the same day in 5 minutes
    python -m loadtest.run --smoke                  # 60 s, small, for CI (make loadtest-smoke)
    python -m loadtest.run --heavy --scale 0.1      # 10x the busiest hour (scaled to the machine)
    python -m loadtest.run --day-type jan2 --compress 96
    python -m loadtest.run --host http://api:8000   # an existing deployment (no stack started)

Steps: start the development stack (``cashpos.devstack``: Tansu + redis-server with the service
accounts ``cashpos run`` makes, so the worker and the API connect as their own ACL users, + one
ledger worker + the API; fresh namespace, logs and state under ``var/loadtest/<run>/``), provision
the access tokens the simulated users carry (one finance director per government, a national, an
integration and a source token, with a high rate limit since many simulated users share each),
wait for ``/readyz`` and ``/v1/summary``, publish the simulator's opening balances and wait until
the API shows them, run Locust headless in its own process(es) while sampling CPU and memory of
every process, then write ``artifacts/loadtest/<run>/``:
``locust_*.csv``, ``locust.html``, ``monitor.csv``, ``summary.json`` and ``summary.md``. Exits 1
when a threshold fails, 2 when the run itself could not be done.

Against ``--host`` (an existing deployment) the tokens are made through the admin API with
``--admin-token`` (or ``CASHPOS_ADMIN_TOKEN``; they expire after a day and are revoked after the
run), or read from ``--tokens FILE`` (the format of :func:`provision_tokens`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cashpos.devstack import Stack
from loadtest.console import log
from loadtest.headless import locust_rows, merge_raw, run_locust, timeline
from loadtest.monitor import Monitor
from loadtest.options import build_plan, cpus, parse_args
from loadtest.report import cpu_note, tansu_note, write_markdown
from loadtest.stack import publish_opening, scrape_metrics, stack_pids, start_stack, stop_stack, wait_cash
from loadtest.tokens import ApiTokens, bearer, provision_tokens, write_tokens
from loadtest.verdict import judge

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__)
    plan = build_plan(args)
    run_id = time.strftime("lt%m%d%H%M%S")
    out = (args.out or ROOT / "artifacts" / "loadtest" / time.strftime("%Y%m%dT%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    var = ROOT / "var" / "loadtest" / run_id
    d = plan.describe()
    log(f"plan: {json.dumps(d, ensure_ascii=False)}")
    log(f"reports in {out}")
    stack: Stack | None = None
    headers: dict[str, str] = {}  # a national token's, for the harness
    monitor: Monitor | None = None
    api_tokens: ApiTokens | None = None
    given = args.tokens.resolve() if args.host and args.tokens else None  # ready-made tokens
    tokens_file = given or var / "tokens.json"
    extra: dict[str, Any] = {"run_id": run_id, "reports": str(out)}
    try:
        if args.host:
            host = args.host.rstrip("/")
            if given is None:
                if not args.admin_token:
                    log("--host needs --admin-token (or CASHPOS_ADMIN_TOKEN) or --tokens FILE")
                    return 2
                api_tokens = ApiTokens(host, args.admin_token)
                write_tokens(tokens_file, provision_tokens(api_tokens.create, run_id))
                log(f"{len(api_tokens.ids)} tokens made through {host}/v1/tokens")
            monitor = Monitor({}, out / "monitor.csv")
            extra["stack"] = f"external: {host} (no stack started, no opening balances)"
        else:
            log(f"starting the stack in {var} (namespace {run_id})")
            stack = start_stack(var, run_id, args.partitions, cpus(args.stack_cpus))
            tokens = provision_tokens(stack.token, run_id)
            write_tokens(tokens_file, tokens)
            headers = bearer(tokens["national"])
            stack.wait_ready(180, token=str(tokens["national"]))
            n, total = publish_opening(stack, plan, run_id)
            wait_cash(stack.api, total, headers)
            log(f"stack ready at {stack.api}; {n:,} opening balances visible ({total:,} KRW)")
            host = stack.api
            monitor = Monitor(stack_pids(stack), out / "monitor.csv")
            extra["stack"] = (
                f"embedded: Tansu (memory) + redis-server + 1 ledger worker + 1 API "
                f"process, {args.partitions} partitions, namespace {run_id}, logs {var}"
            )
        monitor.start()
        t0 = time.monotonic()
        rc = run_locust(args, plan, host, out, run_id, monitor, cpus(args.locust_cpus), tokens_file)
        run_s = time.monotonic() - t0
        time.sleep(1)
        monitor.stop()
        log(f"locust exited with {rc} after {run_s:.0f}s")
        if stack is not None:
            extra["metrics"] = scrape_metrics(stack.api, headers)
        merged = merge_raw(out)
        if not merged["categories"]:
            log("no measurements were written (see locust.log / locust.stdout)")
            return 2
        extra["cpu_note"] = cpu_note(args, monitor.rows)
        note = tansu_note(monitor.rows, merged["categories"].get("write", {}).get("requests", 0))
        if note:
            extra["tansu_note"] = note
        extra["timeline"] = timeline(out, plan, monitor.rows)
        summary = judge(plan, args, out, merged, monitor.rows, run_s, extra)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        text = write_markdown(summary, locust_rows(out), out / "summary.md")
        print(text, flush=True)
        log(f"{'PASS' if summary['passed'] else 'FAIL'}: {out / 'summary.md'}")
        return 0 if summary["passed"] else 1
    except Exception as exc:  # noqa: BLE001 - any failure of the run is its exit code 2, reported
        log(f"run failed: {exc!r}")
        if monitor is not None and monitor.is_alive():
            monitor.stop()
        return 2
    finally:
        if api_tokens is not None:
            api_tokens.revoke()
        if given is None:
            tokens_file.unlink(missing_ok=True)  # the secrets are of no use after the run
        if stack is not None:
            stop_stack(stack, stack.infra)
            if not args.keep_state:
                shutil.rmtree(var / "state-w1", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
