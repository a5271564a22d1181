"""`cashpos` command line: run the parts of the service and operate it.

cashpos run          the whole embedded stack (broker, Redis, worker, API, simulator)
cashpos worker       a ledger processor worker (Faust)
cashpos api          the HTTP API
cashpos simulate     publish a realistic stream for all 243 governments
cashpos publish F    publish events from a JSON-lines file
cashpos dlq          list dead letters; re-publish selected ones
cashpos reconcile    re-fold the raw topics independently; compare with Redis and state
                     (--continuous: every interval, only what is new past its checkpoint)
cashpos verify       re-compute a position's hash-chain head from the input topics; compare
cashpos schema       print the event JSON Schema
cashpos token        create, list and revoke access tokens
cashpos audit        print the audit log
cashpos redis-acl    print the Redis ACL rules of the service accounts
cashpos topics       create the topics, or check them against the settings
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import orjson

from cashpos.logs import capture_std_streams, setup_logging
from cashpos.settings import Settings, load

log = logging.getLogger("cashpos.cli")
# The long-running commands, whose output is a log: every line of it a JSON object
# (cashpos.logs). The others print a result (a token, the schema, JSON lines) as it is.
SERVICES = frozenset({"worker", "api", "simulate", "reconcile", "run"})


def _worker(args: argparse.Namespace) -> int:
    from agents.worker import app

    sys.argv = ["cashpos-worker", "worker", f"--loglevel={args.loglevel}"]
    app.main()
    return 0


def _api(args: argparse.Namespace) -> int:
    import dataclasses

    from serving.server import serve  # uvicorn with the header, body and slow-client guards

    s = load()
    if args.processes is not None:
        s = dataclasses.replace(s, api_processes=args.processes)
    serve(s, fd=args.fd)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from cashpos.simulator import Simulator, run
    from streams.publisher import Publisher
    from streams.topics import ensure_topics

    s = load()

    async def main() -> int:
        import datetime as dt

        from cashpos.calendar import KST, korea_time

        await ensure_topics(s)
        start = korea_time(args.start) if args.start else dt.datetime.now(KST)
        sim = Simulator(
            seed=args.seed,
            speed=args.speed,
            rate=args.rate,
            start=start,
            id_prefix=f"sim-{args.seed}-{int(start.timestamp())}",
            known_flows=not args.no_known_flows,
        )
        if args.scenario == "shortfall":
            from cashpos.simulator import StagedSimulator, shortfall_scenario

            sim = StagedSimulator(
                seed=args.seed, speed=args.speed, rate=args.rate, start=start, id_prefix=sim.prefix
            )
            staged = shortfall_scenario(sim)
            sim.stage(staged)
            for ev in staged:
                when = dt.datetime.fromtimestamp(ev.at, KST).isoformat(timespec="seconds")
                wall_s = round((ev.at - sim.start.timestamp()) / args.speed)
                log.info(
                    "scenario shortfall: %s (wall +%ds) 울릉군 5260000 general: %s",
                    when,
                    wall_s,
                    ev.what,
                    extra={"scenario": {"name": "shortfall", "at": when, "wall_s": wall_s, "what": ev.what}},
                )
        async with Publisher(s) as pub:
            opening = 0 if args.no_opening_balances else await pub.send_many(sim.opening_balances())
            until = korea_time(args.until) if args.until else None
            return opening + await run(pub, sim, total=args.total, until=until)

    n = asyncio.run(main())
    log.info("published %d events", n, extra={"published": n})
    return 0


def _close_year(args: argparse.Namespace) -> int:
    import datetime as dt

    from cashpos.calendar import KST, close_date
    from cashpos.refdata import governments
    from streams.contract import year_close
    from streams.publisher import Publisher
    from streams.topics import ensure_topics

    today = dt.datetime.now(KST).date()
    if today < close_date(args.year):
        print(
            f"cashpos: fiscal year {args.year} takes cash processing until the end of 20 January "
            f"{args.year + 1} (Korea time); close it from {close_date(args.year).isoformat()}",
            file=sys.stderr,
        )
        return 2
    orgs = args.org or sorted(governments())
    unknown = sorted(set(orgs) - set(governments()))
    if unknown:
        print(f"cashpos: not a government: {', '.join(unknown)}", file=sys.stderr)
        return 2
    s = load()

    async def main() -> int:
        await ensure_topics(s)
        async with Publisher(s) as pub:
            return await pub.send_many(year_close(org, args.year) for org in orgs)

    n = asyncio.run(main())
    print(f"published the close of fiscal year {args.year} for {n} government(s), on both input topics")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from streams.publisher import Publisher
    from streams.topics import ensure_topics

    s = load()

    def lines():
        with open(args.file, "rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line

    async def main() -> int:
        await ensure_topics(s)
        async with Publisher(s) as pub:
            return await pub.send_many(lines())

    n = asyncio.run(main())
    print(f"published {n} events from {args.file}")
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from cashpos.dlq import list_deadletters, republish

    s = load()
    if args.republish:
        n = asyncio.run(republish(s, args.republish, args.fixed))
        print(f"re-published {n} event(s)")
        return 0
    for d in asyncio.run(list_deadletters(s, args.reason, args.limit)):
        src = d.source
        print(f"{src.topic}:{src.partition}:{src.offset}\t{d.reason}\t{d.detail}\t{d.value()[:120]!r}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from reconcile.run import owned_from_heartbeats, reconcile

    s = load()
    if args.continuous:
        if args.state or args.every:
            print("cashpos: --continuous compares with Redis only (no --state, no --every)", file=sys.stderr)
            return 2
        return _reconcile_continuous(s, args.interval or s.reconcile_interval_seconds)
    dirs = [Path(d) for d in args.state]
    while True:
        owned = None  # --owned stored
        if dirs and args.owned == "all":
            owned = {d: set(range(s.partitions)) for d in dirs}
        elif dirs and args.owned == "live":
            try:
                owned = asyncio.run(owned_from_heartbeats(s, dirs))
            except ValueError as exc:
                print(
                    f"{exc}: for a stopped worker use --owned all (it owned every partition) "
                    f"or --owned stored",
                    file=sys.stderr,
                )
                return 2
        rep = asyncio.run(reconcile(s, dirs, owned=owned))
        figures = {
            "records": rep.records_in,
            "applied": rep.applied,
            "duplicates": rep.duplicates,
            "dead_letters": rep.dead_letters,
            "positions": rep.positions_checked,
            "lagging": rep.lagging,
            "unseeded": rep.unseeded,
            "diff_krw": rep.diff_krw,
            "state_behind": rep.state_behind,
            "seconds": rep.seconds,
        }
        text = " ".join(f"{k}={v}" for k, v in figures.items())
        log.info("reconcile %s", text, extra={"reconcile": {"ok": rep.ok, **figures}})
        for st in rep.states:
            state = {
                "path": str(st.path),
                "mode": st.mode,
                "partitions": st.partitions,
                "positions": st.positions_checked,
                "diff_krw": st.diff_krw,
                "behind": st.behind,
            }
            log.info("reconcile state %s diff_krw=%d", st.path, st.diff_krw, extra={"state": state})
        for d in rep.differences[:20]:
            diff = {
                "against": d.against,
                "org_code": d.org_code,
                "account": d.account,
                "fiscal_year": d.fiscal_year,
                "expected_cash": d.expected_cash,
                "expected_committed": d.expected_committed,
                "actual_cash": d.actual_cash,
                "actual_committed": d.actual_committed,
            }
            log.warning(
                "reconcile difference %s %s/%s/%s",
                d.against,
                d.org_code,
                d.account,
                d.fiscal_year,
                extra={"difference": diff},
            )
        if not args.every:
            return 0 if rep.ok else 1 if rep.diff_krw or rep.differences else 3
        time.sleep(args.every)


def _reconcile_continuous(s: Settings, interval: float) -> int:
    """Until SIGTERM or Ctrl-C: an incremental reconciliation every ``interval`` seconds."""
    import signal

    from reconcile.continuous import run_continuous

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("reconcile: continuous, every %ss, checkpoint in %s", interval, s.reconcile_checkpoint_dir)
        await run_continuous(s, interval, stop)

    asyncio.run(main())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reconcile import verify

    s = load()
    records = asyncio.run(verify.read_partition(s, args.org))
    want, rows = verify.expected(records, args.org, args.account, args.fy, s.max_event_bytes)
    try:
        if args.state_dir:
            got = verify.state_head(Path(args.state_dir), args.org, args.account, args.fy)
        elif not args.token:
            print("cashpos: --token (one that reads the government) or --state-dir", file=sys.stderr)
            return verify.UNAVAILABLE
        else:
            api = args.api or verify.default_api(s)
            got = verify.api_head(api, args.token, args.org, args.account, args.fy, args.wait)
    except (RuntimeError, OSError) as exc:
        print(f"cashpos: no head to compare with: {exc}", file=sys.stderr)
        return verify.UNAVAILABLE
    code, lines = verify.judge(want, rows, got)
    print(f"position   {args.org}/{args.account}/{args.fy}")
    print(f"topics     {want[0] if want else None}  ({rows} rows, from {len(records)} records)")
    print(f"reported   {got.head}  ({got.events} rows, {got.where})")
    print("\n".join(lines))
    return code


def _schema(args: argparse.Namespace) -> int:
    from streams.contract import schema_text

    sys.stdout.write(schema_text())
    return 0


def _admin_redis_url() -> str:
    """CASHPOS_REDIS_URL, else the embedded stack's admin account (``cashpos run`` writes it)."""
    import os

    from cashpos.stack import ADMIN_URL_FILE

    if "CASHPOS_REDIS_URL" not in os.environ and ADMIN_URL_FILE.exists():
        return ADMIN_URL_FILE.read_text().strip()
    return load().redis_url


