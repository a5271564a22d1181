"""Does the cluster hold the namespace's topics as cashpos needs them? (``cashpos topics check``,
and the worker before it consumes.)

Two halves: :func:`describe` reads what the broker says (metadata and topic configs, through
aiokafka's admin client) into :class:`ClusterFacts`; :func:`judge` is a pure function from those
facts and the settings to :class:`Finding` s. What each topic must be comes from
``streams.topics.topic_specs``.

A wrong partition count on an input topic, or two input topics not co-partitioned, sends
events to a partition their org_code does not hash to: each becomes a ``wrong_partition`` dead
letter. Those findings ``block`` a worker. Tansu (the embedded development broker) does not
report configs nobody set and may not answer DescribeConfigs at all: such a config is
``not reported by the broker``, never a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from cashpos.settings import Settings
from streams.topics import ALERTS, AUDIT, DEADLETTER, INPUT, TopicSpec, topic_specs

log = logging.getLogger(__name__)

OK, MISMATCH, WARNING, NOT_REPORTED = "ok", "mismatch", "warning", "not reported"
# Tansu's default cluster id, which cashpos/embedded.py starts it with.
EMBEDDED_CLUSTER_IDS = frozenset({"tansu_cluster"})
# Exit codes of ``cashpos topics``.
EXIT_OK, EXIT_MISMATCH, EXIT_UNREACHABLE = 0, 1, 2
RF_ONE_SETTING = "CASHPOS_ALLOW_REPLICATION_FACTOR_ONE"


class Refused(RuntimeError):
    """A configuration cashpos will not run with; the message is the one line to show."""


class Unreachable(RuntimeError):
    """The broker did not answer."""


@dataclass(frozen=True)
class TopicFacts:
    """One topic as the broker describes it (``partitions`` 0: it does not exist)."""

    name: str
    partitions: int = 0
    replication_factor: int = 0  # the smallest replica set of its partitions
    configs: dict[str, str] | None = None  # None: the broker reported none (no DescribeConfigs)

    @property
    def exists(self) -> bool:
        return self.partitions > 0


@dataclass(frozen=True)
class ClusterFacts:
    bootstrap: str
    cluster_id: str | None
    brokers: int
    topics: dict[str, TopicFacts]


@dataclass(frozen=True)
class Finding:
    """One judgement: ``status`` is ok, mismatch, warning or not reported; a mismatch that
    ``blocks`` keeps a worker from starting."""

    topic: str  # "" for the cluster as a whole
    check: str
    status: str
    actual: str
    expected: str
    detail: str = ""
    blocks: bool = False

    def text(self) -> str:
        """The finding without its status: where, what, the value and what was expected."""
        out = f"{self.topic or 'cluster'} {self.check}: {self.actual}"
        if self.status != OK and self.expected:
            out += f", expected {self.expected}"
        return out + (f" ({self.detail})" if self.detail else "")

    def line(self) -> str:
        return f"{self.status:<12} {self.text()}"


def is_embedded(settings: Settings, cluster_id: str | None) -> bool:
    """The embedded development broker: by CASHPOS_KAFKA_EMBEDDED, else by its address (the one
    ``cashpos run`` starts it on) or its cluster id (any port: the tests' brokers)."""
    if settings.kafka_embedded is not None:
        return bool(settings.kafka_embedded)
    hosts = {h.strip() for h in settings.kafka_bootstrap.split(",")}
    port = settings.embedded_kafka_port
    return hosts <= {f"127.0.0.1:{port}", f"localhost:{port}"} or cluster_id in EMBEDDED_CLUSTER_IDS


def replication_factor_one_refusal(settings: Settings, cluster_id: str | None) -> str | None:
    """Why cashpos refuses replication factor 1 here (None: it does not)."""
    if settings.replication_factor != 1 or settings.allow_replication_factor_one:
        return None
    if is_embedded(settings, cluster_id):
        return None
    return (
        f"cashpos: replication factor 1 on an external Kafka cluster ({settings.kafka_bootstrap}) "
        f"loses data with one broker: set CASHPOS_REPLICATION_FACTOR (3 on a real cluster), or "
        f"{RF_ONE_SETTING}=1 if you mean it"
    )


async def refuse_replication_factor_one(settings: Settings, admin: AIOKafkaAdminClient) -> None:
    """Raise :class:`Refused` when :func:`replication_factor_one_refusal` says so."""
    if settings.replication_factor != 1 or settings.allow_replication_factor_one:
        return
    why = replication_factor_one_refusal(settings, (await admin.describe_cluster()).get("cluster_id"))
    if why:
        raise Refused(why)


# -- the judgement (pure) ------------------------------------------------------------------------


def judge(settings: Settings, facts: ClusterFacts) -> list[Finding]:
    """Every finding about the namespace's topics on this cluster, in a stable order."""
    embedded = is_embedded(settings, facts.cluster_id)
    out: list[Finding] = []
    rf = settings.replication_factor
    why = replication_factor_one_refusal(settings, facts.cluster_id)
    if why:
        out.append(
            Finding(
                "", "replication_factor", MISMATCH, "1", ">= 2 on an external cluster", RF_ONE_SETTING, True
            )
        )
    if facts.brokers and rf > facts.brokers:
        out.append(
            Finding(
                "",
                "brokers",
                MISMATCH,
                str(facts.brokers),
                f">= CASHPOS_REPLICATION_FACTOR ({rf})",
                "topics cannot be created with more replicas than brokers",
            )
        )
    specs = topic_specs(settings)
    for spec in specs:
        out += _judge_topic(settings, spec, facts.topics.get(spec.name) or TopicFacts(spec.name), embedded)
    out += _co_partitioning(settings, facts)
    return out


def _judge_topic(settings: Settings, spec: TopicSpec, t: TopicFacts, embedded: bool) -> list[Finding]:
    if not t.exists:
        return [Finding(spec.name, "exists", MISMATCH, "missing", "present", "`cashpos topics create`", True)]
    out = [Finding(spec.name, "exists", OK, "present", "present")]
    # Partition counts: the input topics' decide where each government's events are read; the
    # dead-letter topic takes each dead letter at its source's partition number; the audit
    # topic's single partition is its order. The alerts topic is keyed by org_code (any count).
    setting = "CASHPOS_PARTITIONS" if spec.role != AUDIT else "one partition: a single order"
    if t.partitions == spec.partitions:
        out.append(Finding(spec.name, "partitions", OK, str(t.partitions), str(spec.partitions)))
    elif spec.role == ALERTS:
        out.append(
            Finding(
                spec.name,
                "partitions",
                WARNING,
                str(t.partitions),
                str(spec.partitions),
                "CASHPOS_PARTITIONS",
            )
        )
    else:
        blocks = spec.role == INPUT or (spec.role == DEADLETTER and t.partitions < settings.partitions)
        out.append(
            Finding(
                spec.name, "partitions", MISMATCH, str(t.partitions), str(spec.partitions), setting, blocks
            )
        )
    rf = settings.replication_factor
    out.append(
        Finding(
            spec.name,
            "replication_factor",
            OK if t.replication_factor == rf else MISMATCH,
            str(t.replication_factor),
            str(rf),
            "" if t.replication_factor == rf else "CASHPOS_REPLICATION_FACTOR",
        )
    )
    out += _judge_configs(spec, t, embedded)
    return out


def _judge_configs(spec: TopicSpec, t: TopicFacts, embedded: bool) -> list[Finding]:
    def config(key: str) -> str | None:
        return None if t.configs is None else t.configs.get(key)

    def not_reported(key: str, expected: str) -> Finding:
        return Finding(spec.name, key, NOT_REPORTED, "not reported by the broker", expected)

    out: list[Finding] = []
    policy = config("cleanup.policy")
    if policy is None:
        out.append(not_reported("cleanup.policy", "delete"))
    else:
        # Compaction keeps one record per key: it would drop events (inputs) or letters.
        good = policy == "delete"
        out.append(Finding(spec.name, "cleanup.policy", OK if good else MISMATCH, policy, "delete"))
    if spec.role in (INPUT, AUDIT):
        # Kept forever: a new owner of a partition re-folds its input topic from offset 0.
        for key in ("retention.ms", "retention.bytes"):
            value = config(key)
            if value is None:
                out.append(not_reported(key, "-1"))
            else:
                out.append(
                    Finding(spec.name, key, OK if value == "-1" else MISMATCH, value, "-1", "kept forever")
                )
    if not embedded and t.replication_factor >= 3:
        value = config("min.insync.replicas")
        if value is None:
            out.append(not_reported("min.insync.replicas", ">= 2"))
        elif not value.lstrip("-").isdigit() or int(value) < 2:
            detail = "an acknowledged write must survive a broker"
            out.append(Finding(spec.name, "min.insync.replicas", MISMATCH, value, ">= 2", detail))
        elif int(value) >= t.replication_factor:
            detail = "one broker down stops every write"
            out.append(
                Finding(spec.name, "min.insync.replicas", WARNING, value, f"< {t.replication_factor}", detail)
            )
        else:
            out.append(Finding(spec.name, "min.insync.replicas", OK, value, ">= 2"))
    return out


def _co_partitioning(settings: Settings, facts: ClusterFacts) -> list[Finding]:
    inputs = [s for s in topic_specs(settings) if s.role == INPUT]
    counts = [facts.topics[s.name].partitions for s in inputs if s.name in facts.topics]
    if len(counts) < len(inputs) or 0 in counts:
        return []  # a missing input topic is already a finding
    names = " and ".join(s.name for s in inputs)
    actual = " and ".join(str(c) for c in counts)
    if len(set(counts)) == 1:
        return [Finding("", "co-partitioning", OK, f"{names}: {actual} partitions", "equal")]
    detail = "one government's events would be on different workers"
    return [Finding("", "co-partitioning", MISMATCH, f"{names}: {actual} partitions", "equal", detail, True)]


# -- reading the cluster -------------------------------------------------------------------------


async def describe(settings: Settings, admin: AIOKafkaAdminClient) -> ClusterFacts:
    """What the broker says about the namespace's topics (read-only: metadata of all topics,
    since naming topics in a Metadata request may auto-create them)."""
    cluster = await admin.describe_cluster()
    wanted = {s.name for s in topic_specs(settings)}
    topics: dict[str, TopicFacts] = {}
    for t in await admin.describe_topics():
        name = t.get("topic")
        if name not in wanted or t.get("error_code"):
            continue
        parts = t.get("partitions") or []
        rf = min((len(p.get("replicas") or []) for p in parts), default=0)
        topics[name] = TopicFacts(name, len(parts), rf)
    configs = await _configs(admin, sorted(topics))
    for name, cfg in configs.items():
        topics[name] = TopicFacts(name, topics[name].partitions, topics[name].replication_factor, cfg)
    return ClusterFacts(
        settings.kafka_bootstrap, cluster.get("cluster_id"), len(cluster.get("brokers") or []), topics
    )


async def _configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's reported configs; none for a topic (or all) when the broker does not answer."""
    if not names:
        return {}
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    except (KafkaError, OSError, TimeoutError, ValueError) as exc:  # e.g. Tansu without DescribeConfigs
        log.info("the broker did not describe topic configs: %r", exc)
        return {}
    return parse_configs(r.to_object() for r in responses)


def parse_configs(responses: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """DescribeConfigs responses (as ``to_object()`` gives them) -> topic -> name -> value."""
    out: dict[str, dict[str, str]] = {}
    for resp in responses:
        for res in resp.get("resources") or []:
            if res.get("error_code"):
                continue
            entries = {}
            for e in res.get("config_entries") or []:
                key = e.get("config_names", e.get("config_name"))  # spelt both ways across versions
                if key is not None and e.get("config_value") is not None:
                    entries[str(key)] = str(e["config_value"])
            out[str(res.get("resource_name"))] = entries
    return out


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    cluster_id: str | None = None
    embedded: bool = False
    unreachable: str = ""

    @property
    def exit_code(self) -> int:
        if self.unreachable:
            return EXIT_UNREACHABLE
        return EXIT_MISMATCH if any(f.status == MISMATCH for f in self.findings) else EXIT_OK

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.status == MISMATCH and f.blocks]

    def lines(self) -> list[str]:
        if self.unreachable:
            return [f"cannot reach the broker: {self.unreachable}"]
        return [f.line() for f in self.findings]

    def as_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "cluster_id": self.cluster_id,
            "embedded": self.embedded,
            "unreachable": self.unreachable or None,
            "findings": [asdict(f) for f in self.findings],
        }


