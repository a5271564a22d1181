"""Known future flows (contract version 3): payment orders (지급명령) ahead of commitment payments,
and expected receipts (세입 예정) realised by receipts naming their schedule.

Off unless ``Simulator(known_flows=True)``: without it the stream is byte for byte what it was
(no draw of the generator's random stream is added or moved). With it, every choice here comes
from a random stream of its own (seeded by the run's seed), so the stream is the plain one plus
the new events, a payment's ``order_id`` and the scheduled receipts, with the spontaneous grant,
subsidy and local-tax receipts scaled down by the share the schedules now carry (same events,
smaller amounts: at the reference volume the year's receipts stay ~ the budget).

* **Payment orders.** ``ORDERED_SHARE`` of a commitment's payments are ordered 2-5 business days
  before the payment, in office hours; never before the plan's previous step (so a commitment has
  at most one open order, never more than its open amount) and dated in the fiscal year the
  payment belongs to (a carried-forward commitment's order in January). Where the lead does not
  fit, the order falls between the previous step and the payment, and with under 10 minutes
  left the payment goes unordered. Id ``{commitment_id}-o{step}``; the payment names it.
  Payroll and the other payments without commitment stay unordered (the forecast learns them).
* **Expected receipts**, one schedule per (government, flow, month) on the general account, id
  ``{prefix}-{flow}-{yyyy-mm}``; its announcement ``{sid}-e1``, a revision ``{sid}-e2``, the
  receipts realising it ``{sid}-p{k}`` (unique per government and side, the same every run):
  - ``grant``: the monthly 지방교부세 instalment (자치구: their city's 조정교부금; Seoul, which
    receives no 보통교부세: none) and ``subsidy``: the monthly 보조금 instalment, ``confirmed``,
    expected on one of the first five business days of the month, announced 5-20 days before
    (January's on its first business day: a fiscal year's events are dated within it); realised
    in full that day (85%), a business day late (10%) or in two parts (5%).
  - the local-tax due dates of ``TAX_DUES`` (지방소득세 31 May, 자동차세 30 June and 31 December,
    재산세 31 July and 30 September) for the classes that levy them (``TAX_SHARES``: 자치구 only
    재산세, 도 none; 세종 and 제주, single-tier, as a 시): ``estimated`` 25-35 days before at
    10-20% off what arrives, half of them revised once 5-10 days before (closer, not exact);
    realised by daily settlements over the business days of the 15 days up to the due date,
    growing towards it. 취득세 and the rest stay unscheduled.
  Sizes: the schedule's share of the category's yearly amount at the reference volume, times
  ``events per simulated day / REFERENCE_EVENTS_PER_DAY``: a slower simulation samples fewer
  spontaneous events of unchanged size, so its scheduled flows shrink with it and keep their
  weight against them. Their count does not scale (a few per government and month).
  Month M is planned when the clock enters month M-1 (at the start: the start's month and the
  next); a schedule whose first receipt would fall before the start (+1 h) is left out, an
  announcement due before the start is made just after it.
"""

from __future__ import annotations

import datetime as dt
import random
from functools import cache
from heapq import heappop, heappush, heapreplace
from typing import TYPE_CHECKING, Any, Final

import orjson

from cashpos.calendar import KST, KST_OFFSET_SECONDS, is_business_day
from cashpos.refdata import governments
from cashpos.simulator.budgets import budget_class
from cashpos.simulator.channels import (
    N_GOVS,
    R_GRANT,
    R_SUBSIDY,
    R_TAX,
    REFERENCE_EVENTS_PER_DAY,
    REV_AMOUNT_SHARES,
    SOURCES,
)
from cashpos.simulator.rhythm import day_index, day_of, day_start
from streams.contract import MAX_AMOUNT

if TYPE_CHECKING:
    from cashpos.simulator.rhythm import HourInfo

