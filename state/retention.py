"""Retention of the history, pure (no I/O, no clock): which fiscal years stay online in full, and
the compacted form of the others.

A government's fiscal years stay **online** — every event's bytes, its index rows on both time
axes — for ``online_years`` years: with 2 (the default), the current and the previous fiscal year.
Once both sides have closed year Y, the current year is Y + 1 and the years up to
``Y + 1 - online_years`` are **retired**:

* what stays: the positions, the daily flows (``h``: the statement's daily closings, so a
  retired year's statements are whole), the known-at axis's day sums (``q``), the chains' heads,
  and each journal entry with its effects and a digest of its event in place of its bytes
  (``tombstone``): a copy of a retired event is still a ``duplicate``, a changed one still an
  ``event_id_conflict``, the same verdicts as before its year retired;
* what goes: the event bytes and the index rows (``i``, ``n``), so an instant inside a day of a
  retired year cannot be answered, nor the list of events behind one of its figures.

Answers follow this policy, not the deletion's progress (``agents/history.py`` deletes in small
steps), so every worker gives the same answer at any moment: see ``answerable``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

from cashpos.calendar import DAY_MS, KST_OFFSET_MS
from cashpos.names import EXPENDITURE, REVENUE
from streams.contract import Record, Rejection, decode

DEFAULT_ONLINE_YEARS = 2
_canonical = msgspec.msgpack.Encoder().encode


def retired_through(closed: Mapping[str, Mapping[str, int]], org: str, online_years: int) -> int | None:
    """The last fiscal year of ``org`` that is retired (``closed``: side -> {org: the last year
    that side closed}), or None while none is."""
    rev, exp = closed.get(REVENUE, {}).get(org), closed.get(EXPENDITURE, {}).get(org)
    if rev is None or exp is None:
        return None
    return min(rev, exp) + 1 - online_years


def is_retired(fiscal_year: int, through: int | None) -> bool:
    return through is not None and fiscal_year <= through


def day_end(at_ms: int) -> bool:
    """Whether ``at_ms`` is the last millisecond of a Korean day (a daily closing)."""
    return (at_ms + KST_OFFSET_MS + 1) % DAY_MS == 0


def answerable(at_ms: int, day_has_rows: bool) -> bool:
    """Whether a retired position's figure at ``at_ms`` can be given from its daily sums: at a
    day's end, or on a day it did not move (its figure is then the previous day's closing)."""
    return day_end(at_ms) or not day_has_rows


def event_digest(ev: Record) -> bytes:
    """What a tombstone keeps of an event: 128 bits of BLAKE2b over its canonical encoding (the
    decoded event, so two byte spellings of one event have one digest, as the ledger's
    duplicate test compares decoded events)."""
    return hashlib.blake2b(_canonical(ev), digest_size=16).digest()


def raw_digest(raw: bytes) -> bytes | None:
    """``event_digest`` of an applied entry's bytes (None: not an event's, e.g. a lapse's)."""
    if not raw:
        return None
    ev = decode(raw, max_bytes=len(raw))
    return None if isinstance(ev, Rejection) else event_digest(ev)
