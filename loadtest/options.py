"""The command line of ``python -m loadtest.run`` and the plan it asks for."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from loadtest.days import DAY_TYPES, DEFAULT_DAY, HOUR
from loadtest.plan import Plan


def cpus(spec: str | None) -> set[int] | None:
    """``"0,2-3"`` -> {0, 2, 3}; None for no pinning."""
    if not spec:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def parse_args(argv: list[str] | None, description: str | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.run",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--compress", type=float, default=48.0, help="play the day N times faster (48: 24 h in 30 min) [48]"
    )
    ap.add_argument(
        "--day-type",
        choices=sorted(DAY_TYPES),
        default=DEFAULT_DAY,
        help="payroll (default, the 20th), ordinary, month_end, jan2, december",
    )
    ap.add_argument("--window", default=None, help="KST hours of the day to play, e.g. 8-19 [0-24]")
    ap.add_argument("--heavy", action="store_true", help="10x the busiest hour instead of the day")
    ap.add_argument("--heavy-factor", type=float, default=10.0)
    ap.add_argument("--ramp", type=float, default=None, help="heavy: ramp seconds [60; smoke 10]")
    ap.add_argument("--hold", type=float, default=None, help="heavy: hold seconds [900; smoke 50]")
    ap.add_argument("--scale", type=float, default=None, help="sets --user-scale and --tx-scale")
    ap.add_argument("--user-scale", type=float, default=None, help="x concurrent users [1]")
    ap.add_argument("--tx-scale", type=float, default=None, help="x transactions/s [1]")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="60 s (--smoke-seconds): 09-10h at 60x (or a 10 s ramp and a plateau), small, CI thresholds",
    )
    ap.add_argument(
        "--smoke-seconds",
        type=float,
        default=60.0,
        help="--smoke: the run's length (the same intensity, only shorter or longer) [60]",
    )
    ap.add_argument(
        "--locust-processes",
        type=int,
        default=1,
        help="Locust processes (>1: master + N workers via --processes) [1]",
    )
    ap.add_argument("--source-users", type=int, default=0, help="SourceSystem users [from the plan]")
    ap.add_argument("--probe-every", type=int, default=None, help="probe 1 in N posts [50; smoke 10]")
    ap.add_argument(
        "--spawn-login",
        type=float,
        default=None,
        help="share of spawned users that start with a login instead of mid-session [0; smoke 1]",
    )
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--host", default=None, help="test this API instead of starting a stack")
    ap.add_argument(
        "--admin-token",
        default=os.environ.get("CASHPOS_ADMIN_TOKEN"),
        help="with --host: an admin token to create the run's tokens through the API "
        "(revoked after the run) [$CASHPOS_ADMIN_TOKEN]",
    )
    ap.add_argument(
        "--tokens",
        type=Path,
        default=None,
        help="with --host: a JSON file of ready-made tokens (national, integration, "
        "source, directors: {org: token}) instead of --admin-token",
    )
    ap.add_argument("--out", type=Path, default=None, help="report directory [artifacts/loadtest/<run>]")
    ap.add_argument("--locust-cpus", default=None, help="pin Locust to these CPUs, e.g. 1")
    ap.add_argument("--stack-cpus", default=None, help="pin the stack to these CPUs, e.g. 0")
    ap.add_argument("--keep-state", action="store_true", help="keep var/loadtest/<run>/ state")
    ap.add_argument("--progress-every", type=float, default=30.0)
    return ap.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    """The plan the options ask for; fills in the defaults of ``--probe-every`` and
    ``--spawn-login``. ``--smoke`` changes the defaults to a short run (``--smoke-seconds``,
    60 s) at a small scale."""
    us = args.user_scale if args.user_scale is not None else args.scale
    ts = args.tx_scale if args.tx_scale is not None else args.scale
    smoke = args.smoke

    def given(value: float | None, full: float, small: float) -> float:
        """``value`` if the command line gave it, else the full run's or the smoke run's default."""
        if value is not None:
            return value
        return small if smoke else full

    if args.probe_every is None:
        args.probe_every = 10 if smoke else 50
    if args.spawn_login is None:
        args.spawn_login = 1.0 if smoke else 0.0
    if args.smoke_seconds <= 0:
        raise SystemExit("--smoke-seconds must be > 0")
    smoke_s = args.smoke_seconds
    if args.heavy:  # 10x the busiest hour; smoke: scaled to ~50 users and ~9 tx/s, 10 s ramp + the rest
        ramp_s = given(args.ramp, 60.0, min(10.0, smoke_s / 2))
        return Plan(
            day_type=args.day_type,
            mode="heavy",
            heavy_factor=args.heavy_factor,
            user_scale=given(us, 1.0, 0.002),
            tx_scale=given(ts, 1.0, 0.05),
            ramp_s=ramp_s,
            hold_s=given(args.hold, 900.0, smoke_s - ramp_s),
        )
    # the day's window; smoke: the morning peak (09-10 KST) in --smoke-seconds (60: at 60x): ~50
    # users and ~6-8 tx/s (the compression changes the length, not the intensity)
    start, _, end = (args.window or ("9-10" if smoke else "0-24")).partition("-")
    return Plan(
        day_type=args.day_type,
        compress=HOUR * (float(end) - float(start)) / smoke_s if smoke else args.compress,
        start_h=float(start),
        end_h=float(end),
        user_scale=given(us, 1.0, 0.02),
        tx_scale=given(ts, 1.0, 0.5),
    )
