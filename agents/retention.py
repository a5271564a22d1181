"""Compacting retired fiscal years (``state/retention.py``'s policy) in the worker's store.

Thin wiring: a government whose both sides have closed a year has years to retire; the history
hook's housekeeping (once a second, outside a batch, under the worker's lock so no batch reads a
half-written entry) does one bounded step at a time: for each retired position, its index rows'
journal entries lose their bytes for a digest (``Journal.digest``), then the index and known-at
row blocks go. When every retired position is done the government's ``r`` marker says so, and
nothing is scanned for it again until its next close. Each step is idempotent (a tombstone is
not made twice, a deleted block is not found again), so a crash mid-way only repeats work.
Answers never depend on how far this got: ``agents/history_web.py`` applies the policy itself.
"""

from __future__ import annotations

import logging

import msgspec

from agents.hooks import HookHost, HookStore
from state import layout as L
from state.ledger import PosKey
from state.retention import raw_digest, retired_through

log = logging.getLogger("cashpos.retention")

STEP_ROWS = 20_000  # index rows looked at per step (~0.1 s): a batch waits at most that long


class Retirer:
    def __init__(self, online_years: int) -> None:
        self.online_years = online_years
        self.due: set[str] = set()  # governments whose retired years may not all be compacted

    def mark(self, orgs: set[str] | list[str]) -> None:
        self.due |= set(orgs)

    def forget(self, orgs: set[str]) -> None:
        self.due -= orgs

    def through(self, store: HookStore, org: str) -> int | None:
        closes = store.closes(org)
        return retired_through({side: {org: y} for side, y in closes.items()}, org, self.online_years)

    async def step(self, host: HookHost) -> None:
        """One bounded step for the first government due (in code order: deterministic)."""
        owned = set(host.owned_orgs())
        self.due &= owned
        while self.due:
            org = min(self.due)
            through = self.through(host.store, org)
            marker = host.store.get(L.retired_key(org))
            if through is None or (marker is not None and L.decode_int(marker) >= through):
                self.due.discard(org)
                continue
            async with host.exclusive:
                finished = self._compact(
                    host.store, [pk for pk in host.positions if pk[0] == org], org, through
                )
            if finished:
                self.due.discard(org)
                log.info("retired %s's fiscal years up to %d", org, through)
            return

    def _compact(self, store: HookStore, positions: list[PosKey], org: str, through: int) -> bool:
        """Up to ``STEP_ROWS`` rows of ``org``'s retired positions; True once none is left."""
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        budget = STEP_ROWS
        for pk in sorted(pk for pk in positions if pk[2] <= through):
            for key, block in store.scan(L.index_prefix(*pk)):
                rows = L.decode_index(block)
                for _ms, sid, _dc, _dm in rows:
                    jkey = L.journal_key(org, sid)
                    if jkey in puts:
                        continue
                    stored = store.get(jkey)
                    if stored is None:
                        continue
                    entry = L.decode_journal(stored)
                    if entry.raw and all(fy <= through for _a, fy, _c, _m in entry.effects):
                        tomb = msgspec.structs.replace(
                            entry, raw=b"", digest=raw_digest(entry.raw), source=None
                        )
                        puts[jkey] = L.encode_record(tomb)
                deletes.append(key)
                budget -= len(rows)
                if budget <= 0:
                    _write(store, puts, deletes)
                    return False
            deletes += [k for k, _ in store.scan(L.known_rows_prefix(pk))]
        _write(store, puts, deletes)
        store.write([(L.retired_key(org), L.encode_int(through))])
        return True


def _write(store: HookStore, puts: dict[bytes, bytes], deletes: list[bytes]) -> None:
    # the tombstones first: a crash between the two writes leaves rows whose entries are
    # tombstones already (skipped next time), never rows lost before their entry was compacted
    store.write(puts.items())
    store.delete(deletes)