def _no_orgs(role: str) -> str:
    """What a token created without --org covers: every government, or none (metrics)."""
    return "none" if role == "metrics" else "all"


def _token(args: argparse.Namespace) -> int:
    import time

    import redis.asyncio as aioredis

    from access.tokens import ScopeError, TokenStore
    from cashpos.names import RedisKeys

    s = load()

    async def main() -> int:
        r = aioredis.from_url(_admin_redis_url())
        store = TokenStore(r, RedisKeys(s.namespace))
        try:
            if args.action == "create":
                orgs = [o for part in args.org for o in part.split(",")]
                try:
                    token, rec = await store.create(
                        args.role, orgs, args.name, args.expires or None, args.rate
                    )
                except (ScopeError, ValueError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                print(token)
                print(
                    f"# id {rec.id}, role {rec.role}, orgs {','.join(rec.orgs) or _no_orgs(rec.role)}, "
                    f"expires {time.strftime('%Y-%m-%d', time.gmtime(rec.expires_ms / 1000)) if rec.expires_ms else 'never'}"
                    " - shown once: store it now",
                    file=sys.stderr,
                )
            elif args.action == "list":
                now = int(time.time() * 1000)
                for rec in await store.all():
                    print(orjson.dumps(rec.public(now)).decode())
            else:
                revoked = await store.revoke(args.id)
                if revoked is None:
                    print(f"error: no token {args.id}", file=sys.stderr)
                    return 1
                print(f"revoked {revoked.id} ({revoked.name}, {revoked.role})")
            return 0
        finally:
            await r.aclose()

    return asyncio.run(main())


def _audit(args: argparse.Namespace) -> int:
    from cashpos.names import Topics
    from streams.reader import read_topics

    s = load()
    for rec in asyncio.run(read_topics(s, [Topics(s.namespace).audit])):
        entry = orjson.loads(rec.value)
        if (args.token_id is None or entry.get("token_id") == args.token_id) and (
            args.action is None or entry.get("action") == args.action
        ):
            print(rec.value.decode())
    return 0


def _redis_acl(args: argparse.Namespace) -> int:
    from cashpos.redis_acl import ROLES, rules, user_name

    ns = load().namespace
    for role in ROLES:
        print(f"ACL SETUSER {user_name(ns, role)} {' '.join(rules(ns, role))} ><password>")
    print("ACL SETUSER default off")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from streams.cluster_check import EXIT_MISMATCH, EXIT_UNREACHABLE, Refused, check
    from streams.topics import ensure_topics

    s = load()

    async def main() -> int:
        if args.action == "create":
            try:
                await ensure_topics(s, attempts=3, strict=True)
            except Refused as exc:
                print(exc, file=sys.stderr)
                return EXIT_MISMATCH
            except (KafkaError, OSError, TimeoutError) as exc:  # the broker never answered
                print(f"cannot reach the broker: {s.kafka_bootstrap}: {exc!r}", file=sys.stderr)
                return EXIT_UNREACHABLE
        report = await check(s)
        if args.json:
            print(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
        else:
            print("\n".join(report.lines()))
        return report.exit_code

    return asyncio.run(main())


def _run(args: argparse.Namespace) -> int:
    from cashpos.stack import run_stack

    return run_stack()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cashpos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="run a ledger processor worker")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(fn=_worker)
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument(
        "--processes",
        type=int,
        help="API processes on the one port (default: CASHPOS_API_PROCESSES; 0: one per core)",
    )
    api.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a supervised process's socket
    api.set_defaults(fn=_api)
    sim = sub.add_parser("simulate", help="publish a realistic event stream")
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--rate", type=float, default=50.0, help="events per wall second")
    sim.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second")
    sim.add_argument("--total", type=int, default=None, help="stop after this many events")
    sim.add_argument("--start", help="simulated start time, ISO 8601 (default: now, Korea time)")
    sim.add_argument(
        "--until",
        help="stop when the simulated clock passes this time, ISO 8601 "
        "(e.g. --start 2026-12-20 --until 2027-02-10: a year's close)",
    )
    sim.add_argument(
        "--no-opening-balances", action="store_true", help="do not first publish each account's opening cash"
    )
    sim.add_argument(
        "--no-known-flows",
        action="store_true",
        help="leave out the known future flows (payment orders, expected receipts: contract version 3); "
        "a staged scenario always does",
    )
    sim.add_argument(
        "--scenario",
        choices=("none", "shortfall"),
        default="none",
        help="stage a scenario: shortfall = 울릉군's general account runs short "
        "10 simulated minutes after the start (cash < 0 three days later)",
    )
    sim.set_defaults(fn=_simulate)
    cy = sub.add_parser(
        "close-year",
        help="close a fiscal year (from 21 January of the next): lapse what is open, carry the cash forward",
    )
    cy.add_argument("year", type=int)
    cy.add_argument("--org", action="append", help="only this government (repeatable; default: all 243)")
    cy.set_defaults(fn=_close_year)
    pub = sub.add_parser("publish", help="publish events from a JSON-lines file")
    pub.add_argument("file")
    pub.set_defaults(fn=_publish)
    d = sub.add_parser("dlq", help="list dead letters, or re-publish selected ones")
    d.add_argument("--reason", help="only this reason code")
    d.add_argument("--limit", type=int, default=100)
    d.add_argument(
        "--republish",
        nargs="+",
        metavar="TOPIC:PARTITION:OFFSET",
        help="re-publish these dead letters to their source topic",
    )
    d.add_argument(
        "--fixed",
        metavar="FILE",
        help="JSON-lines file of corrected events to publish instead of the originals",
    )
    d.set_defaults(fn=_dlq)
    rc = sub.add_parser("reconcile", help="re-fold the raw topics and compare with Redis and state")
    rc.add_argument(
        "--state",
        nargs="*",
        default=[],
        metavar="DIR",
        help="worker state directories to compare too (opened read-only)",
    )
    rc.add_argument(
        "--owned",
        choices=("live", "all", "stored"),
        default="live",
        help="which partitions of each state to compare: live = those its worker owns "
        "now (from its heartbeat), against the whole topics, counting records not "
        "yet folded as state_behind; all = every partition (a stopped single "
        "worker); stored = every partition it ever folded, each at its own "
        "stored offsets (cannot tell a stuck state from a current one). "
        "Exit code: 0 exact, 1 difference, 3 no difference but a state behind",
    )
    rc.add_argument("--every", type=float, default=0, help="repeat the full re-fold every N seconds")
    rc.add_argument(
        "--continuous",
        action="store_true",
        help="run until stopped: every --interval seconds read only the records past its checkpoint "
        "(CASHPOS_RECONCILE_CHECKPOINT_DIR), fold them and compare with Redis; publishes each result",
    )
    rc.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --continuous (default CASHPOS_RECONCILE_INTERVAL_SECONDS)",
    )
    rc.set_defaults(fn=_reconcile)
    vf = sub.add_parser(
        "verify",
        help="re-compute a position's hash-chain head from the input topics alone and compare it with "
        "the API's (or a worker state's). Exit code: 0 match, 1 mismatch, 2 nothing to compare with, "
        "3 the reported chain is behind the topics",
    )
    vf.add_argument("org", help="org_code")
    vf.add_argument("account")
    vf.add_argument("fy", type=int, help="fiscal year")
    vf.add_argument("--api", help="the API's base URL (default: from CASHPOS_API_HOST/PORT)")
    vf.add_argument("--token", help="a token that reads the government (for the API)")
    vf.add_argument(
        "--state-dir", help="compare with this worker state directory (the owner's; opened read-only) instead"
    )
    vf.add_argument("--wait", type=float, default=20.0, help="seconds to wait for an owner to answer (503)")
    vf.set_defaults(fn=_verify)
    sub.add_parser("schema", help="print the event JSON Schema").set_defaults(fn=_schema)
    sub.add_parser("run", help="start the whole embedded stack").set_defaults(fn=_run)
    tk = sub.add_parser("token", help="create, list or revoke access tokens")
    tks = tk.add_subparsers(dest="action", required=True)
    tc = tks.add_parser("create", help="create a token and print it (once)")
    from access.policy import Role

    tc.add_argument("--role", required=True, choices=[r.value for r in Role])
    tc.add_argument(
        "--org",
        action="append",
        default=[],
        metavar="CODE[,CODE]",
        help="the government(s) in scope (a metropolitan code for provincial)",
    )
    tc.add_argument("--name", required=True, help="who or what holds the token")
    tc.add_argument(
        "--expires", type=int, default=90, metavar="DAYS", help="days until it expires (0: never)"
    )
    tc.add_argument("--rate", type=int, default=None, help="requests per second (default by role)")
    tks.add_parser("list", help="every token's record (JSON lines), never the token itself")
    tr = tks.add_parser("revoke", help="revoke a token by its id")
    tr.add_argument("id")
    tk.set_defaults(fn=_token)
    au = sub.add_parser("audit", help="print the audit log (JSON lines)")
    au.add_argument("--token-id")
    au.add_argument("--action")
    au.set_defaults(fn=_audit)
    sub.add_parser("redis-acl", help="print the Redis ACL rules of the service accounts").set_defaults(
        fn=_redis_acl
    )
    tp = sub.add_parser(
        "topics",
        help="create the namespace's topics, or check them (exit code: 0 good, 1 mismatch, 2 no broker)",
    )
    tp.add_argument(
        "action",
        choices=("create", "check"),
        help="create: what is missing, then check; check: read-only (docs/topics.md)",
    )
    tp.add_argument("--json", action="store_true", help="the findings as JSON")
    tp.set_defaults(fn=_topics)
    args = p.parse_args(argv)
    setup_logging()
    if args.cmd in SERVICES:
        capture_std_streams()  # a print of its own or of a library: a JSON line too
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
