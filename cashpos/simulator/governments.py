"""Per-government tables of the generator: sampling weights, amount medians per channel, the
account each channel books to, transfer pairs, and the opening balances.

Events per government are proportional to budget**0.8 and the amount scale to budget**0.2, so
that the money flowing per government is proportional to its budget (with pure proportional
frequency, amounts could not also grow with size without flows growing as budget squared).
Amounts are calibrated so that at the national reference volume (``REFERENCE_EVENTS_PER_DAY``)
yearly receipts ~ budget and yearly payments ~ budget; they do not depend on ``rate``/``speed``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import TYPE_CHECKING, Final

import orjson

from cashpos.calendar import KST
from cashpos.refdata import governments
from cashpos.simulator.budgets import annual_budgets, budget_class
from cashpos.simulator.channels import (
    C_COMMIT,
    CHANNELS,
    FOLLOWUPS_PER_COMMITMENT,
    FREQ_EXPONENT,
    N_GOVS,
    OUT_AMOUNT,
    REFERENCE_EVENTS_PER_DAY,
    REV_AMOUNT_SHARES,
    SLOTS,
    TRANSFER_MIX,
)
from streams.contract import MAX_AMOUNT

if TYPE_CHECKING:
    from cashpos.simulator.rhythm import HourInfo


class GovernmentTables:
    """The generator's per-government tables (a mixin of :class:`Simulator`)."""

    seed: int
    prefix: str
    start: dt.datetime

    if TYPE_CHECKING:

        def _stamp(self, t: float) -> tuple[str, HourInfo]: ...

    def _setup_governments(self) -> None:
        govs = list(governments().values())
        budgets = annual_budgets()
        self._orgs = [g.org_code for g in govs]
        assert len(govs) == N_GOVS, "the reference data must list 243 governments"
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
        spont = sum(ch[0] for ch in CHANNELS)
        norm = spont + CHANNELS[C_COMMIT][0] * FOLLOWUPS_PER_COMMITMENT
        # per government, per channel: log-normal median (mean / exp(sigma^2 / 2))
        self._medians: list[list[float]] = []
        self._accounts: list[list[list[str]]] = []
        self._transfers: list[list[tuple[str, str]]] = []
        layout = random.Random(f"cashpos-accounts:{self.seed}")
        for g, budget, w in zip(govs, self._budgets, freq):
            n_year = ref_per_year * w / total
            cls = budget_class(g.name, g.level)
            shares = REV_AMOUNT_SHARES[cls]
            meds = []
            for c, (count, _style, sigma, _unit, _mix) in enumerate(CHANNELS):
                yearly = shares[c] if c < 6 else OUT_AMOUNT.get(c, 0.0)
                n_ch = n_year * count / norm
                mean = yearly * budget / n_ch if n_ch > 0 else 0.0
                meds.append(mean / math.exp(sigma * sigma / 2))
            self._medians.append(meds)
            by_type: dict[str, list[str]] = {}
            for acct in g.accounts:
                by_type.setdefault(acct.type, []).append(acct.code)
            general = by_type["general"][0]
            tables = []
            for _count, _style, _sigma, _unit, mix in CHANNELS:
                slots: list[str] = []
                for typ, p in mix.items():
                    codes = by_type.get(typ) or [general]
                    codes = codes[:]
                    layout.shuffle(codes)
                    k = round(p * SLOTS)
                    slots.extend(codes[i % len(codes)] for i in range(k))
                tables.append(slots or [general])
            self._accounts.append(tables)
            pairs: list[tuple[str, str]] = []
            for (src, dst), p in TRANSFER_MIX.items():
                a_codes, b_codes = by_type.get(src), by_type.get(dst)
                if not a_codes or not b_codes:
                    src, dst = "general", "fund"
                    a_codes, b_codes = by_type["general"], by_type["fund"]
                for _ in range(round(p * SLOTS)):
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
