"""A seeded, realistic event generator for all 243 governments (pure; no I/O except ``run``).

``Simulator(seed, start, speed, rate).next_batch(n)`` returns ``n`` serialized events that pass
``streams.contract.check_message`` and the ledger's stateful rules. Same seed and start => the
same bytes. ``run(publisher, sim)`` publishes them paced in wall time.

Modelling choices (approximate by design; magnitudes from docs/DOMAIN.md):

* Budgets. The 17 metropolitan/provincial governments use rounded published totals (Seoul
  45.7조, Busan 17.1조, ...). Basic governments get a base by suffix (Seoul 구 ~7,500억, other
  구 ~5,000억, 시 ~1.2조 with a table of large cities, 군 ~4,500억) times a log-uniform jitter
  seeded by org_code (so sizes do not change with the run seed); 도봉구 is pinned to 8,293억 and
  울릉군, the smallest county, to 2,615억. See ``annual_budgets()``.
* Volume. Events per government are proportional to budget**0.8 and the amount scale to
  budget**0.2, so that the money flowing per government is proportional to its budget (with
  pure proportional frequency, amounts could not also grow with size without flows growing
  as budget squared). Amounts are calibrated so that at the national reference volume
  (600,000 events a day, DOMAIN.md) yearly receipts ~ budget and yearly payments ~ budget;
  amounts do not depend on ``rate``/``speed`` (a slower simulation samples the same stream).
* Amounts are log-normal per channel, integer KRW, 1 <= amount <= 10**15, rounded like the
  source system would (taxes to 10원, contracts and grants to 1,000원).
* Revenue (kind receipt): category shares by amount depend on the level (Seoul-like cities
  live on local tax, counties on grants); by count, local tax and non-tax receipts are the
  bulk while grants, subsidies and bonds are rare, large receipts. Receipts go mostly to
  ``general``; water/sewer fees to enterprise accounts; some subsidies, bonds and fund income
  to special accounts/funds. ``custody`` (세입세출외현금) receives guarantee deposits and pays
  them back (balanced in expectation).
* Expenditure: ``commitment`` (id ``{prefix}-c{n}``, due 7-90 days later) is followed by a
  scheduled plan: 70% one full payment, 15% 2-4 partial payments, 8% partial payment(s) then
  cancel of the rest, 4% full cancel, 3% partial cancel then payment (1.45 follow-ups and 92%
  of the amount paid on average). Follow-ups never exceed the open amount, stay on the
  commitment's account and fiscal year, fall on business hours up to the due date and never
  after 20 Jan of the next year (the prior-year window). Payments without commitment:
  payroll (인사랑, on the 20th or the business day before) and ordinary direct payments.
  Open commitments are capped (``MAX_OPEN_COMMITMENTS``); at the cap a new commitment is
  emitted as a direct payment instead, which bounds memory at any rate.
* Transfers (전입/전출): mostly general -> special accounts/funds/enterprise, some back.
* Corrections: ~0.2% of events reverse an earlier receipt, payment without commitment or
  transfer of the same government (same kind, account, amount, category/to_account, fiscal
  year). Candidates live in a bounded deque and are removed when reversed (never twice).
* Calendar (KST): a non-homogeneous Poisson process with hourly intensity per channel:
  office hours 09-18 on business days (lunch dip), ~3-5% of that at night/weekends and on
  Korean public holidays (fixed dates, lunar ones 2024-2030), online tax payments 24/7 with a
  higher night floor; month-end and quarter-end peaks, tax deadline month-ends, grants early
  in the month, the first business day of January (2 Jan) spike, the 20-31 December rush.
  Each channel's profile is normalised to mean 1 over the year, so ``rate/speed`` is the
  long-run events per simulated second. From 1 to 20 January 30% of receipts and direct
  payments carry the prior fiscal year.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import math
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from functools import cache
from heapq import heappop, heappush, heapreplace
from typing import Any, Final, Protocol

import orjson

from cashpos.calendar import KST, KST_OFFSET_SECONDS, close_date, is_business_day
from cashpos.refdata import governments
from streams.contract import MAX_AMOUNT, year_close

__all__ = [
    "MAX_OPEN_COMMITMENTS",
    "REFERENCE_EVENTS_PER_DAY",
    "Simulator",
    "annual_budgets",
    "budget_class",
    "is_business_day",
    "run",
]

JO: Final = 10**12  # 조원
EOK: Final = 10**8  # 억원
REFERENCE_EVENTS_PER_DAY: Final = 600_000  # national volume the amounts are calibrated to
FREQ_EXPONENT: Final = 0.8  # events per government ~ budget**0.8, amount scale ~ budget**0.2
MAX_OPEN_COMMITMENTS: Final = 100_000  # ~50 MB of scheduled follow-ups at most
REVERSAL_CANDIDATES: Final = 4096
PRIOR_YEAR_SHARE: Final = 0.30  # receipts/direct payments carrying year-1 between 1 and 20 Jan
DEFAULT_START: Final = dt.datetime(2026, 1, 1, tzinfo=KST)

# ---------------------------------------------------------------------------------------------
# Budgets

_METRO_BUDGETS: Final = {  # rounded annual totals (일반+특별+기금), 억원
    "서울특별시": 457_000,
    "부산광역시": 171_000,
    "대구광역시": 116_000,
    "인천광역시": 156_000,
    "광주광역시": 76_000,
    "대전광역시": 73_000,
    "울산광역시": 52_000,
    "세종특별자치시": 23_000,
    "경기도": 380_000,
    "강원특별자치도": 90_000,
    "충청북도": 82_000,
    "충청남도": 110_000,
    "전북특별자치도": 100_000,
    "전라남도": 120_000,
    "경상북도": 136_000,
    "경상남도": 133_000,
    "제주특별자치도": 75_000,
}
_BIG_CITIES: Final = {  # large 시 (특례시 etc.), 억원, before jitter
    "수원시": 36_000,
    "용인시": 37_000,
    "고양시": 32_000,
    "성남시": 37_000,
    "화성시": 39_000,
    "창원시": 42_000,
    "청주시": 36_000,
    "부천시": 24_000,
    "남양주시": 23_000,
    "안산시": 24_000,
    "안양시": 19_000,
    "평택시": 25_000,
    "전주시": 26_000,
    "천안시": 28_000,
    "김해시": 22_000,
    "포항시": 29_000,
    "시흥시": 20_000,
    "파주시": 22_000,
    "김포시": 19_000,
    "원주시": 17_000,
    "구미시": 18_000,
    "경주시": 18_000,
    "진주시": 19_000,
    "의정부시": 16_000,
    "광주시": 15_000,
}
_PINNED: Final = {"도봉구": 8_293, "울릉군": 2_615}  # DOMAIN.md (도봉구: Seoul; 울릉군: 경북)
_SMALLEST_COUNTY: Final = 2_615


def budget_class(name: str, level: str) -> str:
    """metro_city | province | si | gun | gu, from level and name suffix."""
    if level == "metropolitan":
        return "province" if name.endswith("도") else "metro_city"
    if name.endswith("구"):
        return "gu"
    if name.endswith("군"):
        return "gun"
    return "si"


@cache
def annual_budgets() -> dict[str, int]:
    """Plausible annual budget per government (KRW, rounded to 억), by org_code."""
    out: dict[str, int] = {}
    for code, g in governments().items():
        cls = budget_class(g.name, g.level)
        if cls in ("metro_city", "province"):
            eok = _METRO_BUDGETS.get(g.name, 80_000)
        elif g.name in _PINNED and (
            (g.name == "도봉구" and g.province_name == "서울특별시")
            or (g.name == "울릉군" and g.province_name == "경상북도")
        ):
            eok = _PINNED[g.name]
        else:
            rng = random.Random(f"cashpos-budget:{code}")  # str seeds are stable (sha512)
            if cls == "gu":
                base, lo, hi = (7_500, 0.8, 1.45) if g.province_name == "서울특별시" else (5_000, 0.6, 1.6)
            elif cls == "gun":
                base, lo, hi = 4_500, 0.68, 1.6
            else:
                base = _BIG_CITIES.get(g.name, 12_000)
                lo, hi = (0.9, 1.12) if g.name in _BIG_CITIES else (0.6, 1.6)
            eok = int(base * math.exp(rng.uniform(math.log(lo), math.log(hi))))
            if cls == "gun":
                eok = max(eok, _SMALLEST_COUNTY + 200)  # 울릉군 stays the smallest county
            eok = max(eok, _SMALLEST_COUNTY)
        out[code] = eok * EOK
    return out


# ---------------------------------------------------------------------------------------------
# Calendar (KST)

_KST_EPOCH_DAY: Final = dt.date(1970, 1, 1).toordinal()
_KST_OFFSET: Final = KST_OFFSET_SECONDS


def _day_index(d: dt.date) -> int:
    """Days since 1970-01-01 (KST calendar)."""
    return d.toordinal() - _KST_EPOCH_DAY


def _day_of(index: int) -> dt.date:
    return dt.date.fromordinal(index + _KST_EPOCH_DAY)


def _day_start(index: int) -> float:
    """Epoch seconds of KST midnight of day ``index``."""
    return index * 86400.0 - _KST_OFFSET


# Hour-of-day shapes (relative), business days.
_OFFICE = (
    0.02,
    0.015,
    0.01,
    0.01,
    0.01,
    0.02,
    0.05,
    0.12,
    0.45,
    1.0,
    1.3,
    1.25,
    0.65,
    1.1,
    1.3,
    1.3,
    1.2,
    1.0,
    0.45,
    0.15,
    0.08,
    0.05,
    0.04,
    0.03,
)
_ONLINE = (
    0.12,
    0.08,
    0.06,
    0.05,
    0.05,
    0.07,
    0.15,
    0.35,
    0.7,
    1.0,
    1.15,
    1.15,
    0.9,
    1.0,
    1.1,
    1.1,
    1.05,
    0.95,
    0.7,
    0.55,
    0.5,
    0.45,
    0.35,
    0.2,
)
_PAYROLL = (0, 0, 0, 0, 0, 0, 0, 0, 0.2, 1.0, 1.6, 1.2, 0.3, 0.6, 0.4, 0.2, 0.1, 0.05, 0, 0, 0, 0, 0, 0)
_OFF_DAY = {"office": 0.04, "online": 0.3, "payroll": 0.0}  # weekend/holiday vs business day

# ---------------------------------------------------------------------------------------------
# Channels: spontaneous event streams, each with a share of all events, a time profile, an
# amount target (share of the annual budget) and a log-normal spread.

_CATS: Final = ("local_tax", "non_tax", "grant", "subsidy", "bond", "other")
_REV_AMOUNT_SHARES: Final = {  # share of yearly revenue by category, per budget class
    "metro_city": (0.45, 0.05, 0.08, 0.27, 0.04, 0.11),
    "province": (0.30, 0.03, 0.14, 0.42, 0.03, 0.08),
    "si": (0.22, 0.07, 0.20, 0.38, 0.02, 0.11),
    "gun": (0.07, 0.05, 0.42, 0.35, 0.01, 0.10),
    "gu": (0.12, 0.05, 0.25, 0.48, 0.005, 0.095),
}
_RECEIPT_SHARE: Final = 0.79
_REV_COUNT_SHARES: Final = (0.60, 0.37, 0.001, 0.008, 0.0001, 0.0209)

# Commitment plans: mean follow-up events per commitment and mean share of the amount paid.
_FOLLOWUPS_PER_COMMITMENT: Final = 0.70 * 1 + 0.15 * 3 + 0.08 * 2.5 + 0.04 * 1 + 0.03 * 2
_PAID_SHARE: Final = 0.70 + 0.15 + 0.08 * 0.6 + 0.03 * 0.7

R_TAX, R_NONTAX, R_GRANT, R_SUBSIDY, R_BOND, R_OTHER = range(6)
C_CUST_IN, C_CUST_OUT, C_COMMIT, C_DIRECT, C_PAYROLL, C_TRANSFER, C_REVERSAL = range(6, 13)
_N_CHANNELS: Final = 13

# (count share of all events, profile style, sigma, rounding unit, account mix by type)
_CHANNELS: Final[list[tuple[float, str, float, int, dict[str, float]]]] = [
    (_RECEIPT_SHARE * _REV_COUNT_SHARES[0], "online", 2.2, 10, {"general": 0.93, "special": 0.07}),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[1],
        "online",
        1.4,
        10,
        {"general": 0.55, "enterprise": 0.40, "special": 0.05},
    ),
    (_RECEIPT_SHARE * _REV_COUNT_SHARES[2], "office", 1.0, 1000, {"general": 0.95, "special": 0.05}),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[3],
        "office",
        1.3,
        1000,
        {"general": 0.80, "special": 0.15, "fund": 0.05},
    ),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[4],
        "office",
        0.8,
        1_000_000,
        {"general": 0.60, "enterprise": 0.25, "special": 0.15},
    ),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[5],
        "office",
        1.6,
        1,
        {"general": 0.55, "fund": 0.35, "special": 0.10},
    ),
    (0.004, "office", 1.5, 1000, {"custody": 1.0}),  # guarantee deposits in
    (0.004, "office", 1.5, 1000, {"custody": 1.0}),  # ... and paid back
    (0.060, "office", 1.7, 1000, {"general": 0.75, "enterprise": 0.12, "special": 0.13}),
    (0.040, "office", 1.6, 1, {"general": 0.72, "enterprise": 0.10, "special": 0.12, "fund": 0.06}),
    (0.003, "payroll", 0.6, 10, {"general": 0.92, "enterprise": 0.08}),
    (0.008, "office", 1.2, 1000, {}),  # transfers: see _TRANSFER_MIX
    (0.002, "office", 0.0, 1, {}),  # reversals copy the original
]
# Yearly amount per channel as a share of the budget (receipts: per class, see above).
_OUT_AMOUNT: Final = {
    C_CUST_IN: 0.02,
    C_CUST_OUT: 0.02,
    C_COMMIT: 0.63 / _PAID_SHARE,
    C_DIRECT: 0.25,
    C_PAYROLL: 0.12,
    C_TRANSFER: 0.12,
}
_TRANSFER_MIX: Final = {  # (from type, to type) -> share of transfers
    ("general", "special"): 0.35,
    ("general", "fund"): 0.30,
    ("general", "enterprise"): 0.10,
    ("fund", "general"): 0.10,
    ("special", "general"): 0.10,
    ("special", "fund"): 0.05,
}
_SOURCES: Final = {
    R_TAX: "lofin-tax",
    R_NONTAX: "sewoe",
    R_GRANT: "efs-grant",
    R_SUBSIDY: "e-naradoum",
    R_BOND: "bank-gateway",
    R_OTHER: "bank-gateway",
    C_CUST_IN: "bank-gateway",
    C_CUST_OUT: "e-hojo",
    C_COMMIT: "e-hojo",
    C_DIRECT: "e-hojo",
    C_PAYROLL: "insarang-payroll",
    C_TRANSFER: "e-hojo",
}
_N_GOVS: Final = 243
_SLOTS: Final = 200  # per-government account lookup tables

# Per channel: (kind, category, source, sigma, rounding unit, may carry the prior fiscal year)
_CH_INFO: Final = [
    (
        "receipt" if c <= C_CUST_IN else "payment" if c in (C_CUST_OUT, C_DIRECT, C_PAYROLL) else "",
        _CATS[c] if c < 6 else "other" if c == C_CUST_IN else None,
        _SOURCES.get(c, "e-hojo"),
        _CHANNELS[c][2],
        _CHANNELS[c][3],
        (c <= C_CUST_IN and c != R_BOND) or c == C_DIRECT,
    )
    for c in range(_N_CHANNELS)
]


def _day_factors(d: dt.date, info: dict[str, Any]) -> list[float]:
    """Per-channel multiplier for one day (before hour shapes and yearly normalisation)."""
    f = [1.0] * _N_CHANNELS
    m, day = d.month, d.day
    bday = info["bday"]
    if bday:
        from_end = info["bdays_to_month_end"]  # 0 = last business day of the month
        nth = info["nth_bday"]  # 1 = first business day of the month
        if from_end < 3:  # month-end execution and deadlines
            for c, x in (
                (C_COMMIT, 1.4),
                (C_DIRECT, 1.6),
                (C_TRANSFER, 1.5),
                (R_NONTAX, 1.3),
                (R_TAX, 2.0),
                (C_CUST_IN, 1.3),
                (C_CUST_OUT, 1.3),
            ):
                f[c] *= x
            if m in (1, 5, 6, 7, 9, 12) and from_end < 2:  # local tax due dates
                f[R_TAX] *= 2.5
        if m in (3, 6, 9, 12) and from_end < 5:  # quarter-end (early-execution targets)
            for c in (C_COMMIT, C_DIRECT, C_TRANSFER):
                f[c] *= 1.5
            f[R_BOND] *= 2.0
        f[R_GRANT] *= 4.0 if nth <= 5 else 0.3  # 교부세 early in the month
        if m in (1, 4, 7, 10) and nth <= 10:
            f[R_SUBSIDY] *= 2.0
        if m == 1 and nth == 1:  # year start (2 January)
            for c in range(_N_CHANNELS):
                f[c] *= 2.5
            f[C_COMMIT] *= 1.6
            f[R_GRANT] *= 2.0
        if m == 12 and day >= 20:  # year-end rush
            for c, x in ((C_COMMIT, 2.2), (C_DIRECT, 2.0), (C_TRANSFER, 2.5), (R_SUBSIDY, 1.5)):
                f[c] *= x
        if m == 12:
            f[R_BOND] *= 3.0
    f[C_PAYROLL] = 1.0 if info["payroll"] else 0.0
    return f


class _Year:
    """Hourly intensity table for one KST calendar year."""

    __slots__ = ("cum", "first_hour", "lam")

    def __init__(self, year: int, weights: list[float]) -> None:
        first = dt.date(year, 1, 1)
        n_days = (dt.date(year + 1, 1, 1) - first).days
        days = [first + dt.timedelta(days=i) for i in range(n_days)]
        bdays = [is_business_day(d) for d in days]
        infos: list[dict[str, Any]] = []
        by_month: dict[int, list[int]] = {}
        for i, d in enumerate(days):
            if bdays[i]:
                by_month.setdefault(d.month, []).append(i)
        payroll_days = set()
        for m in range(1, 13):
            i = (dt.date(year, m, 20) - first).days
            while i > 0 and not bdays[i]:
                i -= 1
            payroll_days.add(i)
        for i, d in enumerate(days):
            info: dict[str, Any] = {"bday": bdays[i], "payroll": i in payroll_days}
            if bdays[i]:
                month = by_month[d.month]
                k = month.index(i)
                info["nth_bday"] = k + 1
                info["bdays_to_month_end"] = len(month) - 1 - k
            infos.append(info)
        styles = [ch[1] for ch in _CHANNELS]
        shapes = {"office": _OFFICE, "online": _ONLINE, "payroll": _PAYROLL}
        # raw[c][h] for every hour of the year, then normalise each channel to mean 1
        n_hours = n_days * 24
        raw = [[0.0] * n_hours for _ in range(_N_CHANNELS)]
        for i, d in enumerate(days):
            f = _day_factors(d, infos[i])
            for c in range(_N_CHANNELS):
                shape = shapes[styles[c]]
                scale = f[c] * (1.0 if bdays[i] else _OFF_DAY[styles[c]])
                if scale == 0.0:
                    continue
                row = raw[c]
                base = i * 24
                for h in range(24):
                    row[base + h] = scale * shape[h]
        for c in range(_N_CHANNELS):
            total = sum(raw[c])
            scale_c = weights[c] * n_hours / total if total > 0 else 0.0
            raw[c] = [x * scale_c for x in raw[c]]
        self.first_hour = _day_index(first) * 24
        self.lam: list[float] = []
        self.cum: list[list[float]] = []
        for h in range(n_hours):
            acc = 0.0
            cum = []
            for c in range(_N_CHANNELS):
                acc += raw[c][h]
                cum.append(acc)
            self.lam.append(acc)  # events per simulated second in this hour
            self.cum.append(cum)


class _HourInfo:
    __slots__ = ("day", "prefix", "window", "year")

    def __init__(self, hour: int) -> None:
        day = hour // 24
        d = _day_of(day)
        self.prefix = f"{d.isoformat()}T{hour % 24:02d}:"
        self.year = d.year
        self.window = d.month == 1 and d.day <= 20  # prior-year processing open
        self.day = day


def _split(total: int, k: int, rnd: Any) -> list[int]:
    """``k`` positive integers summing to ``total`` (``total >= k``)."""
    if k <= 1:
        return [total]
    cuts = sorted(rnd.sample(range(1, total), k - 1)) if total > k else list(range(1, k))
    parts, prev = [], 0
    for c in cuts + [total]:
        parts.append(c - prev)
        prev = c
    return parts


class Simulator:
    """Deterministic generator of contract-conforming events for all 243 governments.

    ``rate`` is the long-run number of events per wall second and ``speed`` the number of
    simulated seconds per wall second, so events arrive at ``rate / speed`` per simulated
    second on average (more in office hours, fewer at night). ``start`` defaults to
    ``DEFAULT_START`` so that a seed alone fixes the output; pass ``datetime.now(KST)`` for a
    live stream. Naive datetimes are read as KST.
    """

    def __init__(
        self,
        seed: int = 42,
        start: dt.datetime | None = None,
        speed: float = 1.0,
        rate: float = 20.0,
        *,
        id_prefix: str | None = None,
    ) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError("speed must be a positive number")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError("rate must be a positive number")
        start = DEFAULT_START if start is None else start
        if start.tzinfo is None:
            start = start.replace(tzinfo=KST)
        self.seed = seed
        self.speed = float(speed)
        self.rate = float(rate)
        self.start = start
        self.prefix = f"sim-{seed}" if id_prefix is None else id_prefix
        if not (1 <= len(self.prefix) <= 40):
            raise ValueError("id_prefix must be 1-40 characters")
        self._rng = random.Random(seed)
        self._rnd = self._rng.random
        self._gauss = self._rng.gauss
        self._counter = 0
        self._commit_counter = 0
        self._seq = 0
        self._followups: list[tuple[float, int, list[Any]]] = []  # heap of scheduled steps
        self._candidates: deque[tuple[Any, ...]] = deque(maxlen=REVERSAL_CANDIDATES)
        self._hours: dict[int, _HourInfo] = {}
        self._years: dict[int, _Year] = {}
        self._setup_governments()
        self._closes_pending = 0
        self._schedule_closes(start)
        spont = sum(ch[0] for ch in _CHANNELS)
        norm = spont + _CHANNELS[C_COMMIT][0] * _FOLLOWUPS_PER_COMMITMENT
        per_sim_second = self.rate / self.speed
        self._weights = [ch[0] / norm * per_sim_second for ch in _CHANNELS]
        self._t = start.timestamp()  # time of the last emitted event (epoch seconds)
        self._hour = -1
        self._hour_end = 0.0
        self._lam = 0.0
        self._cum: list[float] = []
        self._enter_hour(int((self._t + _KST_OFFSET) // 3600))
        self._next_spont = self._draw_next(self._t)
        self._next_spont_cum = self._cum  # channel weights of the hour of _next_spont

    # -- set-up ----------------------------------------------------------------------------

    def _setup_governments(self) -> None:
        govs = list(governments().values())
        budgets = annual_budgets()
        self._orgs = [g.org_code for g in govs]
        assert len(govs) == _N_GOVS, "the reference data must list 243 governments"
        self._budgets = [budgets[g.org_code] for g in govs]
        freq = [b**FREQ_EXPONENT for b in self._budgets]
        total = sum(freq)
        acc = 0.0
        self._gov_cum: list[float] = []
        for w in freq:
            acc += w
            self._gov_cum.append(acc)
        self._gov_total = acc
        ref_per_year = REFERENCE_EVENTS_PER_DAY * 365.0
        spont = sum(ch[0] for ch in _CHANNELS)
        norm = spont + _CHANNELS[C_COMMIT][0] * _FOLLOWUPS_PER_COMMITMENT
        # per government, per channel: log-normal median (mean / exp(sigma^2 / 2))
        self._medians: list[list[float]] = []
        self._accounts: list[list[list[str]]] = []
        self._transfers: list[list[tuple[str, str]]] = []
        layout = random.Random(f"cashpos-accounts:{self.seed}")
        for g, budget, w in zip(govs, self._budgets, freq):
            n_year = ref_per_year * w / total
            cls = budget_class(g.name, g.level)
            shares = _REV_AMOUNT_SHARES[cls]
            meds = []
            for c, (count, _style, sigma, _unit, _mix) in enumerate(_CHANNELS):
                yearly = shares[c] if c < 6 else _OUT_AMOUNT.get(c, 0.0)
                n_ch = n_year * count / norm
                mean = yearly * budget / n_ch if n_ch > 0 else 0.0
                meds.append(mean / math.exp(sigma * sigma / 2))
            self._medians.append(meds)
            by_type: dict[str, list[str]] = {}
            for acct in g.accounts:
                by_type.setdefault(acct.type, []).append(acct.code)
            general = by_type["general"][0]
            tables = []
            for _count, _style, _sigma, _unit, mix in _CHANNELS:
                slots: list[str] = []
                for typ, p in mix.items():
                    codes = by_type.get(typ) or [general]
                    codes = codes[:]
                    layout.shuffle(codes)
                    k = round(p * _SLOTS)
                    slots.extend(codes[i % len(codes)] for i in range(k))
                tables.append(slots or [general])
            self._accounts.append(tables)
            pairs: list[tuple[str, str]] = []
            for (src, dst), p in _TRANSFER_MIX.items():
                a_codes, b_codes = by_type.get(src), by_type.get(dst)
                if not a_codes or not b_codes:
                    src, dst = "general", "fund"
                    a_codes, b_codes = by_type["general"], by_type["fund"]
                for _ in range(round(p * _SLOTS)):
                    a, b = layout.choice(a_codes), layout.choice(b_codes)
                    if a != b:
                        pairs.append((a, b))
            self._transfers.append(pairs)

    # Cash held at the start, as a share of the annual budget, by account type: demand deposits
    # are kept small (DOMAIN.md), funds and special accounts hold their reserves.
    _OPENING_SHARE: Final = {
        "general": 0.06,
        "enterprise": 0.04,
        "special": 0.01,
        "fund": 0.008,
        "custody": 0.004,
    }

    def opening_balances(self) -> list[bytes]:
        """One receipt per (government, account) carrying the cash held when the stream starts
        (cash = opening + receipts - payments), dated one second before ``start``."""
        t = self.start.timestamp() - 1
        ts, _ = self._stamp(t)
        local = dt.datetime.fromtimestamp(t, KST)
        out = []
        rnd = random.Random(f"cashpos-opening:{self.seed}")
        for g, budget in zip(governments().values(), self._budgets):
            for a in g.accounts:
                share = self._OPENING_SHARE.get(a.type, 0.005) * (0.5 + rnd.random())
                amount = max(1, min(MAX_AMOUNT, int(budget * share)))
                out.append(
                    orjson.dumps(
                        {
                            "event_id": f"{self.prefix}-open-{g.org_code}-{a.code}",
                            "org_code": g.org_code,
                            "account": a.code,
                            "fiscal_year": local.year,
                            "kind": "receipt",
                            "amount": amount,
                            "occurred_at": ts,
                            "source": "opening-balance",
                            "category": "other",
                        }
                    )
                )
        return out

    def _year(self, year: int) -> _Year:
        y = self._years.get(year)
        if y is None:
            if len(self._years) > 3:
                self._years.clear()
            y = self._years[year] = _Year(year, self._weights)
        return y

    def _enter_hour(self, hour: int) -> None:
        info = self._hour_info(hour)
        y = self._year(info.year)
        i = hour - y.first_hour
        self._hour = hour
        self._hour_end = (hour + 1) * 3600.0 - _KST_OFFSET
        self._lam = y.lam[i]
        self._cum = y.cum[i]

    def _hour_info(self, hour: int) -> _HourInfo:
        info = self._hours.get(hour)
        if info is None:
            if len(self._hours) > 8192:
                self._hours.clear()
            info = self._hours[hour] = _HourInfo(hour)
        return info

    # -- clock -----------------------------------------------------------------------------

    def _draw_next(self, t: float, e: float | None = None) -> float:
        """Next spontaneous event time after ``t`` (piecewise-constant hourly intensity):
        ``e`` units of Exp(1) work are consumed hour by hour."""
        if e is None:
            e = -math.log(1.0 - self._rng.random())
        while True:
            lam = self._lam
            cap = lam * (self._hour_end - t)
            if e <= cap:
                return t + e / lam
            e -= cap
            t = self._hour_end
            self._enter_hour(self._hour + 1)

    @property
    def clock(self) -> dt.datetime:
        """Simulated time of the last emitted event (KST)."""
        return dt.datetime.fromtimestamp(self._t, KST)

    @property
    def next_time(self) -> float:
        """Epoch seconds of the next event this simulator will emit."""
        if self._followups and self._followups[0][0] <= self._next_spont:
            return self._followups[0][0]
        return self._next_spont

    @property
    def open_commitments(self) -> int:
        return len(self._followups) - self._closes_pending

    def _schedule_closes(self, start: dt.datetime) -> None:
        """Every government's close of each fiscal year whose 출납정리기한 ends after ``start``
        (for the next few years), at 00:00 KST on 21 January, in government order. The close's
        id is the same in every run (``close-{year}``): a re-run's close is a duplicate."""
        for year in range(start.year - 1, start.year + 4):
            d = close_date(year)
            at = dt.datetime(d.year, d.month, d.day, tzinfo=KST).timestamp()
            if at <= start.timestamp():
                continue
            for g in range(_N_GOVS):
                self._seq += 1
                heappush(self._followups, (at, self._seq, [g, year]))
                self._closes_pending += 1

    def _close(self, g: int, year: int) -> bytes:
        self._closes_pending -= 1
        return year_close(self._orgs[g], year)  # as `cashpos close-year` sends it: one close only

    # -- public generation -----------------------------------------------------------------

    def next_batch(self, n: int) -> list[bytes]:
        """The next ``n`` events (JSON bytes), advancing the simulated clock."""
        one = self._one
        if n < 10_000 or not gc.isenabled():
            return [one() for _ in range(n)]
        # Generation creates no reference cycles; pausing the cyclic GC avoids full
        # collections re-scanning the growing result list (2x faster for 1M events).
        gc.disable()
        try:
            return [one() for _ in range(n)]
        finally:
            gc.enable()

    def events(self, n: int) -> Iterator[bytes]:
        """The next ``n`` events, lazily (same sequence as ``next_batch``)."""
        one = self._one
        for _ in range(n):
            yield one()

    def until(self, epoch: float, limit: int) -> list[bytes]:
        """Events up to simulated time ``epoch`` (at most ``limit``): for clock pacing."""
        out: list[bytes] = []
        one = self._one
        while len(out) < limit and self.next_time <= epoch:
            out.append(one())
        return out

    # -- one event -------------------------------------------------------------------------

    def _one(self) -> bytes:
        fu = self._followups
        t = self._next_spont
        if fu and fu[0][0] <= t:
            return self._followup()
        cum = self._next_spont_cum
        rnd = self._rnd
        ch = bisect_right(cum, rnd() * cum[-1])
        if ch >= _N_CHANNELS:
            ch = _N_CHANNELS - 1
        # the next spontaneous time (inlined _draw_next for the common case)
        e = -math.log(1.0 - rnd())
        cap = self._lam * (self._hour_end - t)
        if e <= cap:
            self._next_spont = t + e / self._lam
        else:
            self._next_spont = self._draw_next(t, e)
            self._next_spont_cum = self._cum
        self._t = t
        g = bisect_right(self._gov_cum, rnd() * self._gov_total)
        if g >= _N_GOVS:
            g = _N_GOVS - 1
        if ch >= C_COMMIT and ch != C_DIRECT and ch != C_PAYROLL:
            if ch == C_REVERSAL:
                raw = self._reversal(t)
                if raw is not None:
                    return raw
                ch = R_TAX
            elif ch == C_TRANSFER:
                return self._transfer(g, t)
            elif len(fu) - self._closes_pending < MAX_OPEN_COMMITMENTS:
                return self._commitment(g, t)
            else:
                ch = C_DIRECT
        # a receipt or a payment without commitment (direct, payroll, custody pay-back)
        local = t + _KST_OFFSET
        hour = int(local // 3600)
        info = self._hours.get(hour) or self._hour_info(hour)
        ms = int((local - hour * 3600) * 1000)
        ms = min(ms, 3_599_999)
        mm, rem = divmod(ms, 60_000)
        ss, frac = divmod(rem, 1000)
        kind, category, src, _sigma, _unit, prior = _CH_INFO[ch]
        table = self._accounts[g][ch]
        account = table[int(rnd() * len(table))]
        fy = info.year
        if info.window and prior and rnd() < PRIOR_YEAR_SHARE:
            fy -= 1
        amount = self._amount(ch, g)
        eid = self._next_id()
        d: dict[str, Any] = {
            "event_id": eid,
            "org_code": self._orgs[g],
            "account": account,
            "fiscal_year": fy,
            "kind": kind,
            "amount": amount,
            "occurred_at": f"{info.prefix}{mm:02d}:{ss:02d}.{frac:03d}+09:00",
            "source": src,
        }
        if category is not None:
            d["category"] = category
        self._candidates.append((g, eid, kind, account, amount, fy, category, None, src))
        return orjson.dumps(d)

    def _stamp(self, t: float) -> tuple[str, _HourInfo]:
        local = t + _KST_OFFSET
        hour = int(local // 3600)
        info = self._hours.get(hour) or self._hour_info(hour)
        ms = int((local - hour * 3600) * 1000)
        ms = min(ms, 3_599_999)
        mm, rem = divmod(ms, 60_000)
        ss, frac = divmod(rem, 1000)
        return f"{info.prefix}{mm:02d}:{ss:02d}.{frac:03d}+09:00", info

    def _amount(self, ch: int, g: int) -> int:
        _kind, _cat, _src, sigma, unit, _prior = _CH_INFO[ch]
        v = self._medians[g][ch] * math.exp(sigma * self._gauss(0.0, 1.0))
        if unit > 1:
            a = int(v / unit + 0.5) * unit
            a = max(a, unit)
        else:
            a = int(v + 0.5)
            a = max(a, 1)
        return min(a, MAX_AMOUNT)

    def _next_id(self) -> str:
        self._counter += 1
        return f"{self.prefix}-{self._counter}"

    def _transfer(self, g: int, t: float) -> bytes:
        ts, info = self._stamp(t)
        pairs = self._transfers[g]
        frm, to = pairs[int(self._rng.random() * len(pairs))]
        amount = self._amount(C_TRANSFER, g)
        eid = self._next_id()
        fy = info.year
        src = _SOURCES[C_TRANSFER]
        self._candidates.append((g, eid, "transfer", frm, amount, fy, None, to, src))
        return orjson.dumps(
            {
                "event_id": eid,
                "org_code": self._orgs[g],
                "account": frm,
                "fiscal_year": fy,
                "kind": "transfer",
                "amount": amount,
                "occurred_at": ts,
                "source": src,
                "to_account": to,
            }
        )

    def _reversal(self, t: float) -> bytes | None:
        cands = self._candidates
        rnd = self._rng.random
        ts, info = self._stamp(t)
        for _ in range(4):
            if not cands:
                return None
            i = int(rnd() * len(cands))
            g, target, kind, account, amount, fy, category, to, src = cands[i]
            del cands[i]  # never reversed twice
            if fy != info.year and not (info.window and fy == info.year - 1):
                continue  # its fiscal year is closed
            d: dict[str, Any] = {
                "event_id": self._next_id(),
                "org_code": self._orgs[g],
                "account": account,
                "fiscal_year": fy,
                "kind": kind,
                "amount": amount,
                "occurred_at": ts,
                "source": src,
                "reverses": target,
            }
            if category is not None:
                d["category"] = category
            if to is not None:
                d["to_account"] = to
            return orjson.dumps(d)
        return None

    # -- commitments -----------------------------------------------------------------------

    def _commitment(self, g: int, t: float) -> bytes:
        ts, info = self._stamp(t)
        rng = self._rng
        table = self._accounts[g][C_COMMIT]
        account = table[int(rng.random() * len(table))]
        amount = self._amount(C_COMMIT, g)
        fy = info.year
        due_day = info.day + rng.randint(7, 90)
        self._commit_counter += 1
        cid = f"{self.prefix}-c{self._commit_counter}"
        year_end = _day_index(dt.date(fy, 12, 31))
        if due_day > year_end and _day_of(info.day).month == 12:
            # Decided in December, due next year: mostly carried forward (이월) and paid as next
            # year's; some paid by 20 January as this year's; a few left to lapse at the close.
            r = rng.random()
            if r < 0.08:
                return self._commitment_record(g, account, fy, amount, ts, cid, due_day)
            if r < 0.60:
                carry_at = self._plan_times(t, min(due_day, year_end), fy, 1)
                paid_at = self._plan_times(_day_start(year_end + 1) + 9 * 3600.0, due_day, fy + 1, 1)
                steps = [("commitment_carry_forward", amount), ("payment", amount)]
                self._seq += 1
                heappush(
                    self._followups,
                    (carry_at[0], self._seq, [g, account, fy, cid, steps, carry_at + paid_at, 0]),
                )
                return self._commitment_record(g, account, fy, amount, ts, cid, due_day)
        # the plan: (kind, amount) steps, the amounts summing to the commitment
        r = rng.random()
        if amount < 10 or r < 0.70:
            steps = [("payment", amount)]
        elif r < 0.85:
            steps = [("payment", p) for p in _split(amount, rng.randint(2, 4), rng)]
        elif r < 0.93:
            paid = max(1, min(amount - 1, int(amount * rng.uniform(0.3, 0.9))))
            steps = [("payment", p) for p in _split(paid, min(paid, rng.randint(1, 2)), rng)]
            steps.append(("commitment_cancel", amount - paid))
        elif r < 0.97:
            steps = [("commitment_cancel", amount)]
        else:
            cancel = max(1, min(amount - 1, int(amount * rng.uniform(0.1, 0.5))))
            steps = [("commitment_cancel", cancel), ("payment", amount - cancel)]
        times = self._plan_times(t, due_day, fy, len(steps))
        self._seq += 1
        rec = [g, account, fy, cid, steps, times, 0]
        heappush(self._followups, (times[0], self._seq, rec))
        return self._commitment_record(g, account, fy, amount, ts, cid, due_day)

    def _commitment_record(
        self, g: int, account: str, fy: int, amount: int, ts: str, cid: str, due_day: int
    ) -> bytes:
        return orjson.dumps(
            {
                "event_id": self._next_id(),
                "org_code": self._orgs[g],
                "account": account,
                "fiscal_year": fy,
                "kind": "commitment",
                "amount": amount,
                "occurred_at": ts,
                "source": "e-hojo",
                "commitment_id": cid,
                "due_date": _day_of(due_day).isoformat(),
            }
        )

    def _plan_times(self, t: float, due_day: int, fy: int, k: int) -> list[float]:
        """``k`` increasing times in business hours between t+1h and the due date, never
        after 20 January of fy+1 (the end of prior-year processing)."""
        rnd = self._rng.random
        lo = t + 3600.0
        last_day = min(due_day, _day_index(dt.date(fy + 1, 1, 20)))
        hi = _day_start(last_day + 1) - 1.0
        lo_day = int((lo + _KST_OFFSET) // 86400)
        out = []
        for _ in range(k):
            x = lo + (hi - lo) * math.sqrt(rnd())  # later steps cluster towards the due date
            day = int((x + _KST_OFFSET) // 86400)
            d = day
            while d >= lo_day and not is_business_day(_day_of(d)):
                d -= 1
            if d < lo_day:
                d = day
                while d <= last_day and not is_business_day(_day_of(d)):
                    d += 1
                if d > last_day:
                    d = day
            tod = 9 * 3600 + 9 * 3600 * (rnd() + rnd()) / 2  # 09-18, peaked mid-day
            y = _day_start(d) + tod
            if y < lo:
                y = lo + 600 * rnd()
            if y > hi:
                y = hi - 60 * rnd()
            out.append(y)
        out.sort()
        return out

    def _followup(self) -> bytes:
        fu = self._followups
        t, _seq, rec = fu[0]
        if len(rec) == 2:  # a government's close of a fiscal year
            heappop(fu)
            self._t = max(t, self._t)
            return self._close(rec[0], rec[1])
        g, account, fy, cid, steps, times, i = rec
        kind, amount = steps[i]
        t = max(t, self._t)  # a no-op (times are after their commitment); keeps order anyway
        self._t = t
        ts, _info = self._stamp(t)
        i += 1
        if i < len(steps):
            rec[6] = i
            self._seq += 1
            heapreplace(fu, (max(times[i], t), self._seq, rec))
        else:
            heappop(fu)  # closed: forget it
        if kind == "commitment_carry_forward":
            rec[2] = fy + 1  # paid as next year's from now on
            return orjson.dumps(
                {
                    "event_id": self._next_id(),
                    "org_code": self._orgs[g],
                    "account": account,
                    "fiscal_year": fy,
                    "kind": kind,
                    "amount": amount,
                    "occurred_at": ts,
                    "source": "e-hojo",
                    "commitment_id": cid,
                    "basis": "explicit",
                }
            )
        return orjson.dumps(
            {
                "event_id": self._next_id(),
                "org_code": self._orgs[g],
                "account": account,
                "fiscal_year": fy,
                "kind": kind,
                "amount": amount,
                "occurred_at": ts,
                "source": "e-hojo",
                "commitment_id": cid,
            }
        )


# ---------------------------------------------------------------------------------------------
# Scenarios: staged events at known simulated times, mixed into the generated stream

SCENARIOS: Final = ("shortfall",)
SHORTFALL_ORG: Final = "5260000"  # 울릉군, the smallest county


class StagedEvent:
    __slots__ = ("at", "raw", "what")

    def __init__(self, at: float, raw: bytes, what: str) -> None:
        self.at = at  # simulated epoch seconds
        self.raw = raw
        self.what = what


class StagedSimulator(Simulator):
    """A :class:`Simulator` that also emits staged events, in time order with the generated
    ones (``stage``). Without staged events it emits exactly what ``Simulator`` does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staged: list[StagedEvent] = []

    def stage(self, events: list[StagedEvent]) -> None:
        self._staged = sorted(self._staged + list(events), key=lambda e: e.at)

    @property
    def next_time(self) -> float:
        t = super().next_time
        return min(t, self._staged[0].at) if self._staged else t

    def _one(self) -> bytes:
        if self._staged and self._staged[0].at <= super().next_time:
            ev = self._staged.pop(0)
            self._t = max(self._t, ev.at)
            return ev.raw
        return Simulator._one(self)


def shortfall_scenario(
    sim: Simulator,
    *,
    org: str = SHORTFALL_ORG,
    account: str = "general",
    after_s: float = 600.0,
    due_days: int = 3,
) -> list[StagedEvent]:
    """울릉군's general account runs short at known simulated times.

    ``after_s`` simulated seconds after the start, a commitment (an emergency harbour repair
    contract) larger than the account's opening cash plus 5% of the annual budget is
    registered, due ``due_days`` days later: ``available`` goes below zero at that event
    (shortfall), and the projected cash goes below zero on the due date (projected shortfall,
    driven by this commitment). On the due date at 10:00 KST the commitment is paid and the
    account's cash itself goes below zero. The amounts are far larger than the county's
    ordinary flows over those days, so the crossings happen at these two events."""
    opening = 0
    for raw in sim.opening_balances():
        o = orjson.loads(raw)
        if o["org_code"] == org and o["account"] == account:
            opening = o["amount"]
    amount = min(MAX_AMOUNT, opening + annual_budgets()[org] // 20)
    t1 = sim.start.timestamp() + after_s
    d1 = dt.datetime.fromtimestamp(t1, KST)
    due = d1.date() + dt.timedelta(days=due_days)
    t2 = dt.datetime(due.year, due.month, due.day, 10, 0, tzinfo=KST).timestamp()
    fy = d1.year
    if not (due.year == fy or (due.year == fy + 1 and due.month == 1 and due.day <= 20)):
        raise ValueError("the scenario's payment must fall in its fiscal year (or by 20 January)")
    cid = f"{sim.prefix}-scn-shortfall"

    def stamp(t: float) -> str:
        return dt.datetime.fromtimestamp(t, KST).isoformat(timespec="milliseconds")

    base = {
        "org_code": org,
        "account": account,
        "fiscal_year": fy,
        "amount": amount,
        "source": "e-hojo",
        "commitment_id": cid,
    }
    return [
        StagedEvent(
            t1,
            orjson.dumps(
                {
                    **base,
                    "event_id": f"{cid}-c",
                    "kind": "commitment",
                    "occurred_at": stamp(t1),
                    "due_date": due.isoformat(),
                }
            ),
            f"commitment {cid} of {amount:,} KRW due {due.isoformat()}: available < 0",
        ),
        StagedEvent(
            t2,
            orjson.dumps({**base, "event_id": f"{cid}-p", "kind": "payment", "occurred_at": stamp(t2)}),
            f"payment of {cid}: cash < 0",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Publishing


class _Sender(Protocol):
    async def send_many(self, raws: list[bytes]) -> int: ...


async def run(
    publisher: _Sender,
    sim: Simulator,
    *,
    total: int | None = None,
    until: dt.datetime | None = None,
    stop: asyncio.Event | None = None,
    tick: float = 0.1,
    pace: str = "rate",
    max_lag: float = 2.0,
) -> int:
    """Publish ``sim``'s events via ``publisher.send_many`` every ``tick`` seconds until
    ``total`` events are sent, the simulated clock passes ``until`` or ``stop`` is set; returns
    the number sent.

    ``pace="rate"``: a steady ``sim.rate`` events per wall second. ``pace="clock"``: events
    are released when wall time reaches their simulated time divided by ``sim.speed``, so the
    wall rate follows the calendar rhythm (busy office hours, quiet nights) and averages
    ``sim.rate``. If publishing falls behind by more than ``max_lag`` seconds, the backlog
    is dropped from the schedule (never burst).
    """
    if pace not in ("rate", "clock"):
        raise ValueError("pace must be 'rate' or 'clock'")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sim_t0 = sim.next_time if pace == "clock" else 0.0
    max_batch = max(1, int(sim.rate * max_lag))
    sent = 0
    credit = 0  # events the schedule skipped (lag) in rate mode
    while True:
        if stop is not None and stop.is_set():
            break
        left = None if total is None else total - sent
        if left is not None and left <= 0:
            break
        if until is not None and sim.next_time > until.timestamp():
            break
        elapsed = loop.time() - t0
        limit = max_batch if left is None else min(max_batch, left)
        if pace == "rate":
            due = int(elapsed * sim.rate) - credit - sent
            if due > max_batch:
                credit += due - max_batch
                due = max_batch
            batch = sim.next_batch(min(due, limit)) if due > 0 else []
        else:
            horizon = sim_t0 + elapsed * sim.speed
            batch = sim.until(horizon, limit)
            if len(batch) == limit and sim.next_time < horizon - max_lag * sim.speed:
                sim_t0 = sim.next_time - elapsed * sim.speed  # behind: move the schedule
        if batch:
            sent += await publisher.send_many(batch)
        delay = tick - ((loop.time() - t0) % tick)
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(delay)
    return sent


def _measure(n: int = 1_000_000) -> None:
    """Quick check: ``python -m cashpos.simulator [n]`` prints the generation rate."""
    sim = Simulator(seed=1, speed=3600.0, rate=20.0)
    t = time.perf_counter()
    size = 0
    for raw in sim.events(n):
        size += len(raw)
    dt_ = time.perf_counter() - t
    print(
        f"{n} events in {dt_:.2f}s: {n / dt_:,.0f} events/s, {size / n:.0f} bytes/event, "
        f"simulated until {sim.clock.isoformat()}, open commitments {sim.open_commitments}"
    )


if __name__ == "__main__":
    import sys

    _measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
