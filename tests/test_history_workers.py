"""History with several workers and a partition move (issue #16): three workers share six
partitions; as-of answers, daily statements and chain heads of governments owned by each are read
through the API and equal an independent computation (the verifier's rows from the topics:
``reconcile/verify.py``); one worker is killed (-9) and its partitions are taken over: read again
until every government answers, the answers and heads are identical, and in between a read is
either that same answer or 503 ``history_unavailable`` — never a different one."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cashpos.calendar import day_date, kst_day, utc_stamp
from cashpos.embedded import Infra
from faults.common import live_owners, prepared_stack, publish, wait_until, workload
from reconcile import verify
from streams.topics import partition_for

pytestmark = pytest.mark.integration

PARTITIONS = 6
ENV = {"CASHPOS_SESSION_TIMEOUT_MS": "2000", "CASHPOS_HEARTBEAT_MS": "500"}
WORKERS = ("w1", "w2", "w3")


def _covering(owners: dict[str, set[int]], workers: set[str]) -> bool:
    parts = sorted(p for w, ps in owners.items() if w in workers for p in ps)
    return set(owners) == workers and parts == list(range(PARTITIONS))


def _expected(rows: dict[Any, verify.Chains], at_ms: int) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(cash, committed, events) per (account, fiscal year) as of ``at_ms``, from the rows."""
    out = {}
    for (_, account, fy), c in rows.items():
        mine = [r for r in (*c.revenue, *c.expenditure) if r.ms <= at_ms]
        if mine:
            out[(account, fy)] = (sum(r.cash for r in mine), sum(r.committed for r in mine), len(mine))
    return out


class Reader:
    """The answers one government gives through the API: as of a few instants, its statement
    over the week, the chain heads of its busiest positions."""

    def __init__(self, c: httpx.Client, org: str, rows: dict[Any, verify.Chains]) -> None:
        self.c, self.org, self.rows = c, org, rows
        ms = sorted(r.ms for ch in rows.values() for r in (*ch.revenue, *ch.expenditure))
        rnd = random.Random(org)
        self.instants = [ms[0] - 1, ms[-1], *(rnd.randrange(ms[0], ms[-1]) for _ in range(3))]
        self.days = (day_date(kst_day(ms[0])).isoformat(), day_date(kst_day(ms[-1])).isoformat())
        busiest = sorted(rows, key=lambda pk: -rows[pk].events)[:2]
        self.positions = [(pk[1], pk[2]) for pk in busiest]

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The body, or None for 503 history_unavailable; anything else fails the test."""
        r = self.c.get(path, params=params)
        if r.status_code == 503:
            assert r.json()["reason"] == "history_unavailable", r.text
            return None
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def read(self) -> dict[str, Any] | None:
        """Every answer, or None when one of them was 503."""
        out: dict[str, Any] = {}
        for at in self.instants:
            b = self._get(f"/v1/positions/{self.org}", {"as_of": utc_stamp(at)})
            if b is None:
                return None
            out[f"as_of {at}"] = {
                (a["account"], a["fiscal_year"]): (a["cash"], a["committed"], a["events"])
                for a in b["accounts"]
            }
        b = self._get(f"/v1/statements/{self.org}", {"from": self.days[0], "to": self.days[1]})
        if b is None:
            return None
        out["statement"] = b["rows"]
        for account, fy in self.positions:
            b = self._get(f"/v1/positions/{self.org}/{account}/events", {"fiscal_year": fy, "limit": 1})
            if b is None:
                return None
            out[f"chain {account} {fy}"] = (b["chain"]["head"], b["total"])
        return out

    def expected_part(self, answers: dict[str, Any]) -> None:
        """The as-of answers and heads equal the independent computation from the topics."""
        for at in self.instants:
            assert answers[f"as_of {at}"] == _expected(self.rows, at), (self.org, at)
        for account, fy in self.positions:
            c = self.rows[(self.org, account, fy)]
            assert answers[f"chain {account} {fy}"] == (verify.head(c)[0], c.events), (self.org, account)
        # the statement's closings are the positions at the end of the last day
        closing = {(r["account"], r["fiscal_year"]): r["closing_cash"] for r in answers["statement"]}
        end = _expected(self.rows, max(self.instants))
        assert {k: v[0] for k, v in end.items()} == closing, self.org


def test_history_is_the_same_after_a_worker_is_killed_and_its_partitions_move(
    infra: Infra, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    with prepared_stack(infra, tmp_path, PARTITIONS) as s:
        for w in WORKERS:
            s.start_worker(w, **ENV)
        s.start_api()
        wait_until(
            lambda: _covering(live_owners(s), set(WORKERS)), 90, 0.2, "three workers to share the partitions"
        )
        s.wait_ready(60)
        publish(s.settings, workload(16, 12_000))
        owners = live_owners(s)
        victim = next(w for w in ("w2", "w1", "w3") if owners.get(w))
        # two governments of each worker's partitions (the victim's move; the others' stay)
        from cashpos.refdata import governments

        orgs: list[str] = []
        for w in WORKERS:
            mine = [o for o in sorted(governments()) if partition_for(o, PARTITIONS) in owners.get(w, set())]
            orgs += mine[:2]
        moved = {o for o in orgs if partition_for(o, PARTITIONS) in owners[victim]}
        assert moved and len(orgs) == 6
        with httpx.Client(base_url=s.api, headers=s.headers, timeout=20) as c:
            readers = []
            for org in orgs:
                records = asyncio.run(verify.read_partition(s.settings, org))
                readers.append(Reader(c, org, verify.position_rows(records, org)))
            before: dict[str, dict[str, Any]] = {}
            for rd in readers:  # caught up: every answer equals the independent one
                deadline = time.monotonic() + 60
                while True:
                    got = rd.read()
                    try:
                        assert got is not None
                        rd.expected_part(got)
                        break
                    except AssertionError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                before[rd.org] = got

            s.stop(f"worker-{victim}", kill=True)
            killed = time.monotonic()
            survivors = set(WORKERS) - {victim}
            unavailable = 0
            answered: set[str] = set()
            # until the survivors own every partition and every government has answered again:
            # each read is the same answer or 503, never another answer
            while not (answered == set(orgs) and _covering(live_owners(s), survivors)):
                assert time.monotonic() - killed < 90, (
                    f"not taken over: {live_owners(s)}, answered {answered}"
                )
                for rd in readers:
                    got = rd.read()
                    if got is None:
                        unavailable += 1
                        answered.discard(rd.org)
                        continue
                    assert got == before[rd.org], rd.org
                    answered.add(rd.org)
                time.sleep(0.2)
            took = time.monotonic() - killed
            for rd in readers:  # once more, with the new owners
                got = rd.read()
                assert got == before[rd.org], rd.org
                rd.expected_part(got)
        print(
            f"killed {victim} (owning {sorted(owners[victim])}, governments {sorted(moved)}); "
            f"every answer back and identical after {took:.1f}s, {unavailable} reads answered 503 "
            f"history_unavailable in between; whole test {time.monotonic() - t0:.0f}s"
        )
