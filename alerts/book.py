"""The alert book: the rules run over the ledger's batches for the governments a worker owns.

It is fed the ledger's batches (``apply``) and the clocks its caller passes in; it reads neither
the clock nor the consumer. Money rules run on event time: the position and government clocks of
docs/alerts.md (Clocks). Its state, the alerts' lifecycle and its records are
``alerts.lifecycle``'s; the decisions are ``alerts.rules``' and ``alerts.operational``'s.
"""

from __future__ import annotations

import bisect
import datetime as dt
import operator
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Final

from alerts import operational, rules
from alerts.config import Override
from alerts.history import AccountHistory, PosState, Row, Special, account_floor, specials
from alerts.lifecycle import Lifecycle, Records
from alerts.model import (
    ACCOUNT_RULES,
    PROJECTED,
    SEVERITY,
    SHORTFALL,
    STALE,
    YEAR_END,
    Alert,
    AlertChange,
    OpenCommitment,
)
from cashpos.calendar import date_day, kst_day
from cashpos.names import CLOSE_KIND
from state import layout
from state.forecast import Forecast
from state.ledger import Changes, Journal, Position, PosKey

# scan(prefix, start) -> (key, value) pairs with key >= start (or prefix) and key.startswith(prefix)
Scan = Callable[[bytes, bytes | None], Iterable[tuple[bytes, bytes]]]
# A position to evaluate: the batch's index rows for it (None: none, evaluated for the
# government's new day or a changed commitment) and the event (ms, scoped id) it is attributed to
Work = tuple[list[Row] | None, int, str | None]
CLOSED: Final = "fiscal_year_closed"  # the resolution of every alert of a year at its close
_first = operator.itemgetter(0)


