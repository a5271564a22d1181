"""The forecast's serving copy in Redis: its JSON body and the version-guarded write.

This module owns the format: per government a hash (``RedisKeys.forecast``), field the account
(``*``: the government), value ``{version}|{json}`` (``state.projection.encode_value``); the
summary hash (``RedisKeys.forecast_summary``), field the government, value ``{version}|{json}``
of ``summary`` (the national view's sort, without reading 243 full forecasts); and the accuracy
hash (``RedisKeys.forecast_accuracy``), field the government, value JSON. The API
(``serving/forecast.py``) reads through ``decode``, ``cut`` and ``decode_accuracy``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis

from cashpos.calendar import day_date
from cashpos.names import RedisKeys
from state.forecast import LEARNED, Crossing, Flow, Forecast, Idle
from state.projection import decode_value, encode_value, lua_version, value_body

GOVERNMENT = "*"  # the field of a government's own forecast (the sum of its accounts')
CROSSINGS = ("cash_below_zero", "cash_below_floor", "available_below_zero", "available_below_floor")

# KEYS: the hashes; ARGV per key: n, then n x (field, value). A field is only replaced by a
# higher version (two workers during a rebalance cannot put an older forecast back).
_LUA = f"""
local i = 1
for k = 1, #KEYS do
  local n = tonumber(ARGV[i])
  i = i + 1
  for j = 1, n do
    local f, v = ARGV[i], ARGV[i + 1]
    local cur = redis.call('HGET', KEYS[k], f)
    if (not cur) or {lua_version("cur")} <= {lua_version("v")} then
      redis.call('HSET', KEYS[k], f, v)
    end
    i = i + 2
  end
