"""The alert book's state and the lifecycle of an alert: raised (under the id of docs/alerts.md,
Lifecycle and identity), updated, resolved, or adopted from an earlier run; and the records of
that state (``take_records``, keys and codecs of ``state.layout``).

Every change is recorded twice: in the ``AlertChange`` list a call returns (to publish) and as
an outbox record among ``take_records``, which the worker writes in the same atomic write as the
balances the change derives from: after a crash the book on disk matches the balances on disk,
and the replayed events raise exactly what had not been written.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from alerts import rules
from alerts.config import AlertConfig, Override, Resolver
from alerts.history import Floor, PosState
from alerts.model import (
    LAG,
    SEVERITY,
    STALE,
    YEAR_END,
    Alert,
    AlertChange,
    OpenCommitment,
    OrgRecord,
    PosRecord,
    Source,
    WorkerRecord,
    message,
    parse_id,
    resolved_message,
)
from cashpos.calendar import date_day
from state import layout
from state.ledger import LAPSE_TAG, Commitment, EventKey, Journal, Position, PosKey, unscoped_id

Records = list[tuple[bytes, bytes]]  # (key, value); an empty value deletes the key


@dataclass(slots=True)
class OrgState:
    clock: int = -1  # the government clock ("today": the latest position clock)
    clock_ms: int = 0
    rec: OrgRecord = field(default_factory=OrgRecord)
    pks: set[PosKey] = field(default_factory=set)


class Lifecycle:
    """The state of the alerts of the governments a worker owns (``alerts.book.AlertBook``
    feeds it batches)."""

    def __init__(
        self,
        config: AlertConfig | None = None,
        overrides: Mapping[tuple[str, str], Override] | None = None,
        worker_id: str = "worker",
    ) -> None:
        self.config = config or AlertConfig()
        self.resolver = Resolver(self.config, overrides)
        self.worker_id = worker_id
        self.positions: dict[PosKey, PosState] = {}
        self.orgs: dict[str, OrgState] = {}
        self.worker = WorkerRecord()
        self._dirty: set[PosKey] = set()
        self._dirty_orgs: set[str] = set()
        self._dirty_worker = False
        self._commit_records: dict[bytes, bytes] = {}
        self._outbox: list[AlertChange] = []
        self._journal: Mapping[EventKey, Journal | bytes] = {}  # the batch's
        self._commitments: Mapping[tuple[str, str], Commitment] = {}  # the batch's
        self.held: set[PosKey] = set()  # positions whose evaluation waits for a settled partition
        # The positions of each (government, account), oldest fiscal year first: the account's
        # newest year carries the alerts judged on the account as a whole (``alerts.book``)
        self.accounts: dict[tuple[str, str], list[PosState]] = {}
        # Per government, the latest fiscal year a close was applied for (either topic's copy):
        # the positions of that year and before raise nothing more (their alerts were resolved)
        self.closed: dict[str, int] = {}
        # per account judged as a whole: ((its years in play, its clock), (floor, trend, margin))
        self._account_floors: dict[tuple[str, str], tuple[tuple[tuple[int, ...], int], Floor]] = {}
        # Open in the serving copy but not in this book (see ``load_org``): per position, by rule
        self.published: dict[PosKey, dict[str, Alert]] = {}

    def _org(self, org: str) -> OrgState:
        o = self.orgs.get(org)
        if o is None:
            o = self.orgs[org] = OrgState()
        return o

    def _new_pos(self, pk: PosKey, rec: PosRecord | None = None) -> PosState:
        cfg = self.resolver.get(pk[0], pk[1])
        st = PosState(pk, rec or PosRecord(), cfg)
        st.configure(cfg)
        self.positions[pk] = st
        self._org(pk[0]).pks.add(pk)
        bisect.insort(self.accounts.setdefault((pk[0], pk[1]), []), st, key=_fiscal_year)
        return st

    def open_alerts(self) -> list[Alert]:
        out = [a for st in self.positions.values() for a in st.rec.open.values()]
        out += [o.rec.stale for o in self.orgs.values() if o.rec.stale is not None]
        if self.worker.lag is not None:
            out.append(self.worker.lag)
        return out

    def find(self, alert_id: str) -> Alert | None:
        parsed = parse_id(alert_id)
        if parsed is None:
            return None
        org, acc, fy, rule, _ = parsed
        if rule == STALE:
            o = self.orgs.get(org)
            a = o.rec.stale if o else None
        elif rule == LAG:
            a = self.worker.lag
        else:
            st = self.positions.get((org, acc, fy))
            a = st.rec.open.get(rule) if st else None
        return a if a is not None and a.id == alert_id else None

    def acknowledge(self, alert_id: str, by: str, at_ms: int) -> bool:
        """Record a user's acknowledgement (first one wins). True if it changed the book."""
        a = self.find(alert_id)
        if a is None or a.acknowledged_by is not None:
            return False
        a.acknowledged_by, a.acknowledged_ms = by, at_ms
        if a.state == "raised":
            a.state = "acknowledged"
        parsed = parse_id(alert_id)
        assert parsed is not None  # find() parsed it
        org, acc, fy, rule, _ = parsed
        if rule == STALE:
            self._dirty_orgs.add(org)
        elif rule == LAG:
            self._dirty_worker = True
        else:
            self._dirty.add((org, acc, fy))
        return True

    def take_records(self) -> Records:
        """Encoded state changed since the last call, and one outbox record per alert change."""
        out: Records = []
        enc = layout.encode_alert_record
        for pk in self._dirty:
            st = self.positions.get(pk)
            if st is not None:
                out.append((layout.alert_pos_key(pk), enc(st.rec)))
        self._dirty.clear()
        for org in self._dirty_orgs:
            o = self.orgs.get(org)
            if o is not None:
                out.append((layout.org_key(org), enc(o.rec)))
        self._dirty_orgs.clear()
        if self._dirty_worker:
            out.append((layout.worker_key(self.worker_id), enc(self.worker)))
            self._dirty_worker = False
        out += self._commit_records.items()
        self._commit_records = {}
        for ch in self._outbox:
            a = ch.alert
            out.append((layout.outbox_key(a.org_code, a.id, a.rev), layout.encode_outbox(ch.to_dict())))
        self._outbox = []
        return out

    def _set_open(self, org: str, cid: str, oc: OpenCommitment) -> PosState:
        pk = (org, oc.account, oc.fiscal_year)
        st = self.positions.get(pk) or self._new_pos(pk)
        st.set_open(cid, oc.open, oc.due_day, oc.due_date)
        return st

    def _commitment(self, org: str, cid: str, c: Commitment) -> PosState:
        """A commitment the batch changed: the open-commitment index follows it."""
        pk = (org, c.account, c.fiscal_year)
        st = self.positions.get(pk)
        old = st.commits.get(cid) if st is not None else None
        open_ = 0 if c.reversed else c.open
        if st is not None and old is not None:
            if old[0] == open_:
                return st
            due_date = old[2]
            due_day = old[1] if due_date else -1
        else:
            prev = self.positions.get((org, c.account, c.fiscal_year - 1))
            if prev is not None and cid in prev.commits:
                # carried forward (이월) from the year before: it leaves that year's index
                prev.set_open(cid, 0, -1, None)
            elif open_ <= 0:
                return st or self._new_pos(pk)
            due_date = c.due_date
            due_day = date_day(dt.date.fromisoformat(due_date)) if due_date else -1
        oc = OpenCommitment(c.account, c.fiscal_year, open_, due_day, due_date)
        st = self._set_open(org, cid, oc)
        key = layout.open_key(org, cid)
        self._commit_records[key] = layout.encode_alert_record(oc) if open_ > 0 else b""
        return st

    def _hold(self, st: PosState) -> None:
        if not st.rec.held:
            st.rec.held = True
            self._dirty.add(st.pk)
        self.held.add(st.pk)

    def _apply(self, st: PosState, decisions: list[rules.Decision], out: list[AlertChange]) -> None:
        for d in decisions:
            if isinstance(d, rules.Raise):
                if d.stage:
                    st.rec.ye_stage = d.stage
                self._raise(st, d.rule, d.ms, d.eid, out, d.severity, d.fields)
            elif isinstance(d, rules.Resolve):
                self._close(st, st.rec.open.pop(d.rule), d.ms, d.eid, out, d.reason, d.fields)
            else:
                a = st.rec.open[d.rule]
                a.rev += 1
                a.updated_ms = d.ms
                for k, v in d.fields.items():
                    setattr(a, k, v)
                a.message = message(a)
                self._dirty.add(st.pk)
                self._emit("updated", a, out, d.eid)

    def _raise(
        self,
        st: PosState,
        rule: str,
        ms: int,
        eid: str | None,
        out: list[AlertChange],
        severity: str | None,
        fields: dict[str, object],
    ) -> Alert:
        rec = st.rec
        org, acc, fy = st.pk
        pub = self.published.get(st.pk)
        if pub is not None:
            prior = pub.get(rule)
            if prior is not None and (rule != YEAR_END or prior.stage_days == fields.get("stage_days")):
                del pub[rule]
                if not pub:
                    del self.published[st.pk]
                return self._adopt(st, prior)  # already announced: continued, not raised again
        seq = rec.seqs.get(rule, 0) + 1
        rec.seqs[rule] = seq
        if rule == YEAR_END:
            aid = f"{org}:{acc}:{fy}:{rule}:d{fields['stage_days']}"
        else:
            aid = f"{org}:{acc}:{fy}:{rule}:{ms}"
            if rec.last_ids.get(rule, "").split("-")[0] == aid:  # same instant as the last one
                aid = f"{aid}-{seq}"
        rec.last_ids[rule] = aid
        a = Alert(
            id=aid,
            rule=rule,
            severity=severity or SEVERITY.get(rule, "warning"),
            state="raised",
            rev=1,
            seq=seq,
            org_code=org,
            account=acc,
            fiscal_year=fy,
            raised_ms=ms,
            raised_event=_public_id(eid),
        )
        for k, v in fields.items():  # the rule's figures, each an Alert field
            setattr(a, k, v)
        a.message = message(a)
        rec.open[rule] = a
        self._dirty.add(st.pk)
        self._emit("raised", a, out, eid)
        return a

    def _adopt(self, st: PosState, a: Alert) -> Alert:
        """Make ``a`` (an alert another run announced) this book's open alert of its rule."""
        rec = st.rec
        rec.open[a.rule] = a
        rec.seqs[a.rule] = max(rec.seqs.get(a.rule, 0), a.seq)
        rec.last_ids[a.rule] = a.id
        if a.rule == YEAR_END and a.stage_days:
            rec.ye_stage = a.stage_days
        self._dirty.add(st.pk)
        return a

    def _reconcile(self, st: PosState, p: Position, ms: int, out: list[AlertChange]) -> None:
        """After the first evaluation of a position on a settled partition: what the serving
        copy still shows open and this evaluation did not raise again. The latest announced
        alert of a rule that is open here replaces this book's older one (whose resolution was
        announced); otherwise it no longer holds and is resolved."""
        for rule, a in self.published.pop(st.pk, {}).items():
            cur = st.rec.open.get(rule)
            if cur is not None and cur.id == a.id:
                continue
            if cur is not None and (rule != YEAR_END or (a.stage_days or 0) < (cur.stage_days or 0)):
                self._adopt(st, a)
                continue
            reason = "superseded" if cur is not None else "recovered"
            self._close(st, msgspec.structs.replace(a), ms, None, out, reason, rules.balance(p))

    def _close_all(self, st: PosState, ms: int, eid: str | None, out: list[AlertChange], reason: str) -> None:
        """Resolve every open alert of a position, and those the serving copy shows open for it."""
        for rule in sorted(st.rec.open):
            self._close(st, st.rec.open.pop(rule), ms, eid, out, reason)
        for a in self.published.pop(st.pk, {}).values():
            self._close(st, msgspec.structs.replace(a), ms, eid, out, reason)

    def _close(
        self,
        st: PosState,
        a: Alert,
        ms: int,
        eid: str | None,
        out: list[AlertChange],
        reason: str,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        a.state = "resolved"
        a.rev += 1
        a.resolved_ms, a.resolved_event, a.resolution = ms, _public_id(eid), reason
        for k, v in (fields or {}).items():
            setattr(a, k, v)
        a.message = resolved_message(a)
        self._dirty.add(st.pk)
        self._emit("resolved", a, out, eid)

    def _emit(self, change: str, a: Alert, out: list[AlertChange], eid: str | None = None) -> None:
        src = _source(self._journal, a.org_code, eid) if eid is not None else None
        ch = AlertChange(change, msgspec.structs.replace(a), src)
        out.append(ch)
        self._outbox.append(ch)


def _fiscal_year(st: PosState) -> int:
    return st.pk[2]


def _public_id(sid: str | None) -> str | None:
    """The event_id its source sent, from the journal's side-scoped name of it; for a lapse at
    a close (``state.ledger.lapse_id``), the close's."""
    if sid is None:
        return None
    if sid.startswith(LAPSE_TAG):
        n, _, rest = sid[len(LAPSE_TAG) :].partition(":")
        return rest[: int(n)]
    return unscoped_id(sid)


def _source(journal: Mapping[EventKey, Journal | bytes], org: str, eid: str) -> Source | None:
    """The source record (topic, partition, offset) of an event of the batch."""
    j = journal.get((org, eid))
    if isinstance(j, bytes):
        j = layout.decode_journal(j)
    return j.source[:3] if j is not None and j.source is not None else None
