"""The operators' dashboards and alert rules refer only to metrics cashpos really exports,
and the rules pass promtool (Debian's prometheus package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cashpos import metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "dashboards" / "prometheus" / "cashpos-rules.yml"
DASHBOARDS = sorted((ROOT / "dashboards" / "grafana" / "dashboards").glob("*.json"))
METRIC = re.compile(r"\bcashpos_[a-z0-9_]+\b")


def exported_series() -> set[str]:
    """Every series name cashpos can export (with the suffixes Prometheus adds per type)."""
    names = {metrics.RECONCILIATION_DIFF_KRW, metrics.RECONCILIATION_LAST_RUN}
    for cls in (metrics.ProcessorMetrics, metrics.ApiMetrics):
        for family in cls().registry.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def expressions() -> list[tuple[str, str]]:
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        out += [(f"rule {r['alert']}", r["expr"]) for r in group["rules"]]
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            out += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    return out


def test_every_metric_used_by_rules_and_dashboards_exists():
    known = exported_series()
    used = expressions()
    assert len(used) >= 20 and DASHBOARDS
    missing = [(where, name) for where, expr in used for name in METRIC.findall(expr) if name not in known]
    assert not missing, missing


def test_metric_names_follow_prometheus_conventions():
    for name in exported_series():
        assert name.startswith(("cashpos_", "process_", "python_info")), (
            name
        )  # prometheus_client's process/platform collectors
        assert not re.search(r"_(ms|milliseconds|minutes|kb|mb)(_|$)", name), f"{name}: use base units"


def test_no_per_government_labels():
    from prometheus_client.metrics import MetricWrapperBase

    for cls in (metrics.ProcessorMetrics, metrics.ApiMetrics):
        for name, m in vars(cls()).items():
            if isinstance(m, MetricWrapperBase):
                assert not {"org_code", "account", "government"} & set(m._labelnames), name
    for where, expr in expressions():
        assert "org_code" not in expr and "account" not in expr, where


def test_promtool_accepts_the_rules_and_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: scripts/system-deps.sh test installs Debian's prometheus")
    for args in (
        ["check", "rules", str(RULES)],
        ["check", "config", "--syntax-only", str(RULES.parent / "prometheus.yml")],
    ):
        res = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
