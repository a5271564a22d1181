"""The installed package works outside the checkout.

Builds the wheel from a copy of the working tree (offline: ``--no-build-isolation``, the
project venv's setuptools, which the ``test`` extra pins), installs it with ``--no-deps`` into
a fresh virtualenv in a temporary directory whose only view of the dependencies is a ``.pth``
line pointing at this venv's site-packages (``.pth`` files there, such as the editable install's
finder, are not run, so the checkout is not importable), and from a temporary directory runs
every console script's ``--help`` (and every ``cashpos`` subcommand's), ``cashpos schema``,
imports every module of the service's packages, and checks that the shipped ``alerts.toml``
is the configuration an installed copy loads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# the service's packages (bench/ and loadtest/ need the `load` extra; faults/ and tests/ are
# not shipped): every module of these must import from the installed wheel
SERVICE_PACKAGES = ["cashpos", "alerts", "streams", "state", "agents", "serving", "access", "reconcile"]
SKIP_DIRS = {
    ".git",
    ".venv",
    "var",
    "artifacts",
    "build",
    "dist",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "cashpos-app-data",
}


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in SKIP_DIRS or n.endswith((".egg-info", ".so", ".pyc"))}


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    p = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )  # the assert shows the output
    assert p.returncode == 0, f"{args} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(venv, a working directory outside the checkout, environment) with the wheel installed."""
    from importlib.metadata import version

    backend = PYPROJECT["build-system"]["requires"][0].partition(">=")[2]
    have = version("setuptools")
    assert tuple(map(int, have.split(".")[:2])) >= tuple(map(int, backend.split(".")[:2])), (
        f"setuptools {have} is older than the build backend's {backend}: reinstall the `test` extra"
    )
    base = tmp_path_factory.mktemp("packaging")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_ignore)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not k.startswith("CASHPOS_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheels = base / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            wheels,
            src,
        ],
        cwd=base,
        env=env,
        timeout=300,
    )
    (wheel,) = wheels.glob("cashpos-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base, env=env)
    vpy = venv / "bin" / "python"
    purelib = Path(
        _run(
            [vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base, env=env
        ).strip()
    )
    # the dependencies: this venv's site-packages, appended after the new venv's own
    (purelib / "_cashpos_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", vpy, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=base,
        env=env,
    )
    shutil.rmtree(src)  # nothing may depend on the build tree
    cwd = base / "elsewhere"
    cwd.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, cwd, env


def test_console_scripts_help(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, cwd, env = installed
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts
    for name in scripts:
        out = _run([venv / "bin" / name, "--help"], cwd, env)
        assert "usage" in out.lower()
    # every cashpos subcommand's own help (the names read from its parser)
    names = _run(
        [
            venv / "bin" / "python",
            "-c",
            (
                "import argparse, cashpos.cli as c\n"
                "cap = []\n"
                "orig = argparse.ArgumentParser.parse_args\n"
                "def grab(self, *a, **k):\n"
                "    for act in self._actions:\n"
                "        if isinstance(act, argparse._SubParsersAction): cap.extend(act.choices)\n"
                "    raise SystemExit(0)\n"
                "argparse.ArgumentParser.parse_args = grab\n"
                "try: c.main([])\n"
                "except SystemExit: pass\n"
                "print(' '.join(cap))"
            ),
        ],
        cwd,
        env,
    ).split()
    assert {"worker", "api", "reconcile", "schema", "run"} <= set(names), names
    for sub in names:
        _run([venv / "bin" / "cashpos", sub, "--help"], cwd, env)


def test_schema(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, cwd, env = installed
    schema = json.loads(_run([venv / "bin" / "cashpos", "schema"], cwd, env))
    assert isinstance(schema, dict) and schema


def test_every_service_module_imports_from_the_wheel(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, cwd, env = installed
    code = (
        "import importlib, pkgutil, sys\n"
        "import reconcile.run, agents.alerting\n"
        f"site = {str(venv)!r}\n"
        "assert not any(p in ('', '.') for p in sys.path[1:]), sys.path\n"
        f"for name in {SERVICE_PACKAGES!r}:\n"
        "    pkg = importlib.import_module(name)\n"
        "    assert pkg.__file__.startswith(site), (name, pkg.__file__)\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, name + '.'):\n"
        "        mod = importlib.import_module(m.name)\n"
        "        assert (mod.__file__ or '').startswith(site), (m.name, mod.__file__)\n"
        "import aiohttp  # the alert webhook's client\n"
        "print('ok')\n"
    )
    assert _run([venv / "bin" / "python", "-c", code], cwd, env).strip().endswith("ok")


def test_packaged_data(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """The shipped alerts.toml is the configuration loaded (not the built-in fallback), and the
    reference data and the dashboard are in the wheel."""
    venv, cwd, env = installed
    code = (
        "import json\n"
        "from pathlib import Path\n"
        "import alerts.config as a\n"
        "from alerts.config import config_from_env as alert_config_from_env\n"
        "import serving.app, cashpos.refdata as r\n"
        "print(json.dumps({'path': str(a.DEFAULT_CONFIG_PATH),\n"
        "                  'exists': a.DEFAULT_CONFIG_PATH.exists(),\n"
        "                  'same': alert_config_from_env() == a.decode_config(Path(a.DEFAULT_CONFIG_PATH).read_bytes()) if a.DEFAULT_CONFIG_PATH.exists() else False,\n"
        "                  'fallback': alert_config_from_env() == a.AlertConfig(),\n"
        "                  'index': (serving.app.STATIC / 'index.html').is_file(),\n"
        "                  'governments': len(r.governments())}))\n"
    )
    got = json.loads(_run([venv / "bin" / "python", "-c", code], cwd, env))
    assert got["path"].startswith(str(venv)), got
    assert got["exists"], f"alerts.toml is not in the wheel: {got}"
    installed_toml = Path(got["path"]).read_bytes()
    assert installed_toml == (ROOT / "cashpos" / "alerts.toml").read_bytes()
    assert got["same"] and not got["fallback"], got
    assert got["index"], got
    assert got["governments"] == 243, got


def test_metadata(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """The service's requirements carry what it imports (aiohttp: the alert webhook) and none
    of the test or load tools; the licence is an SPDX expression."""
    venv, _, _ = installed
    (meta,) = venv.glob("lib/python*/site-packages/cashpos-*.dist-info/METADATA")
    headers = [line.partition(": ") for line in meta.read_text().split("\n\n")[0].splitlines()]
    requires = [v for k, _, v in headers if k == "Requires-Dist"]
    service = {
        r.split(";")[0].split("==")[0].split(">")[0].strip().lower() for r in requires if "extra ==" not in r
    }
    assert "aiohttp" in service, requires
    assert not service & {"pytest", "hypothesis", "playwright", "locust", "httpx", "ruff", "mypy"}, service
    assert ("License-Expression", ": ", "Apache-2.0") in headers
