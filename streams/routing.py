"""The route stage's work on one batch of ``claims.decided``, without Faust or Kafka.

:meth:`Router.plan` decodes and validates each claim, judges it against its source
partition's clock, picks its windows partition and packs the by-key messages; the worker
(``WorkerStages.route``) sends what the plan says and saves the clocks, and the CPU bench
(``bench.hotpath``) times this same code.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams import envelopes
from streams.domain.claims import Claim, InvalidClaim, parse_claim
from streams.domain.windows import SourceClock
from streams.state import default_partition

CHUNK_CLAIMS = 1000  # claims per by-key message (~150 bytes each; Kafka's default limit 1 MiB)

# A routed claim: its source partition and offset, the validated claim.
Routed = tuple[int, int, Claim]


@dataclass(slots=True)
class SourceInBatch:
    """A claims partition seen in a route batch: its clock and the last offset read."""

    tp: Any
    clock: SourceClock
    last_offset: int


@dataclass(slots=True)
class Refused:
    """A claim to dead-letter: its message, the stage that refused it, why."""

    message: Any
    stage: str  # "decode", "validate" or "route" (late)
    reason: str
    detail: str


@dataclass(slots=True)
class RoutePlan:
    """What one route batch comes to, in the order the worker sends it."""

    sources: dict[int, SourceInBatch] = field(default_factory=dict)
    refused: list[Refused] = field(default_factory=list)
    by_key: list[tuple[int, bytes]] = field(default_factory=list)  # (windows partition, value)
    outcomes: Counter[str] = field(default_factory=Counter)  # valid claims by outcome


class Router:
    """Routes batches of claims messages (anything with ``partition``, ``offset``, ``tp`` and
    ``value``) to the windows partitions.

    ``clock_of(source, offset)`` is the source partition's clock as it stood before
    ``offset`` (the worker's :class:`streams.state.SourceClocks`); it is asked once per source
    and batch, and the batch moves that clock on.
    """

    def __init__(
        self,
        codec: ValueCodec,
        topic: str,
        partitions: int,
        clock_of: Callable[[int, int], SourceClock],
    ) -> None:
        self.codec, self.topic, self.partitions = codec, topic, partitions
        self.clock_of = clock_of
        self._partitions: dict[str, int] = {}  # window key → by-key partition

    def plan(self, messages: Iterable[Any], sources: int) -> RoutePlan:
        """Route ``messages`` (one batch, in order) for ``sources`` claims partitions.

        One by-key message per windows partition (chunked when large) carries the batch's
        claims for it, then every source's progress: a windows partition needs each source's
        progress, even with no claim from it, to move its watermark (the minimum of sources).
        """
        plan = RoutePlan()
        batch, refused, outcomes = plan.sources, plan.refused, plan.outcomes
        routed: dict[int, list[Routed]] = defaultdict(list)
        for message in messages:
            source = message.partition
            seen = batch.get(source)
            if seen is None:
                clock = self.clock_of(source, message.offset)
                seen = batch[source] = SourceInBatch(message.tp, clock, message.offset)
            seen.last_offset = message.offset
            claim = self.valid_claim(message)
            if not isinstance(claim, Claim):  # a (stage, error): dead-letter it
                stage, error = claim
                refused.append(Refused(message, stage, error.reason, error.message))
                continue
            outcomes[claim.outcome] += 1
            if seen.clock.is_late(claim.event_ms):
                refused.append(
                    Refused(message, "route", "late", "later than the grace in its partition")
                )
                continue
            seen.clock.observe(claim.event_ms)
            routed[self.partition_of(claim.window_key)].append((source, message.offset, claim))
        progress = [(s, seen.clock.max_event_ms) for s, seen in sorted(batch.items())
                    if seen.clock.max_event_ms is not None]  # fmt: skip
        for partition in range(self.partitions):
            chunks = _chunks(routed.get(partition, []))
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                if chunk or (last and progress):
                    value = envelopes.routed_batch(sources, chunk, progress if last else [])
                    plan.by_key.append((partition, value))
        return plan

    def valid_claim(self, message: Any) -> Claim | tuple[str, DecodeError | InvalidClaim]:
        """The claim a message carries, or the stage that refused it and why."""
        try:
            return parse_claim(self.codec.decode(message.value, "ClaimDecided", self.topic))
        except DecodeError as exc:
            return "decode", exc
        except InvalidClaim as exc:
            return "validate", exc

    def partition_of(self, window_key: str) -> int:
        """The by-key partition of ``window_key``: Kafka's default (murmur2) partitioner."""
        partition = self._partitions.get(window_key)
        if partition is None:
            if len(self._partitions) > 1_000_000:
                self._partitions.clear()
            partition = default_partition(window_key.encode(), self.partitions)
            self._partitions[window_key] = partition
        return partition


def _chunks(items: list[Routed]) -> list[list[Routed]]:
    """``items`` in order, in parts of at most ``CHUNK_CLAIMS`` (one empty part if none)."""
    return [items[i : i + CHUNK_CLAIMS] for i in range(0, len(items), CHUNK_CLAIMS)] or [[]]
