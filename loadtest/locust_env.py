"""What every Locust process reads from its environment: the plan, the knobs, the tokens.

``python -m loadtest.run`` sets these ``LOADTEST_*`` variables (and writes the tokens file), so
that the master and every worker read the same plan; run by hand, set them yourself (see
loadtest/README.md). ``LOADTEST_SHAPE=heavy`` (or ``LOADTEST_MODE=heavy``) picks the heavy day.
"""

from __future__ import annotations

import os
import time

from loadtest.plan import Plan
from loadtest.tokens import bearer, load_tokens

PLAN = Plan.from_env()
if os.environ.get("LOADTEST_SHAPE") == "heavy" and PLAN.mode != "heavy":
    PLAN = PLAN.with_(mode="heavy")
OUT = os.environ.get("LOADTEST_OUT")
RUN_ID = os.environ.get("LOADTEST_RUN_ID") or time.strftime("lt%m%d%H%M%S")
PROCESSES = max(1, int(os.environ.get("LOADTEST_PROCESSES", "1")))
PROBE_EVERY = max(1, int(os.environ.get("LOADTEST_PROBE_EVERY", "50")))
PROBE_MAX_ACTIVE = int(os.environ.get("LOADTEST_PROBE_MAX_ACTIVE", "20"))
FRESHNESS_TIMEOUT_S = float(os.environ.get("LOADTEST_FRESHNESS_TIMEOUT_S", "30"))
SOURCE_USERS = int(os.environ.get("LOADTEST_SOURCE_USERS") or PLAN.source_users())
# Probability that a spawned user starts with a login (page load) rather than mid-session; the
# smoke run sets 1 so that a short run exercises every endpoint.
SPAWN_LOGIN = float(os.environ.get("LOADTEST_SPAWN_LOGIN", "0"))
MAX_INFLIGHT = int(os.environ.get("LOADTEST_MAX_INFLIGHT", "32"))  # posts per SourceSystem user

_TOKENS = load_tokens(os.environ.get("LOADTEST_TOKENS"))
NATIONAL_AUTH = bearer(_TOKENS["national"])
INTEGRATION_AUTH = bearer(_TOKENS["integration"])
SOURCE_AUTH = bearer(_TOKENS["source"])
_DIRECTOR_AUTH = {org: bearer(tok) for org, tok in _TOKENS["directors"].items()}


def director_auth(org: str) -> dict[str, str]:
    """The header of the finance director of ``org``."""
    return _DIRECTOR_AUTH[org]
