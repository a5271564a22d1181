"""The history hook: every batch's daily flows and hash-chain links, in the batch's own write.

Thin wiring of ``state.history`` (pure) to the worker: the positions' chains are kept in memory
for the governments this worker owns (loaded on assignment), the daily flows read from the store
where a batch adds to a day that already has some; the known-at axis's rows and day sums (per
record-time day) the same way. All land in the same atomic write as the balances they derive
from (``FoldContext.write``), so a crash neither loses nor repeats them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from agents.hooks import FoldContext, HookHost, HookStore
from agents.retention import Retirer
from state import layout as L
from state.history import Chain, DayFlows, DayTotals, KnownRow, batch_history, known_sums
from state.ledger import PosKey
from state.retention import DEFAULT_ONLINE_YEARS
from state.statement import GovernmentDays

T = TypeVar("T")
MAX_TOTALS = 64  # governments whose daily totals are kept for as-of reads (least recently asked goes)


class HistoryHook:
    def __init__(self, online_years: int = DEFAULT_ONLINE_YEARS) -> None:
        self.host: HookHost | None = None
        self.retirer = Retirer(online_years)  # compacts retired fiscal years, a step a second
        self.chains: dict[PosKey, Chain] = {}
        self.totals: dict[str, DayTotals] = {}  # per government asked about (as-of reads)
        self.known: dict[str, DayTotals] = {}  # the same on the known-at axis (record-time days)
        self._known_pending: dict[tuple[PosKey, int], tuple[int, int, int]] = {}
        self._pending: dict[tuple[PosKey, int], DayFlows] = {}  # the batch's, once it is written
        self.statements: dict[str, GovernmentDays] = {}  # per government asked about (its summed days)
        # the batch's flows not yet in the kept statements, and the store's sequence number once
        # it is written (a read after the write adds them: the serving copy may show the batch)
        self._statements_todo: dict[tuple[PosKey, int], DayFlows] = {}
        self._statements_seq = 0

    async def on_assigned(self, host: HookHost, orgs: list[str]) -> None:
        self.host = host
        for org in orgs:
            self.chains.update(host.store.chains(org))
        self.retirer.mark(orgs)

    def on_revoked(self, orgs: set[str]) -> None:
        for pk in [pk for pk in self.chains if pk[0] in orgs]:
            del self.chains[pk]
        self.retirer.forget(orgs)
        for org in orgs:
            self.totals.pop(org, None)
            self.known.pop(org, None)
            self.statements.pop(org, None)

    def totals_for(self, org: str) -> DayTotals:
        """The daily totals of a government (as-of reads)."""
        return self._kept(self.totals, org, lambda store: DayTotals(store.flows(org)))

    def known_totals_for(self, org: str) -> DayTotals:
        """The same on the known-at axis: per record-time day."""
        return self._kept(self.known, org, lambda store: DayTotals.of_sums(store.known_days(org)))

    def government_days(self, org: str) -> GovernmentDays:
        """A government's flows summed per day (``state.statement``). A batch already written
        whose ``after_commit`` has not run yet is added first: its figures may be in the serving
        copy already, and the API keeps an answer by the figures it was asked with."""
        assert self.host is not None, "assigned before any read"
        if self._statements_todo and self.host.store.seq >= self._statements_seq:
            self._add_statements_todo()
        return self._kept(self.statements, org, lambda store: GovernmentDays(store.flows(org)))

    def _kept(self, kept: dict[str, T], org: str, load: Callable[[HookStore], T]) -> T:
        """A government's sums from memory, else read from the store and kept (the most recently
        asked last; the least recently asked goes). One read while a batch is between its fold
        and its ``after_commit`` is not kept: the store may hold that batch already, and
        ``after_commit`` would add it again."""
        t = kept.pop(org, None)
        if t is None:
            assert self.host is not None, "assigned before any read"
            t = load(self.host.store)
            if self._pending or self._known_pending:
                return t
            if len(kept) >= MAX_TOTALS:
                kept.pop(next(iter(kept)))
        kept[org] = t
        return t

    def after_fold(self, batch: FoldContext) -> None:
        changes = batch.changes
        if not changes.index:
            return
        known: dict[tuple[PosKey, int], list[KnownRow]] = {}
        flows, chains = batch_history(changes, self.chains, known)
        records: list[tuple[bytes, bytes]] = []
        for (pk, day), f in flows.items():
            key = L.flows_key(pk, day)
            stored = self._get(key)
            if stored is not None:
                f = _sum(L.decode_flows(stored), f)
            records.append((key, L.encode_flows(f)))
        assert self.host is not None, "assigned before any batch"
        seq = self.host.store.seq + 1  # the batch's, as Store.commit numbers it
        sums_of: dict[tuple[PosKey, int], tuple[int, int, int]] = {}
        for (pk, day), rows in known.items():
            records.append((L.known_key(pk, day, seq), L.encode_known(rows)))
            sums = sums_of[(pk, day)] = known_sums(rows)
            key = L.known_day_key(pk, day)
            stored = self._get(key)
            if stored is not None:
                sums = _add3(L.decode_sums(stored), sums)
            records.append((key, L.encode_sums(sums)))
        self._known_pending = sums_of
        self.chains.update(chains)
        records += [(L.chain_key(pk), L.encode_chain(c)) for pk, c in chains.items()]
        batch.write(records)
        self._pending = flows
        self._statements_todo, self._statements_seq = flows, self.host.store.seq + 1
        if changes.closed:  # a close may retire older years
            self.retirer.mark([org for org, _side in changes.closed])

    def _add_statements_todo(self) -> None:
        for (pk, day), f in self._statements_todo.items():
            g = self.statements.get(pk[0])
            if g is not None:
                g.add(pk, day, f)
        self._statements_todo = {}

    def _get(self, key: bytes) -> bytes | None:
        assert self.host is not None, "assigned before any batch"
        return self.host.store.get(key)

    async def after_commit(self) -> None:
        # The batch is in the store now: the totals kept in memory take its flows too.
        for (pk, day), f in self._pending.items():
            t = self.totals.get(pk[0])
            if t is not None:
                t.add(pk, day, f)
        self._pending = {}
        self._add_statements_todo()
        for (pk, day), (dc, dm, n) in self._known_pending.items():
            t = self.known.get(pk[0])
            if t is not None:
                t.add_sums(pk, day, dc, dm, n)
        self._known_pending = {}

    async def housekeeping(self) -> None:
        if self.host is not None and self.retirer.due:
            await self.retirer.step(self.host)

    async def stop(self) -> None:
        return None


def _add3(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _sum(a: DayFlows, b: DayFlows) -> DayFlows:
    a.add(b)
    return a
