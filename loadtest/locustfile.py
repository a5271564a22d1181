"""Locust users and load shapes for cashpos (issue: 150,000 users and 600,000 transactions a day).

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000

``python -m loadtest.run`` starts a fresh stack and runs this for you. The plan (day type,
compression, scale, heavy day) comes from ``LOADTEST_*`` environment variables
(``loadtest.profile.Plan.from_env``) so that every Locust process (master and workers) reads the
same one; ``LOADTEST_SHAPE=heavy`` (or ``LOADTEST_MODE=heavy``) picks the heavy-day shape.

Users (each Locust user is one logged-in official or one source-system connection):

* ``FinanceDirector``: opens the dashboard (page, governments, its government, positions,
  alerts), holds its government's live stream ``/v1/stream?org=X&snapshot=1`` for the session
  (reading every frame, as the browser does) and looks at ``/v1/positions/{org}`` now and then.
  10 % watch the national view (``/v1/summary`` and the national stream) instead.
* ``IntegrationSystem``: an official's screen in another system asking for balances at a steady
  pace: ``/v1/positions/{org}/{account}``, ``/v1/positions/{org}``, ``/v1/summary`` (rarely).
* ``SourceSystem`` (fixed count): ``POST /v1/events`` with the simulator's events (all kinds, all
  243 governments), open loop: together they start ``Plan.tps(t)`` posts per second.

A spawned reader is mid-session; sessions end (and the user logs in again) at the hazard
``Plan.session_hazard``, so logins follow the real rate at any compression.

What is measured besides Locust's own request statistics (all in the CSV/HTML as custom types):

* ``FRESHNESS``: 1 in ``LOADTEST_PROBE_EVERY`` posts (those without preconditions: no reversal,
  no commitment follow-up) is probed: before posting, the prober opens the government's stream
  with a snapshot (the account's version v0); after the 202 it polls
  ``GET /v1/positions/{org}/{account}?fiscal_year=`` and reads the stream until the row shows
  version > v0 with ``last_event_at`` ≥ the event's ``occurred_at``. Two samples per probe:
  ``api`` and ``stream`` (ms from the 202). A probe that sees nothing in 30 s is a failure.
* ``LAG``: every 5 s, the sum of ``cashpos_consumer_lag_records`` from ``/metrics`` (the value is
  in records, not ms).
* ``STREAM`` (failures only): a held stream that the server ended or broke before the session
  did (response time = how long it was held). Logins, streams held to the end and
  frames read are counted in the per-process dumps (``counts``), not in Locust's statistics.

Access: every API call carries ``Authorization: Bearer <token>``. The tokens come from the JSON
file named by ``LOADTEST_TOKENS`` (``python -m loadtest.run`` provisions them and writes it; see
``loadtest.tokens`` for the format): a director uses its government's
``finance_director`` token (the national view: the ``national`` token), an integration user the
``integration`` token, a source system the ``source`` token, the freshness probes read as the
government's director and the lag scraper reads ``/metrics`` with the ``national`` token. Many
simulated users share one token, so the tokens are made with a high rate limit.

With ``LOADTEST_OUT`` set, each process also writes merged-friendly latency histograms per
category (read, write, page, stream, freshness, lag) to ``$LOADTEST_OUT/raw/`` for run.py.

Where it is: the plan, knobs and tokens from the environment in ``loadtest.locust_env``; the
users in ``loadtest.users``, their freshness probes in ``loadtest.freshness`` (streams read with
``loadtest.sse``); the shapes in ``loadtest.shapes``; the measurements and the per-process dump
in ``loadtest.recording``. This file is what Locust loads: the users and shapes it runs, and
what happens when the test starts and stops.
"""

from __future__ import annotations

import gevent
from locust import events
from locust.runners import WorkerRunner

from loadtest import freshness, recording
from loadtest.shapes import BusinessDayShape, HeavyDayShape
from loadtest.users import FinanceDirector, IntegrationSystem, SourceSystem

# What Locust picks up from this module: the users, and the shape that is not abstract (the one
# LOADTEST_MODE selects).
__all__ = ["BusinessDayShape", "FinanceDirector", "HeavyDayShape", "IntegrationSystem", "SourceSystem"]

events.request.add_listener(recording.on_request)

_LAG_GREENLET: gevent.Greenlet | None = None


@events.test_start.add_listener
def _on_test_start(environment, **_: object) -> None:
    global _LAG_GREENLET
    recording.start_clock()
    if not isinstance(environment.runner, WorkerRunner) and environment.host:
        _LAG_GREENLET = gevent.spawn(recording.scrape_lag, environment.host)


@events.test_stop.add_listener
def _on_test_stop(environment, **_: object) -> None:
    if _LAG_GREENLET is not None:
        _LAG_GREENLET.kill(block=False)
    freshness.PROBES.kill(block=False)
    recording.dump(environment)


@events.quitting.add_listener
def _on_quitting(environment, **_: object) -> None:
    recording.dump(environment)
