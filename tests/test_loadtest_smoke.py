"""The Locust load test: its model adds up to the issue's day, and the smoke run passes.

The unit tests integrate the shapes (``loadtest.profile``, ``loadtest.plan``; no Locust import:
Locust's gevent monkey-patching must not leak into the test process). The integration test runs
``python -m loadtest.run --smoke --smoke-seconds 20`` (a fresh stack, 20 s of Locust: the smoke's
users and tx/s, for a third of the time; it checks the pipeline and the reports, not capacity) as
a subprocess.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.days import DAY, DAY_TYPES, SESSION_CLASSES
from loadtest.options import build_plan, parse_args
from loadtest.plan import Plan
from loadtest.profile import concurrent, sessions_between, tx_between, tx_rate

ROOT = Path(__file__).resolve().parent.parent
SMOKE_SECONDS = 20  # the CI smoke's length (make loadtest-smoke: 60); every endpoint is hit in it


def _integrate(f, t0: float, t1: float, step: float = 10.0) -> float:
    """Midpoint rule (exact for the piecewise-constant tx rate with step dividing an hour)."""
    n = int((t1 - t0) / step)
    return sum(f(t0 + (i + 0.5) * step) for i in range(n)) * step


def test_business_day_yields_150k_sessions_and_600k_transactions() -> None:
    day = DAY_TYPES["payroll"]
    # users(t) integrated over the day / mean session length = sessions (Little's law)
    sessions = sum(
        _integrate(lambda t, c=c: concurrent(day, c, t), 0, DAY, 30.0) / c.seconds for c in SESSION_CLASSES
    )
    assert sessions == pytest.approx(150_000, rel=0.02)
    transactions = _integrate(lambda t: tx_rate(day, t), 0, DAY)
    assert transactions == pytest.approx(600_000, rel=0.02)
    # and the closed forms agree
    assert sum(sessions_between(day, c, 0, DAY) for c in SESSION_CLASSES) == pytest.approx(150_000)
    assert tx_between(day, 0, DAY) == pytest.approx(600_000)


def test_compressed_shape_over_its_run_is_the_day_time_lapse() -> None:
    """--compress 48 plays 24 h in 30 min at real intensity: users and tx/s at wall time t are
    those of day time 48 t, so the run carries 1/48 of the day's transactions and its
    user-seconds are 1/48 of the day's (session-equivalents: 150k/48)."""
    plan = Plan(compress=48)
    assert plan.duration_s == pytest.approx(1800)
    tx = _integrate(plan.tps, 0, plan.duration_s, 1.0)
    assert tx == pytest.approx(600_000 / 48, rel=0.02)
    assert plan.expected_tx() == pytest.approx(600_000 / 48, rel=1e-6)
    user_seconds = {
        c.name: _integrate(lambda t, n=c.name: plan.users(t)[n], 0, plan.duration_s, 1.0)
        for c in SESSION_CLASSES
    }
    sessions = sum(user_seconds[c.name] / c.seconds for c in SESSION_CLASSES)
    assert sessions * 48 == pytest.approx(150_000, rel=0.02)
    # the busiest moment: ~2,500 officials logged in, 17.3 tx/s
    assert plan.peak_users() == pytest.approx(2_500, rel=0.03)
    assert plan.peak_tps() == pytest.approx(600_000 * 0.1037 / 3600, rel=0.01)


def test_heavy_day_is_ten_times_the_busiest_hour() -> None:
    day = Plan()
    heavy = Plan(mode="heavy", ramp_s=60, hold_s=600)
    assert heavy.total_users(heavy.duration_s) == pytest.approx(10 * day.peak_users(), rel=0.01)
    assert heavy.tps(heavy.duration_s) == pytest.approx(10 * day.peak_tps(), rel=1e-6)
    assert heavy.tps(30) == pytest.approx(5 * day.peak_tps(), rel=1e-6)  # half-way up the ramp
    assert heavy.expected_tx() == pytest.approx(10 * day.peak_tps() * (30 + 600), rel=1e-6)


@pytest.mark.parametrize("name", sorted(DAY_TYPES))
def test_every_day_type_adds_up(name: str) -> None:
    day = DAY_TYPES[name]
    assert sum(sessions_between(day, c, 0, DAY) for c in SESSION_CLASSES) == pytest.approx(day.sessions)
    assert tx_between(day, 0, DAY) == pytest.approx(day.transactions)
    assert sum(day.tx_hours) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("heavy", [False, True])
def test_a_shorter_smoke_is_the_same_load_for_less_time(heavy: bool) -> None:
    """--smoke-seconds shortens the smoke run without changing what it asks at each moment."""
    extra = ["--heavy"] if heavy else []
    full = build_plan(parse_args(["--smoke", *extra], None))
    short = build_plan(parse_args(["--smoke", "--smoke-seconds", str(SMOKE_SECONDS), *extra], None))
    assert full.duration_s == pytest.approx(60) and short.duration_s == pytest.approx(SMOKE_SECONDS)
    assert short.peak_users() == pytest.approx(full.peak_users(), rel=0.02)
    assert short.peak_tps() == pytest.approx(full.peak_tps(), rel=1e-6)
    if heavy:  # the same 10 s ramp, then the same plateau
        assert short.ramp_s == full.ramp_s == 10
        assert short.tps(SMOKE_SECONDS - 1) == pytest.approx(full.tps(59), rel=1e-6)
    else:  # the same hour, each moment of it shown for a third as long: the same mean tx/s
        assert short.expected_tx() / SMOKE_SECONDS == pytest.approx(full.expected_tx() / 60, rel=1e-6)


@pytest.mark.integration
def test_smoke_run_passes_and_writes_reports(tmp_path: Path) -> None:
    out = tmp_path / "report"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.run",
            "--smoke",
            "--smoke-seconds",
            str(SMOKE_SECONDS),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    tail = (p.stdout + p.stderr)[-6000:]
    assert p.returncode == 0, tail
    with open(out / "locust_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    assert int(rows[("", "Aggregated")]["Request Count"]) > 0, tail
    assert int(rows[("POST", "/v1/events")]["Request Count"]) > 0, tail
    assert int(rows[("GET", "/v1/positions/[org]/[account]")]["Request Count"]) > 0, tail
    assert any(t == "FRESHNESS" and int(r["Request Count"]) > 0 for (t, _), r in rows.items()), tail
    assert (out / "locust.html").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is True
    assert summary["requests"] > 0 and summary["transactions"]["accepted"] > 0
    assert summary["freshness"]["api"]["requests"] > 0
    assert (out / "summary.md").read_text().startswith("# cashpos load test: PASS")
