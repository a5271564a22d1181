"""Shared fixtures: the development stack (cashpos.embedded, cashpos.devstack) as real processes.

One broker and one Redis per test session (Tansu never returns memory, so it is not shared
across sessions); every stack gets its own namespace, so tests do not see each other's data.
``Stack`` and ``new_stack`` are the development stack's, importable from here for the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cashpos.devstack import Stack, new_stack
from cashpos.embedded import Infra, start_infra

__all__ = ["ROOT", "Stack", "new_stack"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    with start_infra(tmp_path_factory.mktemp("infra")) as infra:
        yield infra


@pytest.fixture(scope="session")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker and the API, shared by the read-only end-to-end tests of a session."""
    s = new_stack(infra, tmp_path_factory.mktemp("stack"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()
