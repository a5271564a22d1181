"""Fault scenarios (issue 3): the balances are exact under faults, bad input and scale-out.

Each module is a full-size script (``python -m faults.kill_loop --events 1000000 --seed 1``) that
starts its own Tansu broker and redis-server on loopback, prints its figures and exits non-zero
when a condition fails. The CI-sized tests (``tests/test_faults_*.py``) call the same scenario
functions with small sizes on the session's shared broker. ``faults.common`` is the harness.
"""
