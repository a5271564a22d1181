"""The deployment files (deploy/) and the operations guide agree with the code they deploy.

* the systemd units parse (``systemd-analyze verify``, where installed), are hardened, restart,
  read the environment file, and give every worker instance its own id, web port and state;
* the Containerfile copies files that exist, and every first-party package the service imports
  (else the image's ``cashpos`` fails at run time on an import); its ignore file lets them in;
* ``deploy/env.example`` names only real settings, in a form systemd and ``docker --env-file``
  both read, and every value parses;
* ``docs/operations.md`` has a runbook for every Prometheus alert rule and every operational
  funds rule, and its relative links resolve;
* the container's health check tells a live API or worker from a dead one.

Building the image needs a container engine and the network (tests do neither): the guide's
"The container image" says how it was built and checked.
"""

from __future__ import annotations

import ast
import fnmatch
import http.server
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from alerts.model import LAG, STALE
from cashpos.settings import OTHER_VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
CONTAINERFILE = DEPLOY / "Containerfile"
IGNOREFILE = DEPLOY / "Containerfile.dockerignore"
ENV_EXAMPLE = DEPLOY / "env.example"
OPERATIONS = ROOT / "docs" / "operations.md"
RULES_FILE = ROOT / "dashboards" / "prometheus" / "cashpos-rules.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INSTALLED_CLI = "/opt/cashpos/bin/cashpos"

KNOWN_VARIABLES = {f.metadata["env"] for f in fields(Settings)} | set(OTHER_VARIABLES)


# --- systemd units ---


def unit_sections(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(key, value)] in order (a key may repeat: Environment=, EnvironmentFile=)."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {raw!r}"
        out[section].append((key.strip(), value.strip()))
    return out


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in unit_sections(path).get(section, []) if k == key]


SERVICES = sorted(UNITS.glob("*.service"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "User": "cashpos",
}


def test_the_expected_units_are_shipped() -> None:
    names = {p.name for p in UNITS.iterdir()}
    assert {
        "cashpos-worker@.service",
        "cashpos-api@.service",
        "cashpos-reconcile.service",
    } <= names


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_every_service_is_hardened_and_reads_the_environment_file(path: Path) -> None:
    for key, want in HARDENING.items():
        assert values(path, "Service", key) == [want], f"{path.name}: {key}={want} expected"
    env_files = values(path, "Service", "EnvironmentFile")
    assert "/etc/cashpos/cashpos.env" in env_files, path.name
    (start,) = values(path, "Service", "ExecStart")
    assert start.split()[0] == INSTALLED_CLI, path.name
    # a subcommand the CLI really has
    assert start.split()[1] in {"worker", "api", "reconcile"}, start
    if values(path, "Service", "Type") != ["oneshot"]:
        assert values(path, "Service", "Restart") in (["always"], ["on-failure"]), path.name


def _environment(path: Path) -> dict[str, str]:
    out = {}
    for item in values(path, "Service", "Environment"):
        k, _, v = item.partition("=")
        out[k] = v
    return out


def test_each_worker_instance_has_its_own_id_port_and_state() -> None:
    path = UNITS / "cashpos-worker@.service"
    env = _environment(path)
    for var in ("CASHPOS_WORKER_ID", "CASHPOS_WORKER_WEB_PORT", "CASHPOS_STATE_DIR"):
        assert "%i" in env.get(var, ""), f"{var} must depend on the instance"
    assert "%H" in env["CASHPOS_WORKER_ID"], "ids must be unique across hosts"
    (state_dir,) = values(path, "Service", "StateDirectory")
    assert env["CASHPOS_STATE_DIR"] == f"%S/{state_dir}", "the state lives in the unit's StateDirectory"
    assert set(env) <= KNOWN_VARIABLES


def test_each_api_instance_listens_on_its_own_port() -> None:
    env = _environment(UNITS / "cashpos-api@.service")
    assert env.get("CASHPOS_API_PORT") == "%i"


def test_the_reconciliation_runs_continuously_from_its_checkpoint() -> None:
    """A long-running incremental reconciler (issue #19, item 4), not a timer's full re-fold."""
    unit = UNITS / "cashpos-reconcile.service"
    assert values(unit, "Service", "ExecStart")[0].split()[1:] == ["reconcile", "--continuous"]
    assert values(unit, "Service", "Restart") == ["always"]
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]
    (state_dir,) = values(unit, "Service", "StateDirectory")
    env = _environment(unit)
    assert env["CASHPOS_RECONCILE_CHECKPOINT_DIR"] == f"%S/{state_dir}", (
        "the checkpoint in its StateDirectory"
    )
    assert set(env) <= KNOWN_VARIABLES
    assert not (UNITS / "cashpos-reconcile.timer").exists()


