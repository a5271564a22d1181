"""The continuous reconciler against the real broker, Redis and a worker: two intervals over a live
stream find no difference (the second one after a restart from the checkpoint, reading only what
is new), a figure tampered in Redis is reported, and `cashpos reconcile --continuous` as a process
resumes from the same checkpoint, publishes and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import orjson
import pytest
import redis

from cashpos.names import META_FIELD, RedisKeys
from cashpos.refdata import governments
from faults.common import Feeder, expected_view, publish, redis_view, wait_until, workload
from reconcile.continuous import METRICS_ID, Reconciler
from state.projection import decode_value, encode_value
from streams.topics import ensure_topics
from tests.conftest import new_stack


@pytest.mark.integration
def test_two_live_intervals_then_a_tampered_figure(infra, tmp_path):
    s = new_stack(infra, tmp_path)
    settings = dataclasses.replace(s.settings, reconcile_checkpoint_dir=tmp_path / "checkpoint")
    keys = RedisKeys(s.namespace)
    raws = workload(11, 11_000)
    first = 5_000  # every account's opening balance (4,866) and a few more, before the stream
    feeder = Feeder(s.settings, raws[first:], rate=1_500)  # 4 s of live stream
    r = redis.Redis.from_url(s.infra.redis_url)

    def get(key: str) -> bytes:
        value = r.get(key)
        assert isinstance(value, bytes), key
        return value

    def hget(key: str, field: bytes | str) -> bytes:
        value = r.hget(key, field)
        assert isinstance(value, bytes), (key, field)
        return value

    try:
        asyncio.run(ensure_topics(s.settings))
        publish(s.settings, raws[:first])
        s.start_worker("w1")
        wait_until(lambda: len(redis_view(s)) > 100, 60, 0.2, "the worker to serve positions")
        feeder.start()
        wait_until(lambda: feeder.sent > 0, 30, 0.05, "the stream to start")

        before = asyncio.run(Reconciler(settings).run_once())
        # A restart between the intervals: it resumes from the checkpoint, never from offset 0.
        again = Reconciler(settings)
        assert again.resumed and again.offsets
        second = asyncio.run(again.run_once())
        assert not feeder.done, "the stream was over before the second interval: not a live test"
        for rep in (before, second):
            assert rep.diff_krw == 0 and rep.differences == [], rep.differences[:3]
            assert rep.mode == "incremental" and rep.positions_checked > rep.lagging  # some compared exactly
        assert before.records_read == before.records_in >= first
        assert 0 < second.records_read == second.records_in - before.records_in

        feeder.wait(60)
        want = expected_view(raws)
        wait_until(lambda: redis_view(s) == want, 60, 0.2, "the worker to serve every event")
        quiet = asyncio.run(again.run_once())
        assert quiet.ok and quiet.lagging == 0 and quiet.records_in == len(raws)

        # Tamper with one figure, keeping its version: compared exactly, so a difference.
        org = next(o for o in governments() if r.hlen(keys.positions(o)) > 1)
        field = next(f for f in r.hkeys(keys.positions(org)) if f != META_FIELD.encode())
        version, body = decode_value(hget(keys.positions(org), field))
        r.hset(
            keys.positions(org),
            field,
            encode_value(version, orjson.dumps({**body, "cash": body["cash"] + 777})),
        )
        tampered = asyncio.run(again.run_once())
        assert tampered.records_read == 0 and tampered.diff_krw == 777 and not tampered.ok
        (d,) = tampered.differences
        assert (d.org_code, d.actual_cash, d.expected_cash) == (org, body["cash"] + 777, body["cash"])
        published = orjson.loads(get(keys.reconciliation))
        assert published["diff_krw"] == 777 and published["mode"] == "incremental"
        exposition = get(keys.worker_metrics(METRICS_ID)).decode()
        assert 'cashpos_reconcile_runs_total{result="difference"} 1.0' in exposition

        # The command: resumes from the checkpoint, publishes, stops on SIGTERM with exit code 0.
        r.delete(keys.reconciliation)
        p = s.start(
            "reconcile",
            "reconcile",
            "--continuous",
            "--interval",
            "1",
            CASHPOS_RECONCILE_CHECKPOINT_DIR=str(settings.reconcile_checkpoint_dir),
        )
        wait_until(lambda: r.get(keys.reconciliation), 60, 0.2, "the command's first report")
        rep = orjson.loads(get(keys.reconciliation))
        assert (rep["diff_krw"], rep["records_read"], rep["records_in"]) == (777, 0, len(raws))
        assert "resuming from the checkpoint" in s.log("reconcile")
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0

        # A checkpoint past the topics' ends (topics recreated): discarded, folded from offset 0.
        ahead = Reconciler(settings)
        ahead.offsets = {tp: n + 1_000 for tp, n in ahead.offsets.items()}
        ahead.save()
        again = Reconciler(settings)
        refold = asyncio.run(again.run_once(publish=False))
        assert refold.records_read == refold.records_in == len(raws) and refold.diff_krw == 777
        assert again.metrics.registry.get_sample_value("cashpos_reconcile_full_refolds_total") == 1
    finally:
        r.close()
        s.stop_all()
