"""The operational rules (5 in docs/alerts.md: stale_data, processor_lag), pure: the wall clock
and the consumer's lag are passed in."""

from __future__ import annotations

import msgspec

from alerts.config import Operational, Thresholds
from alerts.model import LAG, SEVERITY, STALE, Alert, OrgRecord, WorkerRecord, message, resolved_message
from cashpos.calendar import office_minutes_between


def stale(rec: OrgRecord, org: str, last_applied: int, now_ms: int, cfg: Thresholds) -> Alert | None:
    """Rule 5a: the government's stale-data alert as it is at ``now_ms`` if it changes (raised,
    or resolved by an event applied since it was raised); None: no change. ``last_applied`` is
    the wall time of the latest event applied for ``org`` (or of the worker taking it over)."""
    a = rec.stale
    if a is not None:
        if last_applied <= a.raised_ms:
            return None
        a = msgspec.structs.replace(
            a, state="resolved", rev=a.rev + 1, resolved_ms=now_ms, resolution="data_flowing"
        )
        a.message = resolved_message(a)
        return a
    if not cfg.enabled:
        return None
    minutes = office_minutes_between(last_applied, now_ms)
    if minutes < cfg.stale_minutes:
        return None
    a = Alert(
        id=f"{org}::0:{STALE}:{now_ms}",
        rule=STALE,
        severity=SEVERITY[STALE],
        state="raised",
        rev=1,
        seq=rec.stale_seq + 1,
        org_code=org,
        raised_ms=now_ms,
        minutes=minutes,
        threshold=cfg.stale_minutes,
    )
    a.message = message(a)
    return a


def lag(
    rec: WorkerRecord, worker_id: str, now_ms: int, lag_records: int, op: Operational
) -> tuple[int, Alert | None]:
    """Rule 5b: (the instant the lag went above ``lag_records``, 0: it is not; the lag alert as
    it is at ``now_ms`` if it changes). Raised once the lag has stayed above the threshold for
    ``lag_seconds``; resolved at half of it."""
    a = rec.lag
    if lag_records > op.lag_records:
        above = rec.above_since_ms or now_ms
        if a is not None or now_ms - above < op.lag_seconds * 1000:
            return above, None
        a = Alert(
            id=f"worker-{worker_id}::0:{LAG}:{now_ms}",
            rule=LAG,
            severity=SEVERITY[LAG],
            state="raised",
            rev=1,
            seq=rec.lag_seq + 1,
            org_code="",
            raised_ms=now_ms,
            lag_records=lag_records,
            threshold=op.lag_records,
            worker=worker_id,
        )
        a.message = message(a)
        return above, a
    if a is None or lag_records > op.lag_records // 2:
        return 0, None
    a = msgspec.structs.replace(
        a,
        state="resolved",
        rev=a.rev + 1,
        resolved_ms=now_ms,
        resolution="caught_up",
        lag_records=lag_records,
    )
    a.message = resolved_message(a)
    return 0, a
