"""The forecast's measured quality (issue #18): ``python -m bench.forecast``.

A seeded simulated year (``cashpos.simulator``, ``known_flows=True``: payment orders, expected
receipts) is folded in this process as a worker folds it (each day's events, revenue and
expenditure topics apart, through ``streams.contract`` and ``state.ledger.Ledger``:
``state.partition.fold_partition``; the day's history by ``state.history.batch_history``; the
forecast's view of the known flows by ``state.forecast_book.ForecastBook``), day by day in
event time. At the end of each day D after the warm-up, for every government's ``general``
account, from the state then (``agents.forecast`` builds the same inputs: the position of its
open fiscal years, its open orders, commitments and expected receipts, its daily flows before D
through ``forecast_learn.day_flow``; today = D):

* ``engine``: the engine's ``expected`` closing cash of D + h (``state.forecast.forecast``,
  90-day horizon as served);
* ``flat``: the cash at D (``state.forecast.flat_baseline``);
* ``trend``: the least-squares line through the closes of D - 29 .. D (``trend_baseline``);
* ``known only`` (a diagnostic, not a claim): the engine's ``confirmed`` band (the known flows
  without what was learned).

Each is held against the actual closing cash of D + h, for h in 1, 7 and 30 days.

**Metric.** For each method and horizon: the sum over every (government, D) of ``|forecast -
actual|`` divided by the sum over the same pairs of the **month's outflow**: the general
account's payments plus transfers out (net of reversals; carries at the fiscal-year close move
no money and do not count) over the 30 days ending on the target day D + h. So "12.00 %" means
the forecasts erred, in total, by 12 % of the money that left the accounts in the month before
their target days; governments weigh by their size. Integer arithmetic throughout: the
numerator and denominator are printed as integers (KRW), the percentages are floored to the
basis point and the ratios ``engine / baseline`` (the engine's error divided by the baseline's,
same denominator) floored to the thousandth. The run exits 1 unless the engine's 30-day error
is below both baselines' (the issue's claim, made checkable).

**Sample.** All 243 governments at ``--events-per-day`` national events a day (default 20,000,
1/30 of the reference 600,000: the full volume would be 219 million events a year, about an
hour of simulation and fold alone at the rate measured here). The simulator keeps each event's size and thins the count,
its scheduled flows scale with the density (``cashpos.simulator.known``), so every government
and account is sampled at the same rate; a thinner stream is lumpier day to day than the real
one, which makes every method's relative error larger, not the comparison unfair.
``--orgs`` picks governments instead (their events only: nothing else touches their positions).

Two processes: this one simulates and folds; ``--jobs`` others learn and forecast, each a share
of the governments. They are started before the simulator exists and get each day's closes,
flows and inputs: what the events made, nothing of the generator (issue #18: the forecast learns
from events only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import multiprocessing
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Final

import msgspec

from cashpos.calendar import KST, date_day, day_date, day_start_ms
from cashpos.names import CLOSE_KIND, EXPENDITURE, REVENUE, Topics, side_of_kind
from cashpos.refdata import governments
from cashpos.simulator import REFERENCE_EVENTS_PER_DAY, REVERSAL_CANDIDATES, Simulator
from state.forecast import HORIZON_DAYS, Inputs, flat_baseline, forecast, trend_baseline
from state.forecast_book import ForecastBook
from state.forecast_learn import WINDOW_DAYS, DayFlow, day_flow
from state.history import DayFlows, batch_history
from state.ledger import Changes, Ledger, PosKey
from state.partition import fold_partition
from streams.lean_records import LeanRecord, RawRecord

GENERAL: Final = "general"
HORIZONS: Final = (1, 7, 30)
TREND_DAYS: Final = 30  # the trend baseline's closes: D - 29 .. D
MONTH_DAYS: Final = 30  # the month's outflow: the 30 days ending on the target day
METHODS: Final = ("engine", "flat", "trend", "known_only")
BASELINES: Final = ("flat", "trend")
TOPICS: Final = Topics("bench")


@dataclass(frozen=True, slots=True)
class Config:
    seed: int = 1
    year: int = 2026
    events_per_day: int = 20_000
    days: int = 365  # simulated days from 1 January of ``year``
    warmup_days: int = 90  # the first forecast is made at the end of day ``warmup_days`` + 1
    orgs: tuple[str, ...] = ()  # () = all 243
    jobs: int = 1  # forecasting processes; 0: in this one

    @property
    def first_day(self) -> int:
        return date_day(dt.date(self.year, 1, 1))

    @property
    def last_day(self) -> int:
        return self.first_day + self.days - 1

    @property
    def forecast_days(self) -> range:
        """The days D at whose end a forecast is made: each has an actual for every horizon."""
        return range(self.first_day + self.warmup_days, self.last_day - max(HORIZONS) + 1)


# -- what the folding process hands the forecasting one, per day ----------------------------------


class OrgDay(msgspec.Struct, frozen=True, array_like=True):
    """One government's general account at the end of a day."""

    org: str
    cash: int  # closing cash (its open fiscal years)
    flow: DayFlow | None  # the day's flows as the forecast learns them (None: no flow)
    inputs: Inputs | None  # the engine's inputs, without history (forecast days only)


