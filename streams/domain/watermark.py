"""A customer's watermark: when its buckets close.

The watermark is the lowest, over the claims partitions, of the max event time of the
customer's claims read there, minus the grace; bucket ``i`` (``[i * bucket_ms, (i + 1) *
bucket_ms)`` of event time) closes when the watermark reaches its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.domain.windows import bucket_of


def last_closable_bucket(watermark_ms: int, bucket_ms: int) -> int:
    """The last bucket whose end a watermark at ``watermark_ms`` has reached."""
    return watermark_ms // bucket_ms - 1


@dataclass(slots=True)
class Watermark:
    """Event-time progress of one customer, whose claims are read from ``sources`` claims
    partitions.

    Each source's clock is the max event time of the customer's claims read there. The
    watermark is the *lowest* clock minus the grace, as in Flink: a source consumed behind the
    others holds closes back, so which closes a claim precedes does not depend on how the
    sources were interleaved (see :mod:`streams.domain.processor`). ``closed_through`` is the
    last closed bucket index, or None before every source reported.
    """

    grace_ms: int
    bucket_ms: int
    sources: int = 1
    source_max_ms: dict[int, int] = field(default_factory=dict)
    closed_through: int | None = None
    first_bucket: int | None = None  # the earliest bucket any claim fell in before the first close
    # Wall-clock bookkeeping, used only to advance idle sources (see idle_tick).
    source_seen_wall_ms: dict[int, int] = field(default_factory=dict)
    first_arrival_wall_ms: int | None = None
    last_arrival_wall_ms: int | None = None
    max_at_last_arrival_ms: int | None = None

    @property
    def max_event_ms(self) -> int | None:
        """The event time every source has reached, or None while one has not reported."""
        if len(self.source_max_ms) < self.sources:
            return None
        return min(self.source_max_ms.values())

    def advance(self, timestamp_ms: int, source: int = 0, sources: int | None = None) -> list[int]:
        """Record a claim of ``source`` at ``timestamp_ms``; return buckets that close, in order."""
        if sources is not None and sources > self.sources:
            self.sources = sources
        self.note_claim(timestamp_ms)
        if timestamp_ms <= self.source_max_ms.get(source, -(2**62)):
            return []
        self.source_max_ms[source] = timestamp_ms
        low = self.max_event_ms
        return [] if low is None else self._close_until(low - self.grace_ms)

    def touch(self, source: int, now_ms: int) -> None:
        """Note that ``source`` delivered something at wall time ``now_ms``."""
        self.source_seen_wall_ms[source] = now_ms
        if self.first_arrival_wall_ms is None:
            self.first_arrival_wall_ms = now_ms
        self.last_arrival_wall_ms = now_ms
        if self.source_max_ms:
            self.max_at_last_arrival_ms = max(self.source_max_ms.values())

    def idle_tick(self, now_ms: int, idle_after_ms: int) -> list[int]:
        """Advance past sources that have been quiet for ``idle_after_ms`` of wall time.

        While other sources deliver, quiet ones stop holding the watermark back (as Flink's
        idle sources). When the customer's whole feed is quiet, event time advances with the
        wall clock from the last max event time, so keys that went quiet still get evaluated.
        """
        first_seen = self.first_arrival_wall_ms
        if (
            first_seen is None
            or self.last_arrival_wall_ms is None
            or self.max_at_last_arrival_ms is None
        ):
            return []
        # A source not heard from yet counts as quiet since the customer's first arrival: it
        # too holds the watermark back until then + idle_after_ms (treating it as idle at once
        # closed buckets before its claims could arrive, e.g. while the worker that routes it
        # starts or is replaced).
        active = [
            s for s in range(self.sources)
            if now_ms - self.source_seen_wall_ms.get(s, first_seen) < idle_after_ms
        ]  # fmt: skip
        if any(s not in self.source_max_ms for s in active):
            return []  # a source still to report, not quiet yet: nothing can close
        if active:
            target = min(self.source_max_ms[s] for s in active)
        else:
            quiet_for = now_ms - self.last_arrival_wall_ms - idle_after_ms
            if quiet_for <= 0:
                return []
            target = self.max_at_last_arrival_ms + quiet_for
        for s in range(self.sources):
            if s not in active:
                self.source_max_ms[s] = max(self.source_max_ms.get(s, target), target)
        low = self.max_event_ms
        return [] if low is None else self._close_until(low - self.grace_ms)

    def note_claim(self, timestamp_ms: int) -> None:
        """Remember the earliest claim bucket until the first close."""
        if self.closed_through is None:
            bucket = bucket_of(timestamp_ms, self.bucket_ms)
            if self.first_bucket is None or bucket < self.first_bucket:
                self.first_bucket = bucket

    def closes_due(self) -> bool:
        """Whether buckets the sources' clocks allow to close are not closed yet (a step's
        release budget stopped the closes: see :mod:`streams.domain.processor`)."""
        low = self.max_event_ms
        if low is None or (self.closed_through is None and self.first_bucket is None):
            return False
        last_closable = last_closable_bucket(low - self.grace_ms, self.bucket_ms)
        return self.closed_through is None or last_closable > self.closed_through

    def close_due(self) -> list[int]:
        """Close the buckets :meth:`closes_due` finds; return them, in order."""
        low = self.max_event_ms
        return [] if low is None else self._close_until(low - self.grace_ms)

    def _close_until(self, watermark_ms: int) -> list[int]:
        last_closable = last_closable_bucket(watermark_ms, self.bucket_ms)
        if self.closed_through is None:
            if self.first_bucket is None:
                return []
            # Start from the first bucket with data, whenever every source has reported: the
            # closes evaluated then do not depend on which source reported last.
            self.closed_through = min(self.first_bucket - 1, last_closable)
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
            "first_bucket": self.first_bucket,
            "source_seen_wall_ms": self.source_seen_wall_ms,
            "first_arrival_wall_ms": self.first_arrival_wall_ms,
            "last_arrival_wall_ms": self.last_arrival_wall_ms,
            "max_at_last_arrival_ms": self.max_at_last_arrival_ms,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load progress saved by :meth:`to_dict` (JSON turns int keys into strings)."""
        self.sources = int(data.get("sources", 1))
        self.source_max_ms = {int(k): int(v) for k, v in data.get("source_max_ms", {}).items()}
        self.closed_through = data.get("closed_through")
        self.first_bucket = data.get("first_bucket")
        seen = data.get("source_seen_wall_ms", {})
        self.source_seen_wall_ms = {int(k): int(v) for k, v in seen.items()}
        self.first_arrival_wall_ms = data.get("first_arrival_wall_ms")
        self.last_arrival_wall_ms = data.get("last_arrival_wall_ms")
        self.max_at_last_arrival_ms = data.get("max_at_last_arrival_ms")
