"""A client generated from the OpenAPI document (tools/api_client.py, openapi-python-client) is
complete, compiles, type-checks, imports, and reads a position from a real stack.

The document comes from ``create_app().openapi()``: the generation needs no stack; only the last
test does (integration).
"""

from __future__ import annotations

import compileall
import importlib
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tools.api_client import PACKAGE, Generated, generate


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    return generate(tmp_path_factory.mktemp("api-client"))


@pytest.fixture(scope="module")
def client_package(generated: Generated) -> Iterator[ModuleType]:
    root = str(generated.package.parent)
    sys.path.insert(0, root)
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(root)
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_every_operation_of_the_document_is_in_the_client(generated: Generated) -> None:
    # A warning is an operation (or a body, a response) the generator left out, and why; only
    # the generator's own limits (an NDJSON body) are allowed.
    assert not generated.faults, "\n\n".join(generated.faults)


def test_the_client_compiles_and_type_checks(generated: Generated) -> None:
    assert compileall.compile_dir(str(generated.package), quiet=1), "the generated client does not compile"
    modules = list(generated.package.rglob("*.py"))
    assert len(modules) > 20, modules
    config = generated.package.parent / "mypy.ini"
    config.write_text("[mypy]\n")  # not the project's settings: the generator's code as it is
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", str(config)]
        + ["--python-version", "3.11", "-p", PACKAGE],
        check=False,
        cwd=generated.package.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _operation(generated: Generated, pkg: ModuleType, method: str, path: str) -> Any:
    """The generated module of one operation (found by the URL it requests: the generator
    names modules after the operation ids)."""
    needle = f'"url": "{path}"'
    for f in sorted((generated.package / "api").rglob("*.py")):
        text = f.read_text()
        if needle in text and f'"method": "{method}"' in text:
            rel = f.relative_to(generated.package).with_suffix("")
            return importlib.import_module(".".join((pkg.__name__, *rel.parts)))
    raise AssertionError(f"no generated module for {method.upper()} {path}")


def test_the_client_imports_with_every_operation(generated: Generated, client_package: ModuleType) -> None:
    assert hasattr(client_package, "AuthenticatedClient")
    for method, path in (
        ("get", "/v1/positions/{org_code}"),
        ("get", "/v1/summary"),
        ("get", "/v1/governments"),
        ("get", "/v1/alerts"),
        ("post", "/v1/tokens"),
    ):
        op = _operation(generated, client_package, method, path)
        assert callable(op.sync_detailed) and callable(op.asyncio_detailed)


@pytest.mark.integration
def test_the_client_reads_a_position_with_integer_money(
    generated: Generated, client_package: ModuleType, stack: Stack
) -> None:
    org = "3090000"
    op = _operation(generated, client_package, "get", "/v1/positions/{org_code}")
    with client_package.AuthenticatedClient(base_url=stack.api, token=stack.token("national")) as client:
        res = op.sync_detailed(org, client=client)
    assert res.status_code == 200, res.content[:300]
    body = res.parsed
    assert body.org_code == org
    assert body.accounts, "no account positions"
    raw = httpx.get(f"{stack.api}/v1/positions/{org}", headers=stack.headers, trust_env=False).json()
    first = body.accounts[0]
    for name in ("cash", "committed", "available"):
        value = getattr(first, name)
        assert type(value) is int, f"{name} is {type(value).__name__}: {value!r}"  # never float
    assert first.available == first.cash - first.committed
    assert [a.cash for a in body.accounts] == [a["cash"] for a in raw["accounts"]]