class Day(msgspec.Struct, frozen=True, array_like=True):
    day: int
    orgs: list[OrgDay]


class Prediction(msgspec.Struct, frozen=True, array_like=True):
    """What each method forecast at the end of ``day`` for ``day + h``, per horizon."""

    org: str
    day: int
    engine: tuple[int, ...]
    flat: tuple[int, ...]
    trend: tuple[int, ...]
    known_only: tuple[int, ...]


_enc = msgspec.msgpack.Encoder()
_dec_day = msgspec.msgpack.Decoder(Day | None)
_dec_predictions = msgspec.msgpack.Decoder(list[Prediction])


# -- simulate and fold ----------------------------------------------------------------------------


def _field(raw: bytes, name: bytes) -> bytes:
    """A string field of a simulator event's JSON (compact, one level): no decode needed."""
    i = raw.index(b'"' + name + b'":"') + len(name) + 4
    return raw[i : raw.index(b'"', i)]


@dataclass(slots=True)
class Stats:
    events: int = 0
    applied: int = 0
    dead: dict[str, int] = field(default_factory=dict)  # rejection reason -> count
    fold_s: float = 0.0
    simulate_s: float = 0.0


class Folder:
    """The year's events through the worker's fold, day by day, with the history's daily flows
    and the forecast's book of known flows. A day's journal entries are dropped once twice
    ``REVERSAL_CANDIDATES`` events were simulated after it (memory: a year is millions of
    entries). They serve duplicates (the simulator makes none) and reversals, whose targets
    the simulator draws from its last ``REVERSAL_CANDIDATES`` events; a reversal of a dropped
    entry would be refused, and ``Stats.dead`` would show it."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.orgs = cfg.orgs or tuple(governments())
        start = dt.datetime.combine(day_date(cfg.first_day), dt.time(), KST)
        # rate / speed events per simulated second: events_per_day a day, in the long run
        self.sim = Simulator(
            seed=cfg.seed, start=start, speed=86_400.0, rate=float(cfg.events_per_day), known_flows=True
        )
        self.needles = [b'"org_code":"' + o.encode() + b'"' for o in cfg.orgs]
        self.ledger = Ledger()
        self.book = ForecastBook()
        for org in self.orgs:
            self.book.load(org, [], [], [])
        self.wanted = set(self.orgs)
        self.offsets = {REVENUE: 0, EXPENDITURE: 0}
        self.recent: deque[tuple[list[tuple[str, str]], int]] = deque()  # (journal keys, events after)
        self.stats = Stats()

    def _fold(self, raws: list[bytes]) -> dict[tuple[PosKey, int], DayFlows]:
        simulated = len(raws)
        if self.needles:
            raws = [r for r in raws if any(n in r for n in self.needles)]
        by_side: dict[str, list[RawRecord]] = {REVENUE: [], EXPENDITURE: []}
        for raw in raws:
            kind = _field(raw, b"kind").decode()
            org = _field(raw, b"org_code")
            for side in (REVENUE, EXPENDITURE) if kind == CLOSE_KIND else (side_of_kind(kind),):
                recs = by_side[side]
                recs.append(LeanRecord(self.offsets[side] + len(recs), 0, org, raw))
        for side, recs in by_side.items():
            self.offsets[side] += len(recs)
        t = time.perf_counter()
        for side, recs in by_side.items():
            if recs:
                applied, dead = fold_partition(self.ledger, recs, TOPICS.for_side(side), 0, side, {}, 1 << 20)
                self.stats.events += len(recs)
                self.stats.applied += applied
                for rej, _r in dead:
                    self.stats.dead[rej.reason] = self.stats.dead.get(rej.reason, 0) + 1
        changes = self.ledger.take_changes()
        self.book.apply(changes)
        # the history of the general accounts only (the others are not forecast here)
        index = {pk: rows for pk, rows in changes.index.items() if pk[1] == GENERAL and pk[0] in self.wanted}
        flows, _chains = batch_history(Changes(journal=changes.journal, index=index), {})
        self.recent = deque((keys, after + simulated) for keys, after in self.recent)
        while self.recent and self.recent[0][1] >= 2 * REVERSAL_CANDIDATES:
            for key in self.recent.popleft()[0]:
                self.ledger.journal.pop(key, None)
        self.recent.append((list(changes.journal), 0))
        self.stats.fold_s += time.perf_counter() - t
        return flows

    def _closed(self, org: str) -> int:
        """The last fiscal year both sides closed (as ``agents.forecast``)."""
        rev = self.ledger.closed[REVENUE].get(org)
        exp = self.ledger.closed[EXPENDITURE].get(org)
        return -1 if rev is None or exp is None else min(rev, exp)

    def days(self) -> Iterator[Day]:
        """Each simulated day's end, for the governments of the run (the opening balances,
        dated the second before the start, are folded first and are their own day)."""
        cfg = self.cfg
        forecast_days = set(cfg.forecast_days)
        self._fold(self.sim.opening_balances())
        for day in range(cfg.first_day, cfg.last_day + 1):
            t = time.perf_counter()
            # every event before the next day's 00:00 KST (event times are float seconds)
            raws = self.sim.until(day_start_ms(day + 1) / 1000 - 1e-6, 1 << 62)
            self.stats.simulate_s += time.perf_counter() - t
            flows = self._fold(raws)
            general: dict[str, DayFlows] = {}
            for ((org, acc, _fy), d), f in flows.items():
                if acc == GENERAL and d == day:
                    seen = general.get(org)
                    if seen is None:
                        general[org] = f
                    else:
                        seen.add(f)
            rows = []
            for org in self.orgs:
                inputs = self.book.inputs(org, GENERAL, self.ledger.positions, self._closed(org))
                today = general.get(org)
                rows.append(
                    OrgDay(
                        org,
                        inputs.cash,
                        None if today is None else day_flow(day, today),
                        inputs if day in forecast_days else None,
                    )
                )
            yield Day(day, rows)


def outflow(f: DayFlow | None) -> int:
    """A day's cash out of the account: every payment (against a commitment or not) and
    transfer out, net of reversals (``day_flow`` splits payments into these two columns)."""
    return 0 if f is None else f.payments + f.committed_paid + f.transfers_out


# -- learn and forecast ----------------------------------------------------------------------------


class Forecaster:
    """Each government's past as the forecasting side sees it (closes and daily flows, from the
    events only), and the four methods at the end of each forecast day."""

    def __init__(self, first_day: int) -> None:
        self.first_day = first_day  # history_from: the first complete day
        self.history: dict[str, deque[DayFlow]] = {}
        self.closes: dict[str, deque[int]] = {}

    def take(self, day: Day) -> list[Prediction]:
        out = []
        for row in day.orgs:
            hist = self.history.setdefault(row.org, deque())
            closes = self.closes.setdefault(row.org, deque(maxlen=TREND_DAYS))
            closes.append(row.cash)
            if row.inputs is not None:
                while hist and hist[0].day < day.day - WINDOW_DAYS:
                    hist.popleft()
                out.append(self._predict(day.day, row, tuple(hist), tuple(closes)))
            if row.flow is not None:  # learned from tomorrow on: today is not in the history
                hist.append(row.flow)
        return out

    def _predict(
        self, today: int, row: OrgDay, hist: tuple[DayFlow, ...], closes: Sequence[int]
    ) -> Prediction:
        assert row.inputs is not None
        inputs = msgspec.structs.replace(row.inputs, history=hist, history_from=self.first_day)
        f = forecast(inputs, today, HORIZON_DAYS)
        flat = flat_baseline(row.cash, today).cash
        trend = trend_baseline(closes, today).cash
        return Prediction(
            row.org,
            today,
            engine=tuple(f.expected.cash[h] for h in HORIZONS),
            flat=tuple(flat[h] for h in HORIZONS),
            trend=tuple(trend[h] for h in HORIZONS),
            known_only=tuple(f.confirmed.cash[h] for h in HORIZONS),
        )


def _forecasting(conn: Connection, first_day: int) -> None:
    """A forecasting process: days in, predictions out once the days end (None)."""
    gc.disable()  # no reference cycles here; a growing heap would be rescanned for nothing
    fc = Forecaster(first_day)
    out: list[Prediction] = []
    while (day := _dec_day.decode(conn.recv_bytes())) is not None:
        out += fc.take(day)
    conn.send_bytes(_enc.encode(out))
    conn.close()


# -- the score ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Sums over (government, forecast day) pairs, one method and horizon: integer KRW."""

    abs_error: int = 0
    error: int = 0  # forecast - actual: > 0, too high
    outflow: int = 0  # the month's outflow before each target day
    n: int = 0

    def add(self, error: int, month_outflow: int) -> None:
        self.abs_error += abs(error)
        self.error += error
        self.outflow += month_outflow
        self.n += 1


