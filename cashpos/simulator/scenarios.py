"""Scenarios: staged events at known simulated times, mixed into the generated stream."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import orjson

from cashpos.calendar import KST
from cashpos.simulator.budgets import annual_budgets
from cashpos.simulator.generator import Simulator
from streams.contract import MAX_AMOUNT

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
