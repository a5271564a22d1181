"""What the cash forecast learns from an account's own past (issue #18), pure and integer.

The ledger knows some future flows (payment orders, open commitments, expected receipts:
``state.forecast``). The rest of what moves an account's cash is learned here from its daily
history, ``DayFlow``: the flows of each past Korean day that no known flow explains (receipts
naming no schedule, payments against no commitment, transfers), and the commitments opened and
paid, which give the usual pace of spending decisions and of their payment. Series:

* ``in``: unscheduled receipts + transfers in; ``out``: uncommitted payments + transfers out;
  ``net`` = ``in`` - ``out``;
* ``opened``: commitments opened less cancelled; ``paid``: payments against a commitment;
  ``scheduled``: receipts that realised an expected receipt (the forecast's paces: what known
  flows will not yet show; see ``state.forecast``).

Learned over the last ``WINDOW_DAYS`` observed days before ``today`` (a year: each season,
month end and year end weighs once; a half-year window over-weighs the tax months it holds,
a shorter one chases noise, backtested):

1. **Day classes.** A day is ``off`` (weekend or public holiday), ``year_end`` (a business day
   from 20 December: the year-end rush), ``month_end`` (one of the last ``MONTH_END_DAYS``
   business days of its month: early-execution drives, tax deadlines) or ``business``. Online
   tax payments go on at night and on weekends, so an off day is not zero, only smaller.
2. **Recurring flows** of ``in`` and ``out`` (the payroll on the 20th): a day of the month
   (1-31; a month shorter than that: its last day), moved to the previous business day when it
   is not one (Korean practice for payroll, 급여: paid the business day before a weekend or
   holiday; assumed for every recurring flow; day 31 is thus each month's last business day).
   Found when on **each of its last three occurrences** the day's flow exceeds its class's
   usual day by at least ``STANDOUT`` times that usual day (usual: the larger of the median and
   the mean without the largest ``TRIM_PCT`` % of days, robust to the peaks looked for), and
   the smallest of the three excesses is at least half the largest (a steady amount, not three
   unrelated peaks). One occurrence, or two, is never enough. Its amount is the middle of the
   three excesses over the class's mean. A day claimed by one recurring flow is not claimed by
   another of the series (anchors 19, 20 and 21 can land on the same Friday), and recurring
   days do not count in the class means.
3. **Per class means** of ``net``, ``opened``, ``paid`` and ``scheduled``, each **discounted
   by its own uncertainty** (``shrunk_mean``: a mean within two standard errors of zero counts
   as zero, a larger one is shrunk by ``(2 se / mean)**2`` of itself). An account's net flow is the
   small difference of large, lumpy receipts and payments: an undiscounted mean of a few lumps
   extrapolated for 30 days errs more than holding the balance flat (backtested on the
   simulator against that and a linear trend). A class seen on fewer than ``MIN_CLASS_DAYS``
   days borrows the business days' mean (an off day: zero), so a short history never
   extrapolates one odd month end.

With fewer than ``MIN_DAYS`` observed days nothing is learned. Everything is ``int`` (means
rounded towards zero); no clock, no I/O: ``today`` is a parameter, and the same history gives
the same ``Learned``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Final

import msgspec

from cashpos.calendar import date_day, day_date, is_business_day
from state.history import DayFlows

WINDOW_DAYS: Final = 365  # a year: every season, month end and year end counted once (backtested)
MIN_DAYS: Final = 7  # observed days before anything is learned (as the alert rules' history)
MIN_CLASS_DAYS: Final = 3  # a class seen less often borrows the business days' mean
MONTH_END_DAYS: Final = 3  # the last business days of a month that make its month end
OCCURRENCES: Final = 3  # a recurring flow is seen on its last three occurrences
STANDOUT: Final = 2  # ... each exceeding the class's usual day by twice that usual day
SHRINK_K: Final = 4  # (2 standard errors)**2: see shrunk_mean
TRIM_PCT: Final = 10  # "usual day": the mean without the largest 10 % of days (or the median)

OFF, BUSINESS, MONTH_END, YEAR_END = 0, 1, 2, 3
CLASS_NAMES: Final = ("off", "business", "month_end", "year_end")
N_CLASSES: Final = len(CLASS_NAMES)
ZERO: Final = (0,) * N_CLASSES
YEAR_END_FROM: Final = 20  # 20-31 December: the year-end rush (DOMAIN.md)
IN, OUT, NET, OPENED, PAID = "in", "out", "net", "opened", "paid"
LAST_DAY: Final = 31  # the recurring anchor that is every month's last business day


class DayFlow(msgspec.Struct, frozen=True, array_like=True):
    """One past Korean day of one account: what no known flow explains, integer KRW, each
    column positive in its own direction (a reversal nets against its column)."""

    day: int
    receipts: int = 0  # receipts naming no expected-receipt schedule
    payments: int = 0  # payments against no commitment (payroll, direct payments)
    transfers_in: int = 0
    transfers_out: int = 0
    committed_opened: int = 0  # commitments opened less cancelled (the pace of decisions)
    committed_paid: int = 0  # payments against a commitment (the pace of their payment)
    receipts_scheduled: int = 0  # receipts that realised a schedule (the pace of scheduled ones)


def day_flow(day: int, f: DayFlows, scheduled_receipts: int | None = None) -> DayFlow:
    """A ``DayFlow`` from the history's columns (``state.history.DayFlows``).
    ``scheduled_receipts``: that day's receipts that realised an expected receipt (known flows,
    not learnable; by default ``f.receipts_scheduled``). A payment against a commitment releases
    ``min(amount, open)`` (``committed_paid``); the rest of it counts as uncommitted. Carries
    and lapses of a close move no money in the bank and count nowhere."""
    scheduled = f.receipts_scheduled if scheduled_receipts is None else scheduled_receipts
    return DayFlow(
        day,
        receipts=f.receipts - scheduled,
        payments=f.payments - f.committed_paid,
        transfers_in=f.transfers_in,
        transfers_out=f.transfers_out,
        committed_opened=f.committed_opened - f.committed_cancelled,
        committed_paid=f.committed_paid,
        receipts_scheduled=scheduled,
    )


class Recurring(msgspec.Struct, frozen=True):
    """A learned monthly flow: ``series`` ``in`` or ``out``, on day ``anchor`` of each month
    (moved to the previous business day; 31: the last business day), ``amount`` > 0 KRW,
    learned from the days ``seen``."""

    series: str
    anchor: int
    amount: int
    seen: tuple[int, ...]

    @property
    def ref(self) -> str:
        return f"{self.series}:last" if self.anchor == LAST_DAY else f"{self.series}:day{self.anchor}"


class Learned(msgspec.Struct, frozen=True):
    """What was learned on ``today`` from ``days`` observed days. Per day class (indexed
    ``OFF, BUSINESS, MONTH_END, YEAR_END``): the mean unexplained ``inflow`` and ``outflow``
    (recurring days aside; shown, not used), and what the forecast uses: the ``net`` flow,
    the commitments ``opened`` and ``paid`` (``shrunk_mean``s); and the recurring flows."""

    today: int
    days: int = 0
    inflow: tuple[int, ...] = ZERO
    outflow: tuple[int, ...] = ZERO
    net: tuple[int, ...] = ZERO
    opened: tuple[int, ...] = ZERO
    paid: tuple[int, ...] = ZERO
    scheduled: tuple[int, ...] = ZERO
    recurring: tuple[Recurring, ...] = ()


# -- the calendar, by day number (cached: the forecast asks for the same days all day) -----------


@lru_cache(maxsize=4096)
def business(day: int) -> bool:
    return is_business_day(day_date(day))


@lru_cache(maxsize=512)
def _month_business_days(year: int, month: int) -> tuple[int, ...]:
    first = date_day(dt.date(year, month, 1))
    nxt = date_day(dt.date(year + month // 12, month % 12 + 1, 1))
    return tuple(d for d in range(first, nxt) if business(d))


@lru_cache(maxsize=4096)
def day_class(day: int) -> int:
    """``OFF``; ``YEAR_END`` (a business day from 20 December); ``MONTH_END`` (one of the last
    ``MONTH_END_DAYS`` business days of its month); else ``BUSINESS``."""
    if not business(day):
        return OFF
    d = day_date(day)
    if d.month == 12 and d.day >= YEAR_END_FROM:
        return YEAR_END
    return MONTH_END if day in _month_business_days(d.year, d.month)[-MONTH_END_DAYS:] else BUSINESS


@lru_cache(maxsize=8192)
def anchor_day(year: int, month: int, anchor: int) -> int:
    """The day a flow recurring on day ``anchor`` falls in that month: that date (the month's
    last day if it is shorter), or the business day before it; a month with no business day
    on or before it: the first business day after it."""
    days = _month_business_days(year, month)
    last = date_day(dt.date(year + month // 12, month % 12 + 1, 1)) - 1
    target = min(date_day(dt.date(year, month, 1)) + anchor - 1, last)
    before = [d for d in days if d <= target]
    if before:
        return before[-1]
    after = [d for d in days if d > target]
    return after[0] if after else target


def _months_back(day: int) -> Iterable[tuple[int, int]]:
    d = day_date(day)
    y, m = d.year, d.month
    while True:
        yield y, m
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)


def months_between(first: int, last: int) -> list[tuple[int, int]]:
    """The (year, month) pairs from ``first``'s month to ``last``'s, in order."""
    out: list[tuple[int, int]] = []
    d, e = day_date(first), day_date(last)
    y, m = d.year, d.month
    while (y, m) <= (e.year, e.month):
        out.append((y, m))
        y, m = (y, m + 1) if m < 12 else (y + 1, 1)
    return out


@lru_cache(maxsize=65_536)  # a function of the calendar only: every account of a day asks the same
def occurrences_before(anchor: int, today: int, start: int, k: int = OCCURRENCES) -> tuple[int, ...]:
    """The last ``k`` days (ascending) in ``[start, today)`` on which ``anchor`` fell; fewer
    when the window holds fewer."""
    out: list[int] = []
    for y, m in _months_back(today):
        o = anchor_day(y, m, anchor)
        if o < start:  # an earlier month's day is earlier still
            break
        if o < today:
            out.append(o)
            if len(out) == k:
                break
    return tuple(sorted(out))


# -- learning -------------------------------------------------------------------------------------


def _median(values: Sequence[int]) -> int:
    """The middle value (sorted; an even count: the lower middle, no rounding needed)."""
    s = sorted(values)
    return s[(len(s) - 1) // 2] if s else 0


def _usual(values: Sequence[int]) -> int:
    """A class's usual day: the larger of the median and the mean without the largest
    ``TRIM_PCT`` % of days (at least one), floored. Robust to the peaks being looked for."""
    if not values:
        return 0
    s = sorted(values)
    cut = max(1, len(s) * TRIM_PCT // 100) if len(s) > 1 else 0
    kept = s[: len(s) - cut]
    return max(s[(len(s) - 1) // 2], sum(kept) // len(kept))


def shrunk_mean(total: int, squares: int, n: int) -> int:
    """The mean ``m`` of ``n`` values (given their sum and sum of squares) discounted by its
    own uncertainty: ``m * (1 - (2 se)**2 / m**2)``, 0 when ``|m| <= 2 se`` (a positive-part
    James-Stein shrinkage towards 0; ``se**2`` = sample variance / n), rounded towards zero.
    Fewer than two values: 0."""
    if n < 2 or total == 0:
        return 0
    spread = n * squares - total * total  # n * (n - 1) * variance
    numer = (n - 1) * total * total - SHRINK_K * spread  # m' = numer / (n (n - 1) total)
    if numer <= 0:
        return 0
    q = numer // (n * (n - 1) * abs(total))
    return q if total > 0 else -q


def _class_means(
    values: Sequence[int], classes: Sequence[int], skip: set[int], shrink: bool
) -> tuple[int, ...]:
    """Per class the mean of the days not in ``skip`` (``shrink``: ``shrunk_mean``, else
    floored); a class seen on fewer than ``MIN_CLASS_DAYS`` days borrows the business days'
    mean (off days: 0)."""
    sums = [0] * N_CLASSES
    sqs = [0] * N_CLASSES
    ns = [0] * N_CLASSES
    for j, v in enumerate(values):
        if j not in skip:
            c = classes[j]
            sums[c] += v
            sqs[c] += v * v
            ns[c] += 1
    out = [0] * N_CLASSES
    for c in range(N_CLASSES):
        if ns[c] >= MIN_CLASS_DAYS:
            out[c] = shrunk_mean(sums[c], sqs[c], ns[c]) if shrink else sums[c] // ns[c]
    for c in (MONTH_END, YEAR_END):
        if ns[c] < MIN_CLASS_DAYS:
            out[c] = out[BUSINESS]
    return tuple(out)


def _recurring(
    values: Sequence[int], classes: Sequence[int], start: int, today: int
) -> list[tuple[int, int, tuple[int, ...]]]:
    """Candidate recurring flows of one series: ``(anchor, weakest excess, occurrence days)``,
    strongest first."""
    usual = [_usual([v for v, k in zip(values, classes, strict=True) if k == c]) for c in range(N_CLASSES)]
    found: list[tuple[int, int, tuple[int, ...]]] = []
    for anchor in range(1, LAST_DAY + 1):
        occ = occurrences_before(anchor, today, start)
        if len(occ) < OCCURRENCES:
            continue
        excess = []
        for o in occ:
            base = usual[classes[o - start]]
            e = values[o - start] - base
            if e <= 0 or e < STANDOUT * base:
                break
            excess.append(e)
        else:
            if min(excess) * 2 >= max(excess):
                found.append((anchor, min(excess), tuple(occ)))
    found.sort(key=lambda x: (-x[1], x[0]))
    return found


def learn(history: Iterable[DayFlow], today: int, history_from: int | None = None) -> Learned:
    """Learn from the account's days before ``today``. ``history_from``: the first day whose
    flows are complete (days from it on that ``history`` lacks had no flow); by default the day
    after the earliest day given (the first day is partial and typically holds the opening
    balance, as in the alert rules)."""
    cols: dict[int, list[int]] = {}
    for f in history:
        if f.day >= today:
            continue
        c = cols.get(f.day)
        if c is None:
            c = cols[f.day] = [0, 0, 0, 0, 0]
        c[0] += f.receipts + f.transfers_in
        c[1] += f.payments + f.transfers_out
        c[2] += f.committed_opened
        c[3] += f.committed_paid
        c[4] += f.receipts_scheduled
    if history_from is None:
        history_from = min(cols) + 1 if cols else today
    start = max(history_from, today - WINDOW_DAYS)
    n = today - start
    if n < MIN_DAYS:
        return Learned(today, max(n, 0))
    zero = [0, 0, 0, 0, 0]
    rows = [cols.get(d, zero) for d in range(start, today)]
    classes = [day_class(d) for d in range(start, today)]
    inflow = [r[0] for r in rows]
    outflow = [r[1] for r in rows]
    chosen: list[tuple[str, int, tuple[int, ...]]] = []
    claimed: set[int] = set()  # window indices of recurring days, either series'
    for s, values in ((OUT, outflow), (IN, inflow)):
        taken: set[int] = set()
        for anchor, _weakest, occ in _recurring(values, classes, start, today):
            idx = {o - start for o in occ}
            if not idx & taken:
                taken |= idx
                chosen.append((s, anchor, occ))
        claimed |= taken
    mean_in = _class_means(inflow, classes, claimed, shrink=False)
    mean_out = _class_means(outflow, classes, claimed, shrink=False)
    recurring = []
    for s, anchor, occ in chosen:
        values, mean = (inflow, mean_in) if s == IN else (outflow, mean_out)
        amount = _median([values[o - start] - mean[classes[o - start]] for o in occ])
        if amount > 0:
            recurring.append(Recurring(s, anchor, amount, occ))
    recurring.sort(key=lambda r: (r.series, r.anchor))
    net = [a - b for a, b in zip(inflow, outflow, strict=True)]
    return Learned(
        today,
        n,
        inflow=mean_in,
        outflow=mean_out,
        net=_class_means(net, classes, claimed, shrink=True),
        opened=_class_means([r[2] for r in rows], classes, set(), shrink=True),
        paid=_class_means([r[3] for r in rows], classes, set(), shrink=True),
        scheduled=_class_means([r[4] for r in rows], classes, set(), shrink=True),
        recurring=tuple(recurring),
    )


def recurring_days(r: Recurring, first: int, last: int) -> list[int]:
    """The days in ``[first, last]`` on which ``r`` falls."""
    out = []
    for y, m in months_between(first, last):
        d = anchor_day(y, m, r.anchor)
        if first <= d <= last:
            out.append(d)
    return out
