"""A government's daily statement (``state.statement``): each row is the sum of its positions'
rows (``state.history.statement_rows``, per fiscal year and over all of them), every row
balances to the won, and the sums kept batch by batch — late days included, rows asked for
between the batches — equal a fresh computation. Then the same on the worker's path: the
history hook's kept sums after every batch of a generated two-topic stream."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.history import HistoryHook
from agents.hooks import FoldContext, HookHost
from state import partition
from state.history import CATEGORIES, STATEMENT_COLUMNS, DayFlows, statement_rows
from state.ledger import Ledger, PosKey
from state.statement import FLOW_COLUMNS, GovernmentDays
from state.store import Store
from streams.lean_records import RawRecord
from tests.test_fiscal_year import BUSAN, SEOUL, TOPIC, two_topics

ORG = "6110000"
DAY0 = 20_450  # 2025-12-29, so the days run over the turn of the fiscal year
Flow = tuple[PosKey, int, DayFlows]

positions = st.tuples(
    st.just(ORG), st.sampled_from(["general", "sewerage", "water"]), st.sampled_from([2025, 2026])
)
money = st.integers(-(10**12), 10**12)
day_flows = st.builds(
    lambda events, cols: DayFlows(events, *cols),
    st.integers(1, 50),
    st.lists(money, min_size=len(FLOW_COLUMNS) - 1, max_size=len(FLOW_COLUMNS) - 1),
)
flows_st = st.lists(st.tuples(positions, st.integers(DAY0, DAY0 + 30), day_flows), max_size=40)


def _stored(flows: list[Flow]) -> list[Flow]:
    """The flows as the store holds them: one record per (position, day), in key order."""
    acc: dict[tuple[PosKey, int], DayFlows] = {}
    for pk, day, f in flows:
        cur = acc.setdefault((pk, day), DayFlows())
        cur.add(f)
    return [(pk, day, f) for (pk, day), f in sorted(acc.items())]


def _summed(flows: list[Flow], first: int, last: int, fy: int | None) -> list[tuple[int, dict[str, int]]]:
    """The independent answer: the positions' own rows (``statement_rows``), summed per day."""
    mine = [x for x in _stored(flows) if fy is None or x[0][2] == fy]
    by_day: dict[int, dict[str, int]] = {}
    for day, _pk, cols in statement_rows(mine, first, last):
        row = by_day.setdefault(day, dict.fromkeys(STATEMENT_COLUMNS, 0))
        for c in STATEMENT_COLUMNS:
            row[c] += cols[c]
    return sorted(by_day.items())


def _balanced(rows: list[tuple[int, dict[str, int]]]) -> None:
    """Every row: opening + flows = closing (the columns' meaning spelt out, not DayFlows'), and
    each day opens with the day before's closing."""
    prev: tuple[int, int] | None = None
    for i, (day, r) in enumerate(rows):
        cash_in = sum(r[f"receipts_{c}"] for c in CATEGORIES) + r["transfers_in"] + r["carried_in"]
        cash_out = r["payments"] + r["transfers_out"] + r["carried_out"]
        assert r["opening_cash"] + cash_in - cash_out + r["other_cash"] == r["closing_cash"]
        m_in = r["committed_opened"] + r["committed_carried_in"] + r["other_committed"]
        m_out = (
            r["committed_paid"]
            + r["committed_cancelled"]
            + r["committed_lapsed"]
            + r["committed_carried_out"]
        )
        assert r["opening_committed"] + m_in - m_out == r["closing_committed"]
        assert r["closing_available"] == r["closing_cash"] - r["closing_committed"]
        assert list(r) == list(STATEMENT_COLUMNS)
        if i:
            assert day == rows[i - 1][0] + 1  # every day, none skipped
        if prev is not None:
            assert (r["opening_cash"], r["opening_committed"]) == prev
        prev = (r["closing_cash"], r["closing_committed"])


@settings(max_examples=300, deadline=None)
@given(flows_st, st.integers(DAY0 - 3, DAY0 + 33), st.integers(0, 40))
def test_a_government_row_is_the_sum_of_its_positions_rows_and_balances(
    flows: list[Flow], first: int, span: int
) -> None:
    g = GovernmentDays(flows)
    last = first + span
    for fy in (None, 2025, 2026):
        got = g.rows(first, last, fy)
        assert got == _summed(flows, first, last, fy)
        _balanced(got)
    assert g.fiscal_years == sorted({pk[2] for pk, _, _ in flows})


