"""`cashpos verify` (issue #16): a position's chain head re-computed from the input topics alone
(``reconcile/verify.py``: the independent reference fold, the chain hashed again from its
definition) equals the service's, and changing, removing or adding one event changes it.

Unit: on the fiscal-year test's streams (every kind, the close and its lapses, both topics), the
verifier's head of every position equals the head the worker's path stores, whatever the
batching, crashes and interleaving. Integration (real stack): the API's head matches the topics';
records tampered three ways give heads that differ from it; the command's exit codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cashpos.names import EXPENDITURE, REVENUE
from reconcile import verify
from state import partition
from streams.contract import year_close
from streams.publisher import Publisher
from streams.reader import Record
from tests.conftest import ROOT, Stack
from tests.events import event
from tests.test_fiscal_year import TOPIC, two_topics
from tests.test_history import ORGS, Recs, _heads, _run


def _records(recs: Recs) -> list[Record]:
    return [
        Record(TOPIC[side], 0, r.offset, r.timestamp, r.key, r.value or b"")
        for side in (REVENUE, EXPENDITURE)
        for r in recs[side]
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_topics(), st.booleans())
def test_the_verifier_computes_the_service_heads_from_the_records_alone(
    stream: tuple[Recs, list[tuple[str, int]], set[int]], expenditure_first: bool
) -> None:
    recs, runs, kills = stream
    store = _run(
        partition.fold_partition, recs, runs, kills, Path(tempfile.mkdtemp(prefix="cashpos-verify-"))
    )
    try:
        service = _heads(store)
        counts = {
            pk: c.revenue_events + c.expenditure_events for org in ORGS for pk, c in store.chains(org).items()
        }
    finally:
        store.close()
    records = _records(recs)
    if expenditure_first:  # how the two topics interleave must not matter
        records.sort(key=lambda r: r.topic != TOPIC[EXPENDITURE])
    mine: dict[Any, str] = {}
    rows: dict[Any, int] = {}
    for org in ORGS:
        for pk, c in verify.position_rows(records, org).items():
            mine[pk] = verify.head(c)[0]
            rows[pk] = c.events
    assert mine == service
    assert rows == counts


def test_the_verifier_sees_a_close_and_its_lapses() -> None:
    """A close on both topics with an open commitment: the lapse row precedes the close's on
    the expenditure side, and the head equals the service's (a fixed case the property above
    may draw rarely)."""
    from streams.lean_records import LeanRecord as Rec

    org = ORGS[0]
    rev = [event("a1", "receipt", 500, org=org, fiscal_year=2025, at="2025-12-01T10:00:00+09:00")]
    exp = [
        event(
            "c1",
            "commitment",
            300,
            org=org,
            fiscal_year=2025,
            at="2025-12-02T10:00:00+09:00",
            commitment_id="K1",
        ),
        event("p1", "payment", 100, org=org, fiscal_year=2025, at="2025-12-03T10:00:00+09:00"),
    ]
    close = year_close(org, 2025)
    recs: Recs = {
        REVENUE: [Rec(i, 0, org.encode(), v) for i, v in enumerate([*rev, close])],
        EXPENDITURE: [Rec(i, 0, org.encode(), v) for i, v in enumerate([*exp, close])],
    }
    store = _run(
        partition.fold_partition, recs, [(REVENUE, 2), (EXPENDITURE, 3)], set(), Path(tempfile.mkdtemp())
    )
    try:
        service = _heads(store)
    finally:
        store.close()
    got = verify.position_rows(_records(recs), org)
    general = got[(org, "general", 2025)]
    assert [r.sid[:2] for r in general.expenditure] == ["e:", "e:", "l:", "e:"]
    assert {pk: verify.head(c)[0] for pk, c in got.items()} == service
    assert (org, "general", 2026) in service  # the carried cash opened next year's position


def test_the_verdict_names_match_behind_and_mismatch() -> None:
    want = ("a" * 64, "b" * 64, "c" * 64)
    assert verify.judge(want, 3, verify.Reported("a" * 64, events=3))[0] == verify.MATCH
    assert verify.judge(want, 3, verify.Reported("d" * 64, events=2))[0] == verify.BEHIND
    code, lines = verify.judge(want, 3, verify.Reported("d" * 64, "b" * 64, "e" * 64, events=3))
    assert code == verify.MISMATCH and "expenditure link differs" in lines[0] and len(lines) == 2
    assert verify.judge(None, 0, verify.Reported(None, events=0))[0] == verify.MATCH
    assert verify.judge(None, 0, verify.Reported("a" * 64, events=1))[0] == verify.MISMATCH


# -- on the real stack ---------------------------------------------------------------------------

ORG = "4050000"  # 용인시: no other test publishes to it
AT = "2026-04-0{d}T1{h}:00:00+09:00"


def _workload(stamp: str) -> list[bytes]:
    """Receipts, payments, a commitment paid in part and cancelled, a transfer, a reversal, a
    duplicate and a refused event: every row kind of a position but the close's."""
    e = [
        event(f"v{stamp}-r{i}", "receipt", 1_000_000 + i, org=ORG, at=AT.format(d=1 + i % 3, h=i % 9))
        for i in range(8)
    ]
    e += [event(f"v{stamp}-p{i}", "payment", 20_000 + i, org=ORG, at=AT.format(d=2, h=i)) for i in range(4)]
    cid = f"VC{stamp}"
    e += [
        event(f"v{stamp}-c", "commitment", 500_000, org=ORG, at=AT.format(d=1, h=5), commitment_id=cid),
        event(f"v{stamp}-cp", "payment", 200_000, org=ORG, at=AT.format(d=3, h=1), commitment_id=cid),
        event(
            f"v{stamp}-cc", "commitment_cancel", 100_000, org=ORG, at=AT.format(d=3, h=2), commitment_id=cid
        ),
        event(f"v{stamp}-t", "transfer", 33_333, org=ORG, at=AT.format(d=2, h=8), to_account="sewerage"),
        event(f"v{stamp}-rv", "receipt", 1_000_003, org=ORG, at=AT.format(d=3, h=8), reverses=f"v{stamp}-r3"),
        event(f"v{stamp}-x", "payment", 1, org=ORG, at=AT.format(d=3, h=3), commitment_id="nope"),  # refused
    ]
    return [*e, e[0]]  # and a duplicate