end
return 0
"""


def _date(day: int) -> str:
    return day_date(day).isoformat()


def flow_body(f: Flow) -> dict[str, Any]:
    return {
        "date": _date(f.day),
        "cash": f.cash,
        "committed": f.committed,
        "available": f.available,
        "kind": f.kind,
        "certainty": f.certainty,
        "ref": f.ref,
        "account": f.account or None,
    }


def _crossing(c: Crossing | None, today: int) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "date": _date(c.day),
        "days": c.day - today,
        "value": c.value,
        "threshold": c.threshold,
        "drivers": [flow_body(f) for f in c.drivers],
    }


def _grouped(flows: Iterable[Flow]) -> list[Flow]:
    """A government's learned flows added up per (day, kind, reference) over its accounts (the
    known ones stay one by one): the same bands, a body ~20 times smaller."""
    out: list[Flow] = []
    sums: dict[tuple[int, str, str], list[int]] = {}
    for f in flows:
        if f.certainty != LEARNED:
            out.append(f)
            continue
        s = sums.setdefault((f.day, f.kind, f.ref), [0, 0])
        s[0] += f.cash
        s[1] += f.committed
    out += [Flow(d, c, m, kind, LEARNED, ref) for (d, kind, ref), (c, m) in sums.items() if c or m]
    return sorted(out, key=lambda f: (f.day, f.certainty != LEARNED, f.kind, f.ref, f.account))


def body(org: str, f: Forecast, idle: Idle | None) -> dict[str, Any]:
    """The served forecast of an account (``f.account``) or a government (``f.account`` "")."""
    lr = f.learned
    return {
        "org_code": org,
        "account": f.account or None,
        "today": _date(f.today),
        "horizon_days": f.horizon,
        "position": {"cash": f.cash, "committed": f.committed, "available": f.cash - f.committed},
        "floor": f.floor,
        "bands": {
            name: {"cash": list(b.cash), "available": list(b.available)}
            for name, b in (("confirmed", f.confirmed), ("expected", f.expected))
        },
        "crossings": {name: _crossing(getattr(f, name), f.today) for name in CROSSINGS},
        "flows": [flow_body(x) for x in (_grouped(f.flows) if not f.account else f.flows)],
        "idle_cash": None
        if idle is None
        else {
            "floor": idle.floor,
            "amount": idle.amount,
            "days": idle.days,
            "ladder": [{"term_days": t, "amount": a} for t, a in idle.ladder],
        },
        "learned": None
        if lr is None
        else {
            "observed_days": lr.days,
            "recurring": [
                {"series": r.series, "day_of_month": r.anchor, "amount": r.amount, "ref": r.ref}
                for r in lr.recurring
            ],
        },
    }


def _mark(day: int, today: int, value: int) -> dict[str, Any]:
    return {"date": _date(day), "days": day - today, "value": value}


def summary(org: str, f: Forecast, idle: Idle | None) -> dict[str, Any]:
    """A government's forecast in brief: its first crossings of zero and of the floor by the
    expected cash (date, days from its today, value then), the lowest expected cash (its first
    day) and the idle cash."""
    cash = f.expected.cash
    low = min(range(len(cash)), key=cash.__getitem__)
    zero, floor = f.cash_below_zero, f.cash_below_floor
    return {
        "org_code": org,
        "today": _date(f.today),
        "horizon_days": f.horizon,
        "cash": f.cash,
        "available": f.cash - f.committed,
        "floor": f.floor,
        "cash_below_zero": None if zero is None else _mark(zero.day, f.today, zero.value),
        "cash_below_floor": None if floor is None else _mark(floor.day, f.today, floor.value),
        "lowest_cash": _mark(f.today + low, f.today, cash[low]),
        "idle_cash": None if idle is None else idle.amount,
    }


def encode(version: int, doc: Mapping[str, Any]) -> bytes:
    return encode_value(version, orjson.dumps(doc))


def body_bytes(raw: bytes) -> bytes:
    """The stored JSON body as it is (the whole horizon: served without decoding it)."""
    return value_body(raw)


def decode(raw: bytes) -> tuple[int, dict[str, Any]]:
    version, doc = decode_value(raw)
    return version, doc


def decode_accuracy(raw: bytes) -> dict[int, dict[str, int]]:
    """A government's accuracy: per horizon (days ahead) its days scored, mean absolute error
    and mean error (forecast minus actual closing cash, KRW)."""
    return {int(h): v for h, v in orjson.loads(raw).items()}


def cut(doc: dict[str, Any], horizon_days: int) -> dict[str, Any]:
    """The served body for a shorter horizon: the bands' first days, the flows and crossings
    inside them (the idle cash is the full horizon's: it says so)."""
    n = doc["horizon_days"]
    if horizon_days >= n:
        return doc
    last = day_date_of(doc["today"], horizon_days - 1)
    out = dict(doc)
    out["horizon_days"] = horizon_days
    out["bands"] = {
        name: {k: v[:horizon_days] for k, v in band.items()} for name, band in doc["bands"].items()
    }
    out["flows"] = [f for f in doc["flows"] if f["date"] <= last]
    out["crossings"] = {
        k: (c if c is not None and c["date"] <= last else None) for k, c in doc["crossings"].items()
    }
    return out


def day_date_of(today_iso: str, offset: int) -> str:
    return (dt.date.fromisoformat(today_iso) + dt.timedelta(days=offset)).isoformat()


class ForecastProjection:
    """Writes forecasts (and their accuracy) to Redis for the API."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys
        self._script = redis.register_script(_LUA)

    async def send(
        self, docs: Mapping[str, Mapping[str, bytes]], summaries: Mapping[str, bytes] | None = None
    ) -> None:
        """``docs``: per government, field -> encoded value; ``summaries``: per government, its
        encoded ``summary`` (in the same script: the summary never runs ahead of the forecast)."""
        if not docs and not summaries:
            return
        keys: list[str] = []
        argv: list[bytes | str | int] = []
        for org, fields in docs.items():
            keys.append(self.keys.forecast(org))
            argv.append(len(fields))
            for field, value in fields.items():
                argv += [field, value]
        if summaries:
            keys.append(self.keys.forecast_summary)
            argv.append(len(summaries))
            for org, value in summaries.items():
                argv += [org, value]
        await self._script(keys=keys, args=argv)

    async def send_accuracy(self, accuracy: Mapping[str, Mapping[str, Any]]) -> None:
        if accuracy:
            await self.redis.hset(
                self.keys.forecast_accuracy, mapping={org: orjson.dumps(a) for org, a in accuracy.items()}
            )
