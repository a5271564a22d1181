"""Reference data shipped with cashpos: the 243 governments and their charts of accounts.

Loaded once per process; everything is keyed by the 7-digit organisation code, never by name
(names such as 중구 or 고성군 repeat across provinces).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Account:
    code: str
    name: str
    type: str  # general | enterprise | special | fund | custody


@dataclass(frozen=True, slots=True)
class Government:
    org_code: str
    name: str
    level: str  # metropolitan (광역) | basic (기초)
    province_code: str  # the government itself when metropolitan
    province_name: str
    note: str
    accounts: tuple[Account, ...] = field(default=())

    @property
    def account_codes(self) -> frozenset[str]:
        return frozenset(a.code for a in self.accounts)


@cache
def governments() -> dict[str, Government]:
    """All 243 governments by org_code, in the order of the shipped CSV."""
    charts: dict[str, list[Account]] = {}
    with open(_DIR / "accounts.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            charts.setdefault(row["org_code"], []).append(Account(row["account"], row["name"], row["type"]))
    out: dict[str, Government] = {}
    with open(_DIR / "municipalities.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            code = row["org_code"]
            metro = row["level"] == "metropolitan"
            out[code] = Government(
                org_code=code,
                name=row["name"],
                level=row["level"],
                province_code=code if metro else row["parent_org_code"],
                province_name=row["name"] if metro else row["parent_name"],
                note=row.get("note") or "",
                accounts=tuple(charts.get(code, ())),
            )
    return out


@cache
def account_sets() -> dict[str, frozenset[str]]:
    """org_code -> set of account codes; the hot-path lookup for validation."""
    return {code: g.account_codes for code, g in governments().items()}


def provinces() -> list[Government]:
    """The 17 metropolitan/provincial governments."""
    return [g for g in governments().values() if g.level == "metropolitan"]
