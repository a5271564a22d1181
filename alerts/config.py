"""The alert thresholds: the configuration file (``cashpos/alerts.toml``, or the file named by
``CASHPOS_ALERT_CONFIG``) and the effective settings of each (government, account).

Resolution order, later wins: built-in defaults, ``defaults``, ``accounts.<acc>``,
``governments.<org>."*"``, ``governments.<org>.<acc>``, then the ``PUT /v1/thresholds``
overrides (``<org>/*``, then ``<org>/<acc>``; read from Redis by ``state.alert_projection``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

import cashpos
from cashpos.refdata import governments

Krw = Annotated[int, Meta(gt=0, le=10**17)]
NonNegKrw = Annotated[int, Meta(ge=0, le=10**17)]
Days = Annotated[int, Meta(ge=1, le=366)]
Months = Annotated[int, Meta(ge=0, le=24)]
Pct = Annotated[int, Meta(ge=0, le=100)]
Minutes = Annotated[int, Meta(ge=1, le=7 * 24 * 60)]


class Thresholds(Struct, forbid_unknown_fields=True, frozen=True):
    """The effective settings of one (government, account)."""

    floor_krw: Krw | None = None  # absolute reserve floor; wins over floor_months
    floor_months: Months = 2  # floor = months x 30 days x average daily outflow; 0: none
    outflow_days: Days = 90
    min_history_days: Days = 7
    margin_krw: NonNegKrw = 1_000_000
    margin_pct: Pct = 5
    horizon_days: Days = 90
    trend: bool = True  # the projection subtracts a draining (negative) uncommitted trend
    projected_against_floor: bool = False
    year_end_days: tuple[Days, ...] = (30, 14, 7)
    stale_minutes: Minutes = 120
    enabled: bool = True


class Override(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A partial setting (file sections, ``PUT /v1/thresholds``): unset fields inherit;
    ``floor_krw: null`` removes an inherited absolute floor."""

    floor_krw: Krw | None | UnsetType = UNSET
    floor_months: Months | UnsetType = UNSET
    outflow_days: Days | UnsetType = UNSET
    min_history_days: Days | UnsetType = UNSET
    margin_krw: NonNegKrw | UnsetType = UNSET
    margin_pct: Pct | UnsetType = UNSET
    horizon_days: Days | UnsetType = UNSET
    trend: bool | UnsetType = UNSET
    projected_against_floor: bool | UnsetType = UNSET
    year_end_days: Annotated[list[Days], Meta(max_length=8)] | UnsetType = UNSET
    stale_minutes: Minutes | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


_OVERRIDE_FIELDS: Final = Override.__struct_fields__


def merge(base: Thresholds, ov: Override) -> Thresholds:
    upd = {f: getattr(ov, f) for f in _OVERRIDE_FIELDS if getattr(ov, f) is not UNSET}
    if not upd:
        return base
    if "year_end_days" in upd:
        upd["year_end_days"] = tuple(sorted(set(upd["year_end_days"]), reverse=True))
    return msgspec.structs.replace(base, **upd)


class Operational(Struct, forbid_unknown_fields=True, frozen=True):
    lag_records: Annotated[int, Meta(gt=0)] = 100_000
    lag_seconds: Annotated[int, Meta(ge=0)] = 30
    recent_keep: Annotated[int, Meta(gt=0, le=100_000)] = 2_000  # resolved alerts kept in Redis
    # A partition is "settled" (its rules evaluated batch by batch) unless it is being rebuilt
    # or one of its two input topics has more than this many records left to read.
    settle_backlog_records: Annotated[int, Meta(ge=0)] = 5_000


class AlertConfig(Struct, forbid_unknown_fields=True):
    """The alert configuration file (TOML or JSON)::

    [defaults]                       # every government and account
    [accounts.custody]               # one account code, every government
    [governments."5260000"."*"]      # one government, every account
    [governments."5260000".general]  # one government and account
    [operational]
    """

    defaults: Override = msgspec.field(default_factory=Override)
    accounts: dict[str, Override] = {}
    governments: dict[str, dict[str, Override]] = {}
    operational: Operational = msgspec.field(default_factory=Operational)

    def validate(self) -> AlertConfig:
        govs = governments()
        codes = {a.code for g in govs.values() for a in g.accounts}
        for acc in self.accounts:
            if acc not in codes:
                raise ValueError(f"alert config: unknown account {acc!r}")
        for org, per in self.governments.items():
            g = govs.get(org)
            if g is None:
                raise ValueError(f"alert config: unknown government {org!r}")
            for acc in per:
                if acc != "*" and acc not in g.account_codes:
                    raise ValueError(f"alert config: {org} has no account {acc!r}")
        return self


DEFAULT_CONFIG_PATH: Final = Path(cashpos.__file__).resolve().parent / "alerts.toml"


def decode_config(raw: bytes, fmt: str = "toml") -> AlertConfig:
    """Strictly decode and validate a configuration (raises ValueError/msgspec.ValidationError)."""
    if fmt == "json":
        cfg = msgspec.json.decode(raw, type=AlertConfig)
    else:
        cfg = msgspec.convert(tomllib.loads(raw.decode()), type=AlertConfig)
    return cfg.validate()


def load_config(path: str | Path | None = None) -> AlertConfig:
    """Read the configuration file (``None``: the shipped default; a missing default file means
    the built-in defaults)."""
    p = Path(path) if path else DEFAULT_CONFIG_PATH
    if not p.exists():
        if path:
            raise FileNotFoundError(f"alert config {p} not found")
        return AlertConfig()
    return decode_config(p.read_bytes(), "json" if p.suffix == ".json" else "toml")


def config_from_env() -> AlertConfig:
    """The configuration of this process: ``CASHPOS_ALERT_CONFIG``, else the shipped file."""
    return load_config(os.environ.get("CASHPOS_ALERT_CONFIG") or None)


class Resolver:
    """Effective thresholds per (government, account), cached."""

    def __init__(self, config: AlertConfig, overrides: Mapping[tuple[str, str], Override] | None = None):
        self.config = config
        self.overrides = dict(overrides or {})
        self.base = merge(Thresholds(), config.defaults)
        self._cache: dict[tuple[str, str], Thresholds] = {}

    def get(self, org: str, account: str) -> Thresholds:
        key = (org, account)
        t = self._cache.get(key)
        if t is None:
            c = self.config
            t = self.base
            if account in c.accounts:
                t = merge(t, c.accounts[account])
            per = c.governments.get(org)
            if per:
                if "*" in per:
                    t = merge(t, per["*"])
                if account != "*" and account in per:
                    t = merge(t, per[account])
            for k in ((org, "*"), (org, account)):
                ov = self.overrides.get(k)
                if ov is not None:
                    t = merge(t, ov)
            self._cache[key] = t
        return t

    def set_overrides(self, overrides: Mapping[tuple[str, str], Override]) -> set[tuple[str, str]]:
        """Replace the overrides; returns the (org, account|*) keys whose override changed."""
        old = self.overrides
        changed = {k for k in set(old) | set(overrides) if old.get(k) != overrides.get(k)}
        if changed:
            self.overrides = dict(overrides)
            self._cache.clear()
        return changed
