"""Operate the dead-letter topic: list dead letters, re-publish selected ones after a fix."""

from __future__ import annotations

import asyncio

from cashpos.names import Topics
from cashpos.settings import Settings
from streams.deadletter import DeadLetter
from streams.publisher import Publisher
from streams.reader import read_topics


async def list_deadletters(
    settings: Settings, reason: str | None = None, limit: int | None = None
) -> list[DeadLetter]:
    records = await read_topics(settings, [Topics(settings.namespace).deadletter])
    seen: dict[bytes, DeadLetter] = {}  # keyed by source coordinates: a re-send is the same letter
    for r in records:
        d = DeadLetter.decode(r.value)
        if reason is None or d.reason == reason:
            seen[r.key or d.key()] = d
    out = sorted(seen.values(), key=lambda d: d.dead_lettered_ms)
    return out[-limit:] if limit else out


def _read_events(path: str) -> list[bytes]:
    """The events of a file, one per non-blank line."""
    with open(path, "rb") as f:
        return [line.rstrip(b"\r\n") for line in f if line.strip()]


async def republish(settings: Settings, coords: list[str], fixed_file: str | None = None) -> int:
    """Publish the original bytes of the named dead letters again (or the corrected events of
    ``fixed_file``, one per named letter, in order); the processor validates them afresh."""
    letters = {d.key().decode(): d for d in await list_deadletters(settings)}
    unknown = [c for c in coords if c not in letters]
    if unknown:
        raise SystemExit(f"no dead letter at {', '.join(unknown)}")
    if fixed_file:
        bodies = await asyncio.to_thread(_read_events, fixed_file)
        if len(bodies) != len(coords):
            raise SystemExit(f"{fixed_file} has {len(bodies)} events for {len(coords)} dead letters")
    else:
        partial = [c for c in coords if letters[c].value_truncated]
        if partial:  # only part of the original is kept: it cannot be sent again as it was
            raise SystemExit(
                f"{', '.join(partial)} kept only part of the original value; "
                "republish a corrected event with --fixed"
            )
        bodies = [letters[c].value() for c in coords]
    async with Publisher(settings) as pub:
        return await pub.send_many(bodies)