def bp(num: int, den: int) -> int:
    """``num / den`` in basis points, floored (0 when there is nothing to divide by)."""
    return num * 10_000 // den if den else 0


def pct(num: int, den: int) -> str:
    b = bp(num, den)
    sign = "-" if b < 0 else ""
    return f"{sign}{abs(b) // 100}.{abs(b) % 100:02d} %"


def ratio(num: int, den: int) -> str:
    """``num / den`` floored to the thousandth."""
    m = num * 1000 // den if den else 0
    return f"{m // 1000}.{m % 1000:03d}"


@dataclass(slots=True)
class Score:
    """Per (method, horizon) and per (method, horizon, month of the forecast day) tallies, and
    per government the 30-day absolute errors (who the engine beats)."""

    total: dict[tuple[str, int], Tally] = field(default_factory=dict)
    monthly: dict[tuple[str, int, str], Tally] = field(default_factory=dict)
    per_org: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(
        self,
        preds: Sequence[Prediction],
        closes: dict[str, dict[int, int]],
        outflows: dict[str, dict[int, int]],
    ) -> None:
        month_out: dict[tuple[str, int], int] = {}

        def month_outflow(org: str, target: int) -> int:
            key = (org, target)
            v = month_out.get(key)
            if v is None:
                days = outflows[org]
                v = month_out[key] = sum(days.get(d, 0) for d in range(target - MONTH_DAYS + 1, target + 1))
            return v

        for p in preds:
            month = day_date(p.day).strftime("%Y-%m")
            org_abs = self.per_org.setdefault(p.org, dict.fromkeys(METHODS, 0))
            for i, h in enumerate(HORIZONS):
                target = p.day + h
                actual = closes[p.org][target]
                mo = month_outflow(p.org, target)
                for m in METHODS:
                    err = getattr(p, m)[i] - actual
                    self.total.setdefault((m, h), Tally()).add(err, mo)
                    self.monthly.setdefault((m, h, month), Tally()).add(err, mo)
                    if h == max(HORIZONS):
                        org_abs[m] += abs(err)

    def engine_beats_both(self) -> bool:
        h = max(HORIZONS)
        e = self.total[("engine", h)].abs_error
        return all(e < self.total[(b, h)].abs_error for b in BASELINES)