@settings(max_examples=200, deadline=None)
@given(flows_st, st.data())
def test_kept_batch_by_batch_with_late_days_equals_a_fresh_computation(flows: list[Flow], data: Any) -> None:
    # the flows arrive in any order (a late event lands on a day before ones already kept), in
    # batches; rows are asked for between the batches (what is kept must not go stale)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(flows)), max_size=8)) | {0, len(flows)})
    kept = GovernmentDays()
    for a, b in itertools.pairwise(cuts):
        for pk, day, f in flows[a:b]:
            kept.add(pk, day, f)
        for _ in range(data.draw(st.integers(0, 3))):
            first = data.draw(st.integers(DAY0 - 2, DAY0 + 32))
            last = first + data.draw(st.integers(0, 35))
            fy = data.draw(st.sampled_from([None, 2025, 2026]))
            got = kept.rows(first, last, fy)
            assert got == GovernmentDays(flows[:b]).rows(first, last, fy)
            assert got == _summed(flows[:b], first, last, fy)
    for fy in (None, 2025, 2026):
        assert kept.rows(DAY0 - 1, DAY0 + 40, fy) == _summed(flows, DAY0 - 1, DAY0 + 40, fy)


def test_the_callers_flows_are_not_shared() -> None:
    f = DayFlows(events=1, payments=5)
    g = GovernmentDays([((ORG, "general", 2026), DAY0, f)])
    f.payments = 7  # the hook's flows of a batch are its own: the kept sum does not move
    assert g.rows(DAY0, DAY0)[0][1]["payments"] == 5


# -- on the worker's path: the hook's kept sums, batch by batch --------------------------------------

ORGS = (SEOUL, BUSAN)


def _host(store: Store) -> HookHost:
    return HookHost(store, None, None, {}, asyncio.Lock(), lambda: ORGS, lambda: 0, lambda _: ())  # type: ignore[arg-type]  # a hook host without Redis or Kafka: the history hook uses neither


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_topics())
def test_the_hooks_kept_statement_equals_the_stores_after_every_batch(
    stream: tuple[dict[str, list[RawRecord]], list[tuple[str, int]], set[int]],
) -> None:
    recs, runs, _kills = stream
    store = Store(Path(tempfile.mkdtemp(prefix="cashpos-stmt-")))
    try:
        ledger = store.attach(Ledger())
        hook = HistoryHook()
        asyncio.run(hook.on_assigned(_host(store), list(ORGS)))
        asked: set[str] = set()
        for n, (side, k) in enumerate(runs):
            topic = TOPIC[side]
            start = store.next_offset(topic, 0) or 0
            batch = recs[side][start : start + k]
            if not batch:
                continue
            partition.fold_partition_py(ledger, batch, topic, 0, side, {}, 8192)
            ch = ledger.take_changes()
            ctx = FoldContext(ch, ledger.positions, 0, lambda _: (), lambda *_: False)
            hook.after_fold(ctx)
            org = ORGS[n % 2]
            before = list(store.flows(org))
            if n % 3 == 2:
                # a read between the fold and the write: the store's state before the batch
                days = [d for _, d, _ in before] or [0]
                assert hook.government_days(org).rows(min(days), max(days)) == _summed(
                    before, min(days), max(days), None
                )
            store.commit(ch, ledger.positions, {(topic, 0): batch[-1].offset + 1}, ctx.puts, ctx.deletes)
            if n % 3 == 1:
                # a read between the write and after_commit (the serving copy may show the batch
                # already): with the batch, kept or read from the store (then not kept)
                after = list(store.flows(org))
                days = [d for _, d, _ in before + after] or [0]
                want = _summed(after, min(days), max(days), None)
                assert hook.government_days(org).rows(min(days), max(days)) == want
                assert (org in hook.statements) == (org in asked or not ch.index)
            asyncio.run(hook.after_commit())
            ledger.journal.clear()
            ledger.commitments.clear()
            asked.add(ORGS[n % 2])  # from now on kept, and kept current by each batch
            for org in asked:
                fresh = list(store.flows(org))
                days = [d for _, d, _ in fresh] or [0]
                first, last = min(days), max(days) + 1
                got = hook.government_days(org).rows(first, last)
                assert got == _summed(fresh, first, last, None)
                for fy in {pk[2] for pk, _, _ in fresh}:
                    assert hook.government_days(org).rows(first, last, fy) == _summed(fresh, first, last, fy)
                # the closing of the last day is the positions' balances now
                if got:
                    pos = [p for pk, p in ledger.positions.items() if pk[0] == org]
                    assert got[-1][1]["closing_cash"] == sum(p.cash for p in pos)
                    assert got[-1][1]["closing_committed"] == sum(p.committed for p in pos)
    finally:
        store.close()


def test_the_response_model_and_the_csv_name_every_column() -> None:
    from serving.history import CSV_HEADERS, GovernmentStatementRow

    assert list(GovernmentStatementRow.model_fields) == ["date", *STATEMENT_COLUMNS]
    assert {"date", *STATEMENT_COLUMNS} <= set(CSV_HEADERS)
    money = {n: f.annotation for n, f in GovernmentStatementRow.model_fields.items() if n != "date"}
    assert set(money.values()) == {int}  # integer KRW, never a float
