"""Per-token rate limits: a token bucket per token id. Pure (the clock is passed in).

Each API process keeps its own buckets, so with N API processes behind a balancer a token may
make up to N times its rate in total; a burst of up to two seconds' worth is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    burst_seconds: float = 2.0
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, rate_per_s: int, now: float) -> float:
        """Spend one request. Returns 0.0 when allowed, else the seconds until one is."""
        cap = max(1.0, rate_per_s * self.burst_seconds)
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) > 100_000:  # forget idle tokens rather than grow without bound
                self._buckets.clear()
            b = self._buckets[key] = _Bucket(cap, now)
        b.tokens = min(cap, b.tokens + (now - b.at) * rate_per_s)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / rate_per_s
