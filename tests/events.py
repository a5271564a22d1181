"""Builders of contract events for tests (real org codes and accounts from the refdata)."""

from __future__ import annotations

from typing import Any

import orjson

from cashpos.refdata import governments


def event(
    event_id: str,
    kind: str,
    amount: int,
    *,
    org: str = "3090000",
    account: str = "general",
    at: str = "2026-11-20T10:00:00+09:00",
    fiscal_year: int = 2026,
    **extra: Any,
) -> bytes:
    d: dict[str, Any] = {
        "event_id": event_id,
        "org_code": org,
        "account": account,
        "fiscal_year": fiscal_year,
        "kind": kind,
        "amount": amount,
        "occurred_at": at,
        "source": "test-suite",
    }
    if kind == "receipt" and "category" not in extra:
        d["category"] = "local_tax"
    d.update(extra)
    return orjson.dumps(d)


def first_account(org: str, type_: str) -> str:
    return next(a.code for a in governments()[org].accounts if a.type == type_)
