"""Every external name cashpos uses: Kafka topics, consumer groups and Redis keys.

Nothing else in the code base spells a topic or a Redis key; all of them derive from the
namespace (CASHPOS_NAMESPACE, default ``cashpos``) so several stacks can share a broker.
"""

from __future__ import annotations

from dataclasses import dataclass

# Which kind goes on which side, and so on which input topic: spelt only here (``side_of_kind``,
# ``side_of_topic``, ``Topics.for_kind``; ``streams.contract`` checks every kind is on one side).
REVENUE = "revenue"
EXPENDITURE = "expenditure"
REVENUE_KINDS = frozenset({"receipt", "expected_receipt"})
EXPENDITURE_KINDS = frozenset(
    {"commitment", "commitment_cancel", "payment", "transfer", "commitment_carry_forward", "payment_order"}
)
# The close of a fiscal year is a control record on *both* input topics: each side closes its
# own share, so no verdict depends on how the two topics interleave (docs/design.md).
CLOSE_KIND = "fiscal_year_close"


def side_of_kind(kind: str) -> str:
    """``revenue`` or ``expenditure``: the side (and input topic) of an event kind."""
    return REVENUE if kind in REVENUE_KINDS else EXPENDITURE


def side_of_topic(topic: str) -> str:
    """The side of an input topic (``Topics.revenue`` or ``Topics.expenditure``)."""
    return REVENUE if topic.endswith("." + REVENUE) else EXPENDITURE


@dataclass(frozen=True)
class Topics:
    namespace: str

    @property
    def revenue(self) -> str:
        return f"{self.namespace}.events.{REVENUE}"

    @property
    def expenditure(self) -> str:
        return f"{self.namespace}.events.{EXPENDITURE}"

    @property
    def deadletter(self) -> str:
        return f"{self.namespace}.events.deadletter"

    @property
    def alerts(self) -> str:
        """Alert changes (raised, updated, acknowledged, resolved) as JSON, keyed by org_code."""
        return f"{self.namespace}.alerts"

    @property
    def audit(self) -> str:
        """Append-only audit log (JSON): audited reads and every write, with who and when."""
        return f"{self.namespace}.audit"

    @property
    def sources(self) -> tuple[str, str]:
        """The two input topics, co-partitioned by org_code."""
        return (self.revenue, self.expenditure)

    def for_kind(self, kind: str) -> str:
        """The input topic of an event kind."""
        return self.for_side(side_of_kind(kind))

    def for_record(self, kind: str) -> tuple[str, ...]:
        """The input topics a record of ``kind`` is published to: a year's close goes to both."""
        return self.sources if kind == CLOSE_KIND else (self.for_kind(kind),)

    def for_side(self, side: str) -> str:
        """The input topic of a side (``side_of_kind``)."""
        return self.revenue if side == REVENUE else self.expenditure

    @property
    def ledger_group(self) -> str:
        return f"{self.namespace}-ledger"

    @property
    def app_id(self) -> str:
        return f"{self.namespace}-app"


# A record header: "record this event's fate" (GET /v1/events/{org}/{id}); the API sets it on
# what it publishes, a producer may set it too. Its value is not read.
FATE_HEADER = "cashpos-fate"


@dataclass(frozen=True)
class RedisKeys:
    namespace: str

    def positions(self, org_code: str) -> str:
        """Hash: field ``{account}|{fiscal_year}`` -> ``{version}|{json}``; field ``_meta``."""
        return f"{self.namespace}:pos:{org_code}"

    @property
    def lua_positions_prefix(self) -> str:
        return f"{self.namespace}:pos:"

    @property
    def updates_channel(self) -> str:
        """Pub/sub channel: one message per processed batch listing changed governments."""
        return f"{self.namespace}:updates"

    @property
    def freshness(self) -> str:
        """Hash: last_event_at / last_write_at (epoch ms) per worker and overall."""
        return f"{self.namespace}:freshness"

    def worker_metrics(self, worker_id: str) -> str:
        """String: the worker's Prometheus exposition text, refreshed every second."""
        return f"{self.namespace}:metrics:{worker_id}"

    @property
    def worker_metrics_pattern(self) -> str:
        return f"{self.namespace}:metrics:*"

    def fates(self, org_code: str, day: int) -> str:
        """Hash per government and Korean day (``kst_day``): the fate of each submitted event
        (fields and values: ``state/fate_projection.py``), expiring after the retention."""
        return f"{self.namespace}:fate:{org_code}:{day}"

    @property
    def fates_pattern(self) -> str:
        return f"{self.namespace}:fate:*"

    @property
    def deadletters_recent(self) -> str:
        """List: the most recent dead letters (JSON), newest first, capped."""
        return f"{self.namespace}:deadletters:recent"

    @property
    def reconciliation(self) -> str:
        return f"{self.namespace}:reconciliation:last"

    @property
    def alerts_open(self) -> str:
        """Hash: alert id -> ``{rev}|{json}`` of every raised (or acknowledged) alert."""
        return f"{self.namespace}:alerts:open"

    @property
    def alerts_recent(self) -> str:
        """Hash: alert id -> ``{rev}|{json}`` of recently resolved alerts (capped)."""
        return f"{self.namespace}:alerts:recent"

    @property
    def alerts_recent_order(self) -> str:
        """Sorted set: resolved alert ids by resolution time (ms), to cap ``alerts_recent``."""
        return f"{self.namespace}:alerts:recent:order"

    @property
    def alerts_acks(self) -> str:
        """Hash: alert id -> ``{"by", "at_ms"}``, the first acknowledgement of each alert."""
        return f"{self.namespace}:alerts:acks"

    @property
    def alerts_channel(self) -> str:
        """Pub/sub channel: one JSON message per alert change."""
        return f"{self.namespace}:alerts:stream"

    @property
    def tokens(self) -> str:
        """Hash: SHA-256 of a token -> its JSON record (``access.tokens.TokenRecord``)."""
        return f"{self.namespace}:tokens"

    @property
    def pattern(self) -> str:
        """Every key of this namespace (Redis ACL key pattern)."""
        return f"{self.namespace}:*"

    @property
    def thresholds(self) -> str:
        """Hash: ``{org}|{account}`` (account ``*``: all) -> JSON threshold override."""
        return f"{self.namespace}:thresholds"

    def forecast(self, org_code: str) -> str:
        """Hash: field ``{account}`` (``*``: the government) -> ``{version}|{json}``, the
        forecast as served (``state/forecast_projection.py``)."""
        return f"{self.namespace}:forecast:{org_code}"

    @property
    def forecast_summary(self) -> str:
        """Hash: ``{org}`` -> ``{version}|{json}``, each government's forecast in brief (first
        crossings, lowest cash; ``state/forecast_projection.py``)."""
        return f"{self.namespace}:forecast:summary"

    @property
    def forecast_accuracy(self) -> str:
        """Hash: ``{org}`` -> JSON, each government's forecast against what happened."""
        return f"{self.namespace}:forecast:accuracy"


# Field of every positions hash that marks it as a complete serving copy. The API refuses to
# answer (503) for a government whose hash lacks it: an empty or flushed Redis must never read
# as a zero balance.
META_FIELD = "_meta"
