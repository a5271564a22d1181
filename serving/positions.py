"""Read positions from the Redis serving copy and shape them for the API.

A government whose hash lacks the ``_meta`` marker has no trustworthy serving copy (Redis was
flushed or restarted and the processor has not re-seeded it yet): callers get
:class:`NotReady` and answer 503, never a zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, TypedDict

import orjson
import redis.asyncio as aioredis

from cashpos.calendar import utc_stamp
from cashpos.names import META_FIELD, RedisKeys
from cashpos.refdata import Government, governments
from serving.caching import figures_etag, rows_key
from state.projection import decode_position, parse_field

CUSTODY = "custody"  # 세입세출외현금: in the bank, not spendable


class NotReady(Exception):
    def __init__(self, orgs: list[str]) -> None:
        super().__init__(f"serving copy not ready for {len(orgs)} government(s)")
        self.orgs = orgs


def iso_ms(ms: int) -> str | None:
    """A freshness stamp in the one timestamp format; ``None`` for "never"."""
    return utc_stamp(ms) if ms else None


@dataclass
class AccountRow:
    account: str
    name: str
    type: str
    fiscal_year: int
    cash: int
    committed: int
    version: int
    last_event_ms: int
    final: bool = False  # its fiscal year is closed: carried forward, lapsed, no more events
    ordered: int = 0  # open payment orders, a part of committed

    @property
    def available(self) -> int:
        return self.cash - self.committed

    def as_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "name": self.name,
            "type": self.type,
            "fiscal_year": self.fiscal_year,
            "cash": self.cash,
            "committed": self.committed,
            "available": self.available,
            "ordered": self.ordered,
            "version": self.version,
            "last_event_at": iso_ms(self.last_event_ms),
            "final": self.final,
        }


def totals(rows: list[AccountRow]) -> dict[str, int]:
    cash = sum(r.cash for r in rows)
    committed = sum(r.committed for r in rows)
    restricted = sum(r.cash for r in rows if r.type == CUSTODY)
    spendable = sum(r.available for r in rows if r.type != CUSTODY)
    return {
        "cash": cash,
        "committed": committed,
        "available": cash - committed,
        "restricted": restricted,
        "spendable": spendable,
    }


def by_fiscal_year(rows: list[AccountRow]) -> list[dict[str, object]]:
    """Each fiscal year's totals, newest first, and whether it is final (closed). While two years
    are open (1 January to the close) the government's ``totals`` are the bank accounts' cash:
    a close moves a year's cash into the next, so the sum over years never counts it twice."""
    years: dict[int, list[AccountRow]] = {}
    for r in rows:
        years.setdefault(r.fiscal_year, []).append(r)
    return [
        {"fiscal_year": fy, "final": all(r.final for r in rs), **totals(rs)}
        for fy, rs in sorted(years.items(), reverse=True)
    ]


def _rows(gov: Government, raw: dict[bytes, bytes], fiscal_year: int | None) -> list[AccountRow]:
    names = {a.code: a for a in gov.accounts}
    meta = raw.get(META_FIELD.encode())
    closed = int(orjson.loads(meta).get("closed", 0)) if meta else 0
    rows = []
    for f, v in raw.items():
        field = f.decode()
        if field == META_FIELD:
            continue
        account, fy = parse_field(field)
        if fiscal_year is not None and fy != fiscal_year:
            continue
        version, d = decode_position(v)
        acc = names.get(account)
        rows.append(
            AccountRow(
                account,
                acc.name if acc else account,
                acc.type if acc else "unknown",
                fy,
                d["cash"],
                d["committed"],
                version,
                d["last_event_ms"],
                fy <= closed,
                d.get("ordered", 0),
            )
        )
    order = {a.code: i for i, a in enumerate(gov.accounts)}
    rows.sort(key=lambda r: (-r.fiscal_year, order.get(r.account, 999)))
    return rows


class Body(TypedDict):
    """One government's full body as the live hub holds it in memory (``serving.live``)."""

    org_code: str
    name: str
    province_code: str
    province_name: str
    as_of: str | None
    last_event_at: str | None
    accounts: list[dict[str, object]]
    totals: dict[str, int]
    fiscal_years: list[dict[str, object]]


class MemoryCopy(Protocol):
    """What the live hub (``serving.live.Hub``) offers readers: every government's body, kept
    current from the processor's update channel."""

    @property
    def serving(self) -> bool: ...

    bodies: dict[str, Body]
    metas: dict[str, dict[str, int]]
    version: int


def summarize(
    govs: list[Government],
    totals_of: dict[str, dict[str, int]],
    metas: dict[str, dict[str, int]],
    scope: frozenset[str] | None,
) -> tuple[dict[str, object], dict[str, int]]:
    """Totals per government, per province and over all of ``govs`` (pure); and the freshness
    of the newest of them (``last_event_ms``, ``written_ms``)."""
    zero = dict.fromkeys(("cash", "committed", "available", "restricted", "spendable"), 0)
    provinces: dict[str, tuple[str, dict[str, int]]] = {}  # code -> name, {"governments": n, **sums}
    overall = dict(zero)
    per_gov = []
    last_event = last_write = 0
    for gov in govs:
        t = totals_of[gov.org_code]
        meta = metas.get(gov.org_code, {})
        last_event = max(last_event, int(meta.get("last_event_ms", 0)))
        last_write = max(last_write, int(meta.get("written_ms", 0)))
        per_gov.append(
            {
                "org_code": gov.org_code,
                "name": gov.name,
                "level": gov.level,
                "province_code": gov.province_code,
                **t,
            }
        )
        sums = provinces.setdefault(gov.province_code, (gov.province_name, {"governments": 0, **zero}))[1]
        sums["governments"] += 1
        for k in zero:
            sums[k] += t[k]
            overall[k] += t[k]
    return {
        "as_of": iso_ms(last_write),
        "scope": "national" if scope is None else "partial",
        "national" if scope is None else "total": {"governments": len(govs), **overall},
        "provinces": [
            {"province_code": code, "name": name, **sums} for code, (name, sums) in provinces.items()
        ],
        "governments": per_gov,
    }, {"last_event_ms": last_event, "written_ms": last_write}


