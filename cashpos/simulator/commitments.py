"""Commitments (지출원인행위) and their scheduled follow-ups.

A ``commitment`` (id ``{prefix}-c{n}``, due 7-90 days later) is followed by a scheduled plan:
70% one full payment, 15% 2-4 partial payments, 8% partial payment(s) then cancel of the rest,
4% full cancel, 3% partial cancel then payment (1.45 follow-ups and 92% of the amount paid on
average). Follow-ups never exceed the open amount, stay on the commitment's account and fiscal
year, fall on business hours up to the due date and never after 20 Jan of the next year (the
prior-year window). Decided in December and due next year, a commitment is mostly carried
forward (이월) and paid as next year's. Open commitments are capped (``MAX_OPEN_COMMITMENTS``);
at the cap the generator emits a new commitment as a direct payment instead, which bounds
memory at any rate. The follow-ups share one heap with the fiscal-year closes (``closes``) and
the schedules of expected receipts (``known``); with the known flows on, a plan's payments are
mostly preceded by their payment orders (``known.KnownFlows._with_orders``).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from heapq import heappop, heappush, heapreplace
from typing import TYPE_CHECKING, Any, Final

import orjson

from cashpos.calendar import KST_OFFSET_SECONDS, is_business_day
from cashpos.simulator.channels import C_COMMIT
from cashpos.simulator.rhythm import HourInfo, day_index, day_of, day_start

MAX_OPEN_COMMITMENTS: Final = 100_000  # ~50 MB of scheduled follow-ups at most


def split_amount(total: int, k: int, rnd: Any) -> list[int]:
    """``k`` positive integers summing to ``total`` (``total >= k``)."""
    if k <= 1:
        return [total]
    cuts = sorted(rnd.sample(range(1, total), k - 1)) if total > k else list(range(1, k))
    parts, prev = [], 0
    for c in cuts + [total]:
        parts.append(c - prev)
        prev = c
    return parts


class Commitments:
    """The generator's commitments and follow-ups (a mixin of :class:`Simulator`)."""

    prefix: str
    _rng: random.Random
    _t: float
    _seq: int
    _commit_counter: int
    _followups: list[tuple[float, int, list[Any]]]
    _orgs: list[str]
    _accounts: list[list[list[str]]]
    known_flows: bool

    if TYPE_CHECKING:

        def _stamp(self, t: float) -> tuple[str, HourInfo]: ...
        def _amount(self, ch: int, g: int) -> int: ...
        def _next_id(self) -> str: ...
        def _close(self, g: int, year: int) -> bytes: ...
        def _scheduled(self, t: float, rec: list[Any]) -> bytes: ...
        def _with_orders(
            self, cid: str, steps: list[tuple[Any, ...]], times: list[float], t: float, floor: float = 0.0
        ) -> tuple[list[tuple[Any, ...]], list[float]]: ...

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
        year_end = day_index(dt.date(fy, 12, 31))
        if due_day > year_end and day_of(info.day).month == 12:
            # Decided in December, due next year: mostly carried forward (이월) and paid as next
            # year's; some paid by 20 January as this year's; a few left to lapse at the close.
            r = rng.random()
            if r < 0.08:
                return self._commitment_record(g, account, fy, amount, ts, cid, due_day)
            if r < 0.60:
                carry_at = self._plan_times(t, min(due_day, year_end), fy, 1)
                paid_at = self._plan_times(day_start(year_end + 1) + 9 * 3600.0, due_day, fy + 1, 1)
                steps: list[tuple[Any, ...]] = [("commitment_carry_forward", amount), ("payment", amount)]
                times = carry_at + paid_at
                if self.known_flows:  # its order is next year's: dated from 1 January
                    steps, times = self._with_orders(cid, steps, times, t, day_start(year_end + 1))
                self._seq += 1
                heappush(self._followups, (times[0], self._seq, [g, account, fy, cid, steps, times, 0]))
                return self._commitment_record(g, account, fy, amount, ts, cid, due_day)
        # the plan: (kind, amount) steps, the amounts summing to the commitment
        r = rng.random()
        if amount < 10 or r < 0.70:
            steps = [("payment", amount)]
        elif r < 0.85:
            steps = [("payment", p) for p in split_amount(amount, rng.randint(2, 4), rng)]
        elif r < 0.93:
            paid = max(1, min(amount - 1, int(amount * rng.uniform(0.3, 0.9))))
            steps = [("payment", p) for p in split_amount(paid, min(paid, rng.randint(1, 2)), rng)]
            steps.append(("commitment_cancel", amount - paid))
        elif r < 0.97:
            steps = [("commitment_cancel", amount)]
        else:
            cancel = max(1, min(amount - 1, int(amount * rng.uniform(0.1, 0.5))))
            steps = [("commitment_cancel", cancel), ("payment", amount - cancel)]
        times = self._plan_times(t, due_day, fy, len(steps))
        if self.known_flows:
            steps, times = self._with_orders(cid, steps, times, t)
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
                "due_date": day_of(due_day).isoformat(),
            }
        )

    def _plan_times(self, t: float, due_day: int, fy: int, k: int) -> list[float]:
        """``k`` increasing times in business hours between t+1h and the due date, never
        after 20 January of fy+1 (the end of prior-year processing)."""
        rnd = self._rng.random
        lo = t + 3600.0
        last_day = min(due_day, day_index(dt.date(fy + 1, 1, 20)))
        hi = day_start(last_day + 1) - 1.0
        lo_day = int((lo + KST_OFFSET_SECONDS) // 86400)
        out = []
        for _ in range(k):
            x = lo + (hi - lo) * math.sqrt(rnd())  # later steps cluster towards the due date
            day = int((x + KST_OFFSET_SECONDS) // 86400)
            d = day
            while d >= lo_day and not is_business_day(day_of(d)):
                d -= 1
            if d < lo_day:
                d = day
                while d <= last_day and not is_business_day(day_of(d)):
                    d += 1
                if d > last_day:
                    d = day
            tod = 9 * 3600 + 9 * 3600 * (rnd() + rnd()) / 2  # 09-18, peaked mid-day
            y = day_start(d) + tod
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
        if len(rec) != 7:
            if len(rec) == 2:  # a government's close of a fiscal year
                heappop(fu)
                self._t = max(t, self._t)
                return self._close(rec[0], rec[1])
            return self._scheduled(t, rec)  # an expected receipt's (``known``)
        g, account, fy, cid, steps, times, i = rec
        step = steps[i]
        kind = step[0]
        amount = step[1]
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
        body: dict[str, Any] = {
            # a payment order's id is its own (``known``): the numbered ids stay as without them
            "event_id": step[2] if kind == "payment_order" else self._next_id(),
            "org_code": self._orgs[g],
            "account": account,
            "fiscal_year": fy,
            "kind": kind,
            "amount": amount,
            "occurred_at": ts,
            "source": "e-hojo",
            "commitment_id": cid,
        }
        if kind == "commitment_carry_forward":
            rec[2] = fy + 1  # paid as next year's from now on
            body["basis"] = "explicit"
        elif len(step) > 2:  # known flows: an order, or the payment executing it
            if kind == "payment_order":
                body["pay_date"] = step[3]
            else:
                body["order_id"] = step[2]
        return orjson.dumps(body)
