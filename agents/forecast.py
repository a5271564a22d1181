"""The forecast hook: every owned government's 90-day cash forecast, current within a second of
the event that changes it, in Redis for the API; and each day's forecast kept and held against
what happened.

Thin wiring of the pure parts: ``state.forecast_book`` (the open known flows, from the store and
then from each batch's changes), ``state.forecast`` (the engine), ``state.forecast_projection``
(the serving copy). The alert rules ask it for an account's forecast (``forecast_of``), so the
projected-shortfall alert and the served curve are one computation.

The government's "today" is its clock: the Korean day of its latest event (event time, as the
alert rules use), never the wall clock. A forecast is recomputed when the account's known flows
change or its day does; a batch that moved only cash shifts the curve it has (``rebase``).

Forecast against actual: when a government's clock leaves day D, the government's forecast of D
(its last one on that day) is kept as that day's snapshot and D's closing cash (the position
then) is the actual of every earlier snapshot that forecast D (``state.forecast.HORIZONS`` days
ahead). Both are stored in the batch's write. They are taken when the batch that moves the clock
past D is folded, moved back by that batch's cash and committed: the close is exact; the known
flows that batch changed (an order of D + 1, say) already count in D's snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import msgspec

from agents.hooks import FoldContext, HookHost
from cashpos.calendar import kst_day
from cashpos.metrics import ProcessorMetrics
from cashpos.names import RedisKeys
from cashpos.settings import Settings
from state import layout as L
from state.forecast import (
    HORIZON_DAYS,
    HORIZONS,
    Forecast,
    Snapshot,
    combine,
    errors,
    forecast,
    idle_cash,
    snapshot,
)
from state.forecast_book import ForecastBook, rebase
from state.forecast_learn import WINDOW_DAYS, Learned, day_flow, learn
from state.forecast_projection import GOVERNMENT, ForecastProjection, body, encode, summary
from state.history import DayFlows
from state.ledger import Position, PosKey

log = logging.getLogger("cashpos.forecast")

PUBLISH_EVERY_S = 0.5  # forecasts of changed accounts are recomputed at most this often
Account = tuple[str, str]  # (org, account)


class Accuracy(msgspec.Struct, array_like=True):
    """A government's forecast errors so far: per horizon (days ahead), the count, the sum of
    absolute errors and the sum of errors (forecast minus actual closing cash, KRW)."""

    horizons: dict[int, tuple[int, int, int]] = {}

    def add(self, errs: Mapping[int, int]) -> None:
        for h, e in errs.items():
            n, sa, se = self.horizons.get(h, (0, 0, 0))
            self.horizons[h] = (n + 1, sa + abs(e), se + e)

    def body(self) -> dict[str, object]:
        return {
            str(h): {"days": n, "mean_abs_error": sa // n, "mean_error": se // n}
            for h, (n, sa, se) in sorted(self.horizons.items())
            if n
        }


_enc = msgspec.msgpack.Encoder()
_dec_snapshot = msgspec.msgpack.Decoder(Snapshot)
_dec_accuracy = msgspec.msgpack.Decoder(Accuracy)


class ForecastHook:
    def __init__(self, settings: Settings, metrics: ProcessorMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = RedisKeys(settings.namespace)
        self.book = ForecastBook()
        self.host: HookHost | None = None
        self.projection: ForecastProjection | None = None
        self.floor_of: Callable[[str, str], int | None] = lambda _org, _acc: None
        self.clock: dict[str, int] = {}  # government -> its day (event time)
        self.closed: dict[str, dict[str, int]] = {}  # government -> side -> last closed year
        self.stamp: dict[Account, int] = {}  # bumped when an account's known flows change
        self.cache: dict[Account, tuple[int, int, Forecast]] = {}  # (today, stamp, forecast)
        self.learned: dict[Account, Learned] = {}
        self.dirty: set[Account] = set()
        self.government: dict[str, Forecast] = {}  # the latest government forecast, per government
        self.snapshots: dict[str, dict[int, Snapshot]] = {}
        self.accuracy: dict[str, Accuracy] = {}
        self._accuracy_dirty: set[str] = set()
        self._last_publish = 0.0
        # (government, account or GOVERNMENT) whose forecast is in Redis: a first one is written
        # at once (an account the API shows must not wait for the throttle), and a government
        # whose forecasts vanished from Redis (a flush, a restart) is written again
        self.written: set[Account] = set()

    # -- assignment ---------------------------------------------------------------------------

    async def on_assigned(self, host: HookHost, orgs: list[str]) -> None:
        self.host = host
        if self.projection is None:
            self.projection = ForecastProjection(host.redis, self.keys)
        store = host.store
        last: dict[str, int] = {}
        for (org, _acc, _fy), p in host.positions.items():
            if p.last_event_ms > last.get(org, -1):
                last[org] = p.last_event_ms
        for org in orgs:
            self.book.load(org, store.commitments(org), store.orders(org), store.schedules(org))
            self.closed[org] = store.closes(org)
            if org in last:
                self.clock[org] = kst_day(last[org])
            self.snapshots[org] = {
                s.day: s
                for _k, v in store.scan(L.forecast_snapshots_prefix(org))
                for s in [_dec_snapshot.decode(v)]
            }
            raw = store.get(L.forecast_accuracy_key(org))
            self.accuracy[org] = _dec_accuracy.decode(raw) if raw else Accuracy()
            self._accuracy_dirty.add(org)
            self.dirty |= {(org, acc) for acc in self.book.accounts(org, host.positions, self._closed(org))}

    def on_revoked(self, orgs: set[str]) -> None:
        self.book.drop(orgs)
        for org in orgs:
            self.clock.pop(org, None)
            self.closed.pop(org, None)
            self.government.pop(org, None)
            self.snapshots.pop(org, None)
            self.accuracy.pop(org, None)
        self.written = {a for a in self.written if a[0] not in orgs}
        self.stamp = {k: v for k, v in self.stamp.items() if k[0] not in orgs}
        self.cache = {k: v for k, v in self.cache.items() if k[0] not in orgs}
        self.learned = {k: v for k, v in self.learned.items() if k[0] not in orgs}
        self.dirty = {a for a in self.dirty if a[0] not in orgs}

    def _closed(self, org: str) -> int:
        """The last fiscal year both sides closed: its positions are final."""
        sides = self.closed.get(org, {})
        return min(sides.values()) if len(sides) == 2 else -1

    # -- the batch ----------------------------------------------------------------------------

    def after_fold(self, batch: FoldContext) -> None:
        changes = batch.changes
        for (org, side), year in changes.closed.items():
            self.closed.setdefault(org, {})[side] = year
        touched = self.book.apply(changes)
        known = {(o, c.account) for (o, _cid), c in changes.commitments.items()}
        known |= {(o, x.account) for (o, _oid), x in changes.orders.items()}
        known |= {(o, x.account) for (o, _sid), x in changes.schedules.items()}
        for a in known:
            self.stamp[a] = self.stamp.get(a, 0) + 1
        self.dirty |= touched
        latest: dict[str, int] = {}
        moved: dict[str, list[int]] = {}  # the batch's cash and committed change, per government
        for (org, _acc, _fy), rows in changes.index.items():
            ms = max(r[0] for r in rows)
            if ms > latest.get(org, -1):
                latest[org] = ms
            m = moved.setdefault(org, [0, 0])
            for r in rows:
                m[0] += r[2]
                m[1] += r[3]
        records: list[tuple[bytes, bytes]] = []
        for org, ms in latest.items():
            if org not in self.book.orgs:
                continue
            day = kst_day(ms)
            before = self.clock.get(org)
            if before is not None and day <= before:
                continue
            if before is not None:  # the forecast of the day it leaves, as it stood before the batch
                g = self._government_forecast(org, batch.positions)
                if g is not None:
                    dc, dm = moved[org]
                    records += self._day_closed(org, before, rebase(g, g.cash - dc, g.committed - dm))
            self.clock[org] = day
            self.dirty |= {(org, acc) for acc in self.book.accounts(org, batch.positions, self._closed(org))}
        batch.write(records)

    def _day_closed(self, org: str, day: int, f: Forecast) -> list[tuple[bytes, bytes]]:
        """The government's clock left ``day``: keep its forecast of it (``f``), score earlier
        ones against its cash now."""
        snaps = self.snapshots.setdefault(org, {})
        snaps[day] = snapshot(f)
        acc = self.accuracy.setdefault(org, Accuracy())
        for h in HORIZONS:
            s = snaps.get(day - h)
            if s is not None:
                errs = errors(s, {day: f.cash}, (h,))
                acc.add(errs)
                if self.metrics is not None:
                    for hh, e in errs.items():
                        self.metrics.forecast_abs_error.labels(str(hh)).inc(abs(e))
                        self.metrics.forecast_errors.labels(str(hh)).inc()
        self._accuracy_dirty.add(org)
        out = [(L.forecast_snapshot_key(org, day), _enc.encode(snaps[day]))]
        out.append((L.forecast_accuracy_key(org), _enc.encode(acc)))
        for old in [d for d in snaps if d < day - max(HORIZONS)]:
            del snaps[old]
            out.append((L.forecast_snapshot_key(org, old), b""))
        return out

    async def after_commit(self) -> None:
        first = any(a not in self.written for a in self.dirty)
        if first or time.monotonic() - self._last_publish >= PUBLISH_EVERY_S:
            await self.publish()

    async def housekeeping(self) -> None:
        await self._rewrite_lost()
        # a floor moved without an event nor an alert evaluation: its crossings are forecast again
        self.dirty |= {k for k, (_d, _s, f) in self.cache.items() if f.floor != self.floor_of(*k)}
        await self.publish()

    async def _rewrite_lost(self) -> None:
        """Governments whose forecasts Redis no longer holds (their summary is the marker: it is
        written with them, in one script) are forecast again."""
        if self.host is None or not self.written:
            return
        try:
            have = {
                k.decode() if isinstance(k, bytes) else k
                for k in await self.host.redis.hkeys(self.keys.forecast_summary)
            }
        except Exception as exc:  # noqa: BLE001 - Redis down: checked again at the next housekeeping
            log.debug("forecast check skipped: %r", exc)
            return
        lost = {org for org, field in self.written if field == GOVERNMENT and org not in have}
        if lost:
            log.info("forecasts of %d governments missing from Redis: writing them again", len(lost))
            self.written = {a for a in self.written if a[0] not in lost}
            self._accuracy_dirty |= lost & set(self.accuracy)
            for org in lost:
                self.dirty |= {
                    (org, acc) for acc in self.book.accounts(org, self.host.positions, self._closed(org))
                }

    async def stop(self) -> None:
        return None

    # -- the forecasts ------------------------------------------------------------------------

    def forecast_of(self, org: str, account: str, positions: Mapping[PosKey, Position]) -> Forecast | None:
        """The account's forecast on its government's day (None: the government is not owned
        or has no day yet). Recomputed only when its known flows or its day changed."""
        today = self.clock.get(org)
        if today is None or org not in self.book.orgs:
            return None
        key = (org, account)
        stamp = self.stamp.get(key, 0)
        closed = self._closed(org)
        cached = self.cache.get(key)
        inputs = self.book.inputs(org, account, positions, closed)
        floor = self.floor_of(org, account)
        # the floor is an input too: a threshold override (or a new day's floor) must not be
        # served with the crossings of the old one
        if cached is not None and cached[0] == today and cached[1] == stamp and cached[2].floor == floor:
            f = rebase(cached[2], inputs.cash, inputs.committed)
        else:
            if cached is not None and cached[2].floor != floor:
                self.dirty.add(key)  # asked by the alert rules (a new threshold): served too
            lr = self.learned.get(key)
            if lr is None or lr.today != today:
                lr = self.learned[key] = self._learn(org, account, today)
            f = forecast(msgspec.structs.replace(inputs, learned=lr), today, HORIZON_DAYS, floor)
        self.cache[key] = (today, stamp, f)
        return f

    def account_forecast(self, org: str, account: str) -> Forecast | None:
        """``forecast_of`` on the worker's positions (the alert rules' view)."""
        return None if self.host is None else self.forecast_of(org, account, self.host.positions)

    def _learn(self, org: str, account: str, today: int) -> Learned:
        """What the account's own past says (its daily flows over every fiscal year)."""
        assert self.host is not None
        days: dict[int, DayFlows] = {}
        first: int | None = None
        start = today - WINDOW_DAYS - 1
        for _pk, day, f in self.host.store.flows(org, account):
            if first is None or day < first:
                first = day
            if start <= day < today:
                d = days.get(day)
                if d is None:
                    days[day] = f
                else:
                    d = days[day] = msgspec.structs.replace(d)
                    d.add(f)
        history = [day_flow(day, f) for day, f in sorted(days.items())]
        # the account's first day is partial (its opening balance): learned from the day after
        return learn(tuple(history), today, None if first is None else first + 1)

    async def publish(self) -> None:
        """Recompute the changed accounts' forecasts and their governments', and write them."""
        self._last_publish = time.monotonic()
        if self.host is None or self.projection is None:
            return
        positions = self.host.positions
        dirty, self.dirty = self.dirty, set()
        docs: dict[str, dict[str, bytes]] = {}
        summaries: dict[str, bytes] = {}
        orgs = sorted({org for org, _acc in dirty})
        for org in orgs:
            if org not in self.book.orgs or org not in self.clock:
                continue
            version = self._version(org, positions)
            fields: dict[str, bytes] = {}
            for org2, acc in sorted(dirty):
                if org2 != org:
                    continue
                f = self.forecast_of(org, acc, positions)
                if f is not None:
                    fields[acc] = encode(version, body(org, f, idle_cash(f, f.floor or 0)))
            g = self._government_forecast(org, positions)
            if g is not None:
                idle = idle_cash(g, g.floor or 0)
                fields[GOVERNMENT] = encode(version, body(org, g, idle))
                summaries[org] = encode(version, summary(org, g, idle))
            docs[org] = fields
        try:
            await self.projection.send(docs, summaries)
            self.written |= {(org, field) for org, fields in docs.items() for field in fields}
            if self._accuracy_dirty:
                scores = {
                    org: self.accuracy[org].body() for org in self._accuracy_dirty if org in self.accuracy
                }
                await self.projection.send_accuracy(scores)
                self._accuracy_dirty.clear()
        except Exception as exc:  # noqa: BLE001 - Redis down: computed again at the next publish
            log.warning("forecast publish failed: %s", exc)
            self.dirty |= dirty

    def _government_forecast(self, org: str, positions: Mapping[PosKey, Position]) -> Forecast | None:
        """The government's forecast: its accounts' added up (floor: theirs added up)."""
        parts = [
            f
            for acc in self.book.accounts(org, positions, self._closed(org))
            if (f := self.forecast_of(org, acc, positions)) is not None
        ]
        if not parts:
            return None
        floor = sum(p.floor or 0 for p in parts)
        g = self.government[org] = combine(parts, floor or None)
        return g

    def _version(self, org: str, positions: Mapping[PosKey, Position]) -> int:
        """Grows with the government's day and with every change of its positions."""
        return self.clock[org] * 10**12 + self.book.version(org, positions)
