"""Whether a government's figures are current, from the workers' heartbeats (pure).

A figure is stale when no live worker owns its government's partition (the owner died and the
partition has not moved yet), or when the owner is catching up on it (restoring after a move,
or behind by more than a few seconds of events): then every read says so, why, and how far
behind — never an old figure shown as fresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

STALE_AFTER_MS: Final = 10_000  # a worker without a heartbeat this long is gone
NO_PROCESSOR: Final = "no_processor"
NO_OWNER: Final = "no_owner"
CATCHING_UP: Final = "catching_up"


@dataclass(frozen=True, slots=True)
class Heartbeats:
    """What the live workers said: partitions owned (and the web address of each partition's
    owner, where the API asks for history), and records behind on those catching up."""

    newest_ms: int = 0
    workers: int = 0
    owned: frozenset[int] = frozenset()
    behind: Mapping[int, int] = field(default_factory=dict)
    web: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def read(cls, beats: Iterable[Mapping[str, Any]], now_ms: int) -> Heartbeats:
        newest = 0
        owned: set[int] = set()
        behind: dict[int, int] = {}
        web: dict[int, str] = {}
        live = 0
        for b in beats:
            at = int(b.get("heartbeat_ms", 0))
            newest = max(newest, at)
            if now_ms - at >= STALE_AFTER_MS:
                continue
            live += 1
            parts = {int(p) for p in b.get("partitions", ())}
            owned |= parts
            if b.get("web"):
                web.update(dict.fromkeys(parts, str(b["web"])))
            for p, n in (b.get("behind") or {}).items():
                behind[int(p)] = max(int(n), behind.get(int(p), 0))
        return cls(newest, live, frozenset(owned), behind, web)

    def why_stale(self, partition: int) -> tuple[str | None, int | None]:
        """(reason, records behind) for a government on ``partition``; (None, None): current."""
        if not self.workers:
            return NO_PROCESSOR, None
        if partition not in self.owned:
            return NO_OWNER, None
        if partition in self.behind:
            return CATCHING_UP, self.behind[partition]
        return None, None
