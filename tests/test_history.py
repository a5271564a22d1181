"""The history (issue #16) on the worker's path: daily flows that sum to the balances, as-of
answers equal to the journal's effects up to that instant, and hash chains that do not depend on
batching, crashes, the C kernel or how the two input topics interleave — and break on tampering.

Streams come from the fiscal-year test's generator (both topics, every kind, the close).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.history import HistoryHook
from agents.hooks import FoldContext, HookHost
from cashpos.calendar import kst_day
from cashpos.names import EXPENDITURE, REVENUE
from state import partition
from state.history import (
    CATEGORIES,
    DayFlows,
    DayTotals,
    as_of,
    classify,
    known_at,
    listing,
    side_of_sid,
    statement_rows,
)
from state.ledger import Journal, Ledger, PosKey
from state.store import Store
from streams.lean_records import LeanRecord as Rec
from streams.lean_records import RawRecord
from tests.test_fiscal_year import BUSAN, SEOUL, TOPIC, two_topics

ORGS = (SEOUL, BUSAN)
Recs = dict[str, list[RawRecord]]


def _host(store: Store) -> HookHost:
    return HookHost(store, None, None, {}, asyncio.Lock(), lambda: ORGS, lambda: 0, lambda _: ())  # type: ignore[arg-type]  # a hook host without Redis or Kafka: the history hook uses neither


def _run(fold: partition.Fold, recs: Recs, runs: list[tuple[str, int]], kills: set[int], path: Path) -> Store:
    """The worker's loop with the history hook: a kill loses the run in flight (not written);
    a new worker (and hook) resumes from the store."""
    store = Store(path)
    ledger = store.attach(Ledger())
    hook = HistoryHook()
    asyncio.run(hook.on_assigned(_host(store), list(ORGS)))
    queue, step = list(runs), 0
    while queue:
        side, k = queue.pop(0)
        topic = TOPIC[side]
        start = store.next_offset(topic, 0) or 0
        batch = recs[side][start : start + k]
        if not batch:
            continue
        fold(ledger, batch, topic, 0, side, {}, 8192)
        if step in kills:
            kills = kills - {step}
            store.close()
            store = Store(path)
            ledger = store.attach(Ledger())
            for org in ORGS:
                store.load(ledger, org)
            hook = HistoryHook()
            asyncio.run(hook.on_assigned(_host(store), list(ORGS)))
            queue.insert(0, (side, k))
            step += 1
            continue
        ch = ledger.take_changes()
        ctx = FoldContext(ch, ledger.positions, 0, lambda _: (), lambda *_: False)
        hook.after_fold(ctx)
        store.commit(ch, ledger.positions, {(topic, 0): batch[-1].offset + 1}, ctx.puts, ctx.deletes)
        ledger.journal.clear()
        ledger.commitments.clear()
        step += 1
    return store


def _raw_of(store: Store, org: str) -> Callable[[str], bytes]:
    def raw(sid: str) -> bytes:
        entry = store.journal(org, sid)
        assert entry is not None, sid
        return entry.raw

    return raw


def _heads(store: Store) -> dict[PosKey, str]:
    return {pk: c.head for org in ORGS for pk, c in store.chains(org).items()}


def _effects_up_to(entries: list[Journal], org: str, at_ms: int) -> dict[PosKey, tuple[int, int, int]]:
    out: dict[PosKey, tuple[int, int, int]] = {}
    for e in entries:
        if e.occurred_ms <= at_ms:
            for account, fy, dc, dm in e.effects:
                c, m, n = out.get((org, account, fy), (0, 0, 0))
                out[(org, account, fy)] = (c + dc, m + dm, n + 1)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_topics(), st.data())
def test_history_is_exact_and_its_chains_do_not_depend_on_how_it_was_read(
    stream: tuple[Recs, list[tuple[str, int]], set[int]], data: Any
) -> None:
    recs, runs, kills = stream
    # another worker: each topic read whole, expenditure first, no crash (another interleaving
    # and batching than ``runs``)
    other = [(s, len(recs[s])) for s in (EXPENDITURE, REVENUE) if recs[s]]
    folds = [partition.fold_partition_py] + ([partition.fold_partition_native] if partition.fold_hot else [])
    heads = []
    listings = []
    for fold, plan, k in [(f, runs, kills) for f in folds] + [(folds[-1], other, set())]:
        store = _run(fold, recs, plan, k, Path(tempfile.mkdtemp(prefix="cashpos-hist-")))
        try:
            heads.append(_heads(store))
            lines = {}
            for org in ORGS:
                positions = store.positions(org)
                chains = store.chains(org)
                for pk, p in positions.items():
                    listed = listing(store.rows_applied(pk), _raw_of(store, org))
                    lines[pk] = [(x.ms, x.sid, x.cash, x.committed, x.cash_after, x.link) for x in listed]
                    if (
                        listed
                    ):  # the running balance ends at the figure; each side's chain ends in a link listed
                        assert (listed[-1].cash_after, listed[-1].committed_after) == (p.cash, p.committed)
                        for side in {side_of_sid(x.sid) for x in listed}:
                            end = chains[pk].revenue if side == REVENUE else chains[pk].expenditure
                            assert end in {x.link for x in listed if side_of_sid(x.sid) == side}
                # the statement balances, every row and from one day to the next
                flows = list(store.flows(org))
                days = [d for _, d, _ in flows] or [0]
                rows = statement_rows(flows, min(days), max(days))
                closing: dict[PosKey, tuple[int, int]] = {}
                for _day, pk, r in rows:
                    moved = sum(r[f"receipts_{c}"] for c in CATEGORIES) + r["transfers_in"] + r["carried_in"]
                    moved -= r["payments"] + r["transfers_out"] + r["carried_out"] - r["other_cash"]
                    assert r["opening_cash"] + moved == r["closing_cash"]
                    assert (r["opening_cash"], r["opening_committed"]) == closing.get(pk, (0, 0))
                    closing[pk] = (r["closing_cash"], r["closing_committed"])
                assert closing == {pk: (p.cash, p.committed) for pk, p in positions.items()}
                # the daily flows sum to each balance, to the won
                sums: dict[PosKey, list[int]] = {}
                for pk, _day, f in store.flows(org):
                    s = sums.setdefault(pk, [0, 0])
                    s[0] += f.cash_delta
                    s[1] += f.committed_delta
                assert {pk: tuple(v) for pk, v in sums.items()} == {
                    pk: (p.cash, p.committed) for pk, p in positions.items()
                }
                # as of any instant: the journal's effects up to it (independent of flows and rows)
                entries = [e for _, e in store.journal_entries(org)]
                totals = DayTotals(store.flows(org))
                instants = sorted({e.occurred_ms for e in entries})
                for at in data.draw(st.lists(st.sampled_from(instants), max_size=4)) if instants else []:
                    for delta in (-1, 0):
                        t = at + delta
                        want = _effects_up_to(entries, org, t)
                        for pk in positions:
                            before = [(d, f) for p2, d, f in store.flows(org, pk[1], pk[2]) if p2 == pk]
                            got = as_of(before, store.rows_of_day(pk, kst_day(t)), t)
                            assert got == want.get(pk, (0, 0, 0)), (pk, t)
                            # the worker's daily totals (prefix sums) give the same days before
                            c, m, n = totals.before(pk, kst_day(t))
                            for ms, _sid, dc, dm in store.rows_of_day(pk, kst_day(t)):
                                if ms <= t:
                                    c, m, n = c + dc, m + dm, n + 1
                            assert (c, m, n) == got
        finally:
            store.close()
            listings.append(lines)
    assert all(h == heads[0] for h in heads)
    assert all(x == listings[0] for x in listings)


def test_changing_removing_or_adding_one_event_changes_the_chain_head() -> None:
    from tests.events import event

    base = [event(f"r{i}", "receipt", 100 + i, org=SEOUL) for i in range(5)]
    variants = {
        "same": list(base),
        "changed": base[:2] + [base[2].replace(b"test-suite", b"test-suitf")] + base[3:],
        "removed": base[:2] + base[3:],
        "added": [*base, event("r9", "receipt", 1, org=SEOUL)],
        "amount": base[:2] + [event("r2", "receipt", 103, org=SEOUL)] + base[3:],
    }
    heads = {}
    for name, values in variants.items():
        recs: Recs = {REVENUE: [Rec(i, 0, SEOUL.encode(), v) for i, v in enumerate(values)], EXPENDITURE: []}
        store = _run(
            partition.fold_partition, recs, [(REVENUE, len(values))], set(), Path(tempfile.mkdtemp())
        )
        try:
            (heads[name],) = _heads(store).values()
        finally:
            store.close()
    base_head = heads.pop("same")
    assert base_head not in heads.values()
    assert len(set(heads.values())) == len(heads)
    # and a second identical run gives the identical head (deterministic)
    recs = {REVENUE: [Rec(i, 0, SEOUL.encode(), v) for i, v in enumerate(base)], EXPENDITURE: []}
    store = _run(
        partition.fold_partition, recs, [(REVENUE, 2), (REVENUE, 3)], set(), Path(tempfile.mkdtemp())
    )
    try:
        assert list(_heads(store).values()) == [base_head]
    finally:
        store.close()


def test_every_kind_lands_in_exactly_one_column() -> None:
    """Each column is reached by its kind, and the deltas equal the effects (both signs)."""
    cases = [
        ("receipt", [("a", 2026, 5, 0)], b'{"category":"grant"}', "receipts_grant"),
        ("receipt", [("a", 2026, 5, 0)], b'{"category":"grant","schedule_id":"s"}', "receipts_scheduled"),
        ("payment", [("a", 2026, -5, -3)], b"", "payments"),
        ("transfer", [("a", 2026, -5, 0), ("b", 2026, 5, 0)], b"", "transfers_out"),
        ("commitment", [("a", 2026, 0, 5)], b"", "committed_opened"),
        ("commitment_cancel", [("a", 2026, 0, -5)], b"", "committed_cancelled"),
        ("commitment_carry_forward", [("a", 2026, 0, -5), ("a", 2027, 0, 5)], b"", "committed_carried_out"),
        ("fiscal_year_close", [("a", 2026, -5, 0), ("a", 2027, 5, 0)], b"", "carried_out"),
        ("lapse", [("a", 2026, 0, -5)], b"", "committed_lapsed"),
    ]
    seen = set()
    for kind, effects, raw, first_column in cases:
        for sign in (1, -1):  # -1: its reversal
            eff = [(a, fy, sign * dc, sign * dm) for a, fy, dc, dm in effects]
            entry = Journal(raw, kind, "a", 2026, 5, 0, eff)
            got = list(classify(entry))
            assert [(a, fy) for a, fy, _ in got] == [(a, fy) for a, fy, _, _ in eff]
            for (_, _, f), (_, _, dc, dm) in zip(got, eff, strict=True):
                assert (f.cash_delta, f.committed_delta, f.events) == (dc, dm, 1)
                assert f.receipts_scheduled == (dc if b"schedule_id" in raw else 0)  # a memo, in no sum
            seen |= {n for _, _, f in got for n in f.__struct_fields__ if getattr(f, n) and n != "events"}
        assert first_column in seen
    wanted = set(DayFlows.__struct_fields__) - {"events", "other_cash", "other_committed"}
    wanted -= {f"receipts_{c}" for c in CATEGORIES if c != "grant"}
    assert wanted <= seen


# -- the known-at axis --------------------------------------------------------------------------

_DELAYS = (
    -2 * 3_600_000,
    0,
    0,
    60_000,
    3 * 86_400_000,
)  # early (future-dated), on time, a minute, 3 days late


@st.composite
def stamped(draw: Any) -> tuple[Recs, list[tuple[str, int]], set[int]]:
    """``two_topics`` with record timestamps as a broker appends them: non-decreasing along each
    topic, each its event's time plus a delay (some events arrive days late, some early)."""
    recs, runs, kills = draw(two_topics())
    out: Recs = {}
    for side, rs in recs.items():
        ts = 0
        out[side] = []
        for r in rs:
            assert r.value is not None
            occurred = orjson.loads(r.value).get("occurred_at")
            base = _ms(occurred) if occurred else ts
            ts = max(ts, base + draw(st.sampled_from(_DELAYS)))
            out[side].append(Rec(r.offset, ts, r.key, r.value))
    return out, runs, kills


