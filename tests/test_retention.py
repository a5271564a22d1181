"""Retention of the history (issue #16): once both sides closed a year, the years older than the
online ones keep their daily closings and lose their bytes and rows — and nothing else changes:
balances, statements, day-end answers, and the verdict on a copy or a changed copy of a retired
event (still ``duplicate`` / ``event_id_conflict``, never applied again)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.hooks import HookHost
from agents.retention import Retirer
from cashpos.calendar import DAY_MS, KST_OFFSET_MS, kst_day
from cashpos.names import EXPENDITURE, REVENUE
from state import layout as L
from state import partition
from state.history import DayTotals
from state.ledger import APPLIED, DUPLICATE, Ledger, scoped_id
from state.retention import answerable, day_end, event_digest, retired_through
from state.store import Store
from streams.contract import Rejection, check_message, decode
from streams.lean_records import LeanRecord as Rec
from tests.test_fiscal_year import BUSAN, SEOUL, TOPIC, close, two_topics
from tests.test_history import ORGS, Recs, _run

CLOSE_2026 = "2027-02-10T18:00:00+09:00"


def test_the_policy() -> None:
    closed = {REVENUE: {SEOUL: 2026}, EXPENDITURE: {SEOUL: 2025}}
    assert retired_through(closed, SEOUL, 2) == 2024  # the later side's close does not count alone
    assert retired_through(closed, SEOUL, 1) == 2025
    assert retired_through(closed, BUSAN, 1) is None  # nothing closed, nothing retired
    end = 2 * DAY_MS - KST_OFFSET_MS - 1  # 23:59:59.999 KST of the second day
    assert day_end(end) and not day_end(end - 1) and not day_end(end + 1)
    assert kst_day(end) == 1 and kst_day(end + 1) == 2
    assert answerable(end, True) and answerable(end - 1, False) and not answerable(end - 1, True)


def _host(store: Store) -> HookHost:
    return HookHost(
        store,
        None,  # type: ignore[arg-type]  # the retirer uses neither Redis nor Kafka
        None,
        {pk: store.positions(pk[0])[pk] for org in ORGS for pk in store.positions(org)},
        asyncio.Lock(),
        lambda: ORGS,
        lambda: 0,
        lambda _: (),
    )


def _retire(store: Store, online_years: int) -> int:
    """Every step until nothing is due; the number of steps."""
    r = Retirer(online_years)
    r.mark(list(ORGS))
    host = _host(store)
    steps = 0
    while r.due:
        asyncio.run(r.step(host))
        steps += 1
        assert steps < 10_000
    return steps


def _snapshot(store: Store) -> dict[str, Any]:
    return {
        org: (
            store.positions(org),
            list(store.flows(org)),
            list(store.known_days(org)),
            store.chains(org),
        )
        for org in ORGS
    }


def _refold(store: Store, recs: Recs, applied: set[tuple[str, str]]) -> list[str]:
    """Every record that was applied, again, into the compacted store (a replay from offset 0):
    each verdict."""
    ledger = store.attach(Ledger())
    for org in ORGS:
        store.load(ledger, org)
    out = []
    for side, rs in recs.items():
        for r in rs:
            assert r.value is not None
            ev = check_message(r.value, r.key, side)
            if isinstance(ev, Rejection) or (ev.org_code, scoped_id(side, ev.event_id)) not in applied:
                continue
            res = ledger.update(ev, r.value, (TOPIC[side], 0, r.offset, r.timestamp))
            out.append(res if isinstance(res, str) else res.reason)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_topics(), st.sampled_from([1, 2]), st.data())
def test_retiring_keeps_every_figure_and_every_verdict(
    stream: tuple[Recs, list[tuple[str, int]], set[int]], online_years: int, data: Any
) -> None:
    recs, runs, kills = stream
    # both sides close 2026 at the end, so 2026 (online 1) or 2025 (online 2) retires
    for side in (REVENUE, EXPENDITURE):
        value = close(2026, SEOUL, at=CLOSE_2026)
        recs[side].append(Rec(len(recs[side]), 0, SEOUL.encode(), value))
    runs = [*runs, (REVENUE, 1), (EXPENDITURE, 1)]
    path = Path(tempfile.mkdtemp())
    store = _run(partition.fold_partition, recs, runs, kills, path)
    # the store as it was, for the verdicts a replay gets without retention
    store.close()
    shutil.copytree(path, path.with_name(path.name + "-kept"))
    kept = Store(path.with_name(path.name + "-kept"))
    store = Store(path)
    try:
        before = _snapshot(store)
        entries = {org: dict(store.journal_entries(org)) for org in ORGS}
        # the journal's effects at each day's end, for the reference
        day_ends = sorted(
            {
                (kst_day(e.occurred_ms) + 1) * DAY_MS - KST_OFFSET_MS - 1
                for es in entries.values()
                for e in es.values()
            }
        )
        through = retired_through(store_closed(store), SEOUL, online_years)
        _retire(store, online_years)
        assert _snapshot(store) == before  # balances, daily closings, known-at days, chains
        for org in ORGS:
            t = retired_through(store_closed(store), org, online_years)
            if t is None:
                continue
            assert store.get(L.retired_key(org)) == L.encode_int(t)
            totals = DayTotals(store.flows(org))
            for pk in [pk for pk in store.positions(org) if pk[2] <= t]:
                assert not list(store.scan(L.index_prefix(*pk))), pk  # the rows are gone
                assert not list(store.scan(L.known_rows_prefix(pk))), pk
                for at in data.draw(st.lists(st.sampled_from(day_ends), max_size=3)) if day_ends else []:
                    want = [0, 0, 0]
                    for e in entries[org].values():
                        if e.occurred_ms <= at:
                            for account, fy, dc, dm in e.effects:
                                if (org, account, fy) == pk:
                                    want = [want[0] + dc, want[1] + dm, want[2] + 1]
                    assert totals.before(pk, kst_day(at) + 1) == tuple(want), (pk, at)
            for sid, e in store.journal_entries(org):
                old = entries[org][sid]
                # (an entry with no effect has no row to reach it by: it keeps its bytes)
                if old.raw and old.effects and all(fy <= t for _a, fy, _c, _m in old.effects):
                    ev = decode(old.raw, max_bytes=len(old.raw))
                    assert not isinstance(ev, Rejection)
                    assert e.raw == b"" and e.digest == event_digest(ev)  # a tombstone
                    assert (e.effects, e.kind, e.fiscal_year) == (old.effects, old.kind, old.fiscal_year)
                else:
                    assert e == old  # an online year's entry, untouched
        # a replay of everything: nothing is applied twice; a retired copy is still a duplicate
        applied = {(org, sid) for org in ORGS for sid in entries[org]}
        verdicts = _refold(store, recs, applied)
        assert verdicts == _refold(kept, recs, applied)
        assert APPLIED not in verdicts
        assert through is None or DUPLICATE in verdicts
    finally:
        store.close()
        kept.close()


def store_closed(store: Store) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {REVENUE: {}, EXPENDITURE: {}}
    for org in ORGS:
        for side, year in store.closes(org).items():
            out[side][org] = year
    return out


def test_a_changed_copy_of_a_retired_event_is_still_a_conflict() -> None:
    from tests.events import event

    value = event("r1", "receipt", 100, org=SEOUL, at="2026-11-20T10:00:00+09:00", fiscal_year=2026)
    recs: Recs = {
        REVENUE: [
            Rec(0, 0, SEOUL.encode(), value),
            Rec(1, 0, SEOUL.encode(), close(2026, SEOUL, at=CLOSE_2026)),
        ],
        EXPENDITURE: [Rec(0, 0, SEOUL.encode(), close(2026, SEOUL, at=CLOSE_2026))],
    }
    runs = [(REVENUE, 2), (EXPENDITURE, 1)]
    store = _run(partition.fold_partition, recs, runs, set(), Path(tempfile.mkdtemp()))
    try:
        _retire(store, 1)
        (entry,) = [e for sid, e in store.journal_entries(SEOUL) if sid.endswith("r1")]
        assert entry.raw == b"" and entry.digest is not None
        ledger = store.attach(Ledger())
        store.load(ledger, SEOUL)
        same = orjson.dumps(orjson.loads(value))  # the same event, spelt by another encoder
        ev = check_message(same, SEOUL.encode(), REVENUE)
        assert not isinstance(ev, Rejection)
        assert ledger.update(ev, same, (TOPIC[REVENUE], 0, 5, 0)) == DUPLICATE
        changed = event("r1", "receipt", 101, org=SEOUL, at="2026-11-20T10:00:00+09:00", fiscal_year=2026)
        ev2 = check_message(changed, SEOUL.encode(), REVENUE)
        assert not isinstance(ev2, Rejection)
        out = ledger.update(ev2, changed, (TOPIC[REVENUE], 0, 6, 0))
        assert isinstance(out, Rejection) and out.reason == "event_id_conflict"
    finally:
        store.close()


def test_the_owner_answers_a_retired_year_at_day_ends_and_refuses_inside_its_days() -> None:
    """``agents/history_web.py``'s policy: a retired position's figure at a day's end (or on a day
    it did not move) comes from its daily sums; an instant inside a day it moved, and the events
    behind its figures, are refused ``history_retired`` — on every worker alike, compacted or not."""
    from types import SimpleNamespace

    import pytest

    from agents.history import HistoryHook
    from agents.history_web import RETIRED, Refused, events, positions_as_of
    from tests.events import event

    values = [
        event("a", "receipt", 100, org=SEOUL, at="2026-11-20T10:00:00+09:00", fiscal_year=2026),
        event("b", "receipt", 7, org=SEOUL, at="2026-11-20T15:00:00+09:00", fiscal_year=2026),
        event("c", "receipt", 5, org=SEOUL, at="2027-03-02T10:00:00+09:00", fiscal_year=2027),
    ]
    c = close(2026, SEOUL, at=CLOSE_2026)
    recs: Recs = {
        REVENUE: [Rec(i, 0, SEOUL.encode(), v) for i, v in enumerate([*values[:2], c, values[2]])],
        EXPENDITURE: [Rec(0, 0, SEOUL.encode(), c)],
    }
    store = _run(
        partition.fold_partition, recs, [(REVENUE, 4), (EXPENDITURE, 1)], set(), Path(tempfile.mkdtemp())
    )
    try:
        for compacted in (False, True):
            if compacted:
                _retire(store, 1)
            ledger = store.attach(Ledger())
            store.load(ledger, SEOUL)
            hook = HistoryHook(online_years=1)
            asyncio.run(hook.on_assigned(_host(store), [SEOUL]))
            w: Any = SimpleNamespace(history=hook, ledger=ledger, store=store)
            nov20_end = (kst_day(_ms("2026-11-20T12:00:00+09:00")) + 1) * DAY_MS - KST_OFFSET_MS - 1
            (row,) = [p for p in positions_as_of(w, SEOUL, nov20_end) if p["fiscal_year"] == 2026]
            assert (row["cash"], row["events"]) == (107, 2)
            nov21_noon = _ms("2026-11-21T12:00:00+09:00")  # a day 2026 did not move: yesterday's closing
            (row,) = [p for p in positions_as_of(w, SEOUL, nov21_noon) if p["fiscal_year"] == 2026]
            assert row["cash"] == 107
            with pytest.raises(Refused) as exc:
                positions_as_of(w, SEOUL, _ms("2026-11-20T12:00:00+09:00"))
            assert exc.value.reason == RETIRED
            with pytest.raises(Refused):
                events(w, SEOUL, "general", 2026, None, 0, 10)
            if compacted:  # the setting raised after compacting: the rows are gone, so still refused
                hook2 = HistoryHook(online_years=2)
                asyncio.run(hook2.on_assigned(_host(store), [SEOUL]))
                raised: Any = SimpleNamespace(history=hook2, ledger=ledger, store=store)
                with pytest.raises(Refused):
                    positions_as_of(raised, SEOUL, _ms("2026-11-20T12:00:00+09:00"))
            # the online year is answered in full, inside its days too
            march = [
                p
                for p in positions_as_of(w, SEOUL, _ms("2027-03-02T10:00:00+09:00"))
                if p["fiscal_year"] == 2027
            ]
            assert [p["cash"] for p in march] == [5 + 107]  # the carried cash and the receipt
    finally:
        store.close()


def _ms(text: str) -> int:
    import datetime as dt

    from streams.contract import epoch_ms

    return epoch_ms(dt.datetime.fromisoformat(text))
