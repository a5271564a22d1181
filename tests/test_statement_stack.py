"""The government's daily statement on the real stack (``by=government``): each day's row is the
sum of the account rows the API gives for that day, to the won — also after a late event changed
a past day (the owner's kept sums take it), in CSV with Korean headers too."""

from __future__ import annotations

import csv
import io
import random
import time
from typing import Any

import httpx
import pytest

from serving.history import CSV_HEADERS
from state.history import STATEMENT_COLUMNS
from tests.conftest import Stack
from tests.events import event
from tests.test_history_stack import _publish

pytestmark = pytest.mark.integration

ORG = "3400000"  # 기장군: no other test uses it
SPAN = {"from": "2026-04-01", "to": "2026-04-07"}


def _events(stamp: str) -> list[bytes]:
    rnd = random.Random(16)
    out = []
    for i in range(40):
        at = f"2026-04-{2 + i % 4:02d}T{9 + i % 8:02d}:{rnd.randrange(60):02d}:00+09:00"
        acc = ("general", "sewerage", "water_supply")[i % 3]
        kind = "receipt" if i % 4 else "payment"
        extra: dict[str, Any] = (
            {"category": rnd.choice(["local_tax", "grant", "bond"])} if kind == "receipt" else {}
        )
        out.append(
            event(f"s{stamp}-{i}", kind, rnd.randrange(1, 10**7), org=ORG, account=acc, at=at, **extra)
        )
    out.append(
        event(
            f"s{stamp}-t", "transfer", 4_321, org=ORG, at="2026-04-03T12:00:00+09:00", to_account="sewerage"
        )
    )
    out.append(
        event(
            f"s{stamp}-c",
            "commitment",
            77_777,
            org=ORG,
            at="2026-04-04T11:00:00+09:00",
            commitment_id=f"S{stamp}",
        )
    )
    return out


def _summed_accounts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    by_day: dict[str, dict[str, int]] = {}
    for r in rows:
        day = by_day.setdefault(r["date"], dict.fromkeys(STATEMENT_COLUMNS, 0))
        for c in STATEMENT_COLUMNS:
            day[c] += r[c]
    return by_day


def _get(c: httpx.Client, h: dict[str, str], **params: Any) -> httpx.Response:
    r = c.get(f"/v1/statements/{ORG}", params=SPAN | params, headers=h)
    assert r.status_code == 200, r.text
    return r


def _events_counted(c: httpx.Client, h: dict[str, str]) -> int:
    return sum(r["events"] for r in _get(c, h, by="government").json()["rows"])


def test_the_governments_rows_are_the_sums_of_its_account_rows(stack: Stack) -> None:
    stamp = str(time.time_ns())
    raws = _events(stamp)
    _publish(stack, raws)
    h = {"Authorization": f"Bearer {stack.token('viewer', [ORG], name='statement reader', rate_per_s=500)}"}
    effects = len(raws) + 1  # a transfer is two positions' rows
    with httpx.Client(base_url=stack.api, timeout=20) as c:
        deadline = time.monotonic() + 30
        while _events_counted(c, h) != effects:  # the first read makes the owner keep the sums
            assert time.monotonic() < deadline, "the statement never caught up"
            time.sleep(0.3)

        def check() -> list[dict[str, Any]]:
            accounts = _get(c, h).json()["rows"]
            gov = _get(c, h, by="government").json()
            assert gov["by"] == "government" and gov["fiscal_year"] is None
            rows = gov["rows"]
            assert [r["date"] for r in rows] == sorted({r["date"] for r in accounts})
            assert {r["date"]: {k: r[k] for k in STATEMENT_COLUMNS} for r in rows} == _summed_accounts(
                accounts
            )
            assert _get(c, h, by="government", fiscal_year=2026).json()["rows"] == rows
            assert _get(c, h, by="government", fiscal_year=2025).json()["rows"] == []
            for r in rows:
                assert r["closing_available"] == r["closing_cash"] - r["closing_committed"]
            return rows

        rows = check()
        assert sum(r["committed_opened"] for r in rows) == 77_777
        assert sum(r["transfers_in"] - r["transfers_out"] for r in rows) == 0  # within the government

        # a late event on a past day: that day's row and every later opening move, exactly
        late = event(
            f"s{stamp}-late", "receipt", 999, org=ORG, account="water_supply", at="2026-04-02T07:00:00+09:00"
        )
        _publish(stack, [late])
        deadline = time.monotonic() + 30
        while _events_counted(c, h) != effects + 1:
            assert time.monotonic() < deadline, "the late event never reached the statement"
            time.sleep(0.3)
        after = check()
        assert [r["closing_cash"] - 999 for r in after if r["date"] >= "2026-04-02"] == [
            r["closing_cash"] for r in rows if r["date"] >= "2026-04-02"
        ]

        # CSV: the same rows under the Korean headers
        r = _get(c, h, by="government", format="csv")
        assert r.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
        assert table[0] == [CSV_HEADERS[k] for k in ("date", *STATEMENT_COLUMNS)]
        assert [[int(x) for x in line[1:]] for line in table[1:]] == [
            [a[k] for k in STATEMENT_COLUMNS] for a in after
        ]

        # one account and the government's sum are two different questions
        bad = c.get(
            f"/v1/statements/{ORG}", params=SPAN | {"by": "government", "account": "general"}, headers=h
        )
        assert bad.status_code == 422 and bad.json()["reason"] == "invalid_request"
