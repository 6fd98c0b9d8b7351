"""One partition's window state: claims in, late claims and bucket-close evaluations out.

Claims are applied strictly in the order given, so the result depends only on the input
order within the partition, never on how it was batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from streams.domain.claims import Claim
from streams.domain.drift import DriftConfig, evaluate_close
from streams.domain.events import DriftDetected, KeyEvaluated
from streams.domain.windows import (
    Added,
    KeyWindows,
    Watermark,
    bucket_of,
    claims_floor,
    packed_claim,
)


# Arrivals are named tuples: one is built per claim, and a frozen dataclass costs several
# times as much to build.
class ClaimFromSource(NamedTuple):
    """A claim, and the upstream (source) partition, of ``sources``, it was read from."""

    source: int
    sources: int
    claim: Claim


class SourceProgressed(NamedTuple):
    """Source partition ``source`` (of ``sources``) has reached event time ``max_event_ms``."""

    source: int
    sources: int
    max_event_ms: int


Arrival = ClaimFromSource | SourceProgressed


@dataclass(slots=True)
class StepResult:
    """What applying a batch produced: late claims, drifts, evaluations, changed keys."""

    late: list[Claim] = field(default_factory=list)
    drifts: list[DriftDetected] = field(default_factory=list)
    evaluations: list[KeyEvaluated] = field(default_factory=list)
    # Keys with changes to persist (take_changes()), including keys that were just removed.
    changed: dict[str, KeyWindows] = field(default_factory=dict)
    removed_keys: set[str] = field(default_factory=set)
    duplicates: int = 0
    replaced: int = 0


# A close scans the keys' claim ids for those that left the history only when the bucket it
# closes is a multiple of this (or a key has no bucket left); until then the ids older than
# the history stay in memory, ignored (PartitionWindows._claims_floor). At most this many
# buckets' worth of ids stay so, about a tenth of a key's ids with the default 90-bucket
# history; the scans cost an eighth of one per close.
CLAIM_SCAN_BUCKETS = 8


class PartitionWindows:
    """Windows of every key in one partition plus the partition's watermark."""

    def __init__(self, partition: int, cfg: DriftConfig, grace_ms: int, sources: int = 1) -> None:
        self.partition = partition
        self.cfg = cfg
        self.watermark = Watermark(grace_ms=grace_ms, bucket_ms=cfg.bucket_ms, sources=sources)
        self.keys: dict[str, KeyWindows] = {}

    def apply(self, arrivals: Sequence[Arrival], now_ms: int | None = None) -> StepResult:
        """Apply claims and source progress in order; evaluate each bucket that closes.

        ``now_ms`` (wall clock) only feeds idle detection; results never depend on it.
        """
        result = StepResult()
        floor = self._claims_floor()
        for arrival in arrivals:
            if isinstance(arrival, SourceProgressed):
                closing = self.watermark.advance(
                    arrival.max_event_ms, arrival.source, arrival.sources
                )
            else:
                claim = arrival.claim
                bucket = bucket_of(claim.event_ms, self.cfg.bucket_ms)
                window_key = claim.window_key
                key = self.keys.get(window_key)
                if key is None:
                    key = KeyWindows(window_key, self.partition)
                ident, packed = packed_claim(claim, bucket)
                previous = key.claims.get(ident)
                if previous is not None and previous < floor:
                    previous = None  # older than the history: forgotten, if not yet scanned
                # An exact resend (or a redelivery after a restart) is a no-op, never "late".
                if previous == packed:
                    result.duplicates += 1
                elif self.watermark.is_late(claim.event_ms):
                    result.late.append(claim)
                else:
                    self.keys[window_key] = key
                    if key.add_known(ident, packed, previous) is Added.REPLACED:
                        result.replaced += 1
                    result.changed[window_key] = key
                closing = self.watermark.advance(claim.event_ms, arrival.source, arrival.sources)
            if now_ms is not None:
                self.watermark.touch(arrival.source, now_ms)
            for closed in closing:
                self._close(closed, result)
            if closing:
                floor = self._claims_floor()
        return result

    def _claims_floor(self) -> int:
        """A key's remembered claim packed below this is older than the history the watermark
        has closed: gone, though its id may stay until the next scan (CLAIM_SCAN_BUCKETS)."""
        closed = self.watermark.closed_through
        return 0 if closed is None else claims_floor(closed - self.cfg.history_buckets + 1)

    def idle_tick(self, now_ms: int, idle_after_ms: int) -> StepResult:
        """Advance past quiet sources by the wall clock (see :meth:`Watermark.idle_tick`)."""
        result = StepResult()
        for closed in self.watermark.idle_tick(now_ms, idle_after_ms):
            self._close(closed, result)
        return result

    def _close(self, closed: int, result: StepResult) -> None:
        oldest = closed - self.cfg.history_buckets + 1
        scan = closed % CLAIM_SCAN_BUCKETS == 0
        active = []
        for name, key in list(self.keys.items()):
            if key.prune_before(oldest, scan):
                result.changed[name] = key
            if key.is_empty:
                del self.keys[name]
                result.removed_keys.add(name)
            else:
                active.append(key)
        drifts, evaluations = evaluate_close(self.cfg, closed, active)
        result.drifts.extend(drifts)
        result.evaluations.extend(evaluations)
