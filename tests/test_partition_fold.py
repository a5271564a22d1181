"""The C kernel path of ``fold_partition`` against the pure Python path (state/partition.py).

Both run over the same generated streams, cut into the same batches, each with a real RocksDB
store as the worker has it; after every batch they must agree on everything the worker writes
or sends: the changes (journal entries byte for byte, index rows, commitments, counters), the
positions, the number applied and the dead letters with their reasons and offsets.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state import partition
from state.ledger import Journal, Ledger
from state.store import Store
from streams.contract import MAX_SIDE_TOTAL, epoch_ms, hot_rules
from streams.lean_records import LeanRecord as Rec
from streams.lean_records import RawRecord
from tests.events import event

SEOUL, BUSAN = "6110000", "6260000"
OTHER_ACCOUNT = "public_dev"  # in Seoul's chart of accounts

pytestmark = pytest.mark.skipif(partition.fold_hot is None, reason="see test_the_kernel_is_built")


def test_the_kernel_is_built() -> None:
    """`pip install` compiles state/_kernel.c; without it the worker runs the slower pure path."""
    assert partition.fold_hot is not None, "state._kernel is not built: is a C compiler installed?"


def _variant(draw: Any, i: int, ids: list[str], values: list[bytes]) -> bytes | None:
    """One message: mostly the kernel's common case, then everything that must leave it."""
    eid = f"e{i}"
    org = draw(st.sampled_from([SEOUL, SEOUL, BUSAN]))
    # msgpack's integer widths change at these (the kernel writes the journal entry itself)
    amount = draw(
        st.sampled_from(
            [
                1,
                31,
                32,
                33,
                127,
                128,
                255,
                256,
                65_535,
                65_536,
                2**32 - 1,
                2**32,
                10**15,
                draw(st.integers(1, 10**12)),
            ]
        )
    )
    at = draw(
        st.sampled_from(
            [
                "2026-11-20T10:00:00+09:00",
                "2026-11-20T10:00:00.5+09:00",
                "2026-11-20T23:59:59.999+09:00",
                "2026-03-01T00:00:00.5+09:00",
                "2026-11-20T01:00:00Z",  # another offset: the general path
                "2026-01-10T09:00:00+09:00",  # on or before 20 January: prior-year processing
            ]
        )
    )
    fy = 2025 if at.startswith("2026-01") and draw(st.booleans()) else 2026
    kind = draw(
        st.sampled_from(
            ["receipt"] * 6
            + ["payment"] * 3
            + [
                "commitment",
                "commitment_cancel",
                "transfer",
                "dup",
                "conflict",
                "reversal",
                "junk",
                "wrong_key",
                "payment_on_commitment",
                "long_id",
                "other_account",
                "none",
                "duplicate_key",
                "offset_without_colon",
                "escaped_key",
                "expected_receipt",
                "receipt_on_schedule",
                "payment_order",
                "payment_on_order",
            ]
        )
    )
    common: dict[str, Any] = {"org": org, "at": at, "fiscal_year": fy}
    if kind == "receipt":
        return event(eid, "receipt", amount, **common)
    if kind == "payment":
        return event(eid, "payment", amount, **common)
    if kind == "other_account":
        return event(eid, "receipt", amount, account=OTHER_ACCOUNT, **{**common, "org": SEOUL})
    if kind == "long_id":
        return event("x" * 40 + eid, "receipt", amount, **common)
    if kind == "commitment":
        return event(eid, "commitment", amount, commitment_id=f"c{i % 7}", **common)
    if kind in ("commitment_cancel", "payment_on_commitment"):
        k = "payment" if kind == "payment_on_commitment" else kind
        return event(eid, k, amount, commitment_id=f"c{draw(st.integers(0, 6))}", **common)
    if kind == "transfer":
        return event(eid, "transfer", amount, to_account=OTHER_ACCOUNT, **{**common, "org": SEOUL})
    # The known flows (contract version 3): never the kernel's; a receipt naming its schedule
    # differs from the common receipt by one field only.
    if kind == "expected_receipt":
        return event(
            eid,
            kind,
            amount,
            category="local_tax",
            schedule_id=f"s{i % 3}",
            expected_date="2026-12-10",
            certainty=draw(st.sampled_from(["confirmed", "estimated"])),
            **common,
        )
    if kind == "receipt_on_schedule":
        return event(eid, "receipt", amount, schedule_id=f"s{draw(st.integers(0, 2))}", **common)
    if kind == "payment_order":
        c = f"c{draw(st.integers(0, 6))}"
        return event(eid, kind, amount, commitment_id=c, pay_date="2026-12-01", **common)
    if kind == "payment_on_order" and ids:
        c = f"c{draw(st.integers(0, 6))}"
        return event(eid, "payment", amount, commitment_id=c, order_id=draw(st.sampled_from(ids)), **common)
    if kind in ("dup", "conflict", "reversal") and ids:
        old = draw(st.sampled_from(ids))
        if kind == "dup":  # the same message again
            return draw(st.sampled_from(values))
        if kind == "conflict":
            return event(old, "receipt", 2_000, org=SEOUL)
        return event(eid, "receipt", 1_000, org=SEOUL, reverses=old)
    if kind == "junk":
        return draw(
            st.sampled_from(
                [
                    b"",
                    b"{",
                    b'{"event_id": 1}',
                    b"\xff\xfe",
                    b"[]",
                    event(eid, "receipt", 0, **common),
                    event(eid, "receipt", amount, **common).replace(b'"receipt"', b'"gift"'),
                ]
            )
        )
    if kind == "none":
        return None
    if kind == "duplicate_key":  # the decoder keeps the last; the contract refuses both
        return event(eid, "receipt", amount, **common).replace(b'"amount":', b'"amount":1,"amount":', 1)
    if kind == "offset_without_colon":
        return event(eid, "payment", amount, **{**common, "at": "2026-11-20T10:00:00+0900"})
    if kind == "escaped_key":  # a plain key spelt with an escape: the Python path decides
        return event(eid, "receipt", amount, **common).replace(b'"source"', b'"sourc\\u0065"')
    return event(eid, "receipt", amount, **common)  # "wrong_key" and ids not yet there


