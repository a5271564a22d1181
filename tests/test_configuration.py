"""The one settings object: every CASHPOS_ variable typed, documented and checked."""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from pathlib import Path

import pytest

from cashpos.settings import (
    OTHER_VARIABLES,
    Secret,
    Settings,
    SettingsError,
    configuration_markdown,
    load,
)

ROOT = Path(__file__).resolve().parent.parent


def test_docs_configuration_is_generated_from_the_settings() -> None:
    doc = (ROOT / "docs/configuration.md").read_text()
    assert doc == configuration_markdown(), "run: python -m cashpos.settings > docs/configuration.md"


def test_every_variable_the_code_reads_is_known() -> None:
    """A CASHPOS_ name anywhere in the code is a setting or a documented other variable."""
    known = {f.metadata["env"] for f in fields(Settings)} | set(OTHER_VARIABLES)
    used: set[str] = set()
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or path.name == "test_configuration.py":
            continue
        used |= set(re.findall(r"CASHPOS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))
    assert used - known == set()


def test_a_bad_value_names_the_variable_and_what_it_expects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASHPOS_PARTITIONS", "twelve")
    with pytest.raises(SettingsError, match=r"CASHPOS_PARTITIONS='twelve': expected an integer"):
        Settings()
    monkeypatch.setenv("CASHPOS_PARTITIONS", "12")
    monkeypatch.setenv("CASHPOS_STATE_FLUSH_SECONDS", "soon")
    with pytest.raises(SettingsError, match="CASHPOS_STATE_FLUSH_SECONDS='soon': expected a number"):
        Settings()


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASHPOS_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("CASHPOS_KAFKA_SASL_MECHANISM", "PLAIN")
    s = Settings()
    assert isinstance(s.kafka_sasl_password, Secret)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert s.kafka_client_args()["sasl_plain_password"] == "hunter2"


def test_an_unknown_variable_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CASHPOS_PARTITON", "3")  # misspelt: would be silently ignored
    with caplog.at_level(logging.WARNING, logger="cashpos.settings"):
        s = load()
    assert s.partitions == Settings().partitions
    assert "CASHPOS_PARTITON" in caplog.text
