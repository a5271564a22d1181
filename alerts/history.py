"""Per position, what the rules read besides the balance: the daily buckets ``[outflow, net]``
(docs/alerts.md, History), the open commitments by due day, and the floor, margin and trend of
the position clock's day; and, while an account has more than one fiscal year in play, the
account read as one (``AccountHistory``). Days are ``cashpos.calendar.kst_day`` numbers. A
year's close moves cash between the years of an account: no flow in either bucket."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from alerts import rules
from alerts.config import Thresholds
from alerts.model import PosRecord
from cashpos.calendar import kst_day, year_end_day
from cashpos.names import CLOSE_KIND
from state.ledger import Changes, EventKey, Journal, PosKey

Row = tuple[int, str, int, int]  # an index row: occurred ms, scoped event id, cash delta, committed delta
# A cash change that is not a plain receipt or payment without commitment: (cash delta, kind,
# without commitment, out of this account)
Special = tuple[int, str, bool, bool]
Floor = tuple[int | None, int, int]  # floor (None: none), trend, margin on a day

_NEVER: Final = 1 << 40  # a day after every real day
_IG2: Final = operator.itemgetter(2)
_NEG: Final = (0).__gt__  # x < 0


@dataclass(slots=True)
class PosState:
    pk: PosKey
    rec: PosRecord
    cfg: Thresholds
    clock: int = -1  # the position clock (Korean day)
    days: dict[int, list[int]] = field(default_factory=dict)  # day -> [outflow, net]
    commits: dict[str, tuple[int, int, str | None]] = field(default_factory=dict)  # cid -> open, due, date
    due: dict[int, int] = field(default_factory=dict)  # effective due day -> open amount
    win_end: int | None = None
    due_in_win: int = 0  # open amount due on or before win_end
    floor_day: int = -2  # the day floor/trend/margin were computed for (-2: stale)
    floor: int | None = None
    margin: int = 0
    trend: int = 0
    ye_from: int = 0  # the first day of the earliest year-end stage

    def configure(self, cfg: Thresholds) -> None:
        """New thresholds: the floor and the window are recomputed when next needed."""
        self.cfg = cfg
        first_stage = cfg.year_end_days[0] if cfg.year_end_days else -(1 << 30)
        self.ye_from = year_end_day(self.pk[2]) - first_stage
        self.floor_day = -2
        self.win_end = None

    # -- open commitments ------------------------------------------------------------------------

    def set_open(self, cid: str, open_: int, due_day: int, due_date: str | None) -> None:
        """The open amount of a commitment (0: closed); ``due_day`` -1: no due date (it counts on
        31 December of the fiscal year, when cash books close)."""
        eff = due_day if due_day >= 0 else year_end_day(self.pk[2])
        old = self.commits.get(cid)
        if old is not None:
            self._due_add(old[1], -old[0])
        if open_ > 0:
            self.commits[cid] = (open_, eff, due_date)
            self._due_add(eff, open_)
        elif old is not None:
            del self.commits[cid]

    def _due_add(self, day: int, amount: int) -> None:
        v = self.due.get(day, 0) + amount
        if v:
            self.due[day] = v
        else:
            self.due.pop(day, None)
        if self.win_end is not None and day <= self.win_end:
            self.due_in_win += amount

    def window(self, end: int) -> None:
        """Make ``due_in_win`` the open amount due on or before ``end``."""
        old = self.win_end
        if old is not None and old <= end and end - old <= 64:
            add = self.due.get
            s = self.due_in_win
            for d in range(old + 1, end + 1):
                s += add(d, 0)
            self.due_in_win = s
        else:
            self.due_in_win = sum(v for d, v in self.due.items() if d <= end)
        self.win_end = end

    # -- floor, margin, trend --------------------------------------------------------------------

    def refresh(self) -> None:
        """Floor, margin and trend for the position clock's day; buckets older than the window
        are dropped from memory (their records stay)."""
        day = self.clock
        self.floor, self.trend, self.margin = rules.floor_and_trend(
            self.days, self.rec.first_day, day, self.cfg
        )
        cfg = self.cfg
        if self.floor_day != day and len(self.days) > cfg.outflow_days + 2:
            cut = day - cfg.outflow_days - 1
            for d in [d for d in self.days if d < cut]:
                del self.days[d]
        self.floor_day = day

    # -- the daily buckets -----------------------------------------------------------------------

    def fold_rows(
        self, rows: list[Row], journal: Mapping[EventKey, Journal | bytes], specials: list[Special] | None
    ) -> tuple[bool, bool, list[int]]:
        """Add a batch's index rows to the daily buckets and advance the position clock.

        Returns (fresh: the floor of the clock's day still holds, first_day changed, the days
        whose bucket changed). Common case (every row on the same day, not before the clock):
        sums over the rows (in C), corrected by the few ``specials`` (see ``specials``).
        Otherwise row by row, with a journal lookup per cash change."""
        org, acc, _fy = self.pk
        rec = self.rec
        days = self.days
        clock = self.clock
        first = rec.first_day if rec.first_day >= 0 else _NEVER
        fresh = self.floor_day == clock
        moved_first = False
        if len(rows) == 1:
            lo = hi = kst_day(rows[0][0])
        else:
            lo = kst_day(min(rows)[0])
            hi = kst_day(max(rows)[0])
        if lo == hi and hi >= clock:
            day = hi
            if day > clock:
                clock = day
                fresh = False
            if day < first:
                rec.first_day = day
                moved_first = True
                fresh = False
            dcs = list(map(_IG2, rows))
            net = sum(dcs)
            outflow = -sum(filter(_NEG, dcs))
            if specials:
                for dc, kind, uncommitted, from_here in specials:
                    # undo the plain-row reading (outflow if dc < 0, all of it net), apply the kind's
                    o = -dc if dc < 0 else 0
                    if kind == "payment":
                        outflow += -dc - o
                        if not uncommitted:
                            net -= dc
                    elif kind == "transfer":
                        outflow += (-dc if from_here else 0) - o
                    elif kind == CLOSE_KIND:  # a move between the account's years: no flow
                        outflow -= o
                        net -= dc
                    else:
                        outflow -= o
            written = []
            if outflow or net or any(dcs):
                b = days.get(day)
                if b is None:
                    b = days[day] = [0, 0]
                b[0] += outflow
                b[1] += net
                written.append(day)
            self.clock = clock
            return fresh, moved_first, written
        changed: set[int] = set()
        cur = days.get(clock)  # the bucket of the clock's day, the common case
        jget = journal.get
        for ms, eid, dc, _dm in rows:
            day = kst_day(ms)
            if day != clock:
                if day > clock:
                    if cur is not None:
                        changed.add(clock)
                    clock = day
                    fresh = False
                    cur = days.get(clock)
                if day < first:
                    first = rec.first_day = day
                    moved_first = True
                    fresh = False
            if dc:
                j = jget((org, eid))
                if day == clock:
                    b = cur
                    if b is None:
                        b = cur = days[day] = [0, 0]
                else:
                    b = days.get(day)
                    if b is None:
                        b = days[day] = [0, 0]
                    changed.add(day)
                    fresh = False  # a past day of the window changed
                if isinstance(j, bytes):
                    # the ledger's fast path (kept encoded): a receipt (dc > 0) or a payment
                    # without commitment (dc < 0); never a reversal or a transfer
                    if dc < 0:
                        b[0] -= dc
                    b[1] += dc
                elif j is not None:
                    kind = j.kind
                    if kind == "payment":
                        b[0] -= dc
                        if j.commitment_id is None:
                            b[1] += dc
                    elif kind == "transfer":
                        if j.account == acc:
                            b[0] -= dc
                        b[1] += dc
                    elif kind != CLOSE_KIND:  # a close's carry-out and carry-in: no flow
                        b[1] += dc
        if cur is not None:
            changed.add(clock)  # (may be unchanged: one record more, never one less)
        self.clock = clock
        return fresh, moved_first, [d for d in changed if d in days]


class AccountHistory:
    """An account judged as a whole (docs/alerts.md, "The fiscal year"): the history of every
    fiscal year in play (``members``) read as one, for rules 1-3. ``pk``, ``rec`` and ``cfg``
    are those of ``anchor``, the newest year, which carries the account's alerts. The caller
    gives the floor, margin and trend (``account_floor``) and brings each member's window up
    to date (``PosState.window``) before reading ``due_in_win``; the open commitments by due
    day and by id are merged only when a rule reads them (to raise or update)."""

    __slots__ = ("_commits", "_due", "anchor", "floor", "margin", "members", "trend")

    def __init__(self, anchor: PosState, members: Sequence[PosState], floor_trend_margin: Floor) -> None:
        self.anchor = anchor
        self.members = members
        self.floor, self.trend, self.margin = floor_trend_margin
        self._due: dict[int, int] | None = None
        self._commits: dict[str, tuple[int, int, str | None]] | None = None

    @property
    def pk(self) -> PosKey:
        return self.anchor.pk

    @property
    def rec(self) -> PosRecord:
        return self.anchor.rec

    @property
    def cfg(self) -> Thresholds:
        return self.anchor.cfg

    @property
    def due_in_win(self) -> int:
        return sum(st.due_in_win for st in self.members)

    @property
    def due(self) -> dict[int, int]:
        if self._due is None:
            due: dict[int, int] = {}
            for st in self.members:
                for d, v in st.due.items():
                    due[d] = due.get(d, 0) + v
            self._due = due
        return self._due

    @property
    def commits(self) -> dict[str, tuple[int, int, str | None]]:
        if self._commits is None:
            self._commits = {cid: v for st in self.members for cid, v in st.commits.items()}
        return self._commits


def account_floor(members: Sequence[PosState], day: int, cfg: Thresholds) -> Floor:
    """The account's (floor, trend, margin) on ``day`` (its clock: the latest of its members'),
    from the members' daily buckets added day by day, its first day the earliest of theirs."""
    firsts = [st.rec.first_day for st in members if st.rec.first_day >= 0]
    lo = day - cfg.outflow_days
    days: dict[int, list[int]] = {}
    for st in members:
        for d, b in st.days.items():
            if lo <= d < day:
                m = days.get(d)
                if m is None:
                    days[d] = [b[0], b[1]]
                else:
                    m[0] += b[0]
                    m[1] += b[1]
    return rules.floor_and_trend(days, min(firsts) if firsts else -1, day, cfg)


def specials(changes: Changes) -> dict[PosKey, list[Special]]:
    """Per position, the cash changes of this batch's events that are not plain receipts or
    payments without commitment.

    The ledger keeps the journal entries of its fast path (receipts and payments without
    commitment, never reversals) encoded as bytes; every other applied event is a Journal
    object. An entry that is a Journal object only because a reversal in this batch marked it
    (``reversed_by``) was applied earlier and is skipped unless its row is in this batch."""
    out: dict[PosKey, list[Special]] = {}
    index = changes.index
    for (org, eid), j in changes.journal.items():
        if isinstance(j, bytes):
            continue
        kind = j.kind
        if kind == "commitment" or kind == "commitment_cancel":
            continue  # no cash effect
        effects = j.effects
        if j.reversed_by is not None:
            rows = index.get((org, effects[0][0], effects[0][1]), ())
            if not any(r[1] == eid for r in rows):
                continue
        uncommitted = j.commitment_id is None
        src = j.account
        for acc, fy, dc, _dm in effects:
            if dc:
                lst = out.get((org, acc, fy))
                if lst is None:
                    lst = out[(org, acc, fy)] = []
                lst.append((dc, kind, uncommitted, acc == src))
    return out