class PositionReader:
    """Positions and summaries: from the live hub's memory while it follows Redis (no round
    trip), else from Redis. Queries for one fiscal year always read Redis."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys, memory: MemoryCopy | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.memory = memory
        # per scope: the version of the memory copy it was built from, the summary, its
        # freshness and its ETag
        self._summaries: dict[frozenset[str] | None, tuple[int, dict[str, object], dict[str, int], str]] = {}

    def _live(self, fiscal_year: int | None) -> MemoryCopy | None:
        m = self.memory
        return m if fiscal_year is None and m is not None and m.serving else None

    async def raw(self, orgs: list[str]) -> list[dict[bytes, bytes]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for org in orgs:
                pipe.hgetall(self.keys.positions(org))
            result: list[dict[bytes, bytes]] = await pipe.execute()
        missing = [org for org, h in zip(orgs, result) if META_FIELD.encode() not in h]
        if missing:
            raise NotReady(missing)
        return result

    async def government(self, org: str, fiscal_year: int | None = None) -> dict[str, object]:
        gov = governments()[org]
        m = self._live(fiscal_year)
        if m is not None:
            body = m.bodies.get(org)
            if body is None:
                raise NotReady([org])
            return {
                "org_code": org,
                "name": gov.name,
                "province_code": gov.province_code,
                "province_name": gov.province_name,
                "as_of": body["as_of"],
                "freshness": freshness(m.metas.get(org, {})),
                "accounts": body["accounts"],
                "totals": body["totals"],
                "fiscal_years": body["fiscal_years"],
            }
        (raw,) = await self.raw([org])
        rows = _rows(gov, raw, fiscal_year)
        meta = orjson.loads(raw[META_FIELD.encode()])
        return {
            "org_code": org,
            "name": gov.name,
            "province_code": gov.province_code,
            "province_name": gov.province_name,
            "as_of": iso_ms(meta.get("written_ms", 0)),
            "freshness": freshness(meta),
            "accounts": [r.as_dict() for r in rows],
            "totals": totals(rows),
            "fiscal_years": by_fiscal_year(rows),
        }

    async def summary(
        self, fiscal_year: int | None = None, scope: frozenset[str] | None = None
    ) -> dict[str, object]:
        """Totals over ``scope`` (None: all 243; then ``national`` is the country's total)."""
        return (await self.summary_tagged(fiscal_year, scope))[0]

    async def summary_tagged(
        self, fiscal_year: int | None = None, scope: frozenset[str] | None = None
    ) -> tuple[dict[str, object], str]:
        """The summary and its ETag (``serving.caching``: weak, over the versions it adds)."""
        govs = [g for g in governments().values() if scope is None or g.org_code in scope]
        m = self._live(fiscal_year)
        if m is not None:
            cached = self._summaries.get(scope)
            if cached is None or cached[0] != m.version:  # built once per change, per scope
                missing = [g.org_code for g in govs if g.org_code not in m.bodies]
                if missing:
                    raise NotReady(missing)
                totals_of = {g.org_code: m.bodies[g.org_code]["totals"] for g in govs}
                etag = _summary_etag(fiscal_year, scope, [m.bodies[g.org_code]["accounts"] for g in govs])
                cached = (m.version, *summarize(govs, totals_of, m.metas, scope), etag)
                if len(self._summaries) > 1000:
                    self._summaries.clear()
                self._summaries[scope] = cached
            _version, body, fresh, etag = cached
        else:
            raws = await self.raw([g.org_code for g in govs])
            metas = {g.org_code: orjson.loads(raw[META_FIELD.encode()]) for g, raw in zip(govs, raws)}
            rows_of = {g.org_code: _rows(g, raw, fiscal_year) for g, raw in zip(govs, raws)}
            totals_of = {o: totals(rows) for o, rows in rows_of.items()}
            body, fresh = summarize(govs, totals_of, metas, scope)
            etag = _summary_etag(
                fiscal_year, scope, [[r.as_dict() for r in rows_of[g.org_code]] for g in govs]
            )
        out = dict(body)  # the cached body stays as it is
        out["freshness"] = freshness(fresh)
        return out, etag


def _summary_etag(
    fiscal_year: int | None, scope: frozenset[str] | None, accounts: list[list[dict[str, object]]]
) -> str:
    who = "national" if scope is None else ",".join(sorted(scope))
    return figures_etag("summary", fiscal_year, who, [rows_key(a) for a in accounts])


def freshness(meta: dict[str, int]) -> dict[str, object]:
    now = int(time.time() * 1000)
    written = int(meta.get("written_ms", 0))
    return {
        "last_event_at": iso_ms(int(meta.get("last_event_ms", 0))),
        "last_write_at": iso_ms(written),
        "write_age_seconds": round((now - written) / 1000, 3) if written else None,
    }
