"""A stateful model of the ledger worker: the pure fold plus the real RocksDB store.

Two single-partition input topics are modelled as append-only lists. Rules produce events
(with producer re-sends, reversals, conflicts and contract violations), consume batches exactly
as agents/ledger.py does (skip below the stored offset, contract check, Ledger.wants ->
Store.preload -> update -> take_changes -> Store.commit with the next offsets, then clear the
journal and commitments caches), re-fetch earlier offsets (at-least-once redelivery), and crash
(possibly mid-batch, before the state write): the in-memory Ledger is discarded, the store is
reopened from disk, positions reloaded per government and consumption resumes from the stored
offsets.

Invariants, after every step: the positions in memory and on disk equal the independent
reference fold (reconcile.reference) of exactly the records the store has accepted, in the
order they were folded; outcomes agree event by event; stored offsets are where consumption
stands; per government, cash sums to receipts − payments; the time index sums to the positions.
The known future flows too: payment orders (executed, cut, withdrawn) and expected receipts
(revised, realised), each looked up in the store after the batch that wrote it (the caches are
cleared as the worker clears them); each position's ``ordered``, in memory and on disk, and each
stored order's and schedule's open amount equal the reference's.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cashpos.refdata import governments
from reconcile.reference import Reference
from state.ledger import Ledger
from state.store import Store
from streams.contract import Rejection, check_message

REVENUE = "cashpos.events.revenue"
EXPENDITURE = "cashpos.events.expenditure"
TOPICS = (REVENUE, EXPENDITURE)
SIDE_OF_TOPIC = {REVENUE: "revenue", EXPENDITURE: "expenditure"}
TOPIC_OF_KIND = {
    "receipt": REVENUE,
    "commitment": EXPENDITURE,
    "commitment_cancel": EXPENDITURE,
    "payment": EXPENDITURE,
    "transfer": EXPENDITURE,
    "payment_order": EXPENDITURE,
    "expected_receipt": REVENUE,
}
SEOUL, JONGNO = "6110000", "3000000"
_GOVS = governments()
ORG_ACCOUNTS = {
    SEOUL: ("general", "custody", "sewerage"),
    JONGNO: ("general", "custody", min(_GOVS[JONGNO].account_codes - {"general", "custody"})),
}
assert all(set(a) <= _GOVS[o].account_codes for o, a in ORG_ACCOUNTS.items())
# the known flows (orders, payments executing them, schedules) more often than the others
KINDS = (*TOPIC_OF_KIND, "payment_order", "payment_order", "payment", "expected_receipt")
CIDS = ("k0", "k1", "k2")
SIDS = ("s0", "s1")
DATES = ("2026-04-01", "2026-05-01")

Record = tuple[bytes, bytes]  # value, key


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="cashpos-ledger-machine-"))
        self.store = Store(self.tmp)
        self.ledger = self.store.attach(Ledger())
        self.logs: dict[str, list[Record]] = {t: [] for t in TOPICS}
        self.next: dict[str, int] = dict.fromkeys(TOPICS, 0)
        # what the store has accepted, in fold order: (value, side, key) and the fold's outcome
        self.accepted: list[tuple[bytes, str, bytes]] = []
        self.outcomes: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.counter = 0
        self.crashes = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- producing ------------------------------------------------------------------------------

    def _new_body(self, data: st.DataObject) -> dict[str, Any]:
        self.counter += 1
        eid = f"e{self.counter}"
        at = f"2026-01-{data.draw(st.integers(1, 20)):02d}T12:00:00+09:00"  # fy 2025 or 2026
        fy = data.draw(st.sampled_from((2025, 2026)))
        if self.bodies and data.draw(st.integers(0, 3)) == 0:  # a reversal
            t = data.draw(st.sampled_from(self.bodies))
            d = dict(t, event_id=eid, reverses=t["event_id"], occurred_at=at, fiscal_year=fy)
            if data.draw(st.integers(0, 5)) == 0:
                d["amount"] = d["amount"] % 500 + 1  # a mismatching one
            return d
        org = data.draw(st.sampled_from(sorted(ORG_ACCOUNTS)))
        accounts = ORG_ACCOUNTS[org]
        kind = data.draw(st.sampled_from(KINDS))
        account = data.draw(st.sampled_from(accounts))
        if data.draw(st.integers(0, 2)):  # most on the prelude's position, where the flows meet
            org, accounts, account, fy = SEOUL, ORG_ACCOUNTS[SEOUL], "general", 2026
        d = {
            "event_id": eid,
            "org_code": org,
            "account": account,
            "fiscal_year": fy,
            "kind": kind,
            "amount": 10**15 if data.draw(st.integers(0, 7)) == 0 else data.draw(st.integers(1, 500)),
            "occurred_at": at,
            "source": "machine",
        }
        if kind in ("receipt", "expected_receipt"):
            d["category"] = data.draw(st.sampled_from(("grant", "local_tax")))
            if kind == "expected_receipt" or data.draw(st.booleans()):
                d["schedule_id"] = data.draw(st.sampled_from(SIDS))
            if kind == "expected_receipt":
                d["expected_date"] = data.draw(st.sampled_from(DATES))
                d["certainty"] = data.draw(st.sampled_from(("confirmed", "estimated")))
        elif kind in ("commitment", "commitment_cancel", "payment_order") or (
            kind == "payment" and data.draw(st.booleans())
        ):
            d["commitment_id"] = data.draw(st.sampled_from(CIDS))
            if kind == "payment_order":
                d["pay_date"] = data.draw(st.sampled_from(DATES))
        elif kind == "transfer":
            d["to_account"] = data.draw(st.sampled_from([a for a in accounts if a != account]))
        # Most that name a commitment, an order or a schedule name one opened before (its
        # government, account and year), else nearly all would be unknown.
        if "commitment_id" in d and kind != "commitment" and data.draw(st.integers(0, 3)):
            self._link(data, d, "commitment", "commitment_id")
        if kind == "payment" and "commitment_id" in d and data.draw(st.integers(0, 2)):
            self._link(data, d, "payment_order", "commitment_id")  # executes it (or one unknown)
        if "schedule_id" in d and data.draw(st.integers(0, 3)):
            self._link(data, d, "expected_receipt", "category", "schedule_id")
        return d

    def _link(self, data: st.DataObject, d: dict[str, Any], kind: str, *same: str) -> None:
        """Make ``d`` name an earlier event of ``kind`` (an order: by its id, as order_id), most
        often one the store applied (as a source system knows what it sent and was accepted)."""
        earlier = [b for b in self.bodies if b["kind"] == kind and "reverses" not in b]
        if data.draw(st.integers(0, 3)):
            applied = {
                (b["org_code"], b["event_id"])
                for (v, _, _), o in zip(self.accepted, self.outcomes)
                if o == "applied" and (b := json.loads(v))["kind"] == kind
            }
            earlier = [b for b in earlier if (b["org_code"], b["event_id"]) in applied] or earlier
        if kind == "payment_order":
            earlier.append({"event_id": "zz", **{k: d[k] for k in ("org_code", "account", "fiscal_year")}})
        if earlier:
            b = data.draw(st.sampled_from(earlier))
            d.update({k: b.get(k, d.get(k)) for k in ("org_code", "account", "fiscal_year", *same)})
            if kind == "payment_order":
                d["order_id"] = b["event_id"]

    def _send(self, value: bytes, topic: str, key: bytes) -> None:
        self.logs[topic].append((value, key))

    @initialize()
    def prelude(self) -> None:
        """Two commitments and a schedule on one position, for the orders, payments and
        receipts that follow to name."""
        for kind, amount, extra in (
            ("commitment", 600, {"commitment_id": "k0"}),
            ("commitment", 300, {"commitment_id": "k1"}),
            (
                "expected_receipt",
                500,
                {
                    "category": "grant",
                    "schedule_id": "s0",
                    "expected_date": DATES[0],
                    "certainty": "confirmed",
                },
            ),
        ):
            self.counter += 1
            d = {
                "event_id": f"e{self.counter}",
                "org_code": SEOUL,
                "account": "general",
                "fiscal_year": 2026,
                "kind": kind,
                "amount": amount,
                "occurred_at": "2026-01-02T09:00:00+09:00",
                "source": "machine",
                **extra,
            }
            self.bodies.append(d)
            self._send(orjson.dumps(d), TOPIC_OF_KIND[kind], SEOUL.encode())

    @rule(data=st.data(), n=st.integers(1, 5))
    def produce(self, data: st.DataObject, n: int) -> None:
        for _ in range(n):
            what = data.draw(st.sampled_from(("new",) * 6 + ("resend", "reencode", "conflict", "bad")))
            if what == "new" or not self.bodies:
                d = self._new_body(data)
                self.bodies.append(d)
                self._send(orjson.dumps(d), TOPIC_OF_KIND[d["kind"]], d["org_code"].encode())
            elif what == "resend":  # producer retry: the very same bytes at a new offset
                topic = data.draw(st.sampled_from([t for t in TOPICS if self.logs[t]]))
                value, key = data.draw(st.sampled_from(self.logs[topic]))
                self._send(value, topic, key)
            elif what == "reencode":
                d = data.draw(st.sampled_from(self.bodies))
                value = json.dumps(dict(sorted(d.items(), reverse=True)), indent=2).encode()
                self._send(value, TOPIC_OF_KIND[d["kind"]], d["org_code"].encode())
            elif what == "conflict":
                d = dict(data.draw(st.sampled_from(self.bodies)))
                d["amount"] = d["amount"] % 500 + 1
                self._send(orjson.dumps(d), TOPIC_OF_KIND[d["kind"]], d["org_code"].encode())
            else:  # on the wrong topic
                d = data.draw(st.sampled_from(self.bodies))
                other = EXPENDITURE if TOPIC_OF_KIND[d["kind"]] == REVENUE else REVENUE
                self._send(orjson.dumps(d), other, d["org_code"].encode())
        if data.draw(st.booleans(), label="and consume"):  # else runs often produce only
            self.consume(data)

    # -- consuming, as agents/ledger.py does --------------------------------------------------------

    def _fetch(self, data: st.DataObject, rewind: bool) -> dict[str, list[tuple[int, bytes, bytes]]]:
        """What one poll returns per topic: (offset, value, key) from some position onwards."""
        batch = {}
        order = data.draw(st.permutations(TOPICS), label="topic order")
        for t in order:
            start = self.next[t]
            if rewind:
                start = data.draw(st.integers(0, start), label=f"rewind {t}")
            end = min(len(self.logs[t]), start + data.draw(st.integers(0, 16), label=f"max {t}"))
            batch[t] = [(o, *self.logs[t][o]) for o in range(start, end)]
        return batch

    def _process(self, batch: dict[str, list[tuple[int, bytes, bytes]]], commit: bool = True) -> None:
        good = []
        offsets: dict[tuple[str, int], int] = {}
        folded: list[tuple[bytes, str, bytes]] = []
        rejected_early: list[tuple[bytes, str, bytes, str]] = []
        for topic, records in batch.items():
            start = self.next[topic]
            side = SIDE_OF_TOPIC[topic]
            for offset, value, key in records:
                if offset < start:
                    continue  # already in the state: skipped, never folded twice
                res = check_message(value, key, side)
                if isinstance(res, Rejection):
                    rejected_early.append((value, side, key, res.reason))
                else:
                    good.append((res, value, topic, offset))
                    folded.append((value, side, key))
            if records:
                offsets[(topic, 0)] = max(start, records[-1][0] + 1)
        ledger = self.ledger
        outs = ["applied"] * len(good)
        for i, o in ledger.fold([(ev, value, (topic, 0, offset, 0)) for ev, value, topic, offset in good]):
            outs[i] = o if isinstance(o, str) else o.reason
        changes = ledger.take_changes()
        assert changes.applied == outs.count("applied")
        assert changes.duplicates == outs.count("duplicate")
        if not commit:
            return  # crashed before the state write
        self.store.commit(changes, ledger.positions, offsets)
        ledger.journal.clear()
        ledger.commitments.clear()
        ledger.orders.clear()
        ledger.schedules.clear()
        for (topic, _), nxt in offsets.items():
            self.next[topic] = nxt
        # the accepted input, in the order the fold saw it (stateless rejections change nothing)
        for value, side, key, reason in rejected_early:
            self.accepted.append((value, side, key))
            self.outcomes.append(reason)
        self.accepted.extend(folded)
        self.outcomes.extend(outs)

    @rule(data=st.data())
    def consume(self, data: st.DataObject) -> None:
        self._process(self._fetch(data, rewind=False))

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Re-fetch from an earlier offset: everything below the stored offset must be skipped."""
        before = {k: (p.cash, p.committed, p.version) for k, p in self.ledger.positions.items()}
        n_accepted = len(self.accepted)
        batch = self._fetch(data, rewind=True)
        old_only = {t: [r for r in rs if r[0] < self.next[t]] for t, rs in batch.items()}
        self._process(old_only)
        assert len(self.accepted) == n_accepted
        assert {k: (p.cash, p.committed, p.version) for k, p in self.ledger.positions.items()} == before
        self._process(batch)  # old and new together, as a real re-fetch returns them

    @rule(data=st.data(), mid_batch=st.booleans())
    def crash(self, data: st.DataObject, mid_batch: bool) -> None:
        if not data.draw(st.booleans(), label="really crash"):
            self.consume(data)  # keep crashes rarer than batches
            return
        if mid_batch:
            self._process(self._fetch(data, rewind=False), commit=False)
        self.crashes += 1
        self.store.close()
        self.store = Store(self.tmp)
        self.ledger = self.store.attach(Ledger())
        for org in ORG_ACCOUNTS:
            self.ledger.positions.update(self.store.positions(org))
        for t in TOPICS:
            self.next[t] = self.store.next_offset(t, 0) or 0

    # -- invariants -------------------------------------------------------------------------------

    def _reference(self) -> Reference:
        ref = Reference()
        for m in self.accepted:
            ref.feed(*m)
        return ref

    @invariant()
    def equals_reference_fold(self) -> None:
        ref = self._reference()
        assert ref.outcomes == self.outcomes
        expected = ref.positions()
        mem = {k: (p.cash, p.committed) for k, p in self.ledger.positions.items()}
        disk_pos = {}
        for org in ORG_ACCOUNTS:
            disk_pos.update(self.store.positions(org))
        disk = {k: (p.cash, p.committed) for k, p in disk_pos.items()}
        assert mem == expected
        assert disk == expected
        assert {k: p.version for k, p in disk_pos.items()} == ref.versions()
        assert {k: p.version for k, p in self.ledger.positions.items()} == ref.versions()
        for p in disk_pos.values():
            assert type(p.cash) is int and type(p.committed) is int and p.committed >= 0
            assert 0 <= p.ordered <= p.committed
        # the known flows: ordered per position, each order's and each schedule's open amount
        assert {k: p.ordered for k, p in self.ledger.positions.items()} == ref.ordered()
        assert {k: p.ordered for k, p in disk_pos.items()} == ref.ordered()
        orders = {(org, oid): o.open for org in ORG_ACCOUNTS for oid, o in self.store.orders(org)}
        assert orders == ref.orders_open()
        schedules = {(org, sid): sch.open for org in ORG_ACCOUNTS for sid, sch in self.store.schedules(org)}
        assert schedules == ref.schedules()

    @invariant()
    def offsets_are_stored(self) -> None:
        for t in TOPICS:
            assert (self.store.next_offset(t, 0) or 0) == self.next[t]

    @invariant()
    def conservation(self) -> None:
        """Per government, cash over all accounts = receipts − payments (reversals negate)."""
        expected: Counter[str] = Counter()
        for (value, _, _), o in zip(self.accepted, self.outcomes):
            if o != "applied":
                continue
            d = json.loads(value)
            sign = -1 if d.get("reverses") else 1
            if d["kind"] == "receipt":
                expected[d["org_code"]] += sign * d["amount"]
            elif d["kind"] == "payment":
                expected[d["org_code"]] -= sign * d["amount"]
        for org in ORG_ACCOUNTS:
            got = sum(p.cash for p in self.store.positions(org).values())
            assert got == expected[org], org

    @invariant()
    def index_and_journal_agree(self) -> None:
        applied = Counter(
            json.loads(v)["org_code"] for (v, _, _), o in zip(self.accepted, self.outcomes) if o == "applied"
        )
        for org in ORG_ACCOUNTS:
            for (o, account, fy), p in self.store.positions(org).items():
                rows = list(self.store.index(o, account, fy))
                assert sum(r[2] for r in rows) == p.cash
                assert sum(r[3] for r in rows) == p.committed
                assert len(rows) == p.version
            assert sum(1 for _ in self.store.journal_entries(org)) == applied[org]


LedgerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerMachine = LedgerMachine.TestCase
