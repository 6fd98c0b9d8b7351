"""Event-time buckets per window key, and a partition's watermark.

A bucket is ``bucket_ms`` of event time; bucket ``i`` covers ``[i * bucket_ms, (i + 1) *
bucket_ms)``. Each key keeps running sums per bucket, so any window is a sum of buckets.
The watermark of a partition is the max event time seen minus the grace; bucket ``i`` closes
when the watermark reaches its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from streams.domain.claims import Claim

# Per-bucket sums, by position: claims, denied, lag days, lag days², amounts > 0,
# ln(allowed $), ln(allowed $)².
N, DENIED, LAG_SUM, LAG_SQ, AMT_N, AMT_LOG, AMT_LOG_SQ = range(7)
_WIDTH = 7


def bucket_of(timestamp_ms: int, bucket_ms: int) -> int:
    """Index of the bucket holding ``timestamp_ms``."""
    return timestamp_ms // bucket_ms


@dataclass(frozen=True, slots=True)
class WindowSums:
    """Sums of several buckets of one key."""

    n: int
    denied: int
    lag_sum: float
    lag_sq: float
    amount_n: int
    amount_log: float
    amount_log_sq: float


@dataclass(slots=True)
class KeyWindows:
    """The buckets of one ``customer_id|payer_id|cpt_group`` key."""

    key: str
    partition: int
    buckets: dict[int, list[float]] = field(default_factory=dict)

    def add(self, claim: Claim, bucket: int) -> None:
        """Count ``claim`` into ``bucket``."""
        sums = self.buckets.get(bucket)
        if sums is None:
            sums = self.buckets[bucket] = [0.0] * _WIDTH
        sums[N] += 1
        if claim.denied:
            sums[DENIED] += 1
        lag = claim.decision_lag_days
        sums[LAG_SUM] += lag
        sums[LAG_SQ] += lag * lag
        if claim.allowed_cents > 0:
            log_amount = math.log(claim.allowed_cents / 100.0)
            sums[AMT_N] += 1
            sums[AMT_LOG] += log_amount
            sums[AMT_LOG_SQ] += log_amount * log_amount

    def sums(self, first: int, last: int) -> WindowSums:
        """Sums over buckets ``first..last`` inclusive."""
        total = [0.0] * _WIDTH
        for index, sums in self.buckets.items():
            if first <= index <= last:
                for i in range(_WIDTH):
                    total[i] += sums[i]
        return WindowSums(
            int(total[N]),
            int(total[DENIED]),
            total[LAG_SUM],
            total[LAG_SQ],
            int(total[AMT_N]),
            total[AMT_LOG],
            total[AMT_LOG_SQ],
        )

    def prune_before(self, bucket: int) -> bool:
        """Forget buckets older than ``bucket``; return whether any was forgotten."""
        stale = [i for i in self.buckets if i < bucket]
        for index in stale:
            del self.buckets[index]
        return bool(stale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the changelog."""
        return {"key": self.key, "partition": self.partition, "buckets": self.buckets}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyWindows:
        """Inverse of :meth:`to_dict` (JSON turns bucket indexes into strings)."""
        buckets = {int(k): [float(x) for x in v] for k, v in data["buckets"].items()}
        return cls(str(data["key"]), int(data["partition"]), buckets)


@dataclass(slots=True)
class Watermark:
    """Event-time progress of one partition that is fed by ``sources`` upstream partitions.

    Each source partition reports its max event time (with its claims, or alone when it has
    nothing for this partition). The watermark is the *lowest* source max minus the grace, as
    in Flink: a source consumed behind the others holds closes back instead of making its
    claims late, so results do not depend on how the sources were interleaved.
    ``closed_through`` is the last closed bucket index, or None before every source reported.
    """

    grace_ms: int
    bucket_ms: int
    sources: int = 1
    source_max_ms: dict[int, int] = field(default_factory=dict)
    closed_through: int | None = None

    @property
    def max_event_ms(self) -> int | None:
        """The event time every source has reached, or None while one has not reported."""
        if len(self.source_max_ms) < self.sources:
            return None
        return min(self.source_max_ms.values())

    def is_late(self, timestamp_ms: int) -> bool:
        """A claim is late when its bucket has already closed."""
        return (
            self.closed_through is not None
            and bucket_of(timestamp_ms, self.bucket_ms) <= self.closed_through
        )

    def advance(self, timestamp_ms: int, source: int = 0, sources: int | None = None) -> list[int]:
        """Record that ``source`` reached ``timestamp_ms``; return buckets that close, in order."""
        if sources is not None and sources > self.sources:
            self.sources = sources
        if timestamp_ms <= self.source_max_ms.get(source, -(2**62)):
            return []
        self.source_max_ms[source] = timestamp_ms
        low = self.max_event_ms
        return [] if low is None else self._close_until(low - self.grace_ms)

    def advance_to(self, watermark_ms: int) -> list[int]:
        """Move the watermark itself (idle partitions); return the buckets that close."""
        return self._close_until(watermark_ms)

    def _close_until(self, watermark_ms: int) -> list[int]:
        last_closable = watermark_ms // self.bucket_ms - 1
        if self.closed_through is None:
            # Nothing was seen before the first claim: there is nothing to evaluate yet.
            self.closed_through = last_closable
            return []
        if last_closable <= self.closed_through:
            return []
        closing = list(range(self.closed_through + 1, last_closable + 1))
        self.closed_through = last_closable
        return closing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the changelog."""
        return {
            "sources": self.sources,
            "source_max_ms": self.source_max_ms,
            "closed_through": self.closed_through,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load progress saved by :meth:`to_dict` (JSON turns int keys into strings)."""
        self.sources = int(data.get("sources", 1))
        self.source_max_ms = {int(k): int(v) for k, v in data.get("source_max_ms", {}).items()}
        self.closed_through = data.get("closed_through")
