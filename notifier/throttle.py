"""The notifier's rate limits, on the ``limits`` library: a moving window per key.

``Throttle(per_second, burst)`` allows ``burst`` hits in any ``burst / per_second`` seconds
per key, rounded up to whole seconds (``limits`` counts whole seconds): bursts of ``burst``,
about ``per_second`` on average, at most ``burst`` a second. Kept in this process's memory; a
key that is done with (a closed connection) is forgotten.
"""

from __future__ import annotations

import json
import math
import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class Throttle:
    """At most ``burst`` hits per key in any window of ``burst / per_second`` seconds."""

    def __init__(self, per_second: float, burst: int) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError(
                f"a rate is positive with a burst of at least 1: {per_second}, {burst}"
            )
        self.window_s = max(1, math.ceil(burst / per_second))
        self.item = RateLimitItemPerSecond(burst, self.window_s)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def allow(self, *key: str) -> bool:
        """Count a hit for ``key`` if its window has room (True); otherwise count nothing."""
        return self._limiter.hit(self.item, _one(key))

    def retry_after_s(self, *key: str) -> int:
        """Whole seconds until ``key`` has room again (at least 1)."""
        reset = self._limiter.get_window_stats(self.item, _one(key)).reset_time
        return max(1, math.ceil(reset - time.time()))

    def forget(self, *key: str) -> None:
        """Drop ``key``'s window (``limits`` keeps a key it has seen until told)."""
        self._limiter.clear(self.item, _one(key))

    def keys(self) -> int:
        """How many keys the storage holds."""
        storage: MemoryStorage = self._limiter.storage  # type: ignore[assignment]
        return len(storage.events) + len(storage.storage)


def _one(key: tuple[str, ...]) -> str:
    """``key``'s parts as one identifier, so that parts holding ``limits``' separator ("/")
    cannot name another key."""
    return json.dumps(key)
