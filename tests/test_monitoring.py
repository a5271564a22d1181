"""Monitoring as shipped (issue #19): the metrics role, the exposition (process and build info,
initialised label sets, the workers' families merged, Redis read without blocking the loop),
the alert rules under ``promtool test rules`` (each rule's cases shown to catch a broken rule),
and Debian's real Prometheus server scraping the test stack with the shipped rules.

The integration tests start processes: run them under the machine-wide lock
(``flock /tmp/cashpos-heavy.lock .venv/bin/pytest -q tests/test_monitoring.py``).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from access.policy import GRANTS, Permission, Principal, Role, ScopeError, decide, resolve_scope
from cashpos.embedded import free_port
from cashpos.metrics import ApiMetrics, ProcessorMetrics
from cashpos.names import RedisKeys
from serving.federation import WorkerExpositions, exposition, render
from streams.contract import REASONS
from tests.conftest import ROOT, Stack

PROM = ROOT / "dashboards" / "prometheus"
RULES = PROM / "cashpos-rules.yml"
RULE_TESTS = PROM / "cashpos-rules.test.yml"
TOKEN_FILE = "/etc/prometheus/cashpos-metrics.token"
OWN = "3000000"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool missing: install Debian's `prometheus` (scripts/system-deps.sh test does)",
)
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus missing: install Debian's `prometheus` (scripts/system-deps.sh test does)",
)


# --- the metrics role ------------------------------------------------------------------------


def metrics_principal() -> Principal:
    return Principal("t1", "prometheus", Role.METRICS, resolve_scope(Role.METRICS, []), 5)


def test_the_metrics_role_may_scrape_and_nothing_else() -> None:
    p = metrics_principal()
    for perm in Permission:
        assert decide(p, perm).status == (200 if perm is Permission.METRICS else 403), perm
        assert decide(p, perm, OWN).status == 404  # it sees no government at all
    assert p.visible([OWN, "6110000"]) == []
    with pytest.raises(ScopeError):
        resolve_scope(Role.METRICS, [OWN])
    # the roles that could read /metrics before keep it; no other role gains it
    assert {r for r, g in GRANTS.items() if Permission.METRICS in g} == {
        Role.METRICS,
        Role.NATIONAL,
        Role.ADMIN,
    }


def test_the_metrics_route_needs_the_metrics_permission_and_no_other_route_accepts_it() -> None:
    from serving.app import create_app

    def walk(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)
            yield from walk(inner.routes) if inner is not None else [r]

    guarded_by_metrics = []
    for r in walk(create_app().routes):
        dep = getattr(r, "dependant", None)
        names = [d.call.__name__ for d in dep.dependencies] if dep else []
        if "require_metrics" in names:
            guarded_by_metrics.append(r.path)
    assert guarded_by_metrics == ["/metrics"]  # every route against the stack: below


# --- the exposition --------------------------------------------------------------------------


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_exposition_merges_api_and_workers_with_process_build_info_and_initialised_labels() -> None:
    from prometheus_client import generate_latest

    worker = ProcessorMetrics()
    worker.events_deadlettered.labels("not_json").inc(3)
    texts = {"w1": generate_latest(worker.registry).decode(), "w2": generate_latest(worker.registry).decode()}
    rec = orjson.dumps({"diff_krw": 0, "finished_ms": 1_700_000_000_000})
    text = render(ApiMetrics().registry, WorkerExpositions(texts, rec)).decode()

    types = re.findall(r"^# TYPE (\S+)", text, re.MULTILINE)
    assert len(types) == len(set(types)), "a family's TYPE line twice: Prometheus refuses the page"
    fams = _families(text)
    cpu = {s.labels.get("worker") for s in fams["process_cpu_seconds"]}
    assert cpu == {None, "w1", "w2"}  # the API's own and each worker's
    build = {(s.labels["component"], s.labels.get("worker")) for s in fams["cashpos_build_info"]}
    assert build == {("api", None), ("worker", "w1"), ("worker", "w2")}
    assert all(s.value == 1 for s in fams["cashpos_build_info"])
    assert "python_info" in fams and "process_start_time_seconds" in fams
    dl = {
        s.labels["reason"]: s.value
        for s in fams["cashpos_events_deadlettered"]
        if s.labels["worker"] == "w1" and s.name.endswith("_total")
    }
    assert set(dl) == set(REASONS)  # every reason present before it ever happens
    assert dl["not_json"] == 3 and dl["unknown_account"] == 0
    rejected = {s.labels["reason"] for s in fams["cashpos_api_events_rejected"]}
    assert "not_json" in rejected and "unknown_commitment" not in rejected  # the gateway's own
    assert fams["cashpos_reconciliation_last_run_timestamp_seconds"][0].value == 1_700_000_000
    # no reconciliation recorded: no gauge (the rule's absent() covers it)
    bare = _families(render(ApiMetrics().registry, WorkerExpositions(texts, None)).decode())
    assert "cashpos_reconciliation_last_run_timestamp_seconds" not in bare


class _SlowRedis:
    """Answers like redis.asyncio, each call taking 50 ms of waiting (a slow Redis)."""

    def __init__(self, texts: dict[bytes, bytes]) -> None:
        self.texts = texts

    async def scan_iter(self, match: str, count: int):
        for name in self.texts:
            await asyncio.sleep(0.05)
            yield name

    async def mget(self, names):
        await asyncio.sleep(0.05)
        return [self.texts[n] for n in names]

    async def get(self, key):
        await asyncio.sleep(0.05)


def test_the_scrape_waits_for_redis_without_blocking_the_event_loop() -> None:
    from prometheus_client import generate_latest

    keys = RedisKeys("t")
    text = generate_latest(ProcessorMetrics().registry)
    r = _SlowRedis({keys.worker_metrics(f"w{i}").encode(): text for i in range(4)})

    async def main() -> tuple[bytes, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(tick())
        body = await exposition(ApiMetrics().registry, r, keys)  # type: ignore[arg-type]  # a stand-in Redis
        t.cancel()
        return body, ticks

    body, ticks = asyncio.run(main())
    workers = {s.labels.get("worker") for s in _families(body.decode())["cashpos_build_info"]}
    assert workers == {None, "w0", "w1", "w2", "w3"}
    assert ticks >= 20, f"the loop ran {ticks} times in 300 ms of Redis waits: it was blocked"


# --- the rules under promtool ----------------------------------------------------------------


def _alerts() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _promtool_test(tests: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "test", "rules", tests.name],
        cwd=tests.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
def test_promtool_unit_tests_pass_and_cover_every_rule_both_ways() -> None:
    r = _promtool_test(RULE_TESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t["exp_alerts"] else quiet).add(t["alertname"])
    alerts = set(_alerts())
    assert len(alerts) == 9
    assert alerts - firing == set(), "rules with no case that fires them"
    assert alerts - quiet == set(), "rules with no case that must not fire"


@needs_promtool
@pytest.mark.parametrize("broken", ["vector(0) > 1", "vector(1)"])
def test_the_promtool_cases_catch_every_rule_broken(tmp_path: Path, broken: str) -> None:
    """Each rule in turn replaced by one that never fires (or always does): the cases must fail."""
    doc = yaml.safe_load(RULES.read_text())
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    survived = []
    for name in _alerts():
        mutated = yaml.safe_load(RULES.read_text())
        for g in mutated["groups"]:
            for rule in g["rules"]:
                if rule.get("alert") == name:
                    rule["expr"] = broken
        (tmp_path / RULES.name).write_text(yaml.safe_dump(mutated, allow_unicode=True))
        if _promtool_test(tmp_path / RULE_TESTS.name).returncode == 0:
            survived.append(name)
    assert doc and survived == [], f"rule cases that pass with the rule broken ({broken}): {survived}"


@needs_promtool
def test_the_shipped_prometheus_config_scrapes_with_a_metrics_token_file(tmp_path: Path) -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (job,) = cfg["scrape_configs"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_FILE}
    assert "cashpos token create --role metrics" in (PROM / "prometheus.yml").read_text()
    # promtool checks that the file exists: check a copy pointing at a stand-in token
    (tmp_path / "token").write_text("cpt_x\n")
    shutil.copy(RULES, tmp_path / RULES.name)
    text = (PROM / "prometheus.yml").read_text().replace(TOKEN_FILE, str(tmp_path / "token"))
    (tmp_path / "prometheus.yml").write_text(text)
    r = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# --- against the test stack ------------------------------------------------------------------


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: OWN if "org" in m.group(0) else "x", path)


@pytest.mark.integration
def test_a_metrics_token_reads_metrics_and_nothing_else(stack: Stack) -> None:
    from serving.app import create_app
    from serving.security import is_public

    h = stack.auth("metrics")
    r = httpx.get(f"{stack.api}/metrics", headers=h, timeout=10)
    assert r.status_code == 200, r.text
    fams = _families(r.text)
    build = {(s.labels["component"], s.labels.get("worker")) for s in fams["cashpos_build_info"]}
    assert ("api", None) in build and any(c == "worker" and w for c, w in build)
    assert any(s.labels.get("worker") for s in fams["process_resident_memory_bytes"])
    reasons = {s.labels["reason"] for s in fams["cashpos_events_deadlettered"]}
    assert reasons == set(REASONS)
    for role in ("national", "admin"):  # as before
        assert httpx.get(f"{stack.api}/metrics", headers=stack.auth(role), timeout=10).status_code == 200

    def walk(routes):
        for rt in routes:
            inner = getattr(rt, "original_router", None)
            yield from walk(inner.routes) if inner is not None else [rt]

    h = {"Authorization": f"Bearer {stack.token('metrics', name='route sweep', rate_per_s=10_000)}"}
    got: dict[tuple[str, str], int] = {}
    for rt in walk(create_app().routes):
        for method in sorted(getattr(rt, "methods", None) or {"GET"}):
            if method == "HEAD" or is_public(method, rt.path) or rt.path == "/metrics":
                continue
            url = stack.api + _fill(rt.path)
            with httpx.stream(method, url, headers=h, content=b"{}", timeout=10) as resp:
                got[(method, rt.path)] = resp.status_code
    assert len(got) > 20
    allowed = {k: v for k, v in got.items() if v not in (403, 404)}
    assert allowed == {}, f"routes that answer a metrics token with other than 403/404: {allowed}"


def _get(url: str) -> dict:
    r = httpx.get(url, timeout=5)
    r.raise_for_status()
    body: dict = r.json()
    return body


@pytest.mark.integration
@needs_prometheus
def test_a_real_prometheus_scrapes_the_stack_and_evaluates_the_rules(stack: Stack, tmp_path: Path) -> None:
    token = tmp_path / "cashpos-metrics.token"
    token.write_text(stack.token("metrics") + "\n")
    token.chmod(0o400)
    shutil.copy(RULES, tmp_path / RULES.name)
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = cfg["scrape_configs"]
    job["authorization"]["credentials_file"] = str(token)
    job["static_configs"] = [{"targets": [f"{stack.api_connect_host}:{stack.api_port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    prom = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        targets: list = []
        groups: list = []
        build: list = []
        while time.monotonic() < deadline:
            time.sleep(1)
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                targets = _get(f"{prom}/api/v1/targets")["data"]["activeTargets"]
                groups = _get(f"{prom}/api/v1/rules")["data"]["groups"]
                build = _get(f"{prom}/api/v1/query?query=cashpos_build_info")["data"]["result"]
            except httpx.HTTPError:
                continue
            evaluated = all(not r["lastEvaluation"].startswith("0001") for g in groups for r in g["rules"])
            if targets and all(t["health"] == "up" for t in targets) and groups and evaluated and build:
                break
        # the rules as evaluated on scraped data (the first evaluation may precede the first scrape)
        time.sleep(3)
        groups = _get(f"{prom}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        states = {r["name"]: r.get("state") for r in rules}
        result = {
            "targets": [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets],
            "rules": {r["name"]: (r["health"], r.get("lastError", ""), r.get("state")) for r in rules},
            "cashpos_build_info": [s["metric"] for s in build],
        }
        print(
            "real Prometheus against the test stack:",
            orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(),
        )
        assert [t["health"] for t in targets] == ["up"], result["targets"]
        assert sorted(r["name"] for r in rules) == sorted(_alerts())
        assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), result["rules"]
        assert {s["metric"].get("component") for s in build} == {"api", "worker"}
        assert states["CashposNoLedgerWorker"] == "inactive", result["rules"]  # the stack's worker
        # absent(): a fresh stack has never reconciled, so the rule is already counting
        recon = _get(f"{prom}/api/v1/query?query=cashpos_reconciliation_last_run_timestamp_seconds")
        if not recon["data"]["result"]:
            assert states["CashposReconciliationNotRunning"] in ("pending", "firing"), result["rules"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