async def check(settings: Settings, attempts: int = 1) -> Report:
    """Describe the cluster and judge it; an unreachable broker is a report too (exit code 2)."""
    import asyncio

    last = ""
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(**settings.kafka_client_args(), request_timeout_ms=15000)
        try:
            await admin.start()
            facts = await describe(settings, admin)
            return Report(judge(settings, facts), facts.cluster_id, is_embedded(settings, facts.cluster_id))
        except (KafkaError, OSError, TimeoutError) as exc:
            last = f"{settings.kafka_bootstrap}: {exc!r}"
            if attempt < attempts - 1:
                await asyncio.sleep(1)
        finally:
            await admin.close()
    return Report([], unreachable=last)


def refusal(report: Report) -> str | None:
    """The one line a worker logs before it refuses to start (None: it may start)."""
    if report.unreachable:
        return f"cashpos: cannot check the topics: {report.unreachable}"
    if not report.blocking:
        return None
    what = "; ".join(f.text() for f in report.blocking)
    return f"cashpos: the topics do not match this worker's settings, refusing to start: {what} (`cashpos topics check`)"


async def worker_refusal(settings: Settings) -> str | None:
    """A worker's start: create what is missing, check, log what does not block; the one line to
    refuse with, or None."""
    from streams.topics import ensure_topics

    try:
        await ensure_topics(settings)
    except Refused as exc:
        return str(exc)
    report = await check(settings, attempts=5)
    for f in report.findings:
        if f.status in (MISMATCH, WARNING) and not f.blocks:
            log.warning("topics: %s", f.line())
    return refusal(report)
