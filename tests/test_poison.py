"""One bad record must never stop the ledger (no broker needed; the worker's fold path is real).

- a record whose fold raises is isolated as ``internal_error`` and the rest of its batch is
  applied exactly as if it were absent (the worker's ``_fold_contained``);
- a fuzz test drives the real decode-and-fold path (C kernel and pure Python) with arbitrary
  bytes and arbitrary JSON values: nothing escapes, every record ends in exactly one place, and
  the positions equal the independent reference fold;
- the same input folded under many interleavings of the two topics and many batchings gives one
  state (event ids are scoped per side; the bound is judged per side);
- dead letters always fit the broker, and JSON bodies are exact at any integer size.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.ledger import LedgerWorker
from cashpos.settings import Settings
from reconcile.reference import Reference
from serving.wire import dumps
from state import partition
from state.ledger import Ledger
from state.store import Store
from streams.contract import MAX_SIDE_TOTAL, REASONS, Rejection
from streams.deadletter import KEEP_VALUE_BYTES, MAX_LETTER_BYTES, DeadLetter
from streams.lean_records import RawRecord
from tests.events import event
from tests.test_partition_fold import Rec

SEOUL, JONGNO = "6110000", "3000000"
REV, EXP = "cashpos.events.revenue", "cashpos.events.expenditure"
FOLDS = [partition.fold_partition_py] + (
    [partition.fold_partition_native] if partition.fold_hot is not None else []
)


def _positions(ledger: Ledger) -> dict[tuple[str, str, int], tuple[int, int]]:
    return {k: (p.cash, p.committed) for k, p in ledger.positions.items() if p.version}


# -- containment in the worker ------------------------------------------------------------------


def test_a_record_whose_fold_raises_is_isolated_and_the_batch_applied_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = LedgerWorker(Settings(state_dir=tmp_path / "state", partitions=1))
    worker.org_partition = {SEOUL: 0}
    worker.owned_orgs = [SEOUL]
    tp_rev, tp_exp = TopicPartition(REV, 0), TopicPartition(EXP, 0)
    key = SEOUL.encode()
    rev: list[RawRecord] = [Rec(i, 0, key, event(f"r{i}", "receipt", 1_000 + i, org=SEOUL)) for i in range(6)]
    exp: list[RawRecord] = [
        Rec(0, 0, key, event("c1", "commitment", 500, org=SEOUL, commitment_id="C")),
        Rec(1, 0, key, event("boom", "payment", 300, org=SEOUL, commitment_id="C")),
        Rec(2, 0, key, event("p2", "payment", 200, org=SEOUL, commitment_id="C")),
    ]
    original = Ledger._original

    def defect(self: Ledger, ev: Any) -> Any:  # a bug that strikes after a partial change
        out = original(self, ev)
        if ev.event_id == "boom":
            self.positions[(SEOUL, "general", 2026)].cash += 10**9
            raise ZeroDivisionError("a defect")
        return out

    monkeypatch.setattr(Ledger, "_original", defect)
    try:
        applied, dead = worker._fold_contained([(tp_rev, rev), (tp_exp, exp)])
    finally:
        worker.store.close()
    assert [(rej.reason, tp.topic, r.offset) for rej, tp, r in dead] == [("internal_error", EXP, 1)]
    assert "ZeroDivisionError: a defect" in dead[0][0].detail
    assert applied == {REV: 6, EXP: 2}
    ref = Reference()
    for r in rev:
        ref.feed(r.value or b"", "revenue", key)  # as the fold takes a record's value
    for r in (exp[0], exp[2]):
        ref.feed(r.value or b"", "expenditure", key)
    assert _positions(worker.ledger) == ref.positions()
    assert "internal_error" in REASONS


# -- fuzz: arbitrary input through the real decode-and-fold path -------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 10**15, 10**15 + 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64]),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "receipt",
            "payment",
            "commitment",
            "commitment_cancel",
            "transfer",
            "local_tax",
            "general",
            "custody",
            SEOUL,
            JONGNO,
            "C1",
            "e1",
            "e2",
        ]
    ),
)
_dates = st.sampled_from(
    [
        "2026-03-02T10:00:00+09:00",
        "0001-01-01T00:00:00+10:00",
        "9999-12-31T23:00:00-05:00",
        "9999-12-31T23:59:59Z",
        "2026-03-02T10:00:00+0900",
        "2026-03-02T01:00:00Z",
        "2026-01-15T10:00:00+09:00",
        "2026-03-02T10:00:00-14:00",
        "2026-03-02T10:00:00+23:59",
        "2026-03-02",
        "yesterday",
    ]
)
_FIELDS = [
    "event_id",
    "org_code",
    "account",
    "fiscal_year",
    "kind",
    "amount",
    "occurred_at",
    "source",
    "category",
    "commitment_id",
    "due_date",
    "to_account",
    "reverses",
    "extra",
]


@st.composite
def _message(draw: Any) -> bytes | None:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.one_of(st.none(), st.binary(max_size=64)))
    if shape == 1:  # any JSON value at all
        return (
            json.dumps(
                draw(
                    st.recursive(
                        _scalars,
                        lambda c: (
                            st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3)
                        ),
                        max_leaves=8,
                    )
                )
            ).encode()
            if draw(st.booleans())
            else b"[" * draw(st.integers(1, 3000))
        )
    # a near-valid event with arbitrary fields swapped in, dropped, or named twice
    d: dict[str, Any] = orjson.loads(
        event(
            draw(st.sampled_from(["e1", "e2", "e3", "e4"])),
            draw(st.sampled_from(["receipt", "payment", "commitment", "commitment_cancel", "transfer"])),
            draw(st.sampled_from([1, 10**15, 7_000])),
            org=draw(st.sampled_from([SEOUL, JONGNO])),
        )
    )
    if d["kind"] in ("commitment", "commitment_cancel") or (d["kind"] == "payment" and draw(st.booleans())):
        d["commitment_id"] = draw(st.sampled_from(["C1", "C2"]))
    if d["kind"] == "transfer":
        d["to_account"] = "custody"
    if draw(st.booleans()):
        d["occurred_at"] = draw(_dates)
    for _ in range(draw(st.integers(0, 2))):
        d[draw(st.sampled_from(_FIELDS))] = draw(_scalars)
    if draw(st.integers(0, 5)) == 0:
        d.pop(draw(st.sampled_from(_FIELDS)), None)
    raw = json.dumps(d, ensure_ascii=draw(st.booleans())).encode()
    if draw(st.integers(0, 6)) == 0:  # a field named twice
        raw = (
            raw[:-1]
            + b',"amount":'
            + str(draw(_scalars.filter(lambda v: isinstance(v, int)))).encode()
            + b"}"
        )
    return raw


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(_message(), st.sampled_from([SEOUL.encode(), JONGNO.encode(), None, b""])),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(FOLDS),
)
def test_fuzz_the_fold_never_raises_and_every_record_lands_once(
    msgs: list[tuple[bytes | None, bytes | None]], fold: partition.Fold
) -> None:
    store = Store(Path(tempfile.mkdtemp(prefix="cashpos-fuzz-")))
    ledger = store.attach(Ledger())
    recs: list[RawRecord] = [Rec(i, 0, k, v) for i, (v, k) in enumerate(msgs)]
    try:
        applied, dead = fold(ledger, recs, EXP, 0, "expenditure", {SEOUL: 0, JONGNO: 0}, 8192)
    finally:
        store.close()
    ch = ledger.changes
    assert applied + ch.duplicates + len(dead) == len(recs)  # exactly one place each
    assert len({r.offset for _, r in dead}) == len(dead)
    assert all(rej.reason in REASONS for rej, _ in dead)
    ref = Reference()
    outcomes = [ref.feed_record(r.value or b"", "expenditure", r.key) for r in recs]
    assert outcomes.count("applied") == applied
    assert {r.offset: rej.reason for rej, r in dead} == {
        i: o for i, o in enumerate(outcomes) if o not in ("applied", "duplicate")
    }
    assert _positions(ledger) == ref.positions()
    for p in ledger.positions.values():  # within the documented range: 64 bits everywhere
        assert abs(p.cash) <= 2 * MAX_SIDE_TOTAL and 0 <= p.committed <= MAX_SIDE_TOTAL


# -- determinism: interleavings and batchings ---------------------------------------------------


def _two_topic_input(seed: int) -> tuple[list[RawRecord], list[RawRecord]]:
    """Receipts and expenditure events sharing ids (independent source systems), reversals on
    both sides, commitments, and a position driven to its bound from both sides."""
    rnd = random.Random(seed)
    key = SEOUL.encode()
    rev: list[RawRecord] = []
    exp: list[RawRecord] = []
    for i in range(60):
        eid = f"id{rnd.randrange(40)}"  # the same ids on both topics, and re-sent
        rev.append(Rec(len(rev), 0, key, event(eid, "receipt", rnd.choice([10**15, 5_000, 1]), org=SEOUL)))
        kind = rnd.choice(["payment", "payment", "commitment", "cancel", "pay_c", "reverse"])
        if kind == "payment":
            raw = event(eid, "payment", rnd.choice([10**15, 3_000]), org=SEOUL)
        elif kind == "commitment":
            raw = event(f"c{i}", "commitment", 9_000, org=SEOUL, commitment_id=f"C{i % 5}")
        elif kind == "cancel":
            raw = event(f"x{i}", "commitment_cancel", 2_000, org=SEOUL, commitment_id=f"C{rnd.randrange(5)}")
        elif kind == "pay_c":
            raw = event(f"y{i}", "payment", 4_000, org=SEOUL, commitment_id=f"C{rnd.randrange(5)}")
        else:
            raw = event(f"z{i}", "payment", 3_000, org=SEOUL, reverses=f"id{rnd.randrange(40)}")
        exp.append(Rec(len(exp), 0, key, raw))
        if rnd.random() < 0.2:
            rev.append(
                Rec(
                    len(rev),
                    0,
                    key,
                    event(f"rv{i}", "receipt", 5_000, org=SEOUL, reverses=f"id{rnd.randrange(40)}"),
                )
            )
    return rev, exp


def _fold_interleaved(
    rev: list[RawRecord],
    exp: list[RawRecord],
    rnd: random.Random,
    fold: partition.Fold,
    start_near_bound: bool,
) -> tuple[Any, ...]:
    store = Store(Path(tempfile.mkdtemp(prefix="cashpos-order-")))
    ledger = store.attach(Ledger())
    if start_near_bound:  # both sides' shares a few events from the bound
        ledger.positions[(SEOUL, "general", 2026)] = partition.Position(
            cash=0, received=MAX_SIDE_TOTAL - 3 * 10**15, version=1
        )
    i = j = 0
    dead: dict[tuple[str, int], str] = {}
    try:
        while i < len(rev) or j < len(exp):
            take_rev = j >= len(exp) or (i < len(rev) and rnd.random() < 0.5)
            n = rnd.randint(1, 9)
            topic, side, src, at = (REV, "revenue", rev, i) if take_rev else (EXP, "expenditure", exp, j)
            chunk = src[at : at + n]
            _, d = fold(ledger, chunk, topic, 0, side, {SEOUL: 0}, 8192)
            dead.update({(topic, r.offset): rej.reason for rej, r in d})
            if take_rev:
                i += len(chunk)
            else:
                j += len(chunk)
            ch = ledger.take_changes()
            store.commit(ch, ledger.positions, {})
            ledger.journal.clear()
            ledger.commitments.clear()
        journal = sorted((k, v) for k, v in store._scan(b"j\0"))
        commitments = sorted((k, v) for k, v in store._scan(b"c\0"))
    finally:
        store.close()
    pos = {k: (p.cash, p.committed, p.version, p.received) for k, p in ledger.positions.items()}
    return pos, dead, hashlib.sha256(repr((journal, commitments)).encode()).hexdigest()


@pytest.mark.parametrize("near", [False, True], ids=["plain", "at_the_bound"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_input_gives_one_state_whatever_the_interleaving_and_batching(seed: int, near: bool) -> None:
    rev, exp = _two_topic_input(seed)
    results = [
        _fold_interleaved(rev, exp, random.Random(k), fold, near)[:2] for k in range(12) for fold in FOLDS
    ]
    pos, dead = results[0]
    assert all(r == results[0] for r in results)
    assert any(reason == "position_out_of_range" for reason in dead.values()) == near
    if not near:  # shared ids on both topics were applied on both sides
        ref = Reference()
        for r in rev:
            ref.feed_record(r.value or b"", "revenue", r.key)  # as the fold takes a record's value
        for r in exp:
            ref.feed_record(r.value or b"", "expenditure", r.key)
        assert {k: v[:2] for k, v in pos.items()} == ref.positions()


def test_journal_bytes_are_the_same_whatever_the_interleaving() -> None:
    rev, exp = _two_topic_input(7)
    hashes = {_fold_interleaved(rev, exp, random.Random(k), FOLDS[-1], False)[2] for k in range(6)}
    assert len(hashes) == 1


# -- the wire: dead letters fit, JSON is exact ------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, KEEP_VALUE_BYTES, KEEP_VALUE_BYTES + 1, 900_000, 1_048_576, 8_000_000]
)
def test_a_dead_letter_always_fits_the_broker(size: int) -> None:
    value = bytes(random.Random(size).getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096 + 1)
    value = value[:size]
    rec = Rec(7, 1, b"k" * 2_000_000, value)
    letter = DeadLetter.from_record(Rejection("oversized", "x" * 100_000), REV, 3, rec, "w1")
    raw = letter.encode()
    assert len(raw) < MAX_LETTER_BYTES
    back = DeadLetter.decode(raw)
    assert back.value_length == size and back.value_sha256 == hashlib.sha256(value).hexdigest()
    assert back.value_truncated == (size > KEEP_VALUE_BYTES)
    assert back.value() == value[:KEEP_VALUE_BYTES]
    assert back.key_length == 2_000_000
    if back.value_truncated:
        assert f"of {size} bytes" in back.detail


@pytest.mark.parametrize(
    "n",
    [
        0,
        2**53,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63),
        -(2**63) - 1,
        243 * 60 * 2 * MAX_SIDE_TOTAL,
        -(10**40),
    ],
)
def test_json_bodies_are_exact_at_every_integer_width(n: int) -> None:
    body = {"totals": {"cash": n, "n": [1, n, {"x": n}]}, "ok": True, "f": None}
    raw = dumps(body)
    assert json.loads(raw) == body  # Python's json reads integers exactly
    assert msgspec.json.decode(raw) == body


@pytest.mark.parametrize(
    "cash,committed,received",
    [
        (2 * MAX_SIDE_TOTAL, MAX_SIDE_TOTAL, MAX_SIDE_TOTAL),  # both sides at +bound, committed full
        (-2 * MAX_SIDE_TOTAL, MAX_SIDE_TOTAL, -MAX_SIDE_TOTAL),  # available = -3e18
        (0, 0, MAX_SIDE_TOTAL),
        (2**31, 2**32, 2**32 - 1),
    ],
)
def test_the_extreme_positions_round_trip_through_the_state_and_the_serving_codec(
    cash: int, committed: int, received: int
) -> None:
    """Within the bound every figure fits the state's msgpack and the Redis field's orjson."""
    from state.ledger import Changes, Position
    from state.projection import decode_position, encode_position

    p = Position(cash=cash, committed=committed, version=2**40, last_event_ms=2**45, received=received)
    assert abs(p.available) <= 3 * MAX_SIDE_TOTAL < 2**63
    store = Store(Path(tempfile.mkdtemp(prefix="cashpos-extreme-")))
    try:
        pk = (SEOUL, "general", 2026)
        store.commit(Changes(index={pk: [(0, "r:x", 1, 0)]}), {pk: p}, {})
        assert store.positions(SEOUL) == {pk: p}
    finally:
        store.close()
    version, body = decode_position(encode_position(p))
    assert (version, body["cash"], body["committed"]) == (2**40, cash, committed)
