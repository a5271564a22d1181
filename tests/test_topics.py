"""`cashpos topics create|check` and the worker's refusal of a cluster that does not match its
settings (streams/cluster_check.py, docs/topics.md).

Unit tests judge described topics (pure); the integration tests run the command and a worker
against the real embedded broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cashpos.names import Topics
from cashpos.settings import Settings, SettingsError
from streams.cluster_check import (
    MISMATCH,
    NOT_REPORTED,
    OK,
    WARNING,
    ClusterFacts,
    Finding,
    Report,
    TopicFacts,
    is_embedded,
    judge,
    parse_configs,
    refusal,
)
from streams.topics import topic_specs
from tests.conftest import new_stack

NS = "unit"
EXTERNAL = "kafka-1.example:9092,kafka-2.example:9092"


def settings(**kw: Any) -> Settings:
    base = Settings(
        kafka_bootstrap=EXTERNAL,
        namespace=NS,
        partitions=12,
        replication_factor=3,
        allow_replication_factor_one=False,
        kafka_embedded=None,
        embedded_kafka_port=19092,
    )
    return replace(base, **kw)


def good_facts(s: Settings, *, cluster_id: str | None = "prod-cluster", brokers: int = 3) -> ClusterFacts:
    """The topics exactly as ``topic_specs`` creates them, with what a real Kafka reports."""
    topics = {}
    for spec in topic_specs(s):
        configs = {**spec.configs, "min.insync.replicas": "2"}
        topics[spec.name] = TopicFacts(spec.name, spec.partitions, s.replication_factor, configs)
    return ClusterFacts(s.kafka_bootstrap, cluster_id, brokers, topics)


def with_topic(facts: ClusterFacts, name: str, **kw: Any) -> ClusterFacts:
    return replace(facts, topics={**facts.topics, name: replace(facts.topics[name], **kw)})


def configs(facts: ClusterFacts, name: str) -> dict[str, str]:
    got = facts.topics[name].configs
    assert got is not None
    return dict(got)


def bad(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.topic, f.check, f.status) for f in findings if f.status != OK]


# -- the judgement ------------------------------------------------------------------------------


def test_topics_as_created_are_all_ok() -> None:
    s = settings()
    findings = judge(s, good_facts(s))
    assert bad(findings) == []
    assert Report(findings).exit_code == 0
    # every topic is looked at, and the inputs' co-partitioning
    assert {f.topic for f in findings} == {spec.name for spec in topic_specs(s)} | {""}
    assert any(f.check == "co-partitioning" and f.status == OK for f in findings)


def test_wrong_input_partition_count_blocks_and_breaks_co_partitioning() -> None:
    s = settings()
    t = Topics(NS)
    findings = judge(s, with_topic(good_facts(s), t.expenditure, partitions=8))
    assert bad(findings) == [(t.expenditure, "partitions", MISMATCH), ("", "co-partitioning", MISMATCH)]
    assert all(f.blocks for f in findings if f.status == MISMATCH)
    report = Report(findings)
    assert report.exit_code == 1
    why = refusal(report)
    assert why is not None and f"{t.expenditure} partitions: 8, expected 12" in why


def test_both_inputs_differ_from_the_setting_but_agree() -> None:
    s = settings()
    t = Topics(NS)
    facts = with_topic(with_topic(good_facts(s), t.revenue, partitions=6), t.expenditure, partitions=6)
    assert bad(judge(s, facts)) == [
        (t.revenue, "partitions", MISMATCH),
        (t.expenditure, "partitions", MISMATCH),
    ]


def test_dead_letter_topic_with_fewer_partitions_blocks_more_does_not() -> None:
    s = settings()
    t = Topics(NS)
    fewer = [f for f in judge(s, with_topic(good_facts(s), t.deadletter, partitions=4)) if f.status != OK]
    assert [(f.check, f.status, f.blocks) for f in fewer] == [("partitions", MISMATCH, True)]
    more = [f for f in judge(s, with_topic(good_facts(s), t.deadletter, partitions=24)) if f.status != OK]
    assert [(f.check, f.status, f.blocks) for f in more] == [("partitions", MISMATCH, False)]


def test_alerts_partition_count_is_a_warning_audit_must_have_one() -> None:
    s = settings()
    t = Topics(NS)
    findings = judge(s, with_topic(with_topic(good_facts(s), t.alerts, partitions=3), t.audit, partitions=2))
    assert bad(findings) == [(t.alerts, "partitions", WARNING), (t.audit, "partitions", MISMATCH)]
    assert refusal(Report(findings)) is None  # neither stops a worker
    assert Report(findings).exit_code == 1


def test_missing_topic_blocks() -> None:
    s = settings()
    t = Topics(NS)
    facts = replace(
        s_facts := good_facts(s), topics={k: v for k, v in s_facts.topics.items() if k != t.revenue}
    )
    findings = judge(s, facts)
    assert bad(findings) == [(t.revenue, "exists", MISMATCH)]
    assert refusal(Report(findings)) is not None


def test_retention_and_cleanup_policy() -> None:
    s = settings()
    t = Topics(NS)
    facts = good_facts(s)
    kept_a_week = {**configs(facts, t.revenue), "retention.ms": str(7 * 86_400_000)}
    compacted = {**configs(facts, t.audit), "cleanup.policy": "compact"}
    facts = with_topic(with_topic(facts, t.revenue, configs=kept_a_week), t.audit, configs=compacted)
    findings = judge(s, facts)
    assert bad(findings) == [(t.revenue, "retention.ms", MISMATCH), (t.audit, "cleanup.policy", MISMATCH)]
    assert refusal(Report(findings)) is None  # the worker logs these, and starts


def test_min_insync_replicas_on_an_external_cluster() -> None:
    s = settings()
    t = Topics(NS)
    one = {**configs(good_facts(s), t.revenue), "min.insync.replicas": "1"}
    three = {**one, "min.insync.replicas": "3"}
    facts = with_topic(with_topic(good_facts(s), t.revenue, configs=one), t.expenditure, configs=three)
    assert bad(judge(s, facts)) == [
        (t.revenue, "min.insync.replicas", MISMATCH),
        (t.expenditure, "min.insync.replicas", WARNING),
    ]
    # not asked of the embedded broker, nor below replication factor 3
    assert not [f for f in judge(replace(s, kafka_embedded=True), facts) if f.check == "min.insync.replicas"]
    rf2 = replace(s, replication_factor=2)
    assert not [
        f
        for f in judge(rf2, with_topic(facts, t.revenue, replication_factor=2))
        if f.check == "min.insync.replicas" and f.topic == t.revenue
    ]


def test_configs_the_broker_does_not_report() -> None:
    s = settings(kafka_bootstrap="127.0.0.1:19092", replication_factor=1)  # the embedded broker
    facts = good_facts(s, cluster_id="tansu_cluster", brokers=1)
    t = Topics(NS)
    none = with_topic(facts, t.revenue, configs=None)  # no DescribeConfigs at all
    partial = with_topic(facts, t.revenue, configs={"cleanup.policy": "delete"})  # defaults unreported
    for f_ in (none, partial):
        findings = judge(s, f_)
        assert {(f.check, f.status) for f in findings if f.topic == t.revenue and f.status != OK} >= {
            ("retention.ms", NOT_REPORTED)
        }
        assert all(f.actual == "not reported by the broker" for f in findings if f.status == NOT_REPORTED)
        assert Report(findings).exit_code == 0


def test_replication_factor_differs_from_the_setting() -> None:
    s = settings()
    t = Topics(NS)
    findings = judge(s, with_topic(good_facts(s), t.alerts, replication_factor=2))
    assert bad(findings) == [(t.alerts, "replication_factor", MISMATCH)]
    facts = good_facts(s, brokers=2)
    assert ("", "brokers", MISMATCH) in bad(judge(s, facts))


def test_replication_factor_one_needs_a_setting_on_an_external_cluster() -> None:
    s = settings(replication_factor=1)
    facts = good_facts(s, brokers=3)
    findings = judge(s, facts)
    assert bad(findings) == [("", "replication_factor", MISMATCH)]
    why = refusal(Report(findings))
    assert why is not None and "CASHPOS_ALLOW_REPLICATION_FACTOR_ONE" in why
    assert bad(judge(replace(s, allow_replication_factor_one=True), facts)) == []
    # the embedded broker: by address, by cluster id, or by the setting
    assert bad(judge(replace(s, kafka_bootstrap="127.0.0.1:19092"), facts)) == []
    assert bad(judge(s, replace(facts, cluster_id="tansu_cluster"))) == []
    assert bad(judge(replace(s, kafka_embedded=True), facts)) == []


def test_is_embedded() -> None:
    s = settings()
    assert not is_embedded(s, "prod")
    assert is_embedded(replace(s, kafka_bootstrap="localhost:19092"), None)
    assert not is_embedded(replace(s, kafka_bootstrap="127.0.0.1:9092"), None)  # another port
    assert is_embedded(s, "tansu_cluster")
    assert not is_embedded(replace(s, kafka_embedded=False), "tansu_cluster")


def test_parse_configs_both_spellings_and_errors() -> None:
    responses = [
        {
            "resources": [
                {
                    "error_code": 0,
                    "resource_name": "a",
                    "config_entries": [{"config_names": "retention.ms", "config_value": "-1"}],
                },
                {
                    "error_code": 0,
                    "resource_name": "b",
                    "config_entries": [{"config_name": "cleanup.policy", "config_value": "delete"}],
                },
                {"error_code": 3, "resource_name": "c", "config_entries": []},
            ]
        }
    ]
    assert parse_configs(responses) == {"a": {"retention.ms": "-1"}, "b": {"cleanup.policy": "delete"}}


def test_settings_parse_the_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASHPOS_ALLOW_REPLICATION_FACTOR_ONE", "yes")
    monkeypatch.setenv("CASHPOS_KAFKA_EMBEDDED", "auto")
    s = Settings()
    assert s.allow_replication_factor_one is True and s.kafka_embedded is None
    monkeypatch.setenv("CASHPOS_KAFKA_EMBEDDED", "0")
    assert Settings().kafka_embedded is False
    monkeypatch.setenv("CASHPOS_KAFKA_EMBEDDED", "maybe")
    with pytest.raises(SettingsError, match="CASHPOS_KAFKA_EMBEDDED"):
        Settings()


# -- against the real broker --------------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cashpos.cli", "topics", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _create_wrong(s: Settings, partitions: dict[str, int]) -> None:
    """The namespace's topics as someone else made them: these partition counts."""
    admin = AIOKafkaAdminClient(**s.kafka_client_args())
    await admin.start()
    try:
        for spec in topic_specs(s):
            n = partitions.get(spec.name, spec.partitions)
            await admin.create_topics([NewTopic(spec.name, n, 1, topic_configs=spec.configs)])
    finally:
        await admin.close()