@st.composite
def streams(draw: Any) -> tuple[list[RawRecord], list[int], dict[str, int], int | None]:
    n = draw(st.integers(1, 60))
    ids: list[str] = []
    values: list[bytes] = []
    recs: list[RawRecord] = []
    for i in range(n):
        value = _variant(draw, i, ids, values)
        key: bytes | None = None
        if value and value.startswith(b"{") and b'"org_code"' in value:
            org = orjson.loads(value).get("org_code", "") if value.endswith(b"}") else ""
            key = draw(st.sampled_from([org.encode(), None, b"9999999"]))
            if b'"receipt"' in value and b'"reverses"' not in value:
                ids.append(orjson.loads(value)["event_id"])
                values.append(value)
        # the record timestamp lands in the journal's source (the known-at axis): any int64 Kafka
        # may carry, -1 (none) included
        ts = draw(
            st.one_of(st.integers(1_600_000_000_000, 1_900_000_000_000), st.sampled_from([-1, 0, 2**63 - 1]))
        )
        recs.append(Rec(1_000 + i, ts, key, value))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    owner = draw(st.sampled_from([{}, {BUSAN: 1}]))  # Busan's events are on the wrong partition
    # Seoul's general account may start within a few events of the bound, either side
    near = draw(st.sampled_from([None, None, 0, 1, 3]))
    return recs, cuts, owner, near


def _journal(v: Journal | bytes) -> bytes:
    return v if v.__class__ is bytes else msgspec.msgpack.encode(v)


