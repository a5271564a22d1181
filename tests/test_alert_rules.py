"""The alert rules (the ``alerts`` package), pure: no broker, Redis or disk.

Events go through the real contract check and the real ledger fold; the book sees each batch's
``Changes`` exactly as the worker's hook does, and its records go to a dict standing in for
RocksDB, so a restart (and a crash between fold and write) can be replayed from them. Every
expected figure below is worked by hand from the rules in docs/alerts.md. Rule 3 projects from
the forecast where a test wires it (``Forecasts``, as the worker does), else from the
commitments alone.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.book import AlertBook
from alerts.config import AlertConfig, Operational, Override, Resolver, decode_config, load_config
from alerts.model import (
    BELOW_FLOOR,
    LAG,
    LAPSE_STAGE,
    PROJECTED,
    SHORTFALL,
    STALE,
    YEAR_END,
    AlertChange,
    alert_dict,
)
from cashpos.calendar import KST, date_day, day_date, is_business_day, kst_day
from cashpos.names import Topics
from cashpos.simulator import StagedSimulator, shortfall_scenario
from state import layout
from state.forecast import HORIZON_DAYS, Forecast, forecast
from state.forecast_book import ForecastBook
from state.forecast_learn import WINDOW_DAYS, day_flow, learn
from state.history import DayFlows, batch_history
from state.ledger import APPLIED, Changes, Ledger
from streams.contract import Rejection, check_message, year_close
from tests.events import event, first_account

ORG = "5260000"  # 울릉군
FUND = first_account(ORG, "fund")


# an event, or a year's close with the input topic it is read from
Raw = bytes | tuple[bytes, str]


def at(day: str, hm: str = "10:00") -> str:
    return f"{day}T{hm}:00+09:00"


def ms(day: str, hm: str = "10:00") -> int:
    return int(dt.datetime.fromisoformat(at(day, hm)).timestamp() * 1000)


def d(base: str, days: int) -> str:
    return (dt.date.fromisoformat(base) + dt.timedelta(days=days)).isoformat()


def ev(eid: str, kind: str, amount: int, when: str, *, org: str = ORG, **kw: Any) -> bytes:
    return event(eid, kind, amount, org=org, at=when, **kw)


class Forecasts:
    """The worker's forecast hook in miniature (``agents.forecast``), on the harness's ledger:
    each government's open known flows (``ForecastBook``: loaded, then fed each batch), its day
    (the latest event's), every account's daily flows (``state.history``) to learn from, and an
    account's forecast on that day (``state.forecast``), which rule 3 reads."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.book = ForecastBook()
        self.clock: dict[str, int] = {}
        self.days: dict[tuple[str, str], dict[int, DayFlows]] = {}  # (org, account) -> its days

    def load(self, org: str) -> None:
        led = self.ledger

        def mine(items: dict[tuple[str, str], Any]) -> list[tuple[str, Any]]:
            return [(k[1], v) for k, v in items.items() if k[0] == org]

        self.book.load(org, mine(led.commitments), mine(led.orders), mine(led.schedules))
        last = [p.last_event_ms for (o, _a, _f), p in led.positions.items() if o == org]
        if last:
            self.clock[org] = kst_day(max(last))

    def apply(self, changes: Changes) -> None:
        self.book.apply(changes)
        flows, _chains = batch_history(changes, {})
        for ((org, acc, _fy), day), f in flows.items():
            days = self.days.setdefault((org, acc), {})
            if day in days:
                days[day].add(f)
            else:
                days[day] = f
        for (org, _acc, _fy), rows in changes.index.items():
            if org in self.book.orgs:
                self.clock[org] = max(self.clock.get(org, -1), kst_day(max(r[0] for r in rows)))

    def __call__(self, org: str, account: str) -> Forecast | None:
        today = self.clock.get(org)
        if today is None or org not in self.book.orgs:
            return None
        sides = [years.get(org) for years in self.ledger.closed.values()]
        closed = min(y for y in sides if y is not None) if None not in sides else -1
        days = self.days.get((org, account), {})
        history = tuple(
            day_flow(d, f, f.receipts_scheduled)
            for d, f in sorted(days.items())
            if today - WINDOW_DAYS - 1 <= d < today
        )
        # the first day is partial (the opening balance): learned from the day after it
        learned = learn(history, today, min(days) + 1 if days else None)
        inputs = self.book.inputs(org, account, self.ledger.positions, closed)
        return forecast(msgspec.structs.replace(inputs, learned=learned), today, HORIZON_DAYS)


class Harness:
    """The worker's hook in miniature: fold, book, records into a dict-'RocksDB'. ``forecast``:
    rule 3 projects from the forecast (``Forecasts``), as in the worker."""

    def __init__(
        self,
        config: AlertConfig | None = None,
        orgs: tuple[str, ...] = (ORG,),
        overrides: dict | None = None,
        forecast: bool = False,
    ) -> None:
        self.config = config or AlertConfig()
        self.overrides = overrides or {}
        self.ledger = Ledger()
        self.store: dict[bytes, bytes] = {}
        self.log: list[AlertChange] = []
        self.offset = 0
        self.orgs = orgs
        self.forecasts = Forecasts(self.ledger) if forecast else None
        self.book = self._new_book()

    def _new_book(self, seed: dict | None = None) -> AlertBook:
        book = AlertBook(self.config, self.overrides)
        if self.forecasts is not None:
            for org in self.orgs:
                self.forecasts.load(org)  # as the worker's forecast hook does on assignment
            book.forecast_of = self.forecasts
        for org in self.orgs:
            pos = {pk: p for pk, p in self.ledger.positions.items() if pk[0] == org}
            self.write(book.load_org(org, pos, self.scan, (seed or {}).get(org, ())))
        self.write(book.take_records())
        return book

    def scan(self, prefix: bytes, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        lo = start or prefix
        return [(k, self.store[k]) for k in sorted(self.store) if k.startswith(prefix) and k >= lo]

    def write(self, records: list[tuple[bytes, bytes]]) -> None:
        for k, v in records:
            if v:
                self.store[k] = v
            else:
                self.store.pop(k, None)

    def fold(self, raws: tuple[Raw, ...]) -> Changes:
        for item in raws:
            # a year's close is read from an input topic, whose side it closes
            raw, topic = item if isinstance(item, tuple) else (item, "t")
            e = check_message(raw, None, None)
            assert not isinstance(e, Rejection), e
            assert self.ledger.update(e, raw, (topic, 0, self.offset, 0)) == APPLIED, raw
            self.offset += 1
        return self.ledger.take_changes()

    def batch(self, *raws: Raw, hold: tuple[str, ...] = ()) -> list[AlertChange]:
        ch = self.fold(raws)
        if self.forecasts is not None:  # the forecast hook runs first (agents/worker.py)
            self.forecasts.apply(ch)
        out = self.book.apply(ch, self.ledger.positions, hold)
        self.write(self.book.take_records())
        for (org, cid), c in ch.commitments.items():  # what the ledger's store writes
            self.store[layout.commitment_key(org, cid)] = layout.encode_record(c)
        for (org, side), year in ch.closed.items():
            self.store[layout.close_key(org, side)] = layout.encode_int(year)
        self.log += out
        return out

    def each(self, *raws: Raw) -> list[AlertChange]:
        out: list[AlertChange] = []
        for raw in raws:
            out += self.batch(raw)
        return out

    def restart(self) -> None:
        self.book = self._new_book()

    def open(self) -> dict[str, dict]:
        return {a.id: msgspec.to_builtins(a) for a in self.book.open_alerts()}

    def outbox(self) -> list[bytes]:
        return sorted(k for k in self.store if k.startswith(layout.OUTBOX_PREFIX))


def summary(changes: list[AlertChange]) -> list[tuple[str, str, str | None]]:
    return [
        (
            c.change,
            c.alert.rule,
            c.alert.resolved_event
            if c.change == "resolved"
            else (c.alert.raised_event if c.change == "raised" else None),
        )
        for c in changes
    ]


# -- 1. shortfall ----------------------------------------------------------------------------


DAY = "2026-06-01"


def test_shortfall_raised_once_at_the_crossing_event_and_resolved_past_the_margin() -> None:
    h = Harness()
    assert (
        h.each(
            ev("r1", "receipt", 1_000_000_000, at(DAY, "09:00")),
            ev("p1", "payment", 400_000_000, at(DAY, "09:10")),
        )
        == []
    )
    out = h.batch(
        ev("c1", "commitment", 700_000_000, at(DAY, "09:20"), commitment_id="C-1", due_date="2026-08-01")
    )
    # cash goes below 0 on 1 August as well: the actual shortfall inhibits the projection
    assert summary(out) == [("raised", SHORTFALL, "c1")]
    sf = out[0].alert
    assert sf.id == f"{ORG}:general:2026:shortfall:{ms(DAY, '09:20')}"
    assert (sf.cash, sf.committed, sf.available, sf.threshold) == (600_000_000, 700_000_000, -100_000_000, 0)
    assert sf.state == "raised" and sf.rev == 1 and sf.severity == "critical"
    # still short: nothing new; then back to exactly 0 and to 999,999: inside the margin
    assert (
        h.each(
            ev("p2", "payment", 1_000, at(DAY, "09:30")),
            ev("r2", "receipt", 100_001_000, at(DAY, "09:40")),
            ev("r3", "receipt", 999_999, at(DAY, "09:50")),
        )
        == []
    )
    assert h.ledger.positions[(ORG, "general", 2026)].available == 999_999
    out = h.batch(ev("r4", "receipt", 1, at(DAY, "10:00")))  # available 1,000,000 = the margin
    # cash 700,000,000 covers the 700,000,000 due on 1 August: no projection after it either
    assert summary(out) == [("resolved", SHORTFALL, "r4")]
    assert out[0].alert.id == sf.id and out[0].alert.rev == 2 and out[0].alert.available == 1_000_000
    assert h.open() == {}


def test_crossing_is_attributed_to_the_event_inside_a_batch() -> None:
    h = Harness()
    h.batch(ev("r1", "receipt", 1_000_000_000, at(DAY, "09:00")))
    out = h.batch(
        ev("p1", "payment", 400_000_000, at(DAY, "09:10")),
        ev("c1", "commitment", 700_000_000, at(DAY, "09:20"), commitment_id="C-1", due_date="2026-08-01"),
        ev("p2", "payment", 5_000, at(DAY, "09:30")),
    )
    assert summary(out)[0] == ("raised", SHORTFALL, "c1")
    # the figures are those right after c1, not after the batch
    assert out[0].alert.available == -100_000_000 and out[0].alert.raised_ms == ms(DAY, "09:20")


def test_a_dip_that_recovers_within_the_batch_raises_nothing() -> None:
    """The two input topics are read independently: a payment may be folded before the
    receipt that preceded it. Rules judge the position after the batch."""
    h = Harness()
    h.batch(ev("r1", "receipt", 100_000_000, at(DAY, "09:00")))
    out = h.batch(
        ev("p1", "payment", 150_000_000, at(DAY, "09:30")), ev("r2", "receipt", 100_000_000, at(DAY, "09:20"))
    )
    assert out == []


def test_flapping_around_zero_raises_once_and_resolves_once() -> None:
    h = Harness()
    h.batch(ev("r1", "receipt", 10_000_000, at(DAY, "09:00")))
    first = h.batch(ev("p0", "payment", 10_001_000, at(DAY, "09:01")))  # cash = available = -1,000
    # projected cash is below zero today too: one condition, one alert (the projection inhibited)
    assert summary(first) == [("raised", SHORTFALL, "p0")]
    for i in range(20):  # +-500,000 around zero: never past the 1,000,000 margin
        assert h.batch(ev(f"up{i}", "receipt", 500_000, at(DAY, f"10:{i:02d}"))) == []
        assert h.batch(ev(f"dn{i}", "payment", 500_000, at(DAY, f"11:{i:02d}"))) == []
    out = h.batch(ev("big", "receipt", 2_000_000, at(DAY, "12:00")))
    assert summary(out) == [("resolved", SHORTFALL, "big")]
    out = h.batch(ev("again", "payment", 3_000_000, at(DAY, "13:00")))
    assert summary(out) == [("raised", SHORTFALL, "again")]
    assert out[0].alert.id != first[0].alert.id and out[0].alert.seq == 2
    rules = [(c.change, c.alert.rule) for c in h.log]
    assert rules.count(("raised", SHORTFALL)) == 2 and rules.count(("resolved", SHORTFALL)) == 1
    assert len(h.log) == 3


# -- 2. below the reserve floor --------------------------------------------------------------

D0 = "2026-03-02"  # a Monday


def history(h: Harness, daily_payment: int, days: int = 7, opening: int = 10_000_000_000) -> None:
    h.batch(ev("open", "receipt", opening, at(D0)))
    for i in range(1, days + 1):
        h.batch(ev(f"pay{i}", "payment", daily_payment, at(d(D0, i))))


def test_floor_is_two_months_of_average_outflow_once_seven_days_are_observed() -> None:
    h = Harness()
    history(h, 30_000_000)  # days 1-7: no floor yet (fewer than 7 days observed)
    assert h.log == []
    # day 8: days 1..7 observed (the first day, the opening, never counts): outflow 210,000,000
    # -> floor = 210,000,000 x 30 x 2 / 7 = 1,800,000,000; margin = 5% of it = 90,000,000
    assert h.batch(ev("pay8", "payment", 30_000_000, at(d(D0, 8)))) == []  # available 9,760,000,000
    out = h.batch(
        ev(
            "c1",
            "commitment",
            8_000_000_000,
            at(d(D0, 8), "11:00"),
            commitment_id="C-1",
            due_date="2026-12-01",
        )
    )
    assert summary(out) == [("raised", BELOW_FLOOR, "c1")]
    a = out[0].alert
    assert (a.available, a.floor, a.threshold, a.resolve_at) == (
        1_760_000_000,
        1_800_000_000,
        1_800_000_000,
        1_890_000_000,
    )
    assert a.severity == "warning"
    assert h.batch(ev("r1", "receipt", 100_000_000, at(d(D0, 8), "12:00"))) == []  # 1,860,000,000
    out = h.batch(ev("r2", "receipt", 30_000_000, at(d(D0, 8), "13:00")))  # 1,890,000,000
    assert summary(out) == [("resolved", BELOW_FLOOR, "r2")]


def test_floor_uses_the_days_observed_and_a_late_day_window() -> None:
    """With 20 days observed the average is over 20 days, not 90."""
    h = Harness()
    history(h, 10_000_000, days=20)  # days 1..20: 10M a day
    h.batch(ev("x", "receipt", 1, at(d(D0, 21))))
    st = h.book.positions[(ORG, "general", 2026)]
    assert st.floor == 200_000_000 * 60 // 20 == 600_000_000  # 60 days of 10M
    assert st.trend == -10_000_000


@pytest.mark.parametrize("late", [False, True])
def test_outflow_and_uncommitted_flow_buckets_by_kind(late: bool) -> None:
    """outflow(d) = payments + transfers out (a reversal counts back); net(d) = every cash change
    but payments against a commitment. Same buckets whether the rows arrive on the position's
    current day (summed in C) or as a late day (row by row)."""
    h = Harness()
    h.batch(
        ev("r0", "receipt", 10_000_000, at(D0, "09:00")),
        ev("c1", "commitment", 3_000_000, at(D0, "09:01"), commitment_id="C-1"),
    )
    if late:  # the position clock moves to the next day first: D0 becomes a past day
        h.batch(ev("x", "receipt", 1, at(d(D0, 1))))
    h.batch(
        ev("r1", "receipt", 1_000, at(D0, "10:00")),
        ev("p1", "payment", 200, at(D0, "10:01")),  # direct
        ev("p2", "payment", 2_000_000, at(D0, "10:02"), commitment_id="C-1"),  # committed
        ev("t1", "transfer", 300, at(D0, "10:03"), to_account=FUND),
        ev("t2", "transfer", 50, at(D0, "10:04"), account=FUND, to_account="general"),
        ev("rp", "payment", 200, at(D0, "10:05"), reverses="p1"),
        ev("rr", "receipt", 1_000, at(D0, "10:06"), reverses="r1"),
    )
    day = (ms(D0) + 9 * 3_600_000) // 86_400_000
    general = h.book.positions[(ORG, "general", 2026)].days[day]
    fund = h.book.positions[(ORG, FUND, 2026)].days[day]
    # general: out = 200 (p1) + 2,000,000 (p2) + 300 (t1) - 200 (rp) = 2,000,300
    #          net = 10,000,000 + 1,000 - 200 - 300 + 50 + 200 - 1,000 = 9,999,750 (p2 excluded)
    assert general == [2_000_300, 9_999_750]
    assert fund == [50, 300 - 50]  # t2 out of the fund; t1 into it is not outflow


def test_absolute_floor_from_the_configuration() -> None:
    cfg = AlertConfig(governments={ORG: {"general": Override(floor_krw=5_000_000_000)}}).validate()
    h = Harness(cfg)
    out = h.batch(ev("r1", "receipt", 4_000_000_000, at(DAY)))
    assert summary(out) == [("raised", BELOW_FLOOR, "r1")]
    assert out[0].alert.floor == 5_000_000_000
    # the shipped file: custody cash is held for others, no floor on it
    assert Resolver(load_config()).get(ORG, "custody").floor_months == 0
    assert Resolver(load_config()).get(ORG, "general").floor_months == 2


def test_changed_thresholds_take_effect_at_once() -> None:
    h = Harness()
    h.batch(ev("r1", "receipt", 4_000_000_000, at(DAY)))
    out = h.book.set_overrides({(ORG, "general"): Override(floor_krw=5_000_000_000)}, h.ledger.positions)
    assert [(c.change, c.alert.rule, c.alert.floor) for c in out] == [("raised", BELOW_FLOOR, 5_000_000_000)]
    assert (
        h.book.set_overrides({(ORG, "general"): Override(floor_krw=5_000_000_000)}, h.ledger.positions) == []
    )
    out = h.book.set_overrides({}, h.ledger.positions)  # override removed: no floor (short history)
    assert [(c.change, c.alert.rule, c.alert.resolution) for c in out] == [
        ("resolved", BELOW_FLOOR, "no_floor")
    ]
    out = h.book.set_overrides({(ORG, "*"): Override(floor_krw=4_500_000_000)}, h.ledger.positions)
    assert [(c.change, c.alert.rule) for c in out] == [("raised", BELOW_FLOOR)]  # government-wide


# -- 3. projected shortfall ------------------------------------------------------------------


# Against a reserve floor of 500,000,000 (margin 5 %: 25,000,000), no trend. Below 0 a projection
# from commitments alone is never alone: they are in ``committed`` already, so projected cash
# below 0 means available below 0, an actual shortfall, which inhibits it (see "inhibition").
AGAINST_FLOOR = Override(floor_krw=500_000_000, projected_against_floor=True, trend=False)


def test_projected_shortfall_names_the_date_and_the_commitments_and_only_escalates() -> None:
    h = Harness(AlertConfig(defaults=AGAINST_FLOOR))
    assert (
        h.each(
            ev("r1", "receipt", 1_500_000_000, at(DAY, "09:00")),
            ev("c1", "commitment", 600_000_000, at(DAY, "09:10"), commitment_id="C-1", due_date="2026-06-20"),
            ev("c2", "commitment", 300_000_000, at(DAY, "09:20"), commitment_id="C-2", due_date="2026-06-10"),
        )
        == []
    )  # available 600M; cash 1,500 - 300 (06-10) - 600 (06-20) = 600 (millions): above the floor
    out = h.batch(
        ev("c3", "commitment", 200_000_000, at(DAY, "09:30"), commitment_id="C-3", due_date="2026-07-15")
    )
    # 600 - 200 (07-15) = 400 < 500; available 400M is below the floor today as well
    assert summary(out) == [("raised", BELOW_FLOOR, "c3"), ("raised", PROJECTED, "c3")]
    p = out[1].alert
    assert (p.projected_date, p.projected_cash, p.threshold, p.resolve_at) == (
        "2026-07-15",
        400_000_000,
        500_000_000,
        525_000_000,
    )
    assert [(x.commitment_id, x.open, x.due_date) for x in p.drivers] == [
        ("C-1", 600_000_000, "2026-06-20"),
        ("C-2", 300_000_000, "2026-06-10"),
        ("C-3", 200_000_000, "2026-07-15"),
    ]
    # a commitment due earlier moves the date earlier: 1,500 - 150 (06-05) - 300 - 600 (06-20) < 500
    out = h.batch(
        ev("c4", "commitment", 150_000_000, at(DAY, "09:40"), commitment_id="C-4", due_date="2026-06-05")
    )
    assert [(c.change, c.alert.rule) for c in out] == [("updated", PROJECTED)]
    u = out[0].alert
    assert (u.id, u.rev, u.projected_date, u.projected_cash) == (p.id, 2, "2026-06-20", 450_000_000)
    assert [x.commitment_id for x in u.drivers] == ["C-1", "C-2", "C-4"]
    # paying C-4 on its due date: cash and committed both fall, the date stays: no update
    assert h.batch(ev("p4", "payment", 150_000_000, at("2026-06-05", "10:00"), commitment_id="C-4")) == []
    out = h.batch(ev("r2", "receipt", 300_000_000, at("2026-06-05", "11:00")))  # 550M >= 525M
    assert summary(out) == [("resolved", BELOW_FLOOR, "r2"), ("resolved", PROJECTED, "r2")]
    assert out[1].alert.rev == 3


def test_projected_shortfall_keeps_its_id_however_the_stream_is_batched() -> None:
    """A replay after kill -9 cuts the same stream into other batches: the alert it raises must
    be the one already published (its id carries the crossing instant), attributed to the event
    that caused it, not to whichever event ended the batch."""
    stream = [
        ev("r1", "receipt", 2_000_000_000, at(DAY, "09:00")),
        ev("c1", "commitment", 1_600_000_000, at(DAY, "09:10"), commitment_id="C-1", due_date="2026-06-11"),
        ev("r2", "receipt", 1_000, at(DAY, "09:20")),
        # due after the 90-day window: no part of the projection
        ev("c2", "commitment", 50_000_000, at(DAY, "09:25"), commitment_id="C-2", due_date="2026-12-20"),
        ev("p1", "payment", 100_000_000, at(DAY, "09:30"), commitment_id="C-1"),
        ev("r3", "receipt", 50_000_000, at(DAY, "09:50")),
    ]
    want = [(f"{ORG}:general:2026:{PROJECTED}:{ms(DAY, '09:10')}", "c1")]
    for cuts in range(1 << (len(stream) - 1)):  # every way to cut the stream into batches
        h, batch = Harness(AlertConfig(defaults=AGAINST_FLOOR)), [stream[0]]
        for i, raw in enumerate(stream[1:]):
            if cuts >> i & 1:
                h.batch(*batch)
                batch = []
            batch.append(raw)
        h.batch(*batch)
        got = [(c.alert.id, c.alert.raised_event) for c in h.log if c.alert.rule == PROJECTED]
        assert got == want, bin(cuts)


def test_projection_looks_only_as_far_as_the_horizon() -> None:
    h = Harness(
        AlertConfig(defaults=Override(horizon_days=10, floor_krw=500_000_000, projected_against_floor=True))
    )
    h.batch(ev("r1", "receipt", 1_000_000_000, at(DAY)))
    out = h.batch(
        ev("c1", "commitment", 600_000_000, at(DAY, "11:00"), commitment_id="C-1", due_date="2026-07-31")
    )
    assert summary(out) == [("raised", BELOW_FLOOR, "c1")]  # due beyond 10 days: not projected yet
    assert h.batch(ev("r2", "receipt", 1, at("2026-07-20"))) == []  # window ends 07-30
    out = h.batch(ev("r3", "receipt", 1, at("2026-07-21")))  # window ends 07-31
    assert summary(out) == [("raised", PROJECTED, "r3")]
    assert (out[0].alert.projected_date, out[0].alert.projected_cash) == ("2026-07-31", 400_000_002)


def test_a_draining_trend_warns_before_available_goes_negative() -> None:
    h = Harness()
    history(h, 20_000_000, opening=1_000_000_000)  # days 1..7: 20M a day spent, uncommitted
    assert h.log == []
    out = h.batch(ev("pay8", "payment", 20_000_000, at(d(D0, 8))))
    # cash 840M, trend -20M/day: 840 - 20 k < 0 from k = 43 days -> 2026-03-10 + 43 = 2026-04-22
    proj = [c.alert for c in out if c.alert.rule == PROJECTED]
    assert len(proj) == 1 and proj[0].raised_event == "pay8"
    assert (proj[0].projected_date, proj[0].projected_cash, proj[0].trend_per_day) == (
        "2026-04-22",
        -20_000_000,
        -20_000_000,
    )
    assert proj[0].drivers == [] and proj[0].available == 840_000_000  # not short yet
    assert {c.alert.rule for c in out} == {PROJECTED, BELOW_FLOOR}  # floor 1,200M
    h2 = Harness(AlertConfig(defaults=Override(trend=False)))
    history(h2, 20_000_000, opening=1_000_000_000)
    assert [c.alert.rule for c in h2.batch(ev("pay8", "payment", 20_000_000, at(d(D0, 8))))] == [BELOW_FLOOR]


def cut(stream: list[bytes], cuts: int) -> list[tuple[bytes, ...]]:
    """``stream`` cut into batches after each event whose bit is set in ``cuts``."""
    out, batch = [], [stream[0]]
    for i, raw in enumerate(stream[1:]):
        if cuts >> i & 1:
            out.append(tuple(batch))
            batch = []
        batch.append(raw)
    return [*out, tuple(batch)]


# -- 3. an actual shortfall inhibits the projection --------------------------------------------


@pytest.mark.parametrize("with_forecast", [False, True])
def test_an_actual_shortfall_resolves_the_projection_at_its_own_event_however_batched(
    with_forecast: bool,
) -> None:
    """One condition, one alert: when cash is short now, "short on 20 June" says nothing more.
    The projection open is resolved (``inhibited``) at the event that raised the shortfall, with
    the figures then, whichever event ends the batch."""
    prefix = [
        ev("r1", "receipt", 1_000_000_000, at(DAY, "09:00")),
        # available 300M: below the floor, and cash 1,000 - 700 = 300 (millions) on 20 June
        ev("c1", "commitment", 700_000_000, at(DAY, "09:10"), commitment_id="C-1", due_date="2026-06-20"),
    ]
    stream = [
        ev("c2", "commitment", 400_000_000, at(DAY, "09:20"), commitment_id="C-2", due_date="2026-07-10"),
        ev("r2", "receipt", 1_000, at(DAY, "09:30")),
        ev("p1", "payment", 5_000, at(DAY, "09:40")),
    ]
    projected = f"{ORG}:general:2026:{PROJECTED}:{ms(DAY, '09:10')}"
    for cuts in range(1 << (len(stream) - 1)):
        h = Harness(AlertConfig(defaults=AGAINST_FLOOR), forecast=with_forecast)
        h.each(*prefix)
        assert summary(h.log) == [("raised", BELOW_FLOOR, "c1"), ("raised", PROJECTED, "c1")]
        for b in cut(stream, cuts):
            h.batch(*b)
        after = h.log[2:]
        assert summary(after) == [("raised", SHORTFALL, "c2"), ("resolved", PROJECTED, "c2")], bin(cuts)
        gone = after[1].alert
        assert (gone.id, gone.resolution, gone.resolved_ms) == (projected, "inhibited", ms(DAY, "09:20"))
        assert (gone.cash, gone.committed, gone.available) == (1_000_000_000, 1_100_000_000, -100_000_000)
        assert sorted(a.rule for a in h.book.open_alerts()) == [BELOW_FLOOR, SHORTFALL]


@pytest.mark.parametrize("with_forecast", [False, True])
def test_once_the_shortfall_resolves_the_projection_is_raised_again_at_that_event(
    with_forecast: bool,
) -> None:
    """While short, the projection is not raised; when the shortfall resolves (available back at
    the margin) and cash is still projected below the threshold, it is raised again, attributed
    to the event that resolved the shortfall: not to an earlier event of the batch, during which
    the shortfall still stood (r2 leaves available at 10M, inside the 25M margin)."""
    h0 = [
        ev("r1", "receipt", 1_000_000_000, at(DAY, "09:00")),
        ev("c1", "commitment", 700_000_000, at(DAY, "09:10"), commitment_id="C-1", due_date="2026-06-20"),
        ev("c2", "commitment", 400_000_000, at(DAY, "09:20"), commitment_id="C-2", due_date="2026-07-10"),
    ]
    stream = [
        ev("r2", "receipt", 110_000_000, at(DAY, "09:30")),  # available 10M: short still
        ev("r3", "receipt", 20_000_000, at(DAY, "09:40")),  # 30M: resolved; 1,130 - 700 < 500
        ev("r4", "receipt", 1_000, at(DAY, "09:50")),
    ]
    for cuts in range(1 << (len(stream) - 1)):
        h = Harness(AlertConfig(defaults=AGAINST_FLOOR), forecast=with_forecast)
        h.each(*h0)
        n = len(h.log)
        assert summary(h.log[-2:]) == [("raised", SHORTFALL, "c2"), ("resolved", PROJECTED, "c2")]
        for b in cut(stream, cuts):
            h.batch(*b)
        assert summary(h.log[n:]) == [("resolved", SHORTFALL, "r3"), ("raised", PROJECTED, "r3")], bin(cuts)
        again = h.log[-1].alert
        assert again.id == f"{ORG}:general:2026:{PROJECTED}:{ms(DAY, '09:40')}" and again.seq == 2
        assert again.projected_date == "2026-06-20"  # 1,130 - 700 (millions, and r4's 1,000)


# -- 3. rule 3 from the forecast (orders, expected receipts, learned flows) ---------------------


def order(eid: str, amount: int, when: str, cid: str, pay: str) -> bytes:
    return ev(eid, "payment_order", amount, when, commitment_id=cid, pay_date=pay)


def expect(eid: str, amount: int, when: str, sid: str, day: str, certainty: str = "estimated") -> bytes:
    return ev(
        eid,
        "expected_receipt",
        amount,
        when,
        schedule_id=sid,
        expected_date=day,
        certainty=certainty,
        category="grant",
    )


def known_flows() -> list[bytes]:
    """2,000M of cash; a commitment of 1,600M without a due date (31 December: beyond the
    horizon, so the commitments alone project nothing); 300M expected on 10 June; the
    commitment ordered in two, 1,200M paid on 15 June and 400M on 20 June. Expected cash:
    2,000 until 9 June, 2,300 from 10 June, 1,100 from 15 June, 700 from 20 June: above 500."""
    return [
        ev("r1", "receipt", 2_000_000_000, at(DAY, "09:00")),
        ev("c1", "commitment", 1_600_000_000, at(DAY, "09:10"), commitment_id="C-1"),
        expect("s1", 300_000_000, at(DAY, "09:20"), "S-1", "2026-06-10"),
        order("o1", 1_200_000_000, at(DAY, "09:30"), "C-1", "2026-06-15"),
        order("o2", 400_000_000, at(DAY, "09:35"), "C-1", "2026-06-20"),
    ]


def test_rule_3_projects_the_orders_and_the_expected_receipts_of_the_forecast() -> None:
    h = Harness(AlertConfig(defaults=AGAINST_FLOOR), forecast=True)
    h.each(*known_flows())
    assert summary(h.log) == [("raised", BELOW_FLOOR, "c1")]  # available 400M, nothing projected
    # the grant comes late, on 25 June: 2,000 - 1,200 (15 June) - 400 (20 June) = 400 < 500
    out = h.batch(expect("s1b", 300_000_000, at(DAY, "09:40"), "S-1", "2026-06-25"))
    assert summary(out) == [("raised", PROJECTED, "s1b")]
    p = out[0].alert
    assert (p.projected_date, p.projected_cash, p.threshold, p.available) == (
        "2026-06-20",
        400_000_000,
        500_000_000,
        400_000_000,
    )
    assert [(x.commitment_id, x.open, x.due_date, x.kind) for x in p.drivers] == [
        ("o1", 1_200_000_000, "2026-06-15", "order"),
        ("o2", 400_000_000, "2026-06-20", "order"),
    ]
    h.restart()  # the forecast's book from the ledger, the alert from its records: the same
    assert h.open()[p.id] == msgspec.to_builtins(p)
    # a commitment due on 12 June: 2,000 - 350 - 1,200 = 450 < 500 on 15 June, earlier
    out = h.batch(
        ev("c2", "commitment", 350_000_000, at(DAY, "09:50"), commitment_id="C-2", due_date="2026-06-12")
    )
    assert [(c.change, c.alert.rule) for c in out] == [("updated", PROJECTED)]
    u = out[0].alert
    assert (u.id, u.rev, u.projected_date, u.projected_cash, u.available) == (
        p.id,
        2,
        "2026-06-15",
        450_000_000,
        50_000_000,
    )
    assert [(x.commitment_id, x.open, x.kind) for x in u.drivers] == [
        ("o1", 1_200_000_000, "order"),
        ("C-2", 350_000_000, "commitment"),
    ]
    # cancelled: the first crossing would be 20 June again, later: the date stays
    assert h.batch(ev("x2", "commitment_cancel", 350_000_000, at(DAY, "10:00"), commitment_id="C-2")) == []
    # the grant revised to 18 June, ahead of the second order: 700 on 20 June >= 525: resolved
    out = h.batch(expect("s1c", 300_000_000, at(DAY, "10:10"), "S-1", "2026-06-18"))
    assert [(c.change, c.alert.id, c.alert.resolution, c.alert.rev) for c in out] == [
        ("resolved", p.id, "recovered", 3)
    ]
    assert sorted(a.rule for a in h.book.open_alerts()) == [BELOW_FLOOR]
    # the same events without the forecast: the commitment falls due on 31 December, nothing
    plain = Harness(AlertConfig(defaults=AGAINST_FLOOR))
    plain.each(*known_flows(), expect("s1b", 300_000_000, at(DAY, "09:40"), "S-1", "2026-06-25"))
    assert summary(plain.log) == [("raised", BELOW_FLOOR, "c1")]


def test_a_raise_by_an_order_or_a_revision_is_attributed_to_it_however_batched() -> None:
    """Neither an order nor a revision moves cash or ``committed``: the batch's walk back from
    its end runs the forecast again without them to find the event that crossed."""
    stream = [
        ev("x1", "receipt", 1_000, at(DAY, "09:36")),
        expect("s1b", 300_000_000, at(DAY, "09:40"), "S-1", "2026-06-25"),  # crosses
        ev("x2", "payment", 2_000, at(DAY, "09:45")),
        ev("p1", "payment", 100_000_000, at(DAY, "09:50"), commitment_id="C-1", order_id="o1"),
        ev("x3", "payment", 2_000, at(DAY, "09:55"), reverses="x2"),
    ]
    want = [(f"{ORG}:general:2026:{PROJECTED}:{ms(DAY, '09:40')}", "s1b")]
    for cuts in range(1 << (len(stream) - 1)):
        h = Harness(AlertConfig(defaults=AGAINST_FLOOR), forecast=True)
        h.each(*known_flows())
        for b in cut(stream, cuts):
            h.batch(*b)
        got = [(c.alert.id, c.alert.raised_event) for c in h.log if c.alert.rule == PROJECTED]
        assert got == want, bin(cuts)
    # the grant expected late from the start; the second order crosses (2,000 - 1,200 - 400)
    first = [*known_flows()[:2], expect("s1", 300_000_000, at(DAY, "09:20"), "S-1", "2026-06-25")]
    first.append(known_flows()[3])
    stream = [
        ev("x1", "receipt", 1_000, at(DAY, "09:31")),
        order("o2", 400_000_000, at(DAY, "09:35"), "C-1", "2026-06-20"),
        ev("x2", "receipt", 1_000, at(DAY, "09:36")),
    ]
    want = [(f"{ORG}:general:2026:{PROJECTED}:{ms(DAY, '09:35')}", "o2")]
    for cuts in range(1 << (len(stream) - 1)):
        h = Harness(AlertConfig(defaults=AGAINST_FLOOR), forecast=True)
        h.each(*first)
        for b in cut(stream, cuts):
            h.batch(*b)
        got = [(c.alert.id, c.alert.raised_event) for c in h.log if c.alert.rule == PROJECTED]
        assert got == want, bin(cuts)


def test_the_forecast_projects_learned_spending_and_a_shortfall_inhibits_it() -> None:
    """Against 0 the forecast's projection goes below while available does not through what it
    learned: here 20M paid on every business day. Seven days observed (the first, the opening,
    never counts): from 10 March it is learned; 880M lasts 44 business days, not 45."""
    h = Harness(AlertConfig(defaults=Override(floor_months=0)), forecast=True)
    h.batch(ev("open", "receipt", 1_000_000_000, at(D0)))
    out: list[AlertChange] = []
    for i in range(1, 9):  # 3-10 March: six business days (the 7th and 8th are a weekend)
        if is_business_day(dt.date.fromisoformat(d(D0, i))):
            out = h.batch(ev(f"pay{i}", "payment", 20_000_000, at(d(D0, i))))
            assert out == [] or i == 8
    today = day_of(d(D0, 8))
    business = [x for x in range(today + 1, today + HORIZON_DAYS) if is_business_day(day_date(x))]
    assert summary(out) == [("raised", PROJECTED, "pay8")]
    p = out[0].alert
    assert (p.available, p.projected_date, p.projected_cash) == (
        880_000_000,
        day_date(business[44]).isoformat(),
        880_000_000 - 45 * 20_000_000,
    )
    assert [(x.open, x.due_date, x.kind) for x in p.drivers] == [
        (20_000_000, day_date(x).isoformat(), "baseline") for x in business[:5]
    ]
    # what the forecast served says, to the won
    assert h.forecasts is not None
    fc = h.forecasts(ORG, "general")
    assert fc is not None and fc.cash_below_zero is not None
    x = fc.cash_below_zero
    assert (p.projected_date, p.projected_cash) == (day_date(x.day).isoformat(), x.value)
    assert [(y.commitment_id, y.open) for y in p.drivers] == [(f.ref, -f.cash) for f in x.drivers]
    # a commitment beyond the cash: short now, which inhibits the projection
    c2 = ev(
        "c2", "commitment", 900_000_000, at(d(D0, 8), "11:00"), commitment_id="C-2", due_date="2026-03-20"
    )
    out = h.batch(c2)
    assert summary(out) == [("raised", SHORTFALL, "c2"), ("resolved", PROJECTED, "c2")]
    assert out[1].alert.resolution == "inhibited"
    # cash again (available 80M): the shortfall resolves, and the projection is raised again,
    # now with the commitment due on 20 March: 980 - 20 x 7 business days - 20 - 900 < 0
    out = h.batch(ev("r2", "receipt", 100_000_000, at(d(D0, 8), "12:00")))
    assert summary(out) == [("resolved", SHORTFALL, "r2"), ("raised", PROJECTED, "r2")]
    again = out[1].alert
    assert (again.projected_date, again.projected_cash) == ("2026-03-20", -80_000_000)
    assert [(x.commitment_id, x.kind) for x in again.drivers][:1] == [("C-2", "commitment")]
    assert {x.kind for x in again.drivers[1:]} == {"baseline"}


@st.composite
def known_flow_streams(draw: Any) -> list[bytes]:
    """One account's events a minute apart on one day, touching every known flow: receipts,
    payments (uncommitted, against a commitment, executing an order), commitments (due in the
    horizon or not at all), cancels, orders, expected receipts, their revisions and realisations,
    reversals. Only those the ledger accepts are kept."""
    raws = [ev("e0", "receipt", 1_000_000_000, at(DAY, "08:00"))]
    for i in range(1, draw(st.integers(4, 14))):
        eid, when = f"e{i}", at(DAY, f"09:{i:02d}")
        c, s = f"C{draw(st.integers(0, 1))}", f"S{draw(st.integers(0, 1))}"
        amt = draw(st.sampled_from([50, 100, 200, 400, 800])) * 1_000_000
        # a day past (overdue: today; an estimate a week late: no longer expected) to beyond
        day = draw(
            st.sampled_from(
                ["2026-05-20", "2026-06-01", "2026-06-05", "2026-06-12", "2026-06-26", "2026-07-20"]
            )
        )
        kind = draw(
            st.sampled_from(
                ["receipt", "payment", "commitment", "cancel", "order", "pay", "expect", "realise", "reverse"]
            )
        )
        if kind in ("receipt", "payment"):
            raw = ev(eid, kind, amt, when)
        elif kind == "commitment":
            due = draw(st.sampled_from([day, None]))
            raw = ev(eid, kind, amt, when, commitment_id=c, **({"due_date": due} if due else {}))
        elif kind == "cancel":
            raw = ev(eid, "commitment_cancel", amt, when, commitment_id=c)
        elif kind == "order":
            raw = order(eid, amt, when, c, day)
        elif kind == "pay":
            oid = draw(st.sampled_from([None, *[f"e{j}" for j in range(1, i)]]))
            raw = ev(eid, "payment", amt, when, commitment_id=c, **({"order_id": oid} if oid else {}))
        elif kind == "expect":
            raw = expect(eid, amt, when, s, day, draw(st.sampled_from(["confirmed", "estimated"])))
        elif kind == "realise":
            raw = ev(eid, "receipt", amt, when, schedule_id=s, category="grant")
        else:  # one of the last three events, reversed as it was (many are refused: fine)
            orig = orjson.loads(raws[draw(st.integers(max(0, i - 3), i - 1))])
            orig.update(event_id=eid, occurred_at=when, reverses=orig["event_id"])
            raw = orjson.dumps(orig)
        raws.append(raw)
    led = Ledger()
    kept = []
    for raw in raws:
        e = check_message(raw, None, None)
        if not isinstance(e, Rejection) and led.update(e, raw, None) == APPLIED:
            kept.append(raw)
    return kept


HIGH_FLOOR = Override(floor_krw=900_000_000, projected_against_floor=True)  # raised often


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(known_flow_streams(), st.lists(st.integers(0, 13), max_size=3))
def test_a_raise_on_the_forecast_is_attributed_as_a_replay_event_by_event_finds_it(
    stream: list[bytes], after_events: list[int]
) -> None:
    """Whatever the batches, a raise is attributed to the batch's first event from which, event
    by event, the forecast's lowest expected cash stayed below the floor and available at or
    above 0 (no shortfall to inhibit it), and not before the event a shortfall resolved at."""
    # (lowest expected cash, available) after each event: a ledger and forecast fed one by one
    after: list[tuple[int, int]] = []
    led = Ledger()
    fcs = Forecasts(led)
    fcs.load(ORG)
    for i, raw in enumerate(stream):
        e = check_message(raw, None, None)
        assert not isinstance(e, Rejection) and led.update(e, raw, ("t", 0, i, 0)) == APPLIED
        fcs.apply(led.take_changes())
        f = fcs(ORG, "general")
        assert f is not None
        pos = led.positions[(ORG, "general", 2026)]
        after.append((min(f.expected.cash[:91]), pos.available))
    ids = [orjson.loads(raw)["event_id"] for raw in stream]
    h = Harness(AlertConfig(defaults=HIGH_FLOOR), forecast=True)
    first = 0
    for b in cut(stream, sum(1 << i for i in set(after_events))):
        out = h.batch(*b)
        last = first + len(b) - 1
        lo = first
        for c in out:
            if c.change == "resolved" and c.alert.rule == SHORTFALL:
                lo = ids.index(c.alert.resolved_event)
        for c in out:
            if c.change == "raised" and c.alert.rule == PROJECTED:
                k = last
                while k > lo and after[k - 1][0] < 900_000_000 and after[k - 1][1] >= 0:
                    k -= 1
                assert c.alert.raised_event == ids[k], (ids[first : last + 1], after[first : last + 1])
        first = last + 1


# -- 4. year end -----------------------------------------------------------------------------


def test_year_end_stages_raise_once_each_for_every_account_with_open_commitments() -> None:
    h = Harness()
    h.each(
        ev("r1", "receipt", 10_000_000_000, at("2026-11-02")),
        ev(
            "c1",
            "commitment",
            1_000_000_000,
            at("2026-11-02", "11:00"),
            commitment_id="C-1",
            due_date="2026-12-20",
        ),
        ev("rf", "receipt", 1_000_000_000, at("2026-11-03"), account=FUND),
        ev(
            "cf",
            "commitment",
            100_000_000,
            at("2026-11-03", "11:00"),
            account=FUND,
            commitment_id="C-F",
            due_date="2026-12-10",
        ),
    )
    assert h.log == []
    assert h.batch(ev("n30", "receipt", 1_000, at("2026-11-30"))) == []  # 31 days left
    out = h.batch(ev("d30", "receipt", 1_000, at("2026-12-01")))  # 30 days left
    got = sorted((c.change, c.alert.account, c.alert.id, c.alert.severity) for c in out)
    assert got == [
        ("raised", FUND, f"{ORG}:{FUND}:2026:year_end:d30", "info"),
        ("raised", "general", f"{ORG}:general:2026:year_end:d30", "info"),
    ]
    fund = next(c.alert for c in out if c.alert.account == FUND)
    assert fund.raised_event == "d30"  # the untouched fund is evaluated on the government's new day
    assert (fund.open_commitments, fund.open_amount) == (1, 100_000_000)
    assert h.batch(ev("n", "receipt", 1_000, at("2026-12-05"))) == []
    out = h.batch(ev("d14", "receipt", 1_000, at("2026-12-17")))
    assert sorted((c.change, c.alert.account, c.alert.stage_days, c.alert.resolution) for c in out) == [
        ("raised", FUND, 14, None),
        ("raised", "general", 14, None),
        ("resolved", FUND, 30, "superseded"),
        ("resolved", "general", 30, "superseded"),
    ]
    out = h.batch(ev("d7", "receipt", 1_000, at("2026-12-24")))
    assert sorted((c.change, c.alert.stage_days) for c in out) == [
        ("raised", 7),
        ("raised", 7),
        ("resolved", 14),
        ("resolved", 14),
    ]
    out = h.batch(ev("pay", "payment", 1_000_000_000, at("2026-12-26"), commitment_id="C-1"))
    assert [(c.change, c.alert.account, c.alert.resolution) for c in out] == [
        ("resolved", "general", "no_open_commitments")
    ]
    # a new commitment in the same stage does not raise it again
    assert h.batch(ev("c2", "commitment", 50_000_000, at("2026-12-27"), commitment_id="C-2")) == []
    assert sorted(h.open()) == [f"{ORG}:{FUND}:2026:year_end:d7"]


# -- the fiscal year: two years open, the 20 January stage, the close (#15) ----------------------

TOPICS = Topics("cashpos")
# no history-based floor, no trend: the figures below are the balances alone (and, QUIET, no
# year-end notices either)
BALANCES = AlertConfig(defaults=Override(floor_months=0, trend=False))
QUIET = AlertConfig(defaults=Override(floor_months=0, trend=False, year_end_days=[]))


def closes(year: int = 2026, org: str = ORG) -> tuple[Raw, Raw]:
    """A year's close as `cashpos close-year` publishes it: one copy on each input topic."""
    raw = year_close(org, year)
    return (raw, TOPICS.revenue), (raw, TOPICS.expenditure)


def day_of(date: str) -> int:
    return date_day(dt.date.fromisoformat(date))


def test_a_year_short_on_its_own_is_no_alert_while_the_account_covers_it() -> None:
    """The issue: 5 bn KRW in FY2026's general account, the first FY2027 bill paid on 5 January."""
    h = Harness(QUIET)
    assert h.batch(ev("r26", "receipt", 5_000_000_000, at("2026-12-10"))) == []
    assert h.batch(ev("p27", "payment", 800_000_000, at("2027-01-05"), fiscal_year=2027)) == []
    own = h.ledger.positions[(ORG, "general", 2027)]
    assert own.cash - own.committed == -800_000_000  # the year's own figure: shown, not alerted
    # a 2027 commitment due in February: the bank account covers it as well
    c27 = ev(
        "c27",
        "commitment",
        3_000_000_000,
        at("2027-01-06"),
        fiscal_year=2027,
        commitment_id="C-27",
        due_date="2027-02-15",
    )
    assert h.batch(c27) == []
    assert h.open() == {}


def test_an_account_short_as_a_whole_raises_one_alert_on_its_newest_year() -> None:
    h = Harness(QUIET)
    h.batch(ev("r26", "receipt", 1_000_000_000, at("2026-12-10")))
    out = h.batch(ev("p27", "payment", 3_000_000_000, at("2027-01-05"), fiscal_year=2027))
    assert summary(out) == [("raised", SHORTFALL, "p27")]  # (its projection inhibited)
    sf = out[0].alert
    assert sf.id == f"{ORG}:general:2027:shortfall:{ms('2027-01-05')}"
    assert (sf.fiscal_year, sf.fiscal_years, sf.cash, sf.committed, sf.available) == (
        2027,
        [2026, 2027],
        -2_000_000_000,
        0,
        -2_000_000_000,
    )
    assert "general 2026+2027: available -2,000,000,000 KRW" in sf.message
    assert alert_dict(sf)["fiscal_years"] == [2026, 2027]
    # 2026 short on its own as well: the same account, no second alert
    assert h.batch(ev("p26", "payment", 1_500_000_000, at("2027-01-06"), fiscal_year=2026)) == []
    # the close carries 2026's cash (-500M) into 2027: the account is what it was, and the
    # alert, 2027's, stays open
    assert h.batch(*closes()) == []
    p26, p27 = h.ledger.positions[(ORG, "general", 2026)], h.ledger.positions[(ORG, "general", 2027)]
    assert (p26.cash, p26.committed, p27.cash) == (0, 0, -3_500_000_000)
    assert sorted(h.open()) == [sf.id]
    out = h.batch(ev("r27", "receipt", 3_600_000_000, at("2027-01-25"), fiscal_year=2027))
    assert summary(out) == [("resolved", SHORTFALL, "r27")]
    assert out[0].alert.available == 100_000_000 and out[0].alert.fiscal_years == [2026, 2027]
    assert [(c.change, c.alert.rule) for c in h.log].count(("raised", SHORTFALL)) == 1


def test_the_floor_and_the_trend_are_the_accounts_while_two_years_are_open() -> None:
    h = Harness()
    h.batch(ev("open", "receipt", 500_000_000, at("2026-12-01")))
    for i in range(2, 9):  # 2-8 December: 30M a day, 2026's
        h.batch(ev(f"pay{i}", "payment", 30_000_000, at(f"2026-12-{i:02d}")))
    assert h.log == []  # 2026 alone: six days observed on the 8th, no floor yet
    out = h.batch(ev("p27", "payment", 30_000_000, at("2027-01-04"), fiscal_year=2027))
    # the account's window on 4 January: 2 December - 3 January, 33 days, outflow 210M (all 2026's)
    # floor = 210,000,000 x 60 // 33 = 381,818,181; trend = -210,000,000 // 33 = -6,363,637 a day;
    # available 500 - 210 - 30 = 260M; projected: 260,000,000 - 41 x 6,363,637 < 0 on 14 February
    assert summary(out) == [("raised", BELOW_FLOOR, "p27"), ("raised", PROJECTED, "p27")]
    bf, pr = out[0].alert, out[1].alert
    assert (bf.fiscal_year, bf.available, bf.floor, bf.fiscal_years) == (
        2027,
        260_000_000,
        381_818_181,
        [2026, 2027],
    )
    assert (pr.projected_date, pr.projected_cash, pr.trend_per_day) == ("2027-02-14", -909_117, -6_363_637)


@pytest.mark.parametrize(("receipt", "reason"), [(1_000, "superseded"), (1_000_000_000, "covered")])
def test_an_older_years_alert_is_handed_to_the_account_when_a_newer_year_opens(
    receipt: int, reason: str
) -> None:
    h = Harness(QUIET)
    h.batch(ev("r26", "receipt", 100_000_000, at("2026-12-10")))
    out = h.batch(
        ev("c26", "commitment", 300_000_000, at("2026-12-11"), commitment_id="C-1", due_date="2027-06-30")
    )
    assert summary(out) == [("raised", SHORTFALL, "c26")]  # one year: the position is the account
    old = out[0].alert
    assert old.id == f"{ORG}:general:2026:shortfall:{ms('2026-12-11')}" and old.fiscal_years is None
    # the account's first 2027 event: from now on it is judged as a whole, on its newest year
    out = h.batch(ev("x27", "receipt", receipt, at("2027-01-04"), fiscal_year=2027))
    if reason == "covered":
        assert [(c.change, c.alert.id, c.alert.resolution, c.alert.resolved_event) for c in out] == [
            ("resolved", old.id, "covered", "x27")
        ]
        assert h.open() == {}
        return
    new = f"{ORG}:general:2027:shortfall:{ms('2027-01-04')}"
    assert [(c.change, c.alert.id, c.alert.resolution) for c in out] == [
        ("resolved", old.id, "superseded"),
        ("raised", new, None),
    ]
    assert (out[1].alert.available, out[1].alert.raised_event) == (-199_999_000, "x27")
    assert sorted(h.open()) == [new]


def test_the_accounts_alert_keeps_its_id_however_the_year_end_stream_is_batched() -> None:
    """The account's alert is the newest year's from that year's first event on, whatever the
    batches: a replay cutting the stream elsewhere raises it under the same id."""
    stream = [
        ev("r26", "receipt", 1_000_000_000, at("2026-12-10")),
        ev("c26", "commitment", 600_000_000, at("2026-12-11"), commitment_id="C-1", due_date="2027-06-30"),
        ev("p26", "payment", 500_000_000, at("2027-01-04", "09:00"), fiscal_year=2026),  # short from here
        ev("r27", "receipt", 1_000, at("2027-01-04", "10:00"), fiscal_year=2027),  # 2027 opens
        ev("p27", "payment", 5_000, at("2027-01-04", "11:00"), fiscal_year=2027),
    ]
    want = [f"{ORG}:general:2027:shortfall:{ms('2027-01-04', '10:00')}"]
    for cuts in range(1 << (len(stream) - 1)):
        h, batch = Harness(QUIET), [stream[0]]
        for i, raw in enumerate(stream[1:]):
            if cuts >> i & 1:
                h.batch(*batch)
                batch = []
            batch.append(raw)
        h.batch(*batch)
        assert sorted(h.open()) == want, bin(cuts)
        raised = [c.alert for c in h.log if c.change == "raised" and c.alert.fiscal_year == 2027]
        assert [(a.id, a.raised_event, a.available) for a in raised] == [(want[0], "r27", -99_999_000)]


@pytest.mark.parametrize("one_batch", [True, False])
def test_year_end_stage_on_20_january_and_every_alert_of_the_year_resolved_by_its_close(
    one_batch: bool,
) -> None:
    h = Harness(BALANCES)
    h.batch(
        ev("r26", "receipt", 2_000_000_000, at("2026-12-01")),
        ev(
            "c1",
            "commitment",
            300_000_000,
            at("2026-12-01", "11:00"),
            commitment_id="C-1",
            due_date="2027-01-10",
        ),
        # the fund: 10M of cash, 100M committed (due after the horizon): short, one year
        ev("rf", "receipt", 10_000_000, at("2026-12-01", "12:00"), account=FUND),
        ev(
            "cf",
            "commitment",
            100_000_000,
            at("2026-12-01", "13:00"),
            account=FUND,
            commitment_id="C-F",
            due_date="2027-06-30",
        ),
    )
    assert sorted((c.change, c.alert.id) for c in h.log) == [
        ("raised", f"{ORG}:{FUND}:2026:shortfall:{ms('2026-12-01', '13:00')}"),
        ("raised", f"{ORG}:{FUND}:2026:year_end:d30"),
        ("raised", f"{ORG}:general:2026:year_end:d30"),
    ]
    h.batch(ev("d24", "receipt", 1_000, at("2026-12-24")))  # the 7-day stage
    assert (
        h.batch(ev("j19", "receipt", 1_000, at("2027-01-19"), fiscal_year=2026)) == []
    )  # still the 7-day stage
    out = h.batch(ev("j20", "receipt", 1_000, at("2027-01-20"), fiscal_year=2026))
    got = sorted(
        (c.change, c.alert.id, c.alert.stage_days, c.alert.severity, c.alert.resolution) for c in out
    )
    assert got == [
        ("raised", f"{ORG}:{FUND}:2026:year_end:d-20", LAPSE_STAGE, "warning", None),
        ("raised", f"{ORG}:general:2026:year_end:d-20", LAPSE_STAGE, "warning", None),
        ("resolved", f"{ORG}:{FUND}:2026:year_end:d7", 7, "warning", "superseded"),
        ("resolved", f"{ORG}:general:2026:year_end:d7", 7, "warning", "superseded"),
    ]
    lapse = next(c.alert for c in out if c.change == "raised" and c.alert.account == "general")
    assert (lapse.open_commitments, lapse.open_amount) == (1, 300_000_000)
    assert lapse.message.endswith(
        "300,000,000 KRW, lapse at the close of fiscal year 2026 (20 January has come)"
    )
    before = sorted(h.open())
    assert len(before) == 3  # the fund's shortfall and the two lapse notices
    # the close (its two copies in one batch, or one after the other): every 2026 alert resolved
    out = h.batch(*closes()) if one_batch else h.each(*closes())
    assert sorted(
        (c.change, c.alert.id, c.alert.resolution, c.alert.resolved_event, c.alert.resolved_ms)
        for c in out
        if c.alert.fiscal_year == 2026
    ) == [("resolved", aid, "fiscal_year_closed", "close-2026", ms("2027-01-21", "00:00")) for aid in before]
    later = [
        (c.change, c.alert.id, c.alert.resolution, c.alert.resolved_event)
        for c in out
        if c.alert.fiscal_year == 2027
    ]
    if one_batch:
        assert later == []  # the fund's 10M carried, its 100M commitment lapsed: not short
    else:
        # between the copies the fund's 2026 commitment is still open (it lapses with the
        # expenditure copy) while its cash is 2027's already: the account is short till then
        sf = f"{ORG}:{FUND}:2027:shortfall:{ms('2027-01-21', '00:00')}"
        assert later == [("raised", sf, None, None), ("resolved", sf, "recovered", "close-2026")]
    assert h.open() == {}
    for acc in ("general", FUND):
        p = h.ledger.positions[(ORG, acc, 2026)]
        assert (p.cash, p.committed) == (0, 0)  # final: carried forward, lapsed
        assert h.book.positions[(ORG, acc, 2026)].commits == {}  # the lapses left the index
    assert not [k for k in h.store if k.startswith(layout.open_prefix(ORG))]
    # 2026 is closed: a new day re-evaluates the government, and 2026 raises nothing again
    assert h.batch(ev("f1", "receipt", 1_000, at("2027-02-01"), fiscal_year=2027, account=FUND)) == []


@pytest.mark.parametrize("row_by_row", [False, True])
def test_a_close_moves_cash_between_the_years_without_outflow_or_inflow(row_by_row: bool) -> None:
    h = Harness()
    h.batch(
        ev("r26", "receipt", 1_000_000_000, at("2027-01-20", "09:00"), fiscal_year=2026),
        ev("p26", "payment", 300_000_000, at("2027-01-20", "10:00"), fiscal_year=2026),
    )
    later = ev("p27", "payment", 100_000_000, at("2027-01-22"), fiscal_year=2027)
    # in one batch with a later day, 2027's rows are read one by one; alone, summed
    h.batch(*closes(), *((later,) if row_by_row else ()))
    d21, d22 = day_of("2027-01-21"), day_of("2027-01-22")
    y26, y27 = h.book.positions[(ORG, "general", 2026)], h.book.positions[(ORG, "general", 2027)]
    assert y26.days.get(d21, [0, 0]) == [0, 0]  # the carry-out is no payment
    assert y27.days.get(d21, [0, 0]) == [0, 0]  # the carry-in is no receipt
    assert y26.days[day_of("2027-01-20")] == [300_000_000, 700_000_000]
    if row_by_row:
        assert y27.days[d22] == [100_000_000, -100_000_000]


def test_a_carried_forward_commitment_moves_to_the_next_years_open_commitments() -> None:
    h = Harness(BALANCES)
    h.batch(
        ev("r26", "receipt", 1_000_000_000, at("2026-12-10")),
        ev(
            "c1",
            "commitment",
            400_000_000,
            at("2026-12-10", "11:00"),
            commitment_id="C-1",
            due_date="2027-02-15",
        ),
        ev(
            "c2",
            "commitment",
            100_000_000,
            at("2026-12-10", "12:00"),
            commitment_id="C-2",
            due_date="2026-12-28",
        ),
    )
    h.batch(
        ev(
            "f1",
            "commitment_carry_forward",
            400_000_000,
            at("2026-12-15"),
            commitment_id="C-1",
            basis="explicit",
        )
    )

    def index() -> tuple[dict[str, tuple[int, int, str | None]], ...]:
        return tuple(h.book.positions[(ORG, "general", fy)].commits for fy in (2026, 2027))

    want = (
        {"C-2": (100_000_000, day_of("2026-12-28"), "2026-12-28")},
        {"C-1": (400_000_000, day_of("2027-02-15"), "2027-02-15")},
    )
    assert index() == want
    assert h.book.positions[(ORG, "general", 2026)].due == {day_of("2026-12-28"): 100_000_000}
    h.restart()  # from the records: the same
    assert index() == want
    # 2026's next year-end stage counts what is still 2026's
    out = h.batch(ev("n", "receipt", 1_000, at("2026-12-17")))
    ye = [c.alert for c in out if c.change == "raised"]
    assert [(a.id, a.open_commitments, a.open_amount, [x.commitment_id for x in a.drivers]) for a in ye] == [
        (f"{ORG}:general:2026:year_end:d14", 1, 100_000_000, ["C-2"])
    ]


def test_a_closed_year_raises_nothing_again_after_a_restart() -> None:
    """What the book knows of a close comes back from the ledger's records on a restart."""
    h = Harness(QUIET)
    h.batch(ev("r", "receipt", 1_000_000_000, at("2027-01-15"), fiscal_year=2026))
    cf = ev(
        "cf",
        "commitment",
        100_000_000,
        at("2026-12-15"),
        account=FUND,
        commitment_id="C-F",
        due_date="2027-06-30",
    )
    out = h.batch(cf)
    assert summary(out) == [("raised", SHORTFALL, "cf")]  # the fund: nothing but the commitment
    revenue, expenditure = closes()
    out = h.batch(revenue)  # the fund has no cash to carry: its 2026 stays its only year
    assert [(c.change, c.alert.resolution) for c in out] == [("resolved", "fiscal_year_closed")]
    h.restart()
    assert h.batch(ev("x", "receipt", 1_000, at("2027-01-22"), fiscal_year=2027)) == []  # a new day
    # a late delivery of the expenditure side, whose copy of the close has not come yet
    late = ev(
        "late",
        "commitment_cancel",
        1_000,
        at("2027-01-20"),
        fiscal_year=2026,
        account=FUND,
        commitment_id="C-F",
    )
    assert h.batch(late) == []
    assert h.open() == {}
    assert h.batch(expenditure) == []  # the commitment lapses
    assert h.ledger.positions[(ORG, FUND, 2026)].committed == 0


def test_a_close_read_while_catching_up_resolves_the_years_alerts_once_settled() -> None:
    h = Harness(BALANCES)
    h.batch(
        ev("r26", "receipt", 1_000_000_000, at("2027-01-19"), fiscal_year=2026),
        ev("c26", "commitment", 200_000_000, at("2026-12-30"), commitment_id="C-1", due_date="2027-06-30"),
    )
    out = h.batch(ev("j20", "receipt", 1_000, at("2027-01-20"), fiscal_year=2026))
    assert [(c.change, c.alert.id) for c in out] == [
        ("resolved", f"{ORG}:general:2026:year_end:d7"),
        ("raised", f"{ORG}:general:2026:year_end:d-20"),
    ]
    assert h.batch(*closes(), hold=(ORG,)) == []  # the partition is not settled: judged later
    out = h.book.release(h.ledger.positions, lambda org: True)
    assert [(c.change, c.alert.id, c.alert.resolution) for c in out] == [
        ("resolved", f"{ORG}:general:2026:year_end:d-20", "fiscal_year_closed")
    ]
    assert h.open() == {}


def test_changed_thresholds_judge_the_account_as_a_whole() -> None:
    h = Harness(QUIET)
    h.batch(ev("r26", "receipt", 4_000_000_000, at("2026-12-10")))
    h.batch(ev("p27", "payment", 1_000_000_000, at("2027-01-05"), fiscal_year=2027))
    override = {(ORG, "general"): Override(floor_krw=3_500_000_000)}
    out = h.book.set_overrides(override, h.ledger.positions)
    # the account holds 3,000M (2026: 4,000M, 2027: -1,000M): below the floor, on 2027
    assert [(c.change, c.alert.id, c.alert.available, c.alert.fiscal_years) for c in out] == [
        ("raised", f"{ORG}:general:2027:below_floor:{ms('2027-01-05')}", 3_000_000_000, [2026, 2027])
    ]


def fy_story() -> list[tuple[Raw, ...]]:
    """Batches across a year end: history, commitments, a carry-forward, an account short as a
    whole in January, the 20 January stage, the close, the next year."""
    b: list[tuple[Raw, ...]] = [
        (
            ev("open", "receipt", 2_000_000_000, at("2026-12-01")),
            ev("fo", "receipt", 50_000_000, at("2026-12-01", "10:30"), account=FUND),
        )
    ]
    for i in range(2, 10):
        b.append((ev(f"pay{i}", "payment", 40_000_000, at(f"2026-12-{i:02d}")),))
    b.append(
        (
            ev("c1", "commitment", 800_000_000, at("2026-12-10"), commitment_id="C-1", due_date="2027-01-08"),
            ev(
                "c2",
                "commitment",
                300_000_000,
                at("2026-12-10", "11:00"),
                commitment_id="C-2",
                due_date="2027-03-02",
            ),
            ev("c3", "commitment", 60_000_000, at("2026-12-10", "12:00"), account=FUND, commitment_id="C-3"),
        )
    )
    b.append(
        (
            ev(
                "f2",
                "commitment_carry_forward",
                300_000_000,
                at("2026-12-20"),
                commitment_id="C-2",
                basis="explicit",
            ),
        )
    )
    b.append((ev("d24", "receipt", 1_000, at("2026-12-24")),))
    b.append((ev("pc1", "payment", 800_000_000, at("2027-01-08"), fiscal_year=2026, commitment_id="C-1"),))
    b.append((ev("p27", "payment", 1_500_000_000, at("2027-01-11"), fiscal_year=2027),))
    b.append((ev("j20", "receipt", 1_000, at("2027-01-20"), fiscal_year=2026),))
    b.append(closes())
    b.append((ev("r27", "receipt", 2_500_000_000, at("2027-02-01"), fiscal_year=2027),))
    b.append((ev("pc2", "payment", 300_000_000, at("2027-03-02"), fiscal_year=2027, commitment_id="C-2"),))
    return b


def test_the_year_end_story_raises_every_rule_and_leaves_nothing_of_2026_open() -> None:
    h = Harness()
    for b in fy_story():
        h.batch(*b)
    raised = {(c.alert.rule, c.alert.fiscal_year) for c in h.log if c.change == "raised"}
    assert {(SHORTFALL, 2026), (SHORTFALL, 2027), (BELOW_FLOOR, 2026), (PROJECTED, 2027)} <= raised
    assert {c.alert.stage_days for c in h.log if c.alert.rule == YEAR_END} >= {30, 14, 7, LAPSE_STAGE}
    assert {c.alert.resolution for c in h.log if c.change == "resolved"} >= {
        "superseded",
        "fiscal_year_closed",
    }
    assert not [a for a in h.book.open_alerts() if a.fiscal_year == 2026]


def test_the_year_end_story_is_the_same_after_restarts_and_crashes() -> None:
    ref = Harness()
    for b in fy_story():
        ref.batch(*b)
    h = Harness()
    for b in fy_story():
        h.batch(*b)
        h.restart()  # the book rebuilt from its records, the positions and the ledger's closes
    assert keys(h.log) == keys(ref.log)
    assert h.open() == ref.open()
    assert h.outbox() == ref.outbox()
    c = Harness()
    for i, b in enumerate(fy_story()):
        if i in (10, 14, 15, 16):  # the carry-forward, January's shortfall, 20 January, the close
            saved = copy.deepcopy(
                (c.ledger.positions, c.ledger.commitments, c.ledger.journal, c.ledger.closed)
            )
            c.book.apply(c.fold(b), c.ledger.positions)
            c.ledger.positions, c.ledger.commitments, c.ledger.journal, c.ledger.closed = saved
            c.offset -= len(b)
            c.restart()  # the records of that batch never reached the store
        c.batch(*b)
    assert c.outbox() == ref.outbox()
    assert c.open() == ref.open()


# -- 5. operational ----------------------------------------------------------------------------


def kst(s: str) -> int:
    return int(dt.datetime.fromisoformat(s + "+09:00").timestamp() * 1000)


def test_stale_data_is_raised_once_after_office_hours_of_silence_and_resolved_by_data() -> None:
    book = AlertBook()
    last = {ORG: kst("2026-11-20T17:00")}
    assert book.check_stale(kst("2026-11-23T09:30"), last, [ORG]) == []  # 90 office minutes
    out = book.check_stale(kst("2026-11-23T10:00"), last, [ORG])  # 120
    assert [(c.change, c.alert.rule, c.alert.minutes, c.alert.org_code) for c in out] == [
        ("raised", STALE, 120, ORG)
    ]
    assert book.check_stale(kst("2026-11-23T10:05"), last, [ORG]) == []
    last[ORG] = kst("2026-11-23T10:06")
    out2 = book.check_stale(kst("2026-11-23T10:07"), last, [ORG])
    assert [(c.change, c.alert.id) for c in out2] == [("resolved", out[0].alert.id)]
    assert book.check_stale(kst("2026-11-23T10:08"), last, [ORG]) == []


def test_processor_lag_needs_to_last_and_resolves_below_half() -> None:
    book = AlertBook(AlertConfig(operational=Operational(lag_records=100, lag_seconds=30)), worker_id="w1")
    t0 = 1_800_000_000_000
    assert book.check_lag(t0, 500) == [] and book.check_lag(t0 + 29_000, 500) == []
    out = book.check_lag(t0 + 30_000, 400)
    assert [(c.change, c.alert.rule, c.alert.lag_records, c.alert.worker) for c in out] == [
        ("raised", LAG, 400, "w1")
    ]
    assert book.check_lag(t0 + 40_000, 80) == []  # below the threshold, above half of it
    out = book.check_lag(t0 + 41_000, 50)
    assert [(c.change, c.alert.resolution) for c in out] == [("resolved", "caught_up")]


# -- durability ------------------------------------------------------------------------------


def story() -> list[tuple[bytes, ...]]:
    """Batches exercising every money rule (history, floor, shortfall, projection, year end)."""
    b: list[tuple[bytes, ...]] = [(ev("open", "receipt", 2_000_000_000, at("2026-11-02")),)]
    for i in range(1, 10):
        b.append((ev(f"pay{i}", "payment", 40_000_000, at(d("2026-11-02", i))),))
    b.append(
        (
            ev(
                "c1",
                "commitment",
                1_000_000_000,
                at("2026-11-12", "11:00"),
                commitment_id="C-1",
                due_date="2026-11-20",
            ),
            ev(
                "c2",
                "commitment",
                700_000_000,
                at("2026-11-12", "12:00"),
                commitment_id="C-2",
                due_date="2026-12-28",
            ),
        )
    )
    b.append((ev("r1", "receipt", 500_000_000, at("2026-11-13")),))
    b.append((ev("pay-c1", "payment", 1_000_000_000, at("2026-11-20"), commitment_id="C-1"),))
    b.append(
        (
            ev("r2", "receipt", 2_000_000_000, at("2026-12-01")),
            ev(
                "c3",
                "commitment",
                100_000_000,
                at("2026-12-01", "11:00"),
                commitment_id="C-3",
                due_date="2026-12-05",
                account=FUND,
            ),
            ev("rf", "receipt", 1_000, at("2026-12-01", "11:30"), account=FUND),
        )
    )
    b.append((ev("d14", "receipt", 1_000, at("2026-12-18")),))
    b.append((ev("pay-c2", "payment", 700_000_000, at("2026-12-28"), commitment_id="C-2"),))
    return b


def keys(changes: list[AlertChange]) -> list[tuple[str, str, int]]:
    return [(c.change, c.alert.id, c.alert.rev) for c in changes]


def test_the_story_raises_every_money_rule() -> None:
    h = Harness()
    for b in story():
        h.batch(*b)
    assert {c.alert.rule for c in h.log if c.change == "raised"} == {
        SHORTFALL,
        BELOW_FLOOR,
        PROJECTED,
        YEAR_END,
    }


def test_restart_after_every_batch_neither_duplicates_nor_loses_an_alert() -> None:
    ref = Harness()
    for b in story():
        ref.batch(*b)
    h = Harness()
    for b in story():
        h.batch(*b)
        h.restart()  # the book rebuilt from its records and the positions
    assert keys(h.log) == keys(ref.log)
    assert h.open() == ref.open()
    assert h.outbox() == ref.outbox()  # one outbox record per change, none twice


def test_a_crash_between_fold_and_write_replays_to_the_same_alerts() -> None:
    ref = Harness()
    for b in story():
        ref.batch(*b)
    h = Harness()
    batches = story()
    for i, b in enumerate(batches):
        if i in (3, 10, 11):
            # kill -9 after the fold and the book's update, before the atomic write
            saved = copy.deepcopy((h.ledger.positions, h.ledger.commitments, h.ledger.journal))
            h.book.apply(h.fold(b), h.ledger.positions)
            h.ledger.positions, h.ledger.commitments, h.ledger.journal = saved
            h.offset -= len(b)
            h.restart()  # the records of that batch never reached the store
        h.batch(*b)
    assert h.outbox() == ref.outbox()
    assert h.open() == ref.open()


def test_acknowledgement_survives_restart_and_resolution() -> None:
    h = Harness()
    h.batch(ev("r1", "receipt", 10_000, at(DAY)))
    aid = h.batch(ev("p1", "payment", 20_000, at(DAY, "11:00")))[0].alert.id
    assert h.book.acknowledge(aid, "kim", 123) and not h.book.acknowledge(aid, "lee", 456)
    h.write(h.book.take_records())
    h.restart()
    a = h.book.find(aid)
    assert a is not None and (a.state, a.acknowledged_by, a.acknowledged_ms) == ("acknowledged", "kim", 123)
    out = h.batch(ev("r2", "receipt", 5_000_000, at(DAY, "12:00")))
    assert [(c.change, c.alert.rule, c.alert.state, c.alert.acknowledged_by) for c in out] == [
        ("resolved", SHORTFALL, "resolved", "kim"),
    ]


def test_held_partition_is_judged_once_it_has_caught_up() -> None:
    h = Harness()
    h.batch(ev("r0", "receipt", 100_000_000, at(DAY, "08:00")))
    # catching up: the payment's topic is read ahead of the receipts' -> no transient alert
    assert h.batch(ev("p1", "payment", 150_000_000, at(DAY, "09:30")), hold=(ORG,)) == []
    assert h.batch(ev("r1", "receipt", 100_000_000, at(DAY, "09:00")), hold=(ORG,)) == []
    assert h.book.held == {(ORG, "general", 2026)}
    assert h.batch(ev("p2", "payment", 100_000_000, at(DAY, "10:00")), hold=(ORG,)) == []
    h.restart()  # the hold is part of the state
    assert h.book.held == {(ORG, "general", 2026)}
    out = h.book.release(h.ledger.positions, lambda org: True)
    assert [(c.change, c.alert.rule, c.alert.available, c.alert.raised_ms) for c in out] == [
        ("raised", SHORTFALL, -50_000_000, ms(DAY, "10:00")),
    ]
    assert h.book.held == set()


def test_a_replay_continues_what_was_announced_after_the_last_state_write() -> None:
    """kill -9 after alerts were announced but before the state that raised them reached disk:
    the restarted worker finds them open in the serving copy and continues them; one it does
    not confirm is resolved."""
    h = Harness()
    h.batch(ev("r1", "receipt", 1_000_000_000, at(DAY, "09:00")))
    disk = copy.deepcopy((h.store, h.ledger.positions, h.ledger.commitments, h.ledger.journal, h.offset))
    lost = (
        ev("c1", "commitment", 1_200_000_000, at(DAY, "09:10"), commitment_id="C-1", due_date="2026-06-11"),
        ev("r2", "receipt", 1_000, at(DAY, "09:20")),
    )
    for raw in lost:  # announced batch by batch ...
        h.batch(raw)
    announced = [msgspec.convert(alert_dict(a, "raised"), type(a)) for a in h.book.open_alerts()]
    assert [a.rule for a in announced] == [SHORTFALL]  # (its projection inhibited)
    ghost = msgspec.structs.replace(announced[0], id=f"{ORG}:general:2026:{BELOW_FLOOR}:1", rule=BELOW_FLOOR)
    # ... then the state of those batches is lost; the serving copy has them (and a ghost)
    h.store, h.ledger.positions, h.ledger.commitments, h.ledger.journal, h.offset = disk
    h.book = h._new_book({ORG: announced + [ghost]})
    out = h.batch(*lost)  # replayed in one batch
    assert [(c.change, c.alert.id, c.alert.resolution) for c in out] == [("resolved", ghost.id, "recovered")]
    assert sorted(h.open()) == sorted(a.id for a in announced)
    h.restart()  # continued for good: in the book's own records now
    assert sorted(h.open()) == sorted(a.id for a in announced)


def test_a_new_owner_continues_the_previous_owners_open_alerts() -> None:
    old = Harness()
    for b in story()[:11]:
        old.batch(*b)
    before = old.open()
    assert before, "the story must leave alerts open here"
    # a worker without state for the partition: rebuilds from the book of record, held, seeded
    # with the open alerts of the serving copy (the public JSON shape, as stored in Redis)
    seed = {ORG: [msgspec.convert(alert_dict(a, "raised"), type(a)) for a in old.book.open_alerts()]}
    new = Harness()
    new.store.clear()
    new.book = new._new_book(seed)
    for b in story()[:11]:
        assert new.batch(*b, hold=(ORG,)) == []
    assert new.book.release(new.ledger.positions, lambda org: True) == []  # nothing new to say
    assert new.open() == before
    # and it goes on exactly as the old owner would have
    for b in story()[11:]:
        old.batch(*b)
        new.batch(*b)
    assert new.open() == old.open()
    assert keys(new.log) == keys(old.log[len(old.log) - len(new.log) :])


# -- configuration and shape -------------------------------------------------------------------


def test_configuration_is_validated() -> None:
    assert load_config().operational.recent_keep == 2000
    ok = decode_config(b'[defaults]\nfloor_months = 3\n[governments."5260000".general]\nfloor_krw = 1000\n')
    assert Resolver(ok).get(ORG, "general").floor_krw == 1000
    for bad in (
        b"[defaults]\nfloor_months = 1.5\n",
        b"[defaults]\nfloor_krw = -5\n",
        b"[defaults]\nmargin_krw = true\n",
        b"[defaults]\nnope = 1\n",
        b'[governments."9999999".general]\nfloor_krw = 1\n',
        b'[governments."5260000".nope]\nfloor_krw = 1\n',
    ):
        with pytest.raises((msgspec.ValidationError, ValueError)):
            decode_config(bad)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"floor_krw": 0}', type=Override)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"floor_krw": "5"}', type=Override)


