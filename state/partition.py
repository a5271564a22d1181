"""One partition's records of a batch into the ledger: decode, contract checks, the fold.

``fold_partition`` has two implementations of the same function:

- ``fold_partition_py``: every record through ``streams.contract.check_message`` and the
  partition check, then one ``Ledger.fold`` over the good ones. Pure Python; the reference.
- ``fold_partition_native``: runs of the common event (a new receipt, or a payment not against a
  commitment, with every hot-path contract test passing) go through the C kernel
  (``state/_kernel.c``), one call per run; the kernel stops at any other record, which this
  module then decides exactly as the pure path does, one at a time. The kernel holds no rule
  of its own: it only accepts what both Python paths accept without question.

Both return the number of events applied and the dead letters in offset order, and leave the
ledger in the same state (positions, journal bytes, index rows, counters):
tests/test_partition_fold.py compares them on generated streams. The native one is used when
the kernel is there (``state.native``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from state import native
from state.ledger import APPLIED, Ledger, Position, Source
from streams.contract import (
    MAX_SIDE_TOTAL,
    Event,
    Record,
    Rejection,
    check_decoded,
    check_message,
    hot_rules,
)
from streams.lean_records import RawRecord

fold_hot = native.built.fold_hot if native.built is not None else None
raw_plain = native.built.raw_plain if native.built is not None else None

Dead = list[tuple[Rejection, RawRecord]]
Fold = Callable[[Ledger, list[RawRecord], str, int, "str | None", dict[str, int], int], tuple[int, Dead]]


def _classify(
    r: RawRecord,
    topic: str,
    partition: int,
    side: str | None,
    org_partition: dict[str, int],
    max_bytes: int,
    decoded: Event | None = None,
) -> tuple[Record, bytes, Source] | Rejection:
    """The stateless verdict on one record: the event to fold, or why it is dead. ``decoded``:
    its value already decoded by the strict decoder (the kernel's, when it stopped there)."""
    value = r.value or b""  # None: an empty message (the contract refuses it)
    if decoded is None:
        res = check_message(value, r.key, side, max_bytes)
    else:  # the kernel stopped here: its test of the raw bytes spares the slower Python one
        res = check_decoded(
            decoded, value, r.key, side, raw_checked=raw_plain is not None and raw_plain(value)
        )
    if type(res) is Rejection:
        return res
    if r.key is None:  # the contract's key is org_code; only the API's check goes without one
        return Rejection("missing_key", "the record has no key; the contract requires key = org_code")
    ev = res
    owner = org_partition.get(ev.org_code, partition)
    if owner != partition:
        return Rejection("wrong_partition", f"{ev.org_code} belongs on partition {owner}, not {partition}")
    return ev, value, (topic, partition, r.offset, r.timestamp)


def _by_offset(dead: Dead) -> Dead:
    dead.sort(key=lambda d: d[1].offset)
    return dead


def fold_partition_py(
    ledger: Ledger,
    records: list[RawRecord],
    topic: str,
    partition: int,
    side: str | None,
    org_partition: dict[str, int],
    max_bytes: int,
) -> tuple[int, Dead]:
    good: list[tuple[Record, bytes, Source]] = []
    good_records: list[RawRecord] = []
    dead: Dead = []
    for r in records:
        res = _classify(r, topic, partition, side, org_partition, max_bytes)
        if type(res) is Rejection:
            dead.append((res, r))
        else:
            good.append(res)
            good_records.append(r)
    applied = len(good)
    if good:
        for i, out in ledger.fold(good):
            applied -= 1
            if out.__class__ is Rejection:
                dead.append((out, good_records[i]))
    return applied, _by_offset(dead)


def _closed_for(ledger: Ledger, side: str | None) -> dict[str, int]:
    """What the kernel stops at: the side's closed years (either side's, when the topic's side is
    not given: stopping is always safe, the Python path decides)."""
    if side is not None:
        return ledger.closed[side]
    merged: dict[str, int] = {}
    for closed in ledger.closed.values():
        for org, year in closed.items():
            merged[org] = max(year, merged.get(org, year))
    return merged


def fold_partition_native(
    ledger: Ledger,
    records: list[RawRecord],
    topic: str,
    partition: int,
    side: str | None,
    org_partition: dict[str, int],
    max_bytes: int,
) -> tuple[int, Dead]:
    assert fold_hot is not None
    decode, charts, org_keys, kst = hot_rules()
    get, prefix = ledger.journal_source or (None, b"")
    ch = ledger.changes
    ctx = (
        decode,
        charts,
        org_keys,
        kst,
        org_partition,
        partition,
        side,
        max_bytes,
        topic,
        ledger.positions,
        ledger.journal,
        ch.journal,
        ch.index,
        get,
        prefix,
        Position,
        MAX_SIDE_TOTAL,
        _closed_for(ledger, side),
    )
    dead: Dead = []
    applied = 0
    i, n = 0, len(records)
    while True:
        i, k, ch.last_event_ms, decoded = fold_hot(records, i, ctx, ch.last_event_ms)
        ch.applied += k
        applied += k
        if i >= n:
            return applied, dead  # appended in offset order
        r = records[i]  # not the common case: decided as the pure path decides it
        res = _classify(r, topic, partition, side, org_partition, max_bytes, decoded)
        if type(res) is Rejection:
            dead.append((res, r))
        elif (out := ledger.update(*res)) is APPLIED:
            applied += 1
        elif out.__class__ is Rejection:  # else a duplicate
            dead.append((out, r))
        i += 1


fold_partition: Final[Fold] = fold_partition_native if native.kernel is not None else fold_partition_py
