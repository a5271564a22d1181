"""The continuous reconciler's fold: page after page, with checkpoints written and restarted from
at random cuts, it ends exactly where one fold of everything (the one-shot run's) ends.

Pure: generated streams (tests.test_ledger's, with year closes mixed in) laid out on two topics
and a few partitions as a producer keyed by org_code would write them; no broker, no Redis.
"""

from __future__ import annotations

import itertools
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.names import EXPENDITURE, REVENUE, Topics
from reconcile import checkpoint
from reconcile.checkpoint import Discarded, Header
from reconcile.continuous import fold_page
from reconcile.incremental import Incremental
from reconcile.reference import Reference
from reconcile.run import _fold
from streams.contract import CONTRACT_VERSION
from streams.reader import Record
from streams.topics import partition_for
from tests.test_fiscal_year import close
from tests.test_ledger import JONGNO, SEOUL, Msg, streams

N = 3  # partitions
TOPICS = Topics("ns")
TOPIC = {REVENUE: TOPICS.revenue, EXPENDITURE: TOPICS.expenditure}


def _records(stream: list[Msg]) -> list[Record]:
    """The records in publish order: each on its side's topic (no side: revenue's), in the
    partition of its key's government (a bad key: partition 0), offsets counted per partition."""
    nxt: dict[tuple[str, int], int] = {}
    out = []
    for value, side, key in stream:
        topic = TOPIC[side or REVENUE]
        try:
            p = partition_for(key.decode(), N) if key else 0
        except (UnicodeDecodeError, ValueError):
            p = 0
        off = nxt.get((topic, p), 0)
        nxt[(topic, p)] = off + 1
        out.append(Record(topic, p, off, 0, key, value))
    return out


@st.composite
def histories(draw: st.DrawFn) -> list[Record]:
    """A generated stream with a few year closes (2025's, either side, either government) mixed in."""
    stream = list(draw(streams(max_size=60)))
    for i in range(draw(st.integers(0, 3))):
        org = draw(st.sampled_from((SEOUL, JONGNO)))
        side = draw(st.sampled_from((REVENUE, EXPENDITURE)))
        value = close(2025, org, f"close-{i}", "2026-01-21T00:00:00+09:00")
        stream.insert(draw(st.integers(0, len(stream))), (value, side, org.encode()))
    return _records(stream)


def _everything(ref: Reference) -> dict[str, Any]:
    """All a fold decides: positions, versions, counts, and the open orders and schedules."""
    return {
        "positions": ref.positions(),
        "versions": ref.versions(),
        "counts": ref.counts(),
        "ordered": ref.ordered(),
        "orders_open": ref.orders_open(),
        "schedules": ref.schedules(),
        "closed": dict(ref.closed),
    }


def _save(ref: Incremental, offsets: dict[tuple[str, int], int]) -> bytes:
    head = Header(checkpoint.FORMAT_VERSION, CONTRACT_VERSION, "ns", N, 0, ref.records)
    return checkpoint.encode(ref, offsets, head)


def _restart(ref: Incremental, offsets: dict[tuple[str, int], int]) -> tuple[Incremental, dict]:
    """Write a checkpoint and read it back, as a restarted process does."""
    cp = checkpoint.decode(_save(ref, offsets), "ns", N)
    assert cp.header.records == ref.records
    return cp.ref, cp.offsets


def _rest(records: list[Record], offsets: dict[tuple[str, int], int]) -> list[Record]:
    """What a reader seeking to ``offsets`` reads."""
    return [r for r in records if r.offset >= offsets.get((r.topic, r.partition), 0)]


def test_every_field_of_the_fold_is_in_the_checkpoint() -> None:
    """A field added to the reference must be written to the checkpoint (and the format's
    version raised): else a restart would silently lose it."""
    assert {f.name for f in fields(Incremental)} == checkpoint.WRITTEN


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.data())
def test_pages_and_restarts_equal_one_fold(records: list[Record], data: st.DataObject) -> None:
    whole = _fold(records, 8192)  # the one-shot run's fold: every record, sorted by partition
    want = _everything(whole)
    # pages: cuts in the publish order (partitions and topics interleaved, as a reader returns them)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=5), label="cuts"))
    ref, offsets = Incremental(), dict[tuple[str, int], int]()
    saved = []
    for a, b in itertools.pairwise([0, *cuts, len(records)]):
        assert fold_page(ref, offsets, records[a:b]) == b - a
        assert ref.log == [] and ref.outcomes == []  # compacted: nothing grows with the records read
        saved.append(_save(ref, offsets))
        ref, offsets = _restart(ref, offsets)
    assert _everything(ref) == want
    assert ref.records == len(records)
    # a restart from each checkpoint, reading what a reader at its offsets reads, ends the same
    for i, data_ in enumerate(saved):
        cp = checkpoint.decode(data_, "ns", N)
        fold_page(cp.ref, cp.offsets, _rest(records, cp.offsets))
        assert _everything(cp.ref) == want, f"restart from checkpoint {i}"
    # a page read twice (a re-delivery after a failure) is folded once
    ref2: Incremental = Incremental()
    offs3: dict[tuple[str, int], int] = {}
    fold_page(ref2, offs3, records)
    assert fold_page(ref2, offs3, records) == 0 and _everything(ref2) == want