def _ms(text: str) -> int:
    from streams.contract import epoch_ms

    return epoch_ms(dt.datetime.fromisoformat(text))


def _known_answer(store: Store, org: str, totals: DayTotals, pk: PosKey, t: int) -> tuple[int, int, int]:
    """The worker's known-at path (agents/history_web.py): record-day totals, then that day's rows."""
    c, m, n = totals.before(pk, kst_day(t))
    for rec, dc, dm in store.known_rows_of_day(pk, kst_day(t)):
        if rec <= t:
            c, m, n = c + dc, m + dm, n + 1
    return c, m, n


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stamped(), st.data())
def test_known_at_is_what_had_arrived_by_then_and_later_arrivals_never_change_it(
    stream: tuple[Recs, list[tuple[str, int]], set[int]], data: Any
) -> None:
    """As known at T = the journal's effects of the events whose record was on its topic by T
    (lapses with their close), through the worker's path (record-day totals, that day's rows),
    whatever the batching, crashes or fold path; and the store of only the records that had
    arrived by T (each topic's prefix) answers the same: what arrives later never changes a
    known-at answer, while the event-time answer for T may change."""
    recs, runs, kills = stream
    fold = partition.fold_partition
    store = _run(fold, recs, runs, kills, Path(tempfile.mkdtemp(prefix="cashpos-known-")))
    try:
        stamps = sorted({r.timestamp for rs in recs.values() for r in rs})
        for t in data.draw(st.lists(st.sampled_from(stamps), min_size=1, max_size=3)):
            for at in (t - 1, t):
                prefix = {s: [r for r in rs if r.timestamp <= at] for s, rs in recs.items()}
                plan = [(s, len(rs)) for s, rs in prefix.items() if rs]
                early = _run(fold, prefix, plan, set(), Path(tempfile.mkdtemp(prefix="cashpos-known-")))
                try:
                    for org in ORGS:
                        want: dict[PosKey, tuple[int, int, int]] = {}
                        for _, e in store.journal_entries(org):
                            rec = e.source[3] if e.source is not None else e.occurred_ms
                            if rec <= at:
                                for account, fy, dc, dm in e.effects:
                                    c, m, n = want.get((org, account, fy), (0, 0, 0))
                                    want[(org, account, fy)] = (c + dc, m + dm, n + 1)
                        totals = DayTotals.of_sums(store.known_days(org))
                        early_totals = DayTotals.of_sums(early.known_days(org))
                        for pk in store.positions(org):
                            got = _known_answer(store, org, totals, pk, at)
                            assert got == want.get(pk, (0, 0, 0)), (pk, at)
                            assert _known_answer(early, org, early_totals, pk, at) == got, (pk, at)
                            rows = store.known_rows_of_day(pk, kst_day(at))
                            days = [(d, s) for p2, d, s in store.known_days(org) if p2 == pk]
                            assert known_at(days, rows, at) == got  # the pure reference
                finally:
                    early.close()
    finally:
        store.close()