# -- the run --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    cfg: Config
    score: Score
    stats: Stats
    predictions: list[Prediction]
    closes: dict[str, dict[int, int]]  # government -> day -> closing cash
    outflows: dict[str, dict[int, int]]  # government -> day -> outflow
    seconds: float
    forecast_s: float = 0.0  # in this process (jobs 0)

    @property
    def forecasts(self) -> int:
        """Per method and horizon."""
        return len(self.predictions)


def run(cfg: Config, progress: Callable[[str], None] = lambda _s: None) -> Result:
    """Simulate, fold, forecast and score ``cfg``'s year."""
    if cfg.days < cfg.warmup_days + max(HORIZONS) + 1:
        raise ValueError("days must leave room for the warm-up and the longest horizon")
    t0 = time.perf_counter()
    was_enabled = gc.isenabled()
    gc.disable()  # millions of live objects and no cycles: a full collection would rescan them all
    orgs = cfg.orgs or tuple(governments())
    closes: dict[str, dict[int, int]] = {org: {} for org in orgs}
    outflows: dict[str, dict[int, int]] = {org: {} for org in orgs}
    preds: list[Prediction] = []
    forecast_s = 0.0
    jobs = min(cfg.jobs, len(orgs))
    pipes: list[tuple[Connection, BaseProcess]] = []
    try:
        if jobs:  # forked before the simulator exists: nothing of it in their memory
            ctx = multiprocessing.get_context("fork")
            for _ in range(jobs):
                here, there = ctx.Pipe()
                proc = ctx.Process(target=_forecasting, args=(there, cfg.first_day), daemon=True)
                proc.start()
                there.close()
                pipes.append((here, proc))
        folder = Folder(cfg)
        share = {org: i % max(jobs, 1) for i, org in enumerate(orgs)}
        fc = Forecaster(cfg.first_day)
        for day in folder.days():
            for row in day.orgs:
                closes[row.org][day.day] = row.cash
                outflows[row.org][day.day] = outflow(row.flow)
            if jobs:
                for j, (conn, _proc) in enumerate(pipes):
                    conn.send_bytes(_enc.encode(Day(day.day, [r for r in day.orgs if share[r.org] == j])))
            else:
                t = time.perf_counter()
                preds += fc.take(day)
                forecast_s += time.perf_counter() - t
            d = day_date(day.day)
            if d.day == 1:
                progress(
                    f"{d:%Y-%m-%d}: {folder.stats.events:,} events folded, {time.perf_counter() - t0:.0f} s"
                )
        for conn, _proc in pipes:
            conn.send_bytes(_enc.encode(None))
        for conn, p in pipes:
            preds += _dec_predictions.decode(conn.recv_bytes())
            p.join()
    finally:
        for conn, p in pipes:
            conn.close()
            if p.is_alive():
                p.kill()
        if was_enabled:
            gc.enable()
    score = Score()
    score.add(preds, closes, outflows)
    return Result(cfg, score, folder.stats, preds, closes, outflows, time.perf_counter() - t0, forecast_s)


