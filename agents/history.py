"""The history hook: every batch's daily flows and hash-chain links, in the batch's own write.

Thin wiring of ``state.history`` (pure) to the worker: the positions' chains are kept in memory
for the governments this worker owns (loaded on assignment), the daily flows read from the store
where a batch adds to a day that already has some. Both land in the same atomic write as the
balances they derive from (``FoldContext.write``), so a crash neither loses nor repeats them.
"""

from __future__ import annotations

from agents.hooks import FoldContext, HookHost
from state import layout as L
from state.history import Chain, DayFlows, batch_history
from state.ledger import PosKey


class HistoryHook:
    def __init__(self) -> None:
        self.host: HookHost | None = None
        self.chains: dict[PosKey, Chain] = {}

    async def on_assigned(self, host: HookHost, orgs: list[str]) -> None:
        self.host = host
        for org in orgs:
            self.chains.update(host.store.chains(org))

    def on_revoked(self, orgs: set[str]) -> None:
        for pk in [pk for pk in self.chains if pk[0] in orgs]:
            del self.chains[pk]

    def after_fold(self, batch: FoldContext) -> None:
        changes = batch.changes
        if not changes.index:
            return
        flows, chains = batch_history(changes, self.chains)
        records: list[tuple[bytes, bytes]] = []
        for (pk, day), f in flows.items():
            key = L.flows_key(pk, day)
            stored = self._get(key)
            if stored is not None:
                f = _sum(L.decode_flows(stored), f)
            records.append((key, L.encode_flows(f)))
        self.chains.update(chains)
        records += [(L.chain_key(pk), L.encode_chain(c)) for pk, c in chains.items()]
        batch.write(records)

    def _get(self, key: bytes) -> bytes | None:
        assert self.host is not None, "assigned before any batch"
        return self.host.store.get(key)

    async def after_commit(self) -> None:
        return None

    async def housekeeping(self) -> None:
        return None


def _sum(a: DayFlows, b: DayFlows) -> DayFlows:
    a.add(b)
    return a
