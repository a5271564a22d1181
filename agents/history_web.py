"""The worker's history endpoints, on its (Faust) web server: the interactive-queries pattern.

The history lives where it is written, in the state of the worker that owns the government
(``state/history.py``, ``state/store.py``); the API asks that worker (``serving/history.py``
finds it from the heartbeats, which carry each worker's partitions and web address). A worker
answers only for the governments it owns and has caught up on; otherwise 503 with ``reason``
``not_owner`` or ``rebuilding``, and the API looks again or says so. Internal: bodies are
JSON with epoch-ms instants and Korean days (``kst_day``); the API shapes them for callers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from agents.ledger import LedgerWorker
from cashpos.calendar import kst_day
from state import layout as L
from state.history import listing, side_of_sid, statement_rows
from state.ledger import LAPSE_TAG, unscoped_id
from state.retention import answerable, is_retired, retired_through

PREFIX = "/cashpos/history"
MAX_LINES = 1000


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _owner(get: Callable[[], LedgerWorker | None], org: str) -> LedgerWorker:
    w = get()
    if w is None or org not in w.owned_orgs:
        raise Refused("not_owner", f"this worker does not own {org}")
    if not w.serves(org):
        raise Refused("rebuilding", f"{org}'s partition is being rebuilt on this worker")
    return w


KNOWN = "known"  # the ``axis`` of the known-at reads (record time); otherwise event time
RETIRED = "history_retired"  # the reason (and the API's problem type) of a retired year's refusal


def _retired_through(w: LedgerWorker, org: str) -> int | None:
    """The policy's, or what this store has already compacted if more (the setting was lowered
    once, then raised: those rows are gone, so their years stay answered as retired)."""
    through = retired_through(w.ledger.closed, org, w.history.retirer.online_years)
    marker = w.store.get(L.retired_key(org))
    done = None if marker is None else L.decode_int(marker)
    return max((y for y in (through, done) if y is not None), default=None)


def _retired_detail(org: str, fy: int, w: LedgerWorker) -> str:
    return (
        f"{org}'s fiscal year {fy} is retired (the {w.history.retirer.online_years} latest fiscal "
        "years stay online in full): its daily closings remain — ask at a day's end "
        "(23:59:59.999 Korea time) or for its statement"
    )


def positions_as_of(w: LedgerWorker, org: str, at_ms: int, axis: str | None = None) -> list[dict[str, Any]]:
    """Every position of ``org`` as of ``at_ms`` (event time), or as known at it (``axis`` =
    ``KNOWN``: record time): its days before (the daily totals kept in memory) and that day's
    rows up to the instant."""
    day = kst_day(at_ms)
    known = axis == KNOWN
    totals = w.history.known_totals_for(org) if known else w.history.totals_for(org)
    through = _retired_through(w, org)
    out = []
    for pk in sorted(pk for pk in w.ledger.positions if pk[0] == org):
        if is_retired(pk[2], through):  # its daily sums only (state/retention.py)
            if not answerable(at_ms, day in totals.days.get(pk, {})):
                raise Refused(RETIRED, _retired_detail(org, pk[2], w))
            cash, committed, events = totals.before(pk, day + 1)
        else:
            cash, committed, events = totals.before(pk, day)
            rows = w.store.known_rows_of_day(pk, day) if known else w.store.rows_of_day(pk, day)
            for row in rows:
                if row[0] <= at_ms:
                    cash, committed, events = cash + row[-2], committed + row[-1], events + 1
        if events:
            out.append(
                {
                    "account": pk[1],
                    "fiscal_year": pk[2],
                    "cash": cash,
                    "committed": committed,
                    "events": events,
                }
            )
    return out


def statements(
    w: LedgerWorker, org: str, first: int, last: int, account: str | None, fy: int | None = None
) -> list[dict[str, Any]]:
    rows = statement_rows(w.store.flows(org, account), first, last)
    return [
        {"day": day, "account": pk[1], "fiscal_year": pk[2], **cols}
        for day, pk, cols in rows
        if fy is None or pk[2] == fy
    ]


def government_statement(
    w: LedgerWorker, org: str, first: int, last: int, fy: int | None
) -> list[dict[str, Any]]:
    """One row per day, the government's accounts (of ``fy``, else of every year) summed: from
    the sums the history hook keeps per government and day (``state.statement``)."""
    return [{"day": day, **cols} for day, cols in w.history.government_days(org).rows(first, last, fy)]


def events(
    w: LedgerWorker,
    org: str,
    account: str,
    fy: int,
    at_ms: int | None,
    start: int,
    limit: int,
    from_ms: int | None = None,
) -> dict[str, Any]:
    pk = (org, account, fy)
    if is_retired(fy, _retired_through(w, org)):
        raise Refused(RETIRED, _retired_detail(org, fy, w))

    def raw(sid: str) -> bytes:
        entry = w.store.journal(org, sid)
        return b"" if entry is None else entry.raw

    lines = listing(w.store.rows_applied(pk), raw)
    if at_ms is not None or from_ms is not None:
        hi = at_ms if at_ms is not None else max((x.ms for x in lines), default=0)
        lo = from_ms if from_ms is not None else min((x.ms for x in lines), default=0)
        lines = [x for x in lines if lo <= x.ms <= hi]
    page = lines[start : start + limit]
    chain = w.chain(pk)
    out = []
    for x in page:
        entry = w.store.journal(org, x.sid)
        lapse = x.sid.startswith(LAPSE_TAG)
        item: dict[str, Any] = {
            "event_id": None if lapse else unscoped_id(x.sid),
            "side": side_of_sid(x.sid),
            "kind": entry.kind if entry is not None else None,
            "occurred_ms": x.ms,
            "cash": x.cash,
            "committed": x.committed,
            "cash_after": x.cash_after,
            "committed_after": x.committed_after,
            "running_hash": x.link.hex(),
        }
        if lapse and entry is not None:
            item["commitment_id"] = entry.commitment_id
        if entry is not None and entry.source is not None:
            item["source"] = dict(
                zip(("topic", "partition", "offset", "recorded_ms"), entry.source, strict=True)
            )
        out.append(item)
    nxt = start + limit if start + limit < len(lines) else None
    return {
        "lines": out,
        "total": len(lines),
        "next": nxt,
        "chain": None
        if chain is None
        else {"head": chain.head, "revenue": chain.revenue.hex(), "expenditure": chain.expenditure.hex()},
    }


def _int(q: Any, name: str, default: int | None = None) -> int | None:
    v = q.get(name)
    return default if v in (None, "") else int(v)


def install(app: faust.App, get: Callable[[], LedgerWorker | None]) -> None:
    """The history pages on the worker's web server."""

    def answer(view: View, body: Any, status: int = 200) -> Response:
        return view.bytes(orjson.dumps(body), content_type="application/json", status=status)

    async def guarded(view: View, org: str, fn: Callable[[LedgerWorker], Any]) -> Response:
        try:
            w = _owner(get, org)
            return answer(view, fn(w))
        except Refused as exc:
            return answer(
                view, {"reason": exc.reason, "detail": str(exc)}, 410 if exc.reason == RETIRED else 503
            )
        except ValueError as exc:
            return answer(view, {"reason": "invalid_request", "detail": str(exc)}, 400)

    @app.page(PREFIX + "/{org}/positions")
    async def as_of_page(self: View, request: Request, org: str) -> Response:
        at, axis = _int(request.query, "as_of"), request.query.get("axis")
        if at is None:
            return answer(self, {"reason": "invalid_request", "detail": "as_of (epoch ms) is required"}, 400)
        return await guarded(self, org, lambda w: {"positions": positions_as_of(w, org, at, axis)})

    @app.page(PREFIX + "/many/positions")
    async def as_of_many_page(self: View, request: Request) -> Response:
        """Several governments as of one instant (a province's or the nation's summary): those
        this worker serves; the others are listed as missing (the API asks their owners)."""
        at, axis = _int(request.query, "as_of"), request.query.get("axis")
        orgs = [o for o in (request.query.get("orgs") or "").split(",") if o]
        if at is None or not orgs:
            return answer(self, {"reason": "invalid_request", "detail": "as_of and orgs are required"}, 400)
        w = get()
        served = [o for o in orgs if w is not None and o in w.owned_orgs and w.serves(o)]
        try:
            body = {o: positions_as_of(w, o, at, axis) for o in served} if w is not None else {}
        except Refused as exc:
            return answer(self, {"reason": exc.reason, "detail": str(exc)}, 410)
        return answer(self, {"positions": body, "missing": [o for o in orgs if o not in body]})

    @app.page(PREFIX + "/{org}/statements")
    async def statements_page(self: View, request: Request, org: str) -> Response:
        q = request.query
        first, last = _int(q, "from"), _int(q, "to")
        if first is None or last is None or last < first:
            return answer(
                self, {"reason": "invalid_request", "detail": "from <= to (days) are required"}, 400
            )
        account = q.get("account") or None
        fy = _int(q, "fiscal_year")
        if q.get("by") == "government":
            return await guarded(self, org, lambda w: {"rows": government_statement(w, org, first, last, fy)})
        return await guarded(self, org, lambda w: {"rows": statements(w, org, first, last, account, fy)})

    @app.page(PREFIX + "/{org}/{account}/{fy}/events")
    async def events_page(self: View, request: Request, org: str, account: str, fy: str) -> Response:
        q = request.query
        start = _int(q, "start", 0) or 0
        limit = min(_int(q, "limit", 100) or 100, MAX_LINES)
        at, since = _int(q, "as_of"), _int(q, "from")
        return await guarded(self, org, lambda w: events(w, org, account, int(fy), at, start, limit, since))
