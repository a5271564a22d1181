"""The reference fold, kept small for folding page after page: what it has summed is compacted.

:class:`reconcile.reference.Reference` keeps a log of every accepted event and every outcome and
derives balances by summing them at the end: right for one fold, but the log grows with the
records read. :class:`Incremental` judges exactly as the reference does (it *is* the reference;
no rule is touched) and, after each page, moves the log's deltas into running sums (cash,
committed, version per position) and the outcomes into counts. What remains is the state the
rules need: the accepted events by id (duplicates, reversals), open commitments, orders,
schedules, closed years and the bound's running sums.

The log can be summed early because nothing but :meth:`positions`, :meth:`versions` and
:meth:`counts` reads it, and a record's deltas never change once logged (a reversal logs the
undo as a record of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconcile.reference import Counts, PosKey, Reference


@dataclass
class Incremental(Reference):
    """The reference fold with its log and outcomes compacted into sums (:meth:`compact`)."""

    cash: dict[PosKey, int] = field(default_factory=dict)
    committed: dict[PosKey, int] = field(default_factory=dict)
    version: dict[PosKey, int] = field(default_factory=dict)
    applied: int = 0
    duplicate: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def compact(self) -> None:
        """Sum the log into the positions and the outcomes into the counts, and drop both."""
        for rec in self.log:
            for pk, dc, dm in rec.deltas:
                self.cash[pk] = self.cash.get(pk, 0) + dc
                self.committed[pk] = self.committed.get(pk, 0) + dm
            for pk in {d[0] for d in rec.deltas}:
                self.version[pk] = self.version.get(pk, 0) + 1
        self.log.clear()
        for o in self.outcomes:
            if o == "applied":
                self.applied += 1
            elif o == "duplicate":
                self.duplicate += 1
            else:
                self.rejected[o] = self.rejected.get(o, 0) + 1
        self.outcomes.clear()

    def positions(self) -> dict[PosKey, tuple[int, int]]:
        self.compact()
        return {pk: (c, self.committed[pk]) for pk, c in self.cash.items()}

    def versions(self) -> dict[PosKey, int]:
        self.compact()
        return dict(self.version)

    def counts(self) -> Counts:
        self.compact()
        return {"applied": self.applied, "duplicate": self.duplicate, "rejected": dict(self.rejected)}

    @property
    def records(self) -> int:
        """Records judged so far (every outcome counts one)."""
        return self.applied + self.duplicate + sum(self.rejected.values()) + len(self.outcomes)