# -- the report -----------------------------------------------------------------------------------

LABELS: Final = {
    "engine": "engine (expected band)",
    "flat": "flat: cash held",
    "trend": "trend: last 30 closes",
    "known_only": "(known flows only)",
}


def report(r: Result) -> str:
    cfg, s = r.cfg, r.score
    fdays = cfg.forecast_days
    n_orgs = len(cfg.orgs) or len(governments())
    longest = max(HORIZONS)
    head = (
        f"bench.forecast: seed {cfg.seed}, {day_date(cfg.first_day)} .. {day_date(cfg.last_day)}, "
        f"{'all ' if not cfg.orgs else ''}{n_orgs} governments' general accounts, {cfg.events_per_day:,} "
        f"national events a day (1/{REFERENCE_EVENTS_PER_DAY / cfg.events_per_day:.0f} of the reference)"
    )
    folded = (
        f"folded {r.stats.events:,} records ({r.stats.applied:,} applied, refused: {r.stats.dead or 'none'}); "
        f"forecasts at the end of {day_date(fdays[0])} .. {day_date(fdays[-1])}: {len(fdays)} days x "
        f"{n_orgs} = {r.forecasts:,} per method and horizon"
    )
    took = (
        f"{r.seconds:.0f} s (simulate {r.stats.simulate_s:.0f} s, fold {r.stats.fold_s:.0f} s"
        + (f", forecast {r.forecast_s:.0f} s" if r.forecast_s else "")
        + f"; {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})"
    )
    lines = [head, folded, took, ""]
    lines.append(
        "mean absolute error as a share of the month's outflow (sum |forecast - actual| / sum of the "
        "30 days' outflow up to each target day, KRW; bias: the same with the signed errors)"
    )
    lines += ["", "| horizon | method | sum abs error | sum outflow | share | bias | engine / this |"]
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for h in HORIZONS:
        engine = s.total[("engine", h)].abs_error
        for m in METHODS:
            t = s.total[(m, h)]
            rel = "" if m == "engine" else ratio(engine, t.abs_error)
            lines.append(
                f"| {h} d | {LABELS[m]} | {t.abs_error:,} | {t.outflow:,} | {pct(t.abs_error, t.outflow)} | "
                f"{pct(t.error, t.outflow)} | {rel} |"
            )
    lines += ["", f"by month of the forecast day, {longest}-day horizon (shares of the month's outflow)", ""]
    lines.append("| month | engine | flat | trend | known only | engine / flat | engine / trend |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for mo in sorted({k[2] for k in s.monthly}):
        ts = {m: s.monthly[(m, longest, mo)] for m in METHODS}
        lines.append(
            f"| {mo} | "
            + " | ".join(pct(ts[m].abs_error, ts[m].outflow) for m in METHODS)
            + f" | {ratio(ts['engine'].abs_error, ts['flat'].abs_error)}"
            + f" | {ratio(ts['engine'].abs_error, ts['trend'].abs_error)} |"
        )
    orgs = s.per_org.values()
    beats = {b: sum(1 for o in orgs if o["engine"] < o[b]) for b in BASELINES}
    engine = s.total[("engine", longest)].abs_error
    verdict = "the engine beats both" if s.engine_beats_both() else "the engine does NOT beat both"
    lines += [
        "",
        f"governments whose {longest}-day error the engine beats: flat {beats['flat']} of {len(orgs)}, "
        + f"trend {beats['trend']} of {len(orgs)}",
        f"engine / flat = {ratio(engine, s.total[('flat', longest)].abs_error)}, "
        + f"engine / trend = {ratio(engine, s.total[('trend', longest)].abs_error)} "
        + f"at {longest} days: {verdict}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    d = Config()
    ap = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--year", type=int, default=d.year)
    ap.add_argument("--events-per-day", type=int, default=d.events_per_day)
    ap.add_argument("--days", type=int, default=d.days)
    ap.add_argument("--warmup-days", type=int, default=d.warmup_days)
    ap.add_argument("--orgs", default="", help="comma-separated org codes (default: all 243)")
    ap.add_argument("--jobs", type=int, default=d.jobs, help="forecasting processes (0: in this one)")
    a = ap.parse_args(argv)
    cfg = Config(
        seed=a.seed,
        year=a.year,
        events_per_day=a.events_per_day,
        days=a.days,
        warmup_days=a.warmup_days,
        orgs=tuple(o for o in a.orgs.split(",") if o),
        jobs=a.jobs,
    )
    r = run(cfg, lambda s: print(s, file=sys.stderr, flush=True))
    print(report(r))
    return 0 if r.score.engine_beats_both() else 1


if __name__ == "__main__":
    sys.exit(main())