ORDERED_SHARE: Final = 0.85  # of a commitment's payments
ORDER_LEAD_BUSINESS_DAYS: Final = (2, 5)
GRANT_SCHEDULED_SHARE: Final = 0.6  # of the grant category's yearly amount, in 12 instalments
SUBSIDY_SCHEDULED_SHARE: Final = 0.5  # of the subsidy category's
NO_GRANT_INSTALMENTS: Final = frozenset({"6110000"})  # 서울특별시: 불교부단체
REVISED_SHARE: Final = 0.5  # of the tax schedules
TAX_WINDOW_DAYS: Final = 15  # receipts on the business days of the 15 days before the due date
# flow name -> (due month, due day)
TAX_DUES: Final = {
    ("inctax", 5): 31,  # 지방소득세 (individuals' filing)
    ("cartax", 6): 30,  # 자동차세, first half
    ("proptax", 7): 31,  # 재산세 (buildings, half of housing)
    ("proptax", 9): 30,  # 재산세 (land, the other half of housing)
    ("cartax", 12): 31,  # 자동차세, second half
}
_SI: Final = {
    ("inctax", 5): 0.10,
    ("cartax", 6): 0.06,
    ("proptax", 7): 0.12,
    ("proptax", 9): 0.15,
    ("cartax", 12): 0.06,
}
# Share of a government's yearly local tax due on each date, by budget class.
TAX_SHARES: Final[dict[str, dict[tuple[str, int], float]]] = {
    "si": _SI,
    "gun": _SI,
    "gu": {("proptax", 7): 0.25, ("proptax", 9): 0.25},
    "metro_city": {("inctax", 5): 0.08, ("cartax", 6): 0.04, ("cartax", 12): 0.04},
    "province": {},
}
_OFFICE_S: Final = 9 * 3600.0
_NEVER: Final = 1 << 62  # an hour the clock never enters

# One scheduled event: (epoch seconds, body without occurred_at yet)
_Planned = tuple[float, dict[str, Any]]


def _at(p: _Planned) -> float:
    return p[0]


def _money(x: float, unit: int) -> int:
    """A drawn amount in whole ``unit``s, within the contract's bounds."""
    return min(MAX_AMOUNT, max(unit, int(x / unit + 0.5) * unit))


@cache
def _is_bday(day: int) -> bool:
    """Whether the KST day number ``day`` is a business day (a few thousand days per run)."""
    return is_business_day(day_of(day))


@cache
def _bdays_before(day: int, n: int) -> int:
    """The ``n``-th business day before ``day``."""
    while n:
        day -= 1
        if _is_bday(day):
            n -= 1
    return day


@cache
def _iso(day: int) -> str:
    return day_of(day).isoformat()


@cache
def _bday_on_or_before(day: int) -> int:
    while not _is_bday(day):
        day -= 1
    return day


@cache
def _bday_after(day: int, n: int = 1) -> int:
    while n:
        day += 1
        if _is_bday(day):
            n -= 1
    return day


class _Gov:
    """What one government's schedules are drawn from (at the run's scale)."""

    __slots__ = ("grant_source", "monthly_grant", "monthly_subsidy", "taxes")

    def __init__(
        self, grant_source: str | None, grant: float, subsidy: float, taxes: dict[int, tuple[str, float]]
    ) -> None:
        self.grant_source = grant_source  # None: no grant instalments
        self.monthly_grant = grant
        self.monthly_subsidy = subsidy
        self.taxes = taxes  # due month -> (flow, yearly yield of that due date)


