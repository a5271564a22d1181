"""The generator: :class:`Simulator`, a seeded, deterministic stream of events for all 243
governments (receipts, payments, transfers, reversals; commitments in ``commitments``, the
year's closes in ``closes``)."""

from __future__ import annotations

import datetime as dt
import gc
import math
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

import orjson

from cashpos.calendar import KST, KST_OFFSET_SECONDS
from cashpos.simulator.channels import (
    C_COMMIT,
    C_DIRECT,
    C_PAYROLL,
    C_REVERSAL,
    C_TRANSFER,
    CH_INFO,
    CHANNELS,
    FOLLOWUPS_PER_COMMITMENT,
    N_CHANNELS,
    N_GOVS,
    PRIOR_YEAR_SHARE,
    R_TAX,
    SOURCES,
)
from cashpos.simulator.closes import YearCloses
from cashpos.simulator.commitments import MAX_OPEN_COMMITMENTS, Commitments
from cashpos.simulator.governments import GovernmentTables
from cashpos.simulator.known import KnownFlows
from cashpos.simulator.rhythm import HourInfo, HourlyIntensity
from streams.contract import MAX_AMOUNT

REVERSAL_CANDIDATES: Final = 4096
DEFAULT_START: Final = dt.datetime(2026, 1, 1, tzinfo=KST)


class Simulator(GovernmentTables, Commitments, YearCloses, KnownFlows):
    """Deterministic generator of contract-conforming events for all 243 governments.

    ``rate`` is the long-run number of events per wall second and ``speed`` the number of
    simulated seconds per wall second, so events arrive at ``rate / speed`` per simulated
    second on average (more in office hours, fewer at night). ``start`` defaults to
    ``DEFAULT_START`` so that a seed alone fixes the output; pass ``datetime.now(KST)`` for a
    live stream. Naive datetimes are read as KST. ``known_flows=True`` adds the known future
    flows (payment orders, expected receipts: ``known``); without it the stream is unchanged.
    """

    def __init__(
        self,
        seed: int = 42,
        start: dt.datetime | None = None,
        speed: float = 1.0,
        rate: float = 20.0,
        *,
        id_prefix: str | None = None,
        known_flows: bool = False,
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
        self._hours: dict[int, HourInfo] = {}
        self._years: dict[int, HourlyIntensity] = {}
        self._setup_governments()
        self._closes_pending = 0
        self._schedule_closes(start)
        spont = sum(ch[0] for ch in CHANNELS)
        norm = spont + CHANNELS[C_COMMIT][0] * FOLLOWUPS_PER_COMMITMENT
        per_sim_second = self.rate / self.speed
        self._weights = [ch[0] / norm * per_sim_second for ch in CHANNELS]
        self._t = start.timestamp()  # time of the last emitted event (epoch seconds)
        self._setup_known_flows(known_flows)
        self._hour = -1
        self._hour_end = 0.0
        self._lam = 0.0
        self._cum: list[float] = []
        self._enter_hour(int((self._t + KST_OFFSET_SECONDS) // 3600))
        self._next_spont = self._draw_next(self._t)
        self._next_spont_cum = self._cum  # channel weights of the hour of _next_spont

    def _year(self, year: int) -> HourlyIntensity:
        y = self._years.get(year)
        if y is None:
            if len(self._years) > 3:
                self._years.clear()
            y = self._years[year] = HourlyIntensity(year, self._weights)
        return y

    def _enter_hour(self, hour: int) -> None:
        if hour >= self._kf_plan_hour:  # known flows: a new month, plan the one after it
            self._plan_ahead()
        info = self._hour_info(hour)
        y = self._year(info.year)
        i = hour - y.first_hour
        self._hour = hour
        self._hour_end = (hour + 1) * 3600.0 - KST_OFFSET_SECONDS
        self._lam = y.lam[i]
        self._cum = y.cum[i]

    def _hour_info(self, hour: int) -> HourInfo:
        info = self._hours.get(hour)
        if info is None:
            if len(self._hours) > 8192:
                self._hours.clear()
            info = self._hours[hour] = HourInfo(hour)
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
        return len(self._followups) - self._closes_pending - self._kf_pending

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
        if ch >= N_CHANNELS:
            ch = N_CHANNELS - 1
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
        if g >= N_GOVS:
            g = N_GOVS - 1
        if ch >= C_COMMIT and ch != C_DIRECT and ch != C_PAYROLL:
            if ch == C_REVERSAL:
                raw = self._reversal(t)
                if raw is not None:
                    return raw
                ch = R_TAX
            elif ch == C_TRANSFER:
                return self._transfer(g, t)
            elif len(fu) - self._closes_pending - self._kf_pending < MAX_OPEN_COMMITMENTS:
                return self._commitment(g, t)
            else:
                ch = C_DIRECT
        # a receipt or a payment without commitment (direct, payroll, custody pay-back)
        local = t + KST_OFFSET_SECONDS
        hour = int(local // 3600)
        info = self._hours.get(hour) or self._hour_info(hour)
        ms = int((local - hour * 3600) * 1000)
        ms = min(ms, 3_599_999)
        mm, rem = divmod(ms, 60_000)
        ss, frac = divmod(rem, 1000)
        kind, category, src, _sigma, _unit, prior = CH_INFO[ch]
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

    def _stamp(self, t: float) -> tuple[str, HourInfo]:
        local = t + KST_OFFSET_SECONDS
        hour = int(local // 3600)
        info = self._hours.get(hour) or self._hour_info(hour)
        ms = int((local - hour * 3600) * 1000)
        ms = min(ms, 3_599_999)
        mm, rem = divmod(ms, 60_000)
        ss, frac = divmod(rem, 1000)
        return f"{info.prefix}{mm:02d}:{ss:02d}.{frac:03d}+09:00", info

    def _amount(self, ch: int, g: int) -> int:
        _kind, _cat, _src, sigma, unit, _prior = CH_INFO[ch]
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
        src = SOURCES[C_TRANSFER]
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
