"""The API fuzzed with schemathesis against a real stack (tools/fuzz_api.py): every role's token
and none, every operation of the OpenAPI document the API serves.

Fails on a 5xx, a response the document does not describe (status, content type, body), a
non-public operation answering anything but 401 without a token, and an event the API took that
the contract validator (``streams.contract.check_message``) refuses, or refused with another
reason than the validator's. The figures (operations, cases, failures per check, a reproduction
of each first failure) are printed; the same run by hand: ``flock /tmp/cashpos-heavy.lock
.venv/bin/python -m tools.fuzz_api``.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from access.policy import Role
from cashpos.embedded import Infra
from tests.conftest import Stack, new_stack
from tests.events import event
from tools.fuzz_api import (
    ANONYMOUS,
    ROLE_SCOPES,
    Report,
    check_event,
    check_unauthenticated,
    fuzz,
    role_tokens,
    wait_serving,
)

EXAMPLES = 4  # per operation, role and generation mode: ~1,300 requests, about 40 s here
BUDGET_S = 150.0


@pytest.fixture(scope="module")
def fuzz_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the fuzzer writes (events, thresholds, tokens)."""
    s = new_stack(infra, tmp_path_factory.mktemp("fuzz"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    wait_serving(s.api, s.token("national"))
    yield s
    s.stop_all()


def _run(stack: Stack, roles: list[str], capsys: pytest.CaptureFixture[str]) -> Report:
    report = fuzz(stack.api, role_tokens(stack.token), examples=EXAMPLES, budget_s=BUDGET_S, roles=roles)
    with capsys.disabled():
        print(f"\n{report.figures()}")
    return report


@pytest.mark.integration
def test_every_role_gets_documented_answers_and_no_invalid_event_is_taken(
    fuzz_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run(fuzz_stack, list(ROLE_SCOPES), capsys)
    assert len(report.operations) >= 20, report.operations
    assert not report.skipped, f"the time budget left out {report.skipped}"
    # The run exercised what it claims to: reads that succeed, and events both taken and refused.
    assert report.statuses[200] > 50, report.statuses
    assert report.events["accepted"] >= 3, report.events
    assert sum(n for k, n in report.events.items() if k.startswith("refused:")) >= 10, report.events
    assert not report.failures, report.figures()


@pytest.mark.integration
def test_without_a_token_every_operation_answers_a_documented_401(
    fuzz_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run(fuzz_stack, [ANONYMOUS], capsys)
    assert report.statuses[401] > 20, report.statuses
    assert not report.failures, report.figures()


# The fuzzer's own judgements, without a stack: each can fail.


def test_an_invalid_event_taken_is_a_failure() -> None:
    bad = event("e-1", "receipt", 0, org="3090000")  # amount 0: invalid_amount
    assert "invalid event accepted" in check_event(bad, 202, b"{}", True, None)
    refused = orjson.dumps({"reason": "invalid_amount"})
    assert check_event(bad, 422, refused, True, None) == ""
    wrong = orjson.dumps({"reason": "invalid_field"})
    assert "contract's reason is 'invalid_amount'" in check_event(bad, 422, wrong, True, None)


def test_a_valid_event_refused_is_a_failure() -> None:
    good = event("e-2", "receipt", 1000, org="3090000")
    assert check_event(good, 202, b"{}", True, None) == ""
    assert "valid event" in check_event(good, 422, orjson.dumps({"reason": "invalid_amount"}), True, None)
    assert "refused" in check_event(good, 503, b"{}", True, {"3090000"})
    outside = orjson.dumps({"reason": "forbidden_government"})
    assert check_event(good, 403, outside, True, {"6110000"}) == ""
    assert "forbidden_government" in check_event(good, 404, b"{}", True, {"6110000"})
    # a role that may not submit is refused before the contract is consulted
    assert check_event(good, 403, orjson.dumps({"reason": "forbidden"}), False, None) == ""


def test_every_role_is_fuzzed() -> None:
    assert set(ROLE_SCOPES) == set(Role), "give the new role a scope in tools/fuzz_api.ROLE_SCOPES"


def test_unauthenticated_wants_the_unauthorized_problem() -> None:
    problem = orjson.dumps({"reason": "unauthorized"})
    assert check_unauthenticated("/v1/summary", "GET", 401, problem) is None
    assert check_unauthenticated("/v1/summary", "GET", 200, b"{}") is not None
    assert check_unauthenticated("/v1/summary", "GET", 401, b"{}") is not None
    assert check_unauthenticated("/healthz", "GET", 200, b"{}") is None  # public