class KnownFlows:
    """The generator's known future flows (a mixin of :class:`Simulator`)."""

    seed: int
    prefix: str
    start: dt.datetime
    rate: float
    speed: float
    _seq: int
    _t: float
    _followups: list[tuple[float, int, list[Any]]]
    _orgs: list[str]
    _budgets: list[int]
    _medians: list[list[float]]

    if TYPE_CHECKING:

        def _stamp(self, t: float) -> tuple[str, HourInfo]: ...

    def _setup_known_flows(self, on: bool) -> None:
        self.known_flows = on
        self._kf_pending = 0  # schedules in the heap (neither commitments nor closes)
        self._kf_plan_hour = _NEVER  # the KST hour whose entry plans the month after next
        if not on:
            return
        self._kf_rng = random.Random(f"cashpos-known:{self.seed}")
        self._t0 = self.start.timestamp()
        scale = self.rate / self.speed * 86400.0 / REFERENCE_EVENTS_PER_DAY
        parents = {g.province_code for g in governments().values() if g.level == "basic"}
        self._kf_govs: list[_Gov] = []
        for i, g in enumerate(governments().values()):
            cls = budget_class(g.name, g.level)
            shares = REV_AMOUNT_SHARES[cls]
            budget = self._budgets[i] * scale
            tax_cls = "si" if g.level == "metropolitan" and g.org_code not in parents else cls
            taxes = {m: (flow, budget * shares[R_TAX] * s) for (flow, m), s in TAX_SHARES[tax_cls].items()}
            grant_source = None
            if g.org_code not in NO_GRANT_INSTALMENTS:
                grant_source = "e-hojo" if cls == "gu" else SOURCES[R_GRANT]  # 조정교부금: the city's
            meds = self._medians[i]  # the spontaneous receipts keep the unscheduled rest
            if grant_source is not None:
                meds[R_GRANT] *= 1.0 - GRANT_SCHEDULED_SHARE
            meds[R_SUBSIDY] *= 1.0 - SUBSIDY_SCHEDULED_SHARE
            meds[R_TAX] *= 1.0 - sum(TAX_SHARES[tax_cls].values())
            self._kf_govs.append(
                _Gov(
                    grant_source,
                    budget * shares[R_GRANT] * GRANT_SCHEDULED_SHARE / 12,
                    budget * shares[R_SUBSIDY] * SUBSIDY_SCHEDULED_SHARE / 12,
                    taxes,
                )
            )
        local = self.start.astimezone(KST)
        y, m = local.year, local.month
        self._plan_month(y, m)
        y, m = (y, m + 1) if m < 12 else (y + 1, 1)
        self._plan_month(y, m)
        self._kf_plan_hour = day_index(dt.date(y, m, 1)) * 24

    # -- payment orders ----------------------------------------------------------------------

    def _with_orders(
        self, cid: str, steps: list[tuple[Any, ...]], times: list[float], t: float, floor: float = 0.0
    ) -> tuple[list[tuple[Any, ...]], list[float]]:
        """A commitment's plan with its payment orders: each ordered payment becomes
        ``("payment", amount, order_id)`` after ``("payment_order", amount, order_id, pay_date)``.
        ``floor``: no order before it (the fiscal year its payment belongs to starts then)."""
        rnd = self._kf_rng.random
        out_steps: list[tuple[Any, ...]] = []
        out_times: list[float] = []
        prev = t
        for j, step in enumerate(steps):
            at = times[j]
            if step[0] == "payment" and rnd() < ORDERED_SHARE:
                pay_day = int((at + KST_OFFSET_SECONDS) // 86400)
                order_at = self._order_time(prev, at, pay_day, floor)
                if order_at is not None:
                    oid = f"{cid}-o{j}"
                    out_steps.append(("payment_order", step[1], oid, _iso(pay_day)))
                    out_times.append(order_at)
                    step = ("payment", step[1], oid)
            out_steps.append(step)
            out_times.append(at)
            prev = at
        return out_steps, out_times

    def _order_time(self, prev: float, pay_at: float, day: int, floor: float) -> float | None:
        """2-5 business days before ``pay_at`` (on ``day``) in office hours, else between the
        previous step and the payment; None when under 10 minutes are left."""
        rnd = self._kf_rng.random
        earliest = max(prev, floor) + 60.0
        lo, hi = ORDER_LEAD_BUSINESS_DAYS
        day = _bdays_before(day, lo + int(rnd() * (hi - lo + 1)))
        at = day_start(day) + _OFFICE_S + _OFFICE_S * rnd()
        if at >= earliest:
            return at
        if pay_at - earliest < 600.0:
            return None
        return earliest + (pay_at - earliest) * (0.1 + 0.4 * rnd())

    # -- expected receipts ---------------------------------------------------------------------

    def _plan_ahead(self) -> None:
        """The clock entered month M-1: plan month M."""
        d = day_of(self._kf_plan_hour // 24)  # the 1st of M-1
        y, m = (d.year, d.month + 1) if d.month < 12 else (d.year + 1, 1)
        self._plan_month(y, m)
        self._kf_plan_hour = day_index(dt.date(y, m, 1)) * 24

    def _plan_month(self, y: int, m: int) -> None:
        """Every government's schedules expected in month ``m`` of ``y``."""
        rng = self._kf_rng
        first = _bday_on_or_before(day_index(dt.date(y, m, 1)) - 1)  # the month before's last
        for g in range(N_GOVS):
            gov = self._kf_govs[g]
            if gov.grant_source is not None:
                amount = _money(gov.monthly_grant * rng.uniform(0.9, 1.1), 1000)
                self._plan_instalment(g, y, m, first, "grant", gov.grant_source, amount)
            amount = _money(gov.monthly_subsidy * rng.uniform(0.9, 1.1), 1000)
            self._plan_instalment(g, y, m, first, "subsidy", SOURCES[R_SUBSIDY], amount)
            tax = gov.taxes.get(m)
            if tax is not None:
                flow, yearly = tax
                self._plan_tax(g, y, m, flow, _money(yearly * rng.uniform(0.9, 1.1), 10))

    def _plan_instalment(
        self, g: int, y: int, m: int, first: int, category: str, source: str, amount: int
    ) -> None:
        """A confirmed grant or subsidy instalment on one of the 5 business days after ``first``."""
        rng = self._kf_rng
        rnd = rng.random
        expected = _bday_after(first, 2 + int(rnd() * 4) if m == 1 else 1 + int(rnd() * 5))
        if m == 1:  # announced on 2 January (the first business day): dated in its own year
            ann = day_start(_bday_after(first)) + _OFFICE_S + 3600.0 * rnd()
        else:
            ann = self._office_time(_bday_on_or_before(expected - 5 - int(rnd() * 16)))
        r = rnd()
        if r < 0.85:
            parts = [(expected, amount)]
        elif r < 0.95:  # a business day late
            parts = [(_bday_after(expected), amount)]
        else:  # in two parts
            first_part = amount * rng.randint(50, 80) // 100 // 1000 * 1000
            later = _bday_after(expected, rng.randint(1, 3))
            parts = (
                [(expected, first_part), (later, amount - first_part)] if first_part else [(expected, amount)]
            )
        sid = f"{self.prefix}-{category}-{y}-{m:02d}"
        base = self._schedule_base(g, y, category, source, sid)
        planned: list[_Planned] = [
            (ann, self._expected(base, f"{sid}-e1", amount, day_of(expected), "confirmed")),
        ]
        for k, (day, part) in enumerate(parts, 1):
            planned.append((self._settle_time(day), self._receipt(base, f"{sid}-p{k}", part)))
        self._push_schedule(g, planned)

    def _plan_tax(self, g: int, y: int, m: int, flow: str, yield_: int) -> None:
        """A local-tax due date: its estimated yield, maybe revised, and the daily settlements."""
        rng = self._kf_rng
        due = dt.date(y, m, TAX_DUES[(flow, m)])
        due_day = day_index(due)
        off = rng.randint(100, 200) * (1 if rng.random() < 0.5 else -1)  # per mille off the yield
        sid = f"{self.prefix}-{flow}-{y}-{m:02d}"
        base = self._schedule_base(g, y, "local_tax", SOURCES[R_TAX], sid)
        estimate = max(10, yield_ * (1000 + off) // 10_000 * 10)  # integer KRW, to 10원
        ann = self._office_time(_bday_on_or_before(due_day - rng.randint(25, 35)))
        planned: list[_Planned] = [(ann, self._expected(base, f"{sid}-e1", estimate, due, "estimated"))]
        if rng.random() < REVISED_SHARE:
            off = off * rng.randint(250, 600) // 1000
            revised = max(10, yield_ * (1000 + off) // 10_000 * 10)
            at = self._office_time(_bday_on_or_before(due_day - rng.randint(5, 10)))
            planned.append((at, self._expected(base, f"{sid}-e2", revised, due, "estimated")))
        days = [d for d in range(due_day - TAX_WINDOW_DAYS, due_day + 1) if _is_bday(d)]
        n = len(days)
        weights = [10 + 90 * (i + 1) ** 3 // n**3 for i in range(n)]  # growing towards the due date
        weights[-1] *= 3
        total = sum(weights)
        parts = [yield_ * w // total // 10 * 10 for w in weights]
        parts[-1] += yield_ - sum(parts)  # exact: the parts add up to the yield
        k = 0
        for day, part in zip(days, parts):
            if part > 0:
                k += 1
                planned.append((self._settle_time(day), self._receipt(base, f"{sid}-p{k}", part)))
        self._push_schedule(g, planned)

    def _office_time(self, day: int) -> float:
        return day_start(day) + _OFFICE_S + _OFFICE_S * self._kf_rng.random()

    def _settle_time(self, day: int) -> float:
        """A receipt's time on ``day``: 10:00-16:00."""
        return day_start(day) + 10 * 3600.0 + 6 * 3600.0 * self._kf_rng.random()

    def _schedule_base(self, g: int, y: int, category: str, source: str, sid: str) -> dict[str, Any]:
        return {
            "org_code": self._orgs[g],
            "account": "general",
            "fiscal_year": y,
            "source": source,
            "category": category,
            "schedule_id": sid,
        }

    @staticmethod
    def _expected(
        base: dict[str, Any], eid: str, amount: int, date: dt.date, certainty: str
    ) -> dict[str, Any]:
        return {
            "event_id": eid,
            "org_code": base["org_code"],
            "account": base["account"],
            "fiscal_year": base["fiscal_year"],
            "kind": "expected_receipt",
            "amount": amount,
            "occurred_at": "",
            "source": base["source"],
            "category": base["category"],
            "schedule_id": base["schedule_id"],
            "expected_date": date.isoformat(),
            "certainty": certainty,
        }

    @staticmethod
    def _receipt(base: dict[str, Any], eid: str, amount: int) -> dict[str, Any]:
        return {
            "event_id": eid,
            "org_code": base["org_code"],
            "account": base["account"],
            "fiscal_year": base["fiscal_year"],
            "kind": "receipt",
            "amount": amount,
            "occurred_at": "",
            "source": base["source"],
            "category": base["category"],
            "schedule_id": base["schedule_id"],
        }

    def _push_schedule(self, g: int, planned: list[_Planned]) -> None:
        """Into the heap, in time order; left out if it would be realised before the start."""
        start = self._t0
        planned.sort(key=_at)  # the announcement comes first: it is planned earliest
        if planned[0][0] < start:  # planned at the start: what the run can still see
            if min(at for at, d in planned if d["kind"] == "receipt") < start + 3600.0:
                return
            first_at = start + 60.0 + 1740.0 * self._kf_rng.random()
            ann = planned[0][1]
            if ann["expected_date"] < _iso(int((first_at + KST_OFFSET_SECONDS) // 86400)):
                return  # it would be news only after its date
            # announced just after the start; a revision before it is no news
            planned = [(first_at, ann)] + [p for p in planned[1:] if p[0] >= first_at]
        self._seq += 1
        times = [at for at, _ in planned]
        heappush(self._followups, (times[0], self._seq, [g, [d for _, d in planned], times, 0]))
        self._kf_pending += 1

    def _scheduled(self, t: float, rec: list[Any]) -> bytes:
        """The next event of a schedule at the top of the heap."""
        fu = self._followups
        _g, bodies, times, i = rec
        t = max(t, self._t)
        self._t = t
        d = bodies[i]
        bodies[i] = None  # emitted: let it go
        d["occurred_at"] = self._stamp(t)[0]
        i += 1
        if i < len(bodies):
            rec[3] = i
            self._seq += 1
            heapreplace(fu, (max(times[i], t), self._seq, rec))
        else:
            heappop(fu)
            self._kf_pending -= 1
        return orjson.dumps(d)
