"""``python -m bench.forecast`` does not rot: a few governments over a few weeks run end to end
(in this process and split over a forecasting process, to the same figures), every prediction's
baselines are what their definitions say of the closes folded, and the score is the metric it
claims (sums of absolute errors over sums of the month's outflow) against brute force. No claim
about the forecast's quality here: that is the benchmark's (docs/benchmarks.md)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.forecast import (
    HORIZONS,
    METHODS,
    MONTH_DAYS,
    TREND_DAYS,
    Config,
    Prediction,
    Score,
    main,
    pct,
    ratio,
    report,
    run,
)
from state.forecast import trend_baseline

ORGS = ("6110000", "4170000", "3000000")  # 서울특별시, 양평군, 종로구: sizes and kinds apart
TINY = Config(seed=3, events_per_day=2_000, days=45, warmup_days=10, orgs=ORGS, jobs=0)


def test_a_tiny_year_runs_end_to_end_and_its_baselines_are_their_definitions() -> None:
    r = run(TINY)
    days = TINY.forecast_days
    assert len(days) == 45 - 10 - max(HORIZONS)
    assert r.forecasts == len(days) * len(ORGS)
    assert r.stats.events > 0 and r.stats.applied == r.stats.events and not r.stats.dead
    for p in r.predictions:
        closes = r.closes[p.org]
        assert p.flat == (closes[p.day],) * len(HORIZONS)
        past = [closes[d] for d in range(max(p.day - TREND_DAYS + 1, TINY.first_day), p.day + 1)]
        trend = trend_baseline(past, p.day).cash
        assert p.trend == tuple(trend[h] for h in HORIZONS)
    for (m, h), t in r.score.total.items():
        assert m in METHODS and h in HORIZONS
        assert t.n == r.forecasts and t.outflow > 0
    text = report(r)
    assert "| 30 d | engine (expected band) |" in text and "engine / flat = " in text
    # split over a forecasting process: the same predictions, the same score
    split = run(dataclasses.replace(TINY, jobs=2))
    assert sorted(split.predictions, key=lambda p: (p.org, p.day)) == sorted(
        r.predictions, key=lambda p: (p.org, p.day)
    )
    assert split.score.total == r.score.total


def test_the_command_line_exits_by_the_claim(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["--seed", "3", "--events-per-day", "2000", "--days", "45", "--warmup-days", "10"]
        + ["--orgs", ",".join(ORGS[:1]), "--jobs", "0"]
    )
    out = capsys.readouterr().out
    assert ("the engine beats both" in out) == (code == 0)
    assert ("the engine does NOT beat both" in out) == (code == 1)


def test_the_forecast_does_not_load_the_simulator() -> None:
    """Issue #18: the forecast learns from events only (the benchmark alone runs the generator)."""
    code = (
        "import sys, state.forecast, state.forecast_learn, state.forecast_book, agents.forecast; "
        "print(sorted(m for m in sys.modules if m.startswith('cashpos.simulator')))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


@st.composite
def books(draw: st.DrawFn) -> tuple[list[Prediction], dict[str, dict[int, int]], dict[str, dict[int, int]]]:
    orgs = ["a", "b"][: draw(st.integers(1, 2))]
    first, last = 100, 100 + MONTH_DAYS + max(HORIZONS) + 5
    money = st.integers(-(10**12), 10**12)
    closes = {o: {d: draw(money) for d in range(first, last + 1)} for o in orgs}
    outflows = {o: {d: draw(st.integers(0, 10**11)) for d in range(first, last + 1)} for o in orgs}
    preds = []
    for o in orgs:
        for day in draw(st.sets(st.integers(first + MONTH_DAYS, last - max(HORIZONS)), max_size=4)):
            preds.append(Prediction(o, day, *(tuple(draw(money) for _ in HORIZONS) for _ in METHODS)))
    return preds, closes, outflows


@settings(max_examples=60, deadline=None)
@given(books())
def test_the_score_is_the_sum_of_absolute_errors_over_the_sum_of_month_outflows(
    book: tuple[list[Prediction], dict[str, dict[int, int]], dict[str, dict[int, int]]],
) -> None:
    preds, closes, outflows = book
    s = Score()
    s.add(preds, closes, outflows)
    for i, h in enumerate(HORIZONS):
        for m in METHODS:
            errs = [getattr(p, m)[i] - closes[p.org][p.day + h] for p in preds]
            month = [sum(outflows[p.org][p.day + h - k] for k in range(MONTH_DAYS)) for p in preds]
            if not preds:
                assert (m, h) not in s.total
                continue
            t = s.total[(m, h)]
            assert (t.abs_error, t.error, t.outflow, t.n) == (
                sum(map(abs, errs)),
                sum(errs),
                sum(month),
                len(preds),
            )
    if preds:
        e = s.total[("engine", max(HORIZONS))].abs_error
        assert s.engine_beats_both() == all(
            e < s.total[(b, max(HORIZONS))].abs_error for b in ("flat", "trend")
        )


@given(st.integers(-(10**15), 10**15), st.integers(1, 10**15))
def test_percentages_and_ratios_are_floored_integers(num: int, den: int) -> None:
    text = pct(num, den)
    value = int(text.rstrip(" %").replace(".", "").lstrip("-")) * (-1 if text.startswith("-") else 1)
    assert value == num * 10_000 // den  # basis points, floored, sign kept
    assert ratio(abs(num), den) == f"{abs(num) * 1000 // den // 1000}.{abs(num) * 1000 // den % 1000:03d}"
