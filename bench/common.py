"""A fresh development stack for benchmarks: broker, Redis, one worker process and the API.

As ``cashpos run`` sets it up (cashpos.devstack): the worker and the API connect to Redis as their
own ACL users, and every API call needs a token: ``Stack.token`` makes one, with a rate limit
high enough not to be what a benchmark measures.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cashpos.devstack import Stack, new_stack
from cashpos.embedded import start_infra

BENCH_RATE_PER_S = 100_000  # a token's rate limit (one benchmark client is many users)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def director_tokens(st: Stack) -> dict[str, str]:
    """Each government's finance director's token (reads of that government, unaudited)."""
    from cashpos.refdata import governments

    return {o: st.token("finance_director", (o,)) for o in governments()}


@contextmanager
def bench_stack(partitions: int = 12) -> Iterator[Stack]:
    """The stack in namespace ``bench``, ready (every government seeded); removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-bench-"))
    try:
        with start_infra(tmp) as infra:
            st = new_stack(
                infra,
                tmp,
                partitions,
                namespace="bench",
                extra_env={"CASHPOS_MAX_STREAMS_PER_TOKEN": "100000"},  # dashboards share a token
                token_args={"expires_days": 1, "rate_per_s": BENCH_RATE_PER_S},
            )
            try:
                st.start_worker()
                st.start_api()
                st.wait_ready(90)
                yield st
            finally:
                st.stop_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