@pytest.mark.integration
def test_create_then_check_a_good_namespace(infra, tmp_path) -> None:
    s = new_stack(infra, tmp_path)
    env = s.env()
    check = _cli(env, "check", "--json")
    assert check.returncode == 1, check.stderr  # nothing there yet
    missing = [f for f in orjson.loads(check.stdout)["findings"] if f["check"] == "exists"]
    assert len(missing) == 5 and all(f["status"] == MISMATCH for f in missing)

    created = _cli(env, "create")
    assert created.returncode == 0, created.stdout + created.stderr
    again = _cli(env, "check", "--json")
    assert again.returncode == 0, again.stdout
    report = orjson.loads(again.stdout)
    assert report["embedded"] is True
    statuses = {(f["topic"], f["check"]): f["status"] for f in report["findings"]}
    t = Topics(s.namespace)
    assert statuses[(t.revenue, "partitions")] == OK and statuses[("", "co-partitioning")] == OK
    # Tansu reports the configs set at creation (only those): cashpos sets all it relies on.
    assert statuses[(t.revenue, "retention.ms")] == OK and statuses[(t.audit, "retention.bytes")] == OK
    assert MISMATCH not in statuses.values()
    text = _cli(env, "check")
    assert text.returncode == 0 and f"ok           {t.revenue} partitions: {s.partitions}" in text.stdout


