"""A seeded, realistic event generator for all 243 governments (pure; no I/O except ``run``).

``Simulator(seed, start, speed, rate).next_batch(n)`` returns ``n`` serialized events that pass
``streams.contract.check_message`` and the ledger's stateful rules. Same seed and start => the
same bytes. ``run(publisher, sim)`` publishes them paced in wall time.

Modelling choices (approximate by design; magnitudes from docs/DOMAIN.md):

* Budgets (``budgets``). Published totals for the 17 metropolitan/provincial governments, a
  base by suffix times a jitter seeded by org_code for the others (so sizes do not change with
  the run seed); 도봉구 and 울릉군 (the smallest county) are pinned. See ``annual_budgets()``.
* Volume (``governments``). Events per government are proportional to budget**0.8 and the
  amount scale to budget**0.2, so that the money flowing per government is proportional to its
  budget. Amounts are calibrated so that at the national reference volume (600,000 events a
  day, DOMAIN.md) yearly receipts ~ budget and yearly payments ~ budget; amounts do not depend
  on ``rate``/``speed`` (a slower simulation samples the same stream).
* Amounts are log-normal per channel (``channels``), integer KRW, 1 <= amount <= 10**15,
  rounded like the source system would (taxes to 10원, contracts and grants to 1,000원).
* Revenue (kind receipt): category shares by amount depend on the level (Seoul-like cities
  live on local tax, counties on grants); by count, local tax and non-tax receipts are the
  bulk while grants, subsidies and bonds are rare, large receipts. Receipts go mostly to
  ``general``; water/sewer fees to enterprise accounts; some subsidies, bonds and fund income
  to special accounts/funds. ``custody`` (세입세출외현금) receives guarantee deposits and pays
  them back (balanced in expectation).
* Expenditure: a ``commitment`` is followed by a scheduled plan of payments and cancels up to
  its due date (``commitments``: 1.45 follow-ups and 92% of the amount paid on average, never
  after 20 Jan of the next year). Payments without commitment: payroll (인사랑, on the 20th or
  the business day before) and ordinary direct payments. Open commitments are capped
  (``MAX_OPEN_COMMITMENTS``); at the cap a new commitment is emitted as a direct payment
  instead, which bounds memory at any rate.
* Transfers (전입/전출): mostly general -> special accounts/funds/enterprise, some back.
* Corrections: ~0.2% of events reverse an earlier receipt, payment without commitment or
  transfer of the same government (same kind, account, amount, category/to_account, fiscal
  year). Candidates live in a bounded deque and are removed when reversed (never twice).
* Calendar (KST, ``rhythm``): a non-homogeneous Poisson process with hourly intensity per
  channel: office hours on business days, a low floor at night/weekends and on Korean public
  holidays (fixed dates, lunar ones 2024-2030), online tax payments 24/7; month-end,
  quarter-end, tax deadline, early-January and December peaks. Each channel's profile is
  normalised to mean 1 over the year, so ``rate/speed`` is the long-run events per simulated
  second. From 1 to 20 January 30% of receipts and direct payments carry the prior fiscal year.
* Year close (``closes``): every government's close of each fiscal year at 00:00 KST on
  21 January, the end of its 출납정리기한.
* Known future flows (``known``, ``known_flows=True``; off by default, and then the stream is
  unchanged): payment orders 2-5 business days ahead of 85% of commitment payments, which then
  name them; monthly 지방교부세 and 보조금 instalments announced as ``confirmed`` expected receipts
  and realised by receipts naming the schedule; the local-tax due dates (지방소득세 May, 자동차세
  June and December, 재산세 July and September) announced as ``estimated`` 10-20% off what
  arrives, sometimes revised, realised by daily settlements up to the due date.

The modules: ``budgets`` (annual budgets), ``channels`` (the event streams and their shares),
``rhythm`` (the hourly intensity table), ``governments`` (per-government tables and opening
balances), ``commitments`` (commitments and their follow-ups), ``closes`` (the fiscal-year close
schedule), ``known`` (the known future flows), ``generator`` (:class:`Simulator`), ``scenarios``
(staged events) and ``publishing`` (``run``). ``python -m cashpos.simulator [n] [--known-flows]``
prints the generation rate.
"""

from __future__ import annotations

from cashpos.calendar import is_business_day
from cashpos.simulator.budgets import EOK, JO, annual_budgets, budget_class
from cashpos.simulator.channels import FREQ_EXPONENT, PRIOR_YEAR_SHARE, REFERENCE_EVENTS_PER_DAY
from cashpos.simulator.commitments import MAX_OPEN_COMMITMENTS
from cashpos.simulator.generator import DEFAULT_START, REVERSAL_CANDIDATES, Simulator
from cashpos.simulator.known import ORDERED_SHARE
from cashpos.simulator.publishing import run
from cashpos.simulator.scenarios import (
    SCENARIOS,
    SHORTFALL_ORG,
    StagedEvent,
    StagedSimulator,
    shortfall_scenario,
)

__all__ = [
    "DEFAULT_START",
    "EOK",
    "FREQ_EXPONENT",
    "JO",
    "MAX_OPEN_COMMITMENTS",
    "ORDERED_SHARE",
    "PRIOR_YEAR_SHARE",
    "REFERENCE_EVENTS_PER_DAY",
    "REVERSAL_CANDIDATES",
    "SCENARIOS",
    "SHORTFALL_ORG",
    "Simulator",
    "StagedEvent",
    "StagedSimulator",
    "annual_budgets",
    "budget_class",
    "is_business_day",
    "run",
    "shortfall_scenario",
]