class AlertBook(Lifecycle):
    """The alerts of the governments a worker owns: loaded from their records (``load_org``),
    fed each batch (``apply``), held positions judged once settled (``release``), thresholds
    changed (``set_overrides``), the operational rules run (``check_stale``, ``check_lag``)."""

    # An account's forecast (org, account) on its government's day, for rule 3: the worker's
    # forecast hook (``agents.forecast``); None: rule 3 projects from commitments and trend.
    forecast_of: Callable[[str, str], Forecast | None] | None = None
    _changes: Changes | None = None  # the batch's (``apply``), for rule 3's attribution

    def load_org(
        self, org: str, positions: Mapping[PosKey, Position], scan: Scan, seed: Iterable[Alert] = ()
    ) -> Records:
        """Load one government's alert state (its records, through ``scan``) next to its
        positions (those of ``org``). Returns records to write.

        Without alert state on disk for ``org`` (first start with alerting, or a worker taking
        over a partition it never owned), the open-commitment index is built from the ledger's
        commitments and the open alerts are taken from ``seed`` (the serving copy's open alerts
        of ``org``, i.e. the previous owner's), so that the new owner continues them instead of
        raising them again; its positions are evaluated once it has caught up (``hold``)."""
        self.drop_orgs({org})
        o = self._org(org)
        for k, v in scan(layout.alert_pos_prefix(org), None):
            self._new_pos(layout.parse_alert_pos_key(k), layout.decode_alert_pos(v))
        for pk, p in positions.items():
            if pk[0] != org:
                continue
            st = self.positions.get(pk) or self._new_pos(pk)
            if p.last_event_ms:
                st.clock = kst_day(p.last_event_ms)
                if st.clock > o.clock:
                    o.clock, o.clock_ms = st.clock, p.last_event_ms
        for pk in list(o.pks):
            st = self.positions[pk]
            start = st.clock - st.cfg.outflow_days - 1
            prefix = layout.day_prefix(pk)
            for k, v in scan(prefix, layout.day_start(prefix, max(start, 0))):
                st.days[layout.day_of_key(prefix, k)] = list(layout.decode_day(v))
        out: Records = []
        found = any(True for _ in scan(layout.marker_key(org), None))
        for a in seed:
            if a.org_code != org or a.state == "resolved":
                continue
            if a.rule == STALE:
                if not found:
                    o.rec.stale = a
                    self._dirty_orgs.add(org)
                continue
            if a.account is None or a.fiscal_year is None or a.rule not in SEVERITY and a.rule != YEAR_END:
                continue
            pk = (org, a.account, a.fiscal_year)
            st = self.positions.get(pk) or self._new_pos(pk)
            if not found:
                self._adopt(st, a)
                continue
            cur = st.rec.open.get(a.rule)
            if cur is None or cur.id != a.id:
                # published after this state was last written (a crash lost the rest): a raise
                # of the same rule continues it; see ``_reconcile``
                self.published.setdefault(pk, {})[a.rule] = a
        if found:
            for k, v in scan(layout.open_prefix(org), None):
                if v:  # an empty value: a closed commitment of an older store
                    oc = layout.decode_open(v)
                    self._set_open(org, layout.open_cid(k), oc)
        else:  # first start with alerting on this state: index the ledger's open commitments
            for k, v in scan(layout.commitments_prefix(org), None):
                c = layout.decode_commitment(v)
                if c.open > 0 and not c.reversed:
                    cid = layout.commitment_id(k)
                    due = date_day(dt.date.fromisoformat(c.due_date)) if c.due_date else -1
                    oc = OpenCommitment(c.account, c.fiscal_year, c.open, due, c.due_date)
                    self._set_open(org, cid, oc)
                    out.append((layout.open_key(org, cid), layout.encode_alert_record(oc)))
            out.append((layout.marker_key(org), layout.MARKER))
        for _k, v in scan(layout.org_key(org), None):
            o.rec = layout.decode_org_record(v)
        for _k, v in scan(layout.closes_prefix(org), None):  # the ledger's, either side's
            self.closed[org] = max(self.closed.get(org, 0), layout.decode_int(v))
        for pk in o.pks:
            if self.positions[pk].rec.held:
                self.held.add(pk)
        return out

    def load_worker(self, scan: Scan) -> None:
        for _k, v in scan(layout.worker_key(self.worker_id), None):
            self.worker = layout.decode_worker_record(v)

    def drop_orgs(self, orgs: Iterable[str]) -> None:
        for org in orgs:
            o = self.orgs.pop(org, None)
            if o is None:
                continue
            for pk in o.pks:
                self.positions.pop(pk, None)
                self._dirty.discard(pk)
                self.held.discard(pk)
                self.published.pop(pk, None)
                self.accounts.pop((org, pk[1]), None)
                self._account_floors.pop((org, pk[1]), None)
            self.closed.pop(org, None)
            self._dirty_orgs.discard(org)

    def apply(
        self, changes: Changes, positions: Mapping[PosKey, Position], hold: Container[str] = ()
    ) -> list[AlertChange]:
        """Update from one batch of the ledger (its ``Changes`` and the positions after it).
        O(changed positions + index rows); a new day re-evaluates the government's positions.

        ``hold``: governments whose partition is not *settled* (being rebuilt from the book of
        record, or far behind): their history is updated but their rules are evaluated only when
        ``release`` is called for them, on the state they have then. While a partition catches
        up, its two input topics are read independently, and a state in between (payments folded
        before the receipts that preceded them) is not one that existed."""
        out: list[AlertChange] = []
        self._journal = changes.journal
        self._commitments = changes.commitments
        self._changes = changes
        extra: set[PosKey] = set()
        for (org, cid), c in changes.commitments.items():
            pk = self._commitment(org, cid, c).pk
            if pk not in changes.index:
                extra.add(pk)
        last: dict[str, tuple[int, str | None]] = {}  # org -> (latest occurred ms, an event id)
        sget = specials(changes).get
        book = self.positions
        work: dict[PosKey, Work] = {}
        eid: str | None  # the event a position's evaluation is attributed to (None: none)
        held_orgs: Container[str] = ()
        if hold:
            held_orgs = {org for org, _a, _f in changes.index if org in hold}
            held_orgs |= {org for org, _c in changes.commitments if org in hold}
        for pk, rows in changes.index.items():
            st = book.get(pk) or self._new_pos(pk)
            p = positions[pk]
            org = pk[0]
            self._walk(st, rows, sget(pk))
            ms, eid = rows[-1][:2]
            work[pk] = (rows, ms, eid)
            cur = last.get(org)
            if cur is None or p.last_event_ms > cur[0]:
                last[org] = (p.last_event_ms, eid)
        if changes.closed:
            self._closes(changes, held_orgs, out)
        # government clocks; a new day re-evaluates every position of the government
        for org, (ms, _eid) in last.items():
            o = self._org(org)
            d = kst_day(ms)
            if d > o.clock:
                o.clock, o.clock_ms = d, ms
                extra |= o.pks
            elif ms > o.clock_ms and d == o.clock:
                o.clock_ms = ms
        for pk in extra:
            xp = positions.get(pk)
            if pk in book and xp is not None and pk not in work:
                ms, eid = last.get(pk[0], (xp.last_event_ms, None))
                work[pk] = (None, ms, eid)
        orgs = self.orgs
        years = self.accounts
        closed = self.closed
        accounts: dict[tuple[str, str], dict[PosKey, Work]] = {}
        for pk, w in work.items():
            org = pk[0]
            if org in held_orgs:
                self._hold(book[pk])
                continue
            if len(years[(org, pk[1])]) > 1:
                members = accounts.get((org, pk[1]))
                if members is None:
                    members = accounts[(org, pk[1])] = {}
                members[pk] = w
                continue
            # the common case: the account has one fiscal year, its position is the account
            st = book[pk]
            if st.cfg.enabled and pk[2] > closed.get(org, 0):
                p = positions[pk]
                today = orgs[org].clock
                self._one(st, p, w, today, out, True)
                self._own(st, p, w, today, out, True)
        for (org, acc), members in accounts.items():
            self._judge(org, acc, members, positions, orgs[org].clock, out, True)
        return out

    def release(
        self, positions: Mapping[PosKey, Position], settled: Callable[[str], bool]
    ) -> list[AlertChange]:
        """Evaluate the held positions of the governments that are ``settled`` now, on their
        current state (attributed to their latest event time)."""
        out: list[AlertChange] = []
        if not self.held:
            return out
        self._journal = {}
        self._changes = None
        accounts: dict[tuple[str, str], dict[PosKey, Work]] = {}
        for pk in sorted(pk for pk in self.held if settled(pk[0])):
            self.held.discard(pk)
            st = self.positions.get(pk)
            p = positions.get(pk)
            if st is None:
                continue
            st.rec.held = False
            self._dirty.add(pk)
            if p is None or not st.cfg.enabled:
                continue
            st.refresh()
            accounts.setdefault((pk[0], pk[1]), {})[pk] = (None, p.last_event_ms, None)
        for org in sorted({org for org, _acc in accounts}):
            o = self.orgs[org]
            self._sweep_closed(org, o.clock_ms, None, out)
        for (org, acc), members in accounts.items():
            self._judge(org, acc, members, positions, self.orgs[org].clock, out, False)
        return out

    def _closes(self, changes: Changes, held_orgs: Container[str], out: list[AlertChange]) -> None:
        """A year's close in this batch (either topic's copy): every alert of the government's
        positions of that year (and before) is resolved, attributed to the close."""
        at: dict[str, tuple[int, str]] = {}
        for (org, _side), year in changes.closed.items():
            if year > self.closed.get(org, 0):
                self.closed[org] = year
                at[org] = (1 << 62, "")
        if not at:
            return
        for (org, sid), j in changes.journal.items():
            if org in at and isinstance(j, Journal) and j.kind == CLOSE_KIND:
                at[org] = min(at[org], (j.occurred_ms, sid))
        for org, (ms, sid) in at.items():
            if org not in held_orgs:  # else: on release
                self._sweep_closed(org, ms, sid, out)

    def _sweep_closed(self, org: str, ms: int, eid: str | None, out: list[AlertChange]) -> None:
        """Resolve the alerts still open on the closed years' positions of ``org``."""
        year = self.closed.get(org)
        o = self.orgs.get(org)
        if year is None or o is None:
            return
        for pk in sorted(pk for pk in o.pks if pk[2] <= year):
            st = self.positions[pk]
            if st.rec.open or pk in self.published:
                self._close_all(st, ms, eid, out, CLOSED)

    def _judge(
        self,
        org: str,
        acc: str,
        members: Mapping[PosKey, Work],
        positions: Mapping[PosKey, Position],
        today: int,
        out: list[AlertChange],
        batch: bool,
    ) -> None:
        """Rules 1-4 for the ``members`` (positions) of one account of ``org``: after a batch
        (``batch``: their rows are the batch's; None, no rows: evaluated for the government's
        new day or a changed commitment) or as they are (release, changed thresholds).

        Rules 1-3 judge the account: its one position, or, while more than one fiscal year is
        in play (a position not zero, or with history inside the outflow window), every year's
        positions added up, the alerts kept on the newest year (docs/alerts.md, "The fiscal
        year"). Rule 4 judges each year's own commitments. A closed year raises nothing."""
        book = self.positions
        closed = self.closed.get(org, 0)
        years: list[tuple[PosState, Position]] = []  # the account's positions, oldest first
        day = -1  # the account's clock
        for st in self.accounts.get((org, acc), ()):
            p = positions.get(st.pk)
            if p is not None:
                years.append((st, p))
                day = max(day, st.clock)
        if not years:
            return
        anchor, ap = years[-1]
        if anchor.pk[2] <= closed or not anchor.cfg.enabled:
            return
        older = years[:-1]
        play: list[tuple[PosState, Position]] = []
        if older:
            cut = day - anchor.cfg.outflow_days
            for st, p in older:
                if p.cash or p.committed or st.clock >= cut:
                    play.append((st, p))
                else:
                    w = members.get(st.pk)
                    if w is not None and w[0]:
                        play.append((st, p))
        if not play:
            w = members.get(anchor.pk)
            if w is not None:
                self._one(anchor, ap, w, today, out, batch, older)
        else:
            play.append((anchor, ap))
            for st, _p in play:
                if st.pk in members:
                    self._whole(play, older, members, today, out, batch)
                    break
        for pk, w in members.items():
            if pk[2] > closed:
                self._own(book[pk], positions[pk], w, today, out, batch)

    def _one(
        self,
        st: PosState,
        p: Position,
        w: Work,
        today: int,
        out: list[AlertChange],
        batch: bool,
        older: list[tuple[PosState, Position]] | None = None,
    ) -> None:
        """Rules 1-3 on an account whose one fiscal year in play is ``st`` (``older``: the
        account's older years, out of play)."""
        rows, ms, eid = w
        if st.floor_day != st.clock:
            st.refresh()
        decisions: list[rules.Decision] = []
        if rows is not None or not batch:
            decisions += rules.available(st, p, rows or ())
        decisions += self._project(st, (st,), p, today, ms, eid, rows, _shortfall(st, decisions))
        if older:
            self._account(st, older, decisions, None, ms, eid, out)
        else:
            self._apply(st, decisions, out)

    def _own(
        self, st: PosState, p: Position, w: Work, today: int, out: list[AlertChange], batch: bool
    ) -> None:
        """Rule 4 on a position's own commitments; and what the serving copy shows open for it."""
        rows, ms, eid = w
        if today >= st.ye_from or YEAR_END in st.rec.open:
            self._apply(st, rules.year_end(st, p, today, ms, eid), out)
        if self.published and st.pk in self.published and (rows is not None or not batch):
            self._reconcile(st, p, ms, out)

    def _whole(
        self,
        play: list[tuple[PosState, Position]],
        older: list[tuple[PosState, Position]],
        members: Mapping[PosKey, Work],
        today: int,
        out: list[AlertChange],
        batch: bool,
    ) -> None:
        """Rules 1-3 on the account as a whole: ``play``, its years in play (the newest last,
        which carries the alerts), added up: cash and committed, the batch's rows of every year
        in time order, the history and the open commitments of every year."""
        anchor, ap = play[-1]
        cash = committed = last_ms = 0
        day = -1
        rows: list[Row] = []
        ms, eid = -1, None
        sts: list[PosState] = []
        years: list[int] = []
        for st, p in play:
            cash += p.cash
            committed += p.committed
            last_ms = max(last_ms, p.last_event_ms)
            day = max(day, st.clock)
            sts.append(st)
            years.append(st.pk[2])
            w = members.get(st.pk)
            if w is not None:
                if w[0]:
                    rows += w[0]
                if w[1] > ms:
                    ms, eid = w[1], w[2]
        if rows:
            rows.sort(key=_first)
            ms, eid = rows[-1][:2]
        handover = (ms, eid)
        w = members.get(anchor.pk)
        if w is not None and w[0] and ap.version == len(w[0]):
            # the newest year's position is new in this batch: what the account shows is
            # attributed no earlier than its first event (as a batch cut there would)
            first = min(r[0] for r in w[0])
            rows = rows[bisect.bisect_left(rows, first, key=_first) :]
            handover = rows[0][:2]
        key = (tuple(years), day)
        cached = self._account_floors.get(anchor.pk[:2])
        if cached is None or cached[0] != key:
            cached = (key, account_floor(sts, day, anchor.cfg))
            self._account_floors[anchor.pk[:2]] = cached
        view = AccountHistory(anchor, sts, cached[1])
        total = Position(cash, committed, 0, last_ms)
        decisions: list[rules.Decision] = []
        if rows or not batch:
            decisions += rules.available(view, total, rows)
        sf = _shortfall(anchor, decisions)
        decisions += self._project(view, sts, total, today, ms, eid, rows or None, sf)
        self._account(anchor, older, decisions, years, handover[0], handover[1], out)

    def _account(
        self,
        anchor: PosState,
        older: list[tuple[PosState, Position]],
        decisions: list[rules.Decision],
        years: list[int] | None,
        ms: int,
        eid: str | None,
        out: list[AlertChange],
    ) -> None:
        """Apply rules 1-3's ``decisions`` to the account's newest year (``years``: the years
        they add up, None: its own) and resolve what an ``older`` year of the account still has
        open of those rules: ``superseded`` when the newest year has it open, else ``covered``
        (the account as a whole covers it), attributed to ``ms``/``eid``."""
        for d in decisions:
            d.fields["fiscal_years"] = years
        stale = [st for st, _p in older if st.rec.open and any(r in st.rec.open for r in ACCOUNT_RULES)]
        if not stale:
            self._apply(anchor, decisions, out)
            return
        after: list[AlertChange] = []
        self._apply(anchor, decisions, after)
        for st in stale:
            for rule in ACCOUNT_RULES:
                a = st.rec.open.pop(rule, None)
                if a is not None:
                    reason = "superseded" if rule in anchor.rec.open else "covered"
                    self._close(st, a, ms, eid, out, reason)
        out += after

    def _walk(self, st: PosState, rows: list[Row], special: list[Special] | None) -> None:
        """The daily buckets of a position after a batch's rows."""
        fresh, moved_first, days = st.fold_rows(rows, self._journal, special)
        if moved_first:
            self._dirty.add(st.pk)
        for d in days:
            self._commit_records[layout.day_key(st.pk, d)] = layout.encode_day(st.days[d])
        if not fresh:
            st.refresh()
            self._account_floors.pop(st.pk[:2], None)

    def _project(
        self,
        h: rules.History,
        members: Sequence[PosState],
        p: Position,
        today: int,
        ms: int,
        eid: str | None,
        rows: list[Row] | None = None,
        shortfall: tuple[bool, rules.Decision | None] = (False, None),
    ) -> list[rules.Decision]:
        """Rule 3 (``members``: the positions whose open commitments ``h`` reads). An actual
        shortfall (``shortfall``: whether one stands after rules 1-2, and their decision on it)
        inhibits it, as Alertmanager's inhibition rules keep one condition from alerting twice:
        the projection is not raised, and one open is resolved (``inhibited``) where the
        shortfall was raised. Once the shortfall resolves, the projection may be raised again,
        attributed no earlier than that resolution."""
        current = h.rec.open.get(PROJECTED)
        short, sf = shortfall
        if short:
            if current is None:
                return []
            if isinstance(sf, rules.Raise) and sf.ms >= current.raised_ms:
                # at the event that raised the shortfall, with the figures then
                figures = {k: sf.fields[k] for k in ("cash", "committed", "available")}
                return [rules.Resolve(PROJECTED, sf.ms, sf.eid, "inhibited", figures)]
            return [rules.Resolve(PROJECTED, ms, eid, "inhibited", rules.balance(p))]
        end = today + h.cfg.horizon_days
        for st in members:
            if st.win_end != end:
                st.window(end)
        fc = self.forecast_of(h.pk[0], h.pk[1]) if self.forecast_of is not None else None
        batch = None
        if rows:
            ch = self._changes
            batch = rules.Batch(
                rows,
                self._journal,
                self._commitments,
                {} if ch is None else ch.orders,
                {} if ch is None else ch.schedules,
                (sf.ms, sf.eid) if isinstance(sf, rules.Resolve) else None,
            )
        return rules.projected(h, p, today, ms, eid, current, batch, fc)

    def set_overrides(
        self, overrides: Mapping[tuple[str, str], Override], positions: Mapping[PosKey, Position]
    ) -> list[AlertChange]:
        """New ``PUT /v1/thresholds`` overrides: re-evaluate the positions they touch now."""
        changed = self.resolver.set_overrides(overrides)
        out: list[AlertChange] = []
        if not changed:
            return out
        orgs_all = {org for org, acc in changed if acc == "*"}
        accounts: dict[tuple[str, str], dict[PosKey, Work]] = {}
        for pk, st in self.positions.items():
            if pk[0] not in orgs_all and (pk[0], pk[1]) not in changed:
                continue
            st.configure(self.resolver.get(pk[0], pk[1]))
            self._account_floors.pop(pk[:2], None)
            p = positions.get(pk)
            if p is None or st.clock < 0:
                continue
            ms = p.last_event_ms
            if not st.cfg.enabled:
                for rule in list(st.rec.open):
                    self._close(st, st.rec.open.pop(rule), ms, None, out, "disabled")
                continue
            st.refresh()
            if pk in self.held:
                continue  # evaluated on release
            accounts.setdefault((pk[0], pk[1]), {})[pk] = (None, ms, None)
        for (org, acc), members in accounts.items():
            self._judge(org, acc, members, positions, self.orgs[org].clock, out, False)
        return out

    def check_stale(
        self, now_ms: int, last_applied: Mapping[str, int], orgs: Iterable[str]
    ) -> list[AlertChange]:
        """Rule 5a for ``orgs``: ``last_applied`` is the wall time (ms) of the latest event applied
        per government (or of the worker taking it over)."""
        out: list[AlertChange] = []
        for org in orgs:
            o = self._org(org)
            la = last_applied.get(org)
            if la is None:
                continue
            a = operational.stale(o.rec, org, la, now_ms, self.resolver.get(org, "*"))
            if a is None:
                continue
            if a.state == "resolved":
                o.rec.stale = None
            else:
                o.rec.stale, o.rec.stale_seq = a, a.seq
            self._dirty_orgs.add(org)
            self._emit("resolved" if a.state == "resolved" else "raised", a, out)
        return out

    def check_lag(self, now_ms: int, lag_records: int) -> list[AlertChange]:
        """Rule 5b: the worker's consumer lag (records behind the high watermarks)."""
        w = self.worker
        out: list[AlertChange] = []
        above, a = operational.lag(w, self.worker_id, now_ms, lag_records, self.config.operational)
        if above != w.above_since_ms:
            w.above_since_ms = above
            self._dirty_worker = True
        if a is not None:
            if a.state == "resolved":
                w.lag = None
            else:
                w.lag, w.lag_seq = a, a.seq
            self._dirty_worker = True
            self._emit("resolved" if a.state == "resolved" else "raised", a, out)
        return out


def _shortfall(st: PosState, decisions: Sequence[rules.Decision]) -> tuple[bool, rules.Decision | None]:
    """Whether an actual shortfall stands after ``decisions`` (rules 1-2 of this evaluation),
    and their decision on it (its raise or its resolution), if any."""
    short, last = SHORTFALL in st.rec.open, None
    for d in decisions:
        if d.rule == SHORTFALL and not isinstance(d, rules.Update):
            short, last = isinstance(d, rules.Raise), d
    return short, last