def test_the_checkpoint_keeps_the_time_zone_and_shares_records() -> None:
    """A duplicate is judged on the whole event: the checkpoint must give back the same event
    (time zone of occurred_at included), and one record object wherever the fold keeps it."""
    from tests.test_ledger import body

    c = body("commitment", "c1", 500, org=SEOUL, account="general", fy=2026, at="2026-01-05T10:00:00+09:00")
    c["commitment_id"] = "k"
    p = body("payment", "p1", 200, org=SEOUL, account="general", fy=2026, at="2026-01-06T10:00:00+09:00")
    p["commitment_id"] = "k"
    recs = _records([(orjson.dumps(d), EXPENDITURE, SEOUL.encode()) for d in (c, p)])
    ref, offsets = Incremental(), dict[tuple[str, int], int]()
    fold_page(ref, offsets, recs)
    back, _ = _restart(ref, offsets)
    assert back.opened_by[(SEOUL, "k")] is back.by_id[(SEOUL, EXPENDITURE, "c1")]
    assert back.consumers[(SEOUL, "k")][0] is back.by_id[(SEOUL, EXPENDITURE, "p1")]
    offset = back.by_id[(SEOUL, EXPENDITURE, "c1")].event.occurred_at.utcoffset()
    assert offset is not None and offset.total_seconds() == 9 * 3600
    # the same payment again is a duplicate; in UTC it is the same instant and the same content
    again = dict(p, occurred_at="2026-01-06T01:00:00+00:00")
    assert back.feed(orjson.dumps(again), EXPENDITURE, SEOUL.encode()) == "duplicate"


def test_a_checkpoint_of_another_version_or_stack_is_discarded(tmp_path: Path) -> None:
    ref = Incremental()
    for head, why in (
        (Header(checkpoint.FORMAT_VERSION + 1, CONTRACT_VERSION, "ns", N, 0, 0), "format"),
        (Header(checkpoint.FORMAT_VERSION, CONTRACT_VERSION - 1, "ns", N, 0, 0), "contract"),
        (Header(checkpoint.FORMAT_VERSION, CONTRACT_VERSION, "other", N, 0, 0), "namespace"),
        (Header(checkpoint.FORMAT_VERSION, CONTRACT_VERSION, "ns", N + 1, 0, 0), "partitions"),
    ):
        with pytest.raises(Discarded, match=why):
            checkpoint.decode(checkpoint.encode(ref, {}, head), "ns", N)
    with pytest.raises(Discarded, match="not a checkpoint"):
        checkpoint.decode(b"garbage", "ns", N)
    good = checkpoint.encode(
        ref, {("t", 0): 5}, Header(checkpoint.FORMAT_VERSION, CONTRACT_VERSION, "ns", N, 0, 0)
    )
    with pytest.raises(Discarded, match="unreadable body"):
        checkpoint.decode(good[:-3], "ns", N)


def test_the_checkpoint_file_is_replaced_whole(tmp_path: Path) -> None:
    assert checkpoint.read(tmp_path) is None
    checkpoint.write(tmp_path, b"one")
    checkpoint.write(tmp_path, b"two")
    assert checkpoint.read(tmp_path) == b"two"
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.FILE_NAME]  # no temporary left


def test_a_restart_at_every_point_of_a_year_end() -> None:
    """The generated streams have no carry-forward and no lapse (a 2025 commitment dated 2026 is
    refused): a year end written by hand, restarted from a checkpoint before every record."""
    from tests.events import event
    from tests.test_fiscal_year import CLOSE_AT, DEC, JAN

    def ev(side: str, eid: str, kind: str, amount: int, **kw: Any) -> Msg:
        return event(eid, kind, amount, org=SEOUL, **{"at": DEC, **kw}), side, SEOUL.encode()

    x, r = EXPENDITURE, REVENUE
    stream: list[Msg] = [
        ev(r, "r", "receipt", 5_000),
        ev(x, "c", "commitment", 800, commitment_id="k"),
        ev(x, "f", "commitment_carry_forward", 800, commitment_id="k", basis="explicit"),
        ev(x, "c2", "commitment", 600, commitment_id="k2"),
        ev(x, "o", "payment_order", 200, commitment_id="k2", pay_date="2026-12-28"),
        ev(
            r,
            "e",
            "expected_receipt",
            1_000,
            schedule_id="s",
            expected_date="2026-12-30",
            category="local_tax",
        ),
        (close(2026, SEOUL, "close-x", CLOSE_AT), x, SEOUL.encode()),  # k2 lapses, its order with it
        (close(2026, SEOUL, "close-r", CLOSE_AT), r, SEOUL.encode()),
        ev(x, "p2", "payment", 300, at=JAN, fiscal_year=2027, commitment_id="k"),
        ev(x, "p2", "payment", 300, at=JAN, fiscal_year=2027, commitment_id="k"),  # duplicate
        ev(x, "u", "commitment", 800, commitment_id="k", reverses="c"),  # carried: not reversible
        ev(x, "u2", "commitment", 600, commitment_id="k2", reverses="c2"),  # lapsed: not reversible
        ev(x, "p3", "payment", 100, at=JAN, fiscal_year=2026, commitment_id="k2"),
        ev(r, "r2", "receipt", 400, at=JAN, fiscal_year=2026),  # the year is closed
    ]
    records = _records(stream)
    whole = _fold(records, 8192)
    want = _everything(whole)
    assert whole.lapsed and whole.carried_to and whole.closed and whole.orders  # what this covers
    assert want["counts"]["duplicate"] == 1 and want["counts"]["rejected"]
    for i in range(len(records) + 1):
        ref, offsets = Incremental(), dict[tuple[str, int], int]()
        fold_page(ref, offsets, records[:i])
        back, offs = _restart(ref, offsets)
        fold_page(back, offs, _rest(records, offs))
        assert _everything(back) == want, f"restarted after {i} records"