def _verify(units_dir: Path, names: list[str]) -> str:
    out = subprocess.run(
        ["systemd-analyze", "verify", *names],
        check=False,
        cwd=units_dir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    return (out.stdout + out.stderr).strip() + ("" if out.returncode == 0 else f"\nexit {out.returncode}")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: stand a program in for the installed CLI
    fake = tmp_path / "bin" / "cashpos"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for p in UNITS.iterdir():
        (units / p.name).write_text(p.read_text().replace(INSTALLED_CLI, str(fake)))
    names = ["cashpos-worker@6066.service", "cashpos-api@8001.service"] + sorted(
        p.name for p in UNITS.iterdir() if "@" not in p.name
    )
    assert _verify(units, names) == ""
    # ... and verify does complain here, about a misspelt key
    bad = units / "cashpos-api@.service"
    bad.write_text(bad.read_text().replace("ProtectHome=", "ProtectHomes=", 1))
    assert "ProtectHomes" in _verify(units, ["cashpos-api@8001.service"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_services_exposure_is_low(tmp_path: Path) -> None:
    """``systemd-analyze security``'s exposure score (0 best, 10 worst): 1.7 when written; a unit
    losing its hardening options goes above 5 ("MEDIUM" and worse)."""
    for p in UNITS.glob("*.service"):
        (tmp_path / p.name).write_text(p.read_text())
    for name in ("cashpos-worker@6066.service", "cashpos-api@8001.service", "cashpos-reconcile.service"):
        out = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", name],
            check=False,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
        assert found, out.stdout[-500:] + out.stderr[-500:]
        assert float(found.group(1)) <= 3.0, f"{name}: exposure {found.group(1)}"


# --- Containerfile ---


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not --from a stage)."""
    out = []
    for word, rest in instructions(CONTAINERFILE.read_text()):
        if word != "COPY":
            continue
        args = rest.split()
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        out.append((paths[:-1], paths[-1]))
    return out


def test_the_containerfile_copies_files_that_exist() -> None:
    sources = [s for srcs, _ in copies() for s in srcs]
    assert sources, "no COPY found: the parser or the Containerfile changed"
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"


def _ignore_allows(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore semantics, enough for this file: the last matching rule wins."""
    allowed = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        pattern = pattern.removeprefix("**/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/"):
            allowed = negated
    return allowed


def test_the_ignore_file_lets_every_copied_file_in() -> None:
    rules = [
        ln.strip() for ln in IGNOREFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    for srcs, _ in copies():
        for src in srcs:
            assert _ignore_allows(src, rules), f"{IGNOREFILE.name} keeps {src} out of the build context"
    assert not _ignore_allows(".venv", rules), "the checkout's virtualenv must stay out"
    assert not _ignore_allows("var", rules)


def _first_party() -> set[str]:
    """Top-level names of this repository's importable packages and modules."""
    out = set()
    for p in ROOT.iterdir():
        if p.name.startswith(".") or p.name in ("tests", "deploy", "build", "var", "artifacts"):
            continue
        if p.is_dir() and any(p.glob("*.py")):
            out.add(p.name)
        elif p.suffix == ".py":
            out.add(p.stem)
    return out


def _imports(package: Path) -> Iterator[tuple[Path, str]]:
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module.split(".")[0]


def test_the_image_holds_every_package_the_service_imports() -> None:
    copied = {srcs[0].rstrip("/") for srcs, dest in copies() if (ROOT / srcs[0]).is_dir()}
    assert "cashpos" in copied
    first_party = _first_party()
    missing = {
        f"{path.relative_to(ROOT)} imports {name}"
        for pkg in copied
        for path, name in _imports(ROOT / pkg)
        if name in first_party and name not in copied
    }
    assert not missing, sorted(missing)
    # and setuptools packages every copied directory (else the wheel silently lacks it)
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for pkg in copied:
        assert any(fnmatch.fnmatch(pkg, pat) for pat in include), f"{pkg} is not in packages.find"


def test_the_entrypoint_is_the_cashpos_script() -> None:
    assert PYPROJECT["project"]["scripts"]["cashpos"] == "cashpos.cli:main"
    ins = instructions(CONTAINERFILE.read_text())
    entry = [rest for word, rest in ins if word == "ENTRYPOINT"]
    assert entry and INSTALLED_CLI in entry[-1]
    assert [rest for word, rest in ins if word == "USER"][-1].split(":")[0] != "root"
    assert [word for word, _ in ins].count("FROM") >= 2, "multi-stage"
    assert any(word == "HEALTHCHECK" for word, _ in ins)
    # the kernel is checked where it is built
    assert "native.kernel" in CONTAINERFILE.read_text()


# --- env.example ---


def env_lines() -> list[tuple[int, str, str]]:
    """(line number, name, value) of every assignment that is set (not commented out)."""
    out = []
    for n, raw in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        name, sep, value = raw.partition("=")
        out.append((n, name, value))
        assert sep, f"env.example:{n}: not NAME=value"
    return out


def test_env_example_names_only_real_settings() -> None:
    mentioned = set(re.findall(r"\bCASHPOS_[A-Z0-9_]*[A-Z0-9]\b", ENV_EXAMPLE.read_text()))
    set_names = {name for _, name, _ in env_lines()}
    assert set_names, "nothing set"
    unknown = (mentioned | set_names) - KNOWN_VARIABLES
    assert not unknown, f"not settings (docs/configuration.md): {sorted(unknown)}"


def test_env_example_is_read_alike_by_systemd_and_docker() -> None:
    seen: set[str] = set()
    for n, name, value in env_lines():
        assert re.fullmatch(r"CASHPOS_[A-Z0-9_]+", name), f"line {n}: {name!r}"
        assert value == value.strip() and not value.startswith(("'", '"')), f"line {n}: quotes or spaces"
        assert name not in seen, f"line {n}: {name} twice"
        seen.add(name)


def test_env_example_leaves_the_per_instance_settings_to_the_units() -> None:
    """systemd lets EnvironmentFile= override Environment=: a per-instance variable set in the
    shared file would give every worker (API) instance the same id, port and state directory."""
    per_instance = set()
    for unit in UNITS.glob("*@.service"):
        per_instance |= set(_environment(unit))
    assert {"CASHPOS_WORKER_ID", "CASHPOS_STATE_DIR", "CASHPOS_API_PORT"} <= per_instance
    set_names = {name for _, name, _ in env_lines()}
    assert not per_instance & set_names, sorted(per_instance & set_names)


def test_env_example_values_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("CASHPOS_")]:
        monkeypatch.delenv(var)
    for _, name, value in env_lines():
        monkeypatch.setenv(name, value)
    s = Settings()  # raises SettingsError naming a variable whose value does not parse
    assert s.replication_factor >= 3, "a production example never replicates once"
    assert s.kafka_security_protocol != "PLAINTEXT"
    assert s.worker_web_bind == "127.0.0.1"


# --- docs/operations.md ---


def _headings(text: str) -> dict[str, str]:
    """Heading text -> the section's body (up to the next heading of any level); a ``#`` line
    inside a fenced code block is a shell comment, not a heading."""
    out: dict[str, str] = {}
    head, fenced = "", False
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            if head:
                out[head] = "\n".join(body)
            head, body = line.lstrip("#").strip(), []
        else:
            body.append(line)
    if head:
        out[head] = "\n".join(body)
    return out


def _runbook(name: str) -> str:
    sections = _headings(OPERATIONS.read_text())
    found = [body for head, body in sections.items() if re.search(rf"`?\b{re.escape(name)}\b`?", head)]
    assert found, f"docs/operations.md has no runbook section for {name}"
    return found[0]


PROMETHEUS_ALERTS = [
    r["alert"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"] if "alert" in r
]


def test_the_rules_file_has_alerts() -> None:
    assert len(PROMETHEUS_ALERTS) >= 5


@pytest.mark.parametrize("alert", PROMETHEUS_ALERTS)
def test_every_prometheus_alert_has_a_runbook(alert: str) -> None:
    body = _runbook(alert)
    assert "```" in body, f"{alert}: the runbook gives commands"
    for part in ("Means", "First checks"):
        assert part in body, f"{alert}: the runbook says what it means and what to check first"


@pytest.mark.parametrize("rule", [STALE, LAG])
def test_every_operational_funds_rule_has_a_runbook(rule: str) -> None:
    body = _runbook(rule)
    assert "Means" in body and "First checks" in body


def test_the_guide_links_resolve() -> None:
    text = OPERATIONS.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        assert (OPERATIONS.parent / link).resolve().exists(), f"broken link {link}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_guide_anchors_resolve() -> None:
    text = OPERATIONS.read_text()
    slugs = {_slug(h) for h in _headings(text)}
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert anchors
    assert not [a for a in anchors if a not in slugs], sorted(set(anchors) - slugs)


# --- the container's health check ---


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_health_check_reads_the_subcommand() -> None:
    hc = _healthcheck()
    assert hc.command(b"/opt/cashpos/bin/python\0/opt/cashpos/bin/cashpos\0api\0") == "api"
    assert hc.command(b"/opt/cashpos/bin/cashpos\0worker\0--loglevel=info\0") == "worker"
    assert hc.command(b"/bin/sh\0-c\0sleep 1\0") == ""


def test_the_health_check_tells_a_live_api_from_a_dead_one() -> None:
    hc = _healthcheck()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hc.check("api", {"CASHPOS_API_PORT": str(port)}) is None
    finally:
        server.shutdown()
        server.server_close()
    assert hc.check("api", {"CASHPOS_API_PORT": str(port)}, timeout=1) is not None


def test_the_health_check_tells_a_live_worker_from_a_dead_one() -> None:
    hc = _healthcheck()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert hc.check("worker", {"CASHPOS_WORKER_WEB_PORT": str(port)}) is None
    assert hc.check("worker", {"CASHPOS_WORKER_WEB_PORT": str(_free_port())}, timeout=1) is not None
    assert hc.check("reconcile", {}) is None
