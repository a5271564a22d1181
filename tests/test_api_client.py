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
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from cashpos.embedded import Infra
from tests.conftest import Stack, new_stack
from tests.events import event
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


@pytest.fixture(scope="module")
def client_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the test submits an event to it."""
    s = new_stack(infra, tmp_path_factory.mktemp("client-stack"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()


@pytest.mark.integration
def test_the_client_reads_a_position_with_integer_money(
    generated: Generated, client_package: ModuleType, client_stack: Stack
) -> None:
    org, amount = "3090000", 123_456_789_012
    raw = event(f"client-{uuid.uuid4().hex[:8]}", "receipt", amount, org=org)
    with httpx.Client(base_url=client_stack.api, trust_env=False, timeout=15) as http:
        r = http.post("/v1/events", content=raw, headers=client_stack.source_headers)
        assert r.status_code == 202, r.text
        for _ in range(6):  # the worker may still be joining its group: up to a minute
            fate = http.get(
                r.headers["Location"], params={"wait": "10s"}, headers=client_stack.source_headers
            )
            if fate.json().get("status") != "pending":
                break
        assert fate.json()["status"] == "applied", fate.text
    op = _operation(generated, client_package, "get", "/v1/positions/{org_code}")
    token = client_stack.token("national")
    with client_package.AuthenticatedClient(base_url=client_stack.api, token=token) as client:
        res = op.sync_detailed(org, client=client)
    assert res.status_code == 200, res.content[:300]
    body = res.parsed
    assert body.org_code == org
    row = next(a for a in body.accounts if a.account == "general" and a.fiscal_year == 2026)
    for name in ("cash", "committed", "available"):
        value = getattr(row, name)
        assert type(value) is int, f"{name} is {type(value).__name__}: {value!r}"  # never float
    assert (row.cash, row.committed, row.available) == (amount, 0, amount)
    assert type(body.totals.cash) is int and body.totals.cash == amount