def _run(
    fold: partition.Fold,
    recs: list[RawRecord],
    cuts: list[int],
    owner: dict[str, int],
    side: str | None,
    near: int | None = None,
) -> list[Any]:
    store = Store(Path(tempfile.mkdtemp(prefix="cashpos-kernel-")))
    ledger = store.attach(Ledger())
    if near is not None:  # revenue share `near` 10^15s below +bound, expenditure's above -bound
        top = MAX_SIDE_TOTAL - near * 10**15
        ledger.positions[(SEOUL, "general", 2026)] = partition.Position(cash=0, received=top)
    seen: list[Any] = []
    try:
        for lo, hi in zip([0, *cuts], [*cuts, len(recs)]):
            if lo >= hi:
                continue
            applied, dead = fold(ledger, recs[lo:hi], "cashpos.events.revenue", 0, side, owner, 8192)
            ch = ledger.take_changes()
            seen.append(
                (
                    applied,
                    [(rej.reason, rej.detail, r.offset) for rej, r in dead],
                    {k: _journal(v) for k, v in ch.journal.items()},
                    ch.index,
                    ch.commitments,
                    (ch.applied, ch.duplicates, ch.rejected, ch.last_event_ms),
                    {
                        k: (p.cash, p.committed, p.version, p.last_event_ms, p.received)
                        for k, p in ledger.positions.items()
                    },
                )
            )
            store.commit(ch, ledger.positions, {("cashpos.events.revenue", 0): recs[hi - 1].offset + 1})
            ledger.journal.clear()
            ledger.commitments.clear()
    finally:
        store.close()
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([None, "revenue", "expenditure"]))
def test_the_kernel_reaches_the_same_state_as_the_pure_path(
    stream: tuple[list[RawRecord], list[int], dict[str, int], int | None], side: str | None
) -> None:
    recs, cuts, owner, near = stream
    native = _run(partition.fold_partition_native, recs, cuts, owner, side, near)
    pure = _run(partition.fold_partition_py, recs, cuts, owner, side, near)
    assert native == pure


def test_the_kernel_takes_the_common_events_and_stops_at_the_rest() -> None:
    """The differential test above would pass if the kernel took nothing: this one pins down
    that it does the work, and where it hands over."""
    assert partition.fold_hot is not None
    key = SEOUL.encode()
    recs = [
        Rec(0, 0, key, event("a", "receipt", 5, org=SEOUL)),
        Rec(1, 0, key, event("b", "payment", 2, org=SEOUL)),
        Rec(2, 0, key, event("c", "commitment", 1, org=SEOUL, commitment_id="c")),
        Rec(3, 0, key, event("d", "receipt", 7, org=SEOUL)),
    ]
    ledger = Ledger()
    decode, charts, org_keys, kst = hot_rules()
    ch = ledger.changes
    ctx: tuple[Any, ...] = (
        decode,
        charts,
        org_keys,
        kst,
        {},
        0,
        "revenue",
        8192,
        "t",
        ledger.positions,
        ledger.journal,
        ch.journal,
        ch.index,
        None,
        b"j\0",
        partition.Position,
        MAX_SIDE_TOTAL,
        {},
    )
    stop, applied, last_ms, at_stop = partition.fold_hot(recs, 0, ctx, 0)
    assert (stop, applied) == (1, 1)  # a payment on the revenue topic is for the Python path
    handed_over = recs[1].value
    assert handed_over is not None and at_stop == decode(handed_over)  # handed over decoded
    ctx = ctx[:6] + (None,) + ctx[7:]
    assert partition.fold_hot(recs, 1, ctx, last_ms)[:2] == (2, 1)
    assert partition.fold_hot(recs, 3, ctx, last_ms)[:2] == (4, 1)
    pos = ledger.positions[(SEOUL, "general", 2026)]
    assert (pos.cash, pos.version) == (5 - 2 + 7, 3)
    stored = ledger.journal[(SEOUL, "r:a")]
    assert isinstance(stored, bytes)  # the kernel keeps the encoded entry
    entry = msgspec.msgpack.decode(stored, type=Journal)
    assert entry.raw == recs[0].value and entry.source == ("t", 0, 0, recs[0].timestamp)
    assert entry.occurred_ms == epoch_ms(decode(recs[0].value).occurred_at)


def test_the_journal_puts_in_c_equal_the_python_loop() -> None:
    """Store.commit's journal puts: keys and values exactly as the Python loop makes them."""
    from state import native
    from state import store as store_module

    assert native.built is not None
    enc = msgspec.msgpack.Encoder().encode
    journal: dict[tuple[str, str], Journal | bytes] = {
        (SEOUL, "a"): b"\x91\x01",
        (BUSAN, "ü-" + "x" * 60): Journal(
            b"{}", "commitment", "general", 2026, 5, 1, [("general", 2026, 0, 5)], "c1"
        ),
        (SEOUL, ""): b"",
    }
    c_puts: list[tuple[bytes, bytes]] = []
    native.built.put_journal(lambda k, v: c_puts.append((k, v)), journal, b"j\0", enc)
    py_puts = [
        (store_module._journal_key(o, e), v if v.__class__ is bytes else enc(v))
        for (o, e), v in journal.items()
    ]
    assert c_puts == py_puts