def test_public_shape_names_the_government_and_times_in_utc() -> None:
    h = Harness()
    h.batch(ev("r1", "receipt", 10_000, at(DAY)))
    c = h.batch(ev("p1", "payment", 20_000, at(DAY, "11:00")))[0]
    d_ = c.to_dict()
    assert d_["name"] == "울릉군" and d_["province_code"] == "6470000" and d_["change"] == "raised"
    # instants: cashpos.calendar.utc_stamp (11:00 KST); dates stay Korean dates
    assert d_["raised_at"] == d_["opened_at"] == "2026-06-01T02:00:00.000Z" and d_["state"] == "raised"
    assert "resolved_at" not in d_
    assert d_["available"] == -10_000 and "울릉군" in str(d_["message"])


# -- the simulator's scenario ------------------------------------------------------------------


def test_simulated_shortfall_scenario_crosses_at_the_staged_events() -> None:
    start = dt.datetime(2026, 11, 16, 9, 0, tzinfo=KST)
    sim = StagedSimulator(seed=3, start=start, speed=600, rate=5)
    staged = shortfall_scenario(sim)
    sim.stage(staged)
    commit, pay = staged
    assert dt.datetime.fromtimestamp(commit.at, KST) == start + dt.timedelta(minutes=10)
    assert dt.datetime.fromtimestamp(pay.at, KST) == dt.datetime(2026, 11, 19, 10, 0, tzinfo=KST)
    h = Harness(orgs=())
    raws = sim.opening_balances() + sim.until(pay.at + 3600, 1_000_000)
    assert commit.raw in raws and pay.raw in raws
    mine = []
    for i in range(0, len(raws), 100):
        before = h.ledger.positions.get((ORG, "general", 2026))
        cash_before = before.cash if before else 0
        out = h.batch(*raws[i : i + 100])
        mine += [c for c in out if c.alert.org_code == ORG and c.alert.account == "general"]
        if pay.raw in raws[i : i + 100]:
            assert cash_before > 0 > h.ledger.positions[(ORG, "general", 2026)].cash  # cash goes negative
    # the commitment is larger than the cash: an actual shortfall at once (which inhibits the
    # projection of the payment day), nothing more when the payment takes cash below zero
    assert [(c.change, c.alert.rule, c.alert.raised_event) for c in mine] == [
        ("raised", SHORTFALL, "sim-3-scn-shortfall-c"),
    ]
    assert (mine[0].alert.available or 0) < 0