def test_a_late_event_changes_the_past_on_the_event_axis_only() -> None:
    """A receipt that occurred at 09:00 but arrived at 15:00: as of 10:00 (event time) it counts;
    as known at 10:00 it does not; as known at 15:00 it does."""
    from tests.events import event

    nine = _ms("2026-03-02T09:00:00+09:00")
    values = [
        event("a", "receipt", 100, org=SEOUL, at="2026-03-02T08:00:00+09:00"),
        event("late", "receipt", 7, org=SEOUL, at="2026-03-02T09:00:00+09:00"),
    ]
    stamps = [nine - 3_600_000, nine + 6 * 3_600_000]
    recs: Recs = {
        REVENUE: [
            Rec(i, ts, SEOUL.encode(), v) for i, (ts, v) in enumerate(zip(stamps, values, strict=True))
        ],
        EXPENDITURE: [],
    }
    store = _run(partition.fold_partition, recs, [(REVENUE, 2)], set(), Path(tempfile.mkdtemp()))
    try:
        (pk,) = store.positions(SEOUL)
        totals = DayTotals.of_sums(store.known_days(SEOUL))
        ten = nine + 3_600_000
        before = [(d, f) for p2, d, f in store.flows(SEOUL) if p2 == pk]
        assert as_of(before, store.rows_of_day(pk, kst_day(ten)), ten)[0] == 107
        assert _known_answer(store, SEOUL, totals, pk, ten)[0] == 100
        assert _known_answer(store, SEOUL, totals, pk, stamps[1])[0] == 107
        assert _known_answer(store, SEOUL, totals, pk, stamps[1] - 1)[0] == 100
    finally:
        store.close()