@pytest.mark.integration
def test_check_a_broken_namespace_and_an_unreachable_broker(infra, tmp_path) -> None:
    from cashpos.embedded import free_port

    s = new_stack(infra, tmp_path)
    t = Topics(s.namespace)
    asyncio.run(_create_wrong(s.settings, {t.expenditure: s.partitions + 2}))
    res = _cli(s.env(), "check")
    assert res.returncode == 1, res.stdout + res.stderr
    assert (
        f"mismatch     {t.expenditure} partitions: {s.partitions + 2}, expected {s.partitions}" in res.stdout
    )
    assert "mismatch     cluster co-partitioning" in res.stdout
    assert f"ok           {t.revenue} partitions: {s.partitions}" in res.stdout

    # replication factor 1 on a cluster taken for external: refused, naming the setting
    ext = _cli(s.env(CASHPOS_KAFKA_EMBEDDED="0"), "create")
    assert ext.returncode == 1 and "CASHPOS_ALLOW_REPLICATION_FACTOR_ONE" in ext.stderr, ext.stderr

    # more replicas asked for than the cluster has brokers (Tansu: one)
    rf3 = _cli(s.env(CASHPOS_REPLICATION_FACTOR="3"), "check")
    assert rf3.returncode == 1 and "mismatch     cluster brokers: 1, expected >= " in rf3.stdout, rf3.stdout

    gone = _cli(s.env(CASHPOS_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}"), "check", "--json")
    assert gone.returncode == 2, gone.stdout + gone.stderr
    assert orjson.loads(gone.stdout)["unreachable"]


@pytest.mark.integration
def test_worker_refuses_mismatched_partitions(infra, tmp_path) -> None:
    s = new_stack(infra, tmp_path)
    t = Topics(s.namespace)
    asyncio.run(_create_wrong(s.settings, {t.revenue: s.partitions * 2}))
    p = s.start_worker()
    try:
        p.wait(90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit on a mismatch; its log:\n{s.log('worker-w1')[-3000:]}")
    log = s.log("worker-w1")
    assert p.returncode == 78, log[-3000:]
    assert "refusing to start" in log and f"{t.revenue} partitions: {s.partitions * 2}" in log, log[-3000:]


@pytest.mark.integration
def test_worker_refuses_replication_factor_one_on_an_external_cluster(infra, tmp_path) -> None:
    s = new_stack(infra, tmp_path)
    p = s.start_worker(CASHPOS_KAFKA_EMBEDDED="0")
    try:
        p.wait(90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker started anyway; its log:\n{s.log('worker-w1')[-3000:]}")
    log = s.log("worker-w1")
    assert p.returncode == 78 and "CASHPOS_ALLOW_REPLICATION_FACTOR_ONE" in log, log[-3000:]
    assert not Topics(s.namespace).revenue in asyncio.run(_topic_names(s.settings))  # nothing created


async def _topic_names(s: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(**s.kafka_client_args())
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()
