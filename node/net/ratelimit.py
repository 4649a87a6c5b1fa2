"""Per-peer token buckets (pure; the caller passes the clock)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RateSettings:
    rate: float = 50.0  # requests per second, sustained
    burst: float = 200.0  # bucket size
    max_keys: int = 10_000  # bound on tracked clients


class RateLimiter:
    def __init__(self, settings: RateSettings | None = None):
        self.settings = settings or RateSettings()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens for ``key``. Returns 0 when allowed, else seconds until it would be."""
        s = self.settings
        tokens, last = self._buckets.get(key, (s.burst, now))
        tokens = min(s.burst, tokens + (now - last) * s.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > s.max_keys:
            self._prune(now)
        return (cost - tokens) / s.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self.settings.rate >= self.settings.burst]
        for k in full:
            del self._buckets[k]