def _publish(stack: Stack, raws: list[bytes]) -> None:
    async def go() -> None:
        async with Publisher(stack.settings) as pub:
            for raw in raws:
                await pub.send(raw)

    asyncio.run(go())


@pytest.mark.integration
def test_verify_matches_the_api_and_a_tampered_history_does_not(stack: Stack) -> None:
    stamp = str(time.time_ns())
    _publish(stack, _workload(stamp))
    token = stack.token("viewer", [ORG])
    records = asyncio.run(verify.read_partition(stack.settings, ORG))
    want, rows = verify.expected(records, ORG, "general", 2026)
    assert want is not None and rows >= 8 + 4 + 3 + 1 + 1
    deadline = time.monotonic() + 60
    while (got := verify.api_head(stack.api, token, ORG, "general", 2026)).events != rows:
        assert time.monotonic() < deadline, f"the API's chain holds {got.events} of {rows} rows"
        time.sleep(0.3)
    assert got.head == want[0]
    assert (got.revenue, got.expenditure) == want[1:]

    # the same verifier on a history with one event changed, one removed, one added: each head
    # differs from the service's (and from each other)
    ours = [i for i, r in enumerate(records) if r.key == ORG.encode() and f"v{stamp}-".encode() in r.value]
    changed = list(records)
    i = ours[2]  # a receipt
    changed[i] = dataclasses.replace(
        records[i], value=records[i].value.replace(b'"amount":1000002', b'"amount":1000012')
    )
    assert changed[i].value != records[i].value
    removed = records[: ours[1]] + records[ours[1] + 1 :]
    extra = event(f"v{stamp}-added", "receipt", 5, org=ORG, at=AT.format(d=3, h=4))
    rev = records[ours[0]]
    added = [*records, dataclasses.replace(rev, offset=10**9, value=extra)]
    heads = {}
    for name, variant in (("changed", changed), ("removed", removed), ("added", added)):
        h, _ = verify.expected(variant, ORG, "general", 2026)
        assert h is not None
        heads[name] = h[0]
        assert h[0] != got.head, name
        assert h[2] == want[2], name  # only the revenue side was touched: its link alone differs
    assert len(set(heads.values())) == 3

    # the command: MATCH (exit 0) against the API, and against the owning worker's state once flushed
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cashpos.cli", "verify", ORG, *args],
            env=stack.env(),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )

    out = cli("general", "2026", "--api", stack.api, "--token", token)
    assert out.returncode == verify.MATCH, out.stdout + out.stderr
    assert f"reported   {want[0]}" in out.stdout and out.stdout.rstrip().endswith("MATCH")
    deadline = time.monotonic() + 30
    while (
        out := cli("general", "2026", "--state-dir", str(stack.root / "state-w1"))
    ).returncode != verify.MATCH:
        assert out.returncode == verify.BEHIND, out.stdout + out.stderr  # not flushed yet
        assert time.monotonic() < deadline, out.stdout
        time.sleep(1)
    # a position no event touched: nothing on either side, and they agree
    out = cli("river", "2026", "--api", stack.api, "--token", token)
    assert out.returncode == verify.MATCH and "topics     None" in out.stdout, out.stdout + out.stderr
