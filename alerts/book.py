"""The alert book: the rules run over the ledger's batches for the governments a worker owns.

It is fed the ledger's batches (``apply``) and the clocks its caller passes in; it reads neither
the clock nor the consumer. Money rules run on event time: the position and government clocks of
docs/alerts.md (Clocks). Its state, the alerts' lifecycle and its records are
``alerts.lifecycle``'s; the decisions are ``alerts.rules``' and ``alerts.operational``'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Container, Iterable, Mapping

from alerts import operational, rules
from alerts.config import Override
from alerts.history import PosState, Row, Special, specials
from alerts.lifecycle import Lifecycle, Records
from alerts.model import PROJECTED, SEVERITY, STALE, YEAR_END, Alert, AlertChange, OpenCommitment
from cashpos.calendar import date_day, kst_day
from state import layout
from state.ledger import Changes, Position, PosKey

# scan(prefix, start) -> (key, value) pairs with key >= start (or prefix) and key.startswith(prefix)
Scan = Callable[[bytes, bytes | None], Iterable[tuple[bytes, bytes]]]


class AlertBook(Lifecycle):
    """The alerts of the governments a worker owns: loaded from their records (``load_org``),
    fed each batch (``apply``), held positions judged once settled (``release``), thresholds
    changed (``set_overrides``), the operational rules run (``check_stale``, ``check_lag``)."""

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
        extra: set[PosKey] = set()
        for (org, cid), c in changes.commitments.items():
            pk = self._commitment(org, cid, c).pk
            if pk not in changes.index:
                extra.add(pk)
        last: dict[str, tuple[int, str | None]] = {}  # org -> (latest occurred ms, an event id)
        sget = specials(changes).get
        book = self.positions
        work: list[tuple[PosState, Position, int, str | None, list[Row] | None]] = []
        eid: str | None  # the event a position's evaluation is attributed to (None: none)
        held_orgs: Container[str] = ()
        if hold:
            held_orgs = {org for org, _a, _f in changes.index if org in hold}
            held_orgs |= {org for org, _c in changes.commitments if org in hold}
        for pk, rows in changes.index.items():
            st = book.get(pk) or self._new_pos(pk)
            p = positions[pk]
            org = pk[0]
            self._walk(st, p, rows, out, org not in held_orgs, sget(pk))
            ms, eid = rows[-1][:2]
            work.append((st, p, ms, eid, rows))
            cur = last.get(org)
            if cur is None or p.last_event_ms > cur[0]:
                last[org] = (p.last_event_ms, eid)
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
            xst = book.get(pk)
            xp = positions.get(pk)
            if xst is not None and xp is not None and pk not in changes.index:
                ms, eid = last.get(pk[0], (xp.last_event_ms, None))
                work.append((xst, xp, ms, eid, None))
        for st, p, ms, eid, wrows in work:
            org = st.pk[0]
            if org in held_orgs:
                self._hold(st)
                continue
            if not st.cfg.enabled:
                continue
            today = self.orgs[org].clock
            if st.floor_day != st.clock:
                st.refresh()
            self._projected(st, p, today, ms, eid, out, wrows)
            if today >= st.ye_from or YEAR_END in st.rec.open:
                self._apply(st, rules.year_end(st, p, today, ms, eid), out)
            if wrows is not None and self.published and st.pk in self.published:
                self._reconcile(st, p, ms, out)
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
        for pk in [pk for pk in self.held if settled(pk[0])]:
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
            self._evaluate(st, p, self.orgs[pk[0]].clock, p.last_event_ms, out)
            if pk in self.published:
                self._reconcile(st, p, p.last_event_ms, out)
        return out

    def _evaluate(self, st: PosState, p: Position, today: int, ms: int, out: list[AlertChange]) -> None:
        """Every money rule on the position as it is (no event of a batch to attribute to)."""
        self._apply(st, rules.available(st, p, ()), out)
        self._projected(st, p, today, ms, None, out)
        self._apply(st, rules.year_end(st, p, today, ms, None), out)

    def _walk(
        self,
        st: PosState,
        p: Position,
        rows: list[Row],
        out: list[AlertChange],
        evaluate: bool,
        special: list[Special] | None,
    ) -> None:
        """The daily buckets, then rules 1-2 on the position as it stands after the batch (or
        a hold while its partition settles)."""
        fresh, moved_first, days = st.fold_rows(rows, self._journal, special)
        if moved_first:
            self._dirty.add(st.pk)
        for d in days:
            self._commit_records[layout.day_key(st.pk, d)] = layout.encode_day(st.days[d])
        if not fresh:
            st.refresh()
        if not evaluate:
            self._hold(st)
        elif st.cfg.enabled:
            self._apply(st, rules.available(st, p, rows), out)

    def _projected(
        self,
        st: PosState,
        p: Position,
        today: int,
        ms: int,
        eid: str | None,
        out: list[AlertChange],
        rows: list[Row] | None = None,
    ) -> None:
        end = today + st.cfg.horizon_days
        if st.win_end != end:
            st.window(end)
        current = st.rec.open.get(PROJECTED)
        decisions = rules.projected(st, p, today, ms, eid, current, rows, self._journal, self._commitments)
        self._apply(st, decisions, out)

    def set_overrides(
        self, overrides: Mapping[tuple[str, str], Override], positions: Mapping[PosKey, Position]
    ) -> list[AlertChange]:
        """New ``PUT /v1/thresholds`` overrides: re-evaluate the positions they touch now."""
        changed = self.resolver.set_overrides(overrides)
        out: list[AlertChange] = []
        if not changed:
            return out
        orgs_all = {org for org, acc in changed if acc == "*"}
        for pk, st in self.positions.items():
            if pk[0] not in orgs_all and (pk[0], pk[1]) not in changed:
                continue
            st.configure(self.resolver.get(pk[0], pk[1]))
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
            self._evaluate(st, p, self.orgs[pk[0]].clock, ms, out)
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
