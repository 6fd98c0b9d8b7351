"""The windows stage at run time: claims by key into :class:`PartitionWindows`, and what the
closes find out to Kafka, under the commit protocol of :class:`Checkpoint`.

It applies claims to each partition's windows (event time per customer, late claims amend
their buckets), sends claims older than their customer's history to the DLQ
(``beyond_history``, read back from ``claims.decided``), drift events to ``drift.events`` and
key evaluations to the alert input (keyed by customer). The idle timer
(:meth:`WindowsStage.tick_idle`) advances customers whose feed is quiet by the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.registry import ValueCodec
from streams.domain.claims import InvalidClaim
from streams.domain.partition import PartitionWindows
from streams.domain.processor import ClaimFromSource, StepResult
from streams.kafka import envelopes
from streams.kafka.originals import Originals, Rebuilt
from streams.kafka.records import drift_record
from streams.observability.metrics import (
    ACTIVE_KEYS,
    BUCKET_CLOSES,
    CLAIMS_AMENDED,
    CLAIMS_DUPLICATE,
    CLAIMS_PENDING,
    CLAIMS_PROCESSED,
    CLAIMS_REDELIVERED,
    DRIFT_EVENTS,
    EVENT_TIME_LAG,
)
from streams.runtime.checkpoint import Checkpoint
from streams.runtime.state import WindowsState, send_keyed
from streams.stages.windows import RELEASE_BUDGET, flush_slices

# A step applied to a partition's windows: the partition, what it produced, the id of its
# last claim (None for an idle tick), for the log line of each drift found.
Applied = tuple[PartitionWindows, StepResult, str | None]
# Dead-letter a message: (message, stage, reason, detail) → the future of its delivery.
SendDeadLetter = Callable[[Any, str, str, str], Awaitable[Any]]
log = logging.getLogger("upstream.worker")


@dataclass
class WindowsStage:
    """The windows of the partitions this worker owns, and where their outputs go."""

    state: WindowsState
    codec: ValueCodec
    kafka_producer: Callable[[], Any]  # the aiokafka producer, once Faust has started it
    drift_topic: str
    alert_input_topic: str
    claims_topic: str  # where the originals of beyond-history claims are read back
    sources: Callable[[], int]  # partitions of the claims topic
    send_dlq: SendDeadLetter
    originals: Originals
    # The idle timer, the stage and a revoke share the state: each holds this lock.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def windows(self, messages: list[Any], checkpoint: Checkpoint) -> None:
        """Apply claims to the partitions' windows; emit what the closes find."""
        by_partition: dict[int, list[ClaimFromSource]] = defaultdict(list)
        for message in messages:
            try:
                items = envelopes.arrivals(envelopes.loads(message.value))
            except (InvalidClaim, ValueError, KeyError, TypeError, IndexError) as exc:
                checkpoint.deliver(
                    [await self.send_dlq(message, "window", "invalid", str(exc)[:200])]
                )
                continue
            by_partition[message.partition].extend(items)
        now_ms = int(time.time() * 1000)
        async with self.lock:
            sources = self.sources()
            # A flush per slice keeps each partition's changelog records within the one record
            # batch that makes a flush atomic (see ChangelogTable). A round takes at most one
            # slice of every partition, and its partitions share one wait for their outputs'
            # delivery and one flush (a round per partition cost two round trips each).
            # A step stops early when its release budget is spent: the rest of its slice
            # waits for the next round, after the releases and closes left due.
            work = {partition: (self.state.get(partition, sources), deque(flush_slices(arrivals)))
                    for partition, arrivals in by_partition.items()}  # fmt: skip
            while work:
                applied = []
                for partition, (pw, left) in list(work.items()):
                    piece = left[0] if left else []
                    step = await self._apply(pw, piece, now_ms, checkpoint)
                    taken = step[1].taken
                    if left and taken == len(piece):
                        left.popleft()
                    elif left:
                        left[0] = piece[taken:]
                    if not left and not step[1].budget_spent():
                        del work[partition]
                    applied.append(step)
                await self.emit(applied, checkpoint)
            ACTIVE_KEYS.set(self.state.key_count())
            CLAIMS_PENDING.set(self.state.pending_count())

    async def tick_idle(self, partitions: list[int], now_ms: int, idle_ms: int) -> None:
        """Advance the customers of ``partitions`` whose feed (or one of its sources) has been
        quiet by the wall clock for ``idle_ms``; the caller holds :attr:`lock`."""
        behind = [self.state.get(partition, self.sources()) for partition in partitions]
        ticked = False
        while behind:  # a tick, then catching up with what its budget left due
            closed: list[Applied] = []
            for pw in behind:
                if ticked:
                    result = pw.apply([], release_budget=RELEASE_BUDGET)
                else:
                    result = pw.idle_tick(now_ms, idle_ms, release_budget=RELEASE_BUDGET)
                count_claims(result)
                if result.closes or result.pending_done:
                    closed.append((pw, result, None))
            behind = [pw for pw, result, _ in closed if result.budget_spent()]
            ticked = True
            if closed:
                await self.emit(closed, Checkpoint())
                CLAIMS_PENDING.set(self.state.pending_count())

    async def _apply(
        self,
        pw: PartitionWindows,
        arrivals: list[ClaimFromSource],
        now_ms: int,
        checkpoint: Checkpoint,
    ) -> Applied:
        """Apply ``arrivals`` to one partition's windows and dead-letter the claims beyond
        their customer's history; the outputs and state are for :meth:`emit`."""
        result = pw.apply(arrivals, now_ms=now_ms, release_budget=RELEASE_BUDGET)
        observe = EVENT_TIME_LAG.observe
        taken = arrivals[: result.taken]
        for arrival in taken:
            observe((now_ms - arrival.claim.event_ms) / 1000)
        await self._dead_letter_beyond_history(result.beyond_history, checkpoint)
        count_claims(result)
        return pw, result, taken[-1].claim.claim_id if taken else None

    async def _dead_letter_beyond_history(
        self, arrivals: list[ClaimFromSource], checkpoint: Checkpoint
    ) -> None:
        """The original claims (or, failing that, the claims as validated) to the DLQ."""
        if not arrivals:
            return
        origins = [envelopes.Origin(self.claims_topic, a.source, a.offset) for a in arrivals]
        originals = await self.originals.read_many(origins)
        for arrival, origin in zip(arrivals, origins, strict=True):
            reason = "older than the customer's history (its watermark less the history kept)"
            original = originals.get(origin)
            if original is None:
                claim = arrival.claim
                original = Rebuilt(
                    origin.topic, origin.partition, origin.offset, claim.claim_id.encode(),
                    envelopes.dumps(claim.to_record()),
                )  # fmt: skip
                reason += " (original unreadable: the value is the claim as validated)"
            checkpoint.deliver([await self.send_dlq(original, "window", "beyond_history", reason)])

    async def emit(self, applied: list[Applied], checkpoint: Checkpoint) -> None:
        """Deliver the outputs of each applied step (in order), then persist the state that
        produced them: one changelog flush, atomic per partition. The dead letters handed to
        ``checkpoint`` are delivered first too: once the state (and the offsets applied) is
        persisted, the claims are never windowed again."""
        drifts: list[tuple[bytes, bytes]] = []
        evaluations: list[tuple[bytes, bytes]] = []
        for _, result, closing_claim in applied:
            for drift in result.drifts:
                DRIFT_EVENTS.labels(drift_type=drift.drift_type, level=drift.severity_level).inc()
                log.info(
                    "drift detected: %s %s", drift.kafka_key, drift.severity_level,
                    extra={"event_id": drift.event_id, "claim_id": closing_claim,
                           "customer_id": drift.customer_id, "drift_type": drift.drift_type},
                )  # fmt: skip
                value = self.codec.encode("DriftEvent", self.drift_topic, drift_record(drift))
                drifts.append((drift.kafka_key.encode(), value))
            for evaluation in result.evaluations:
                message = envelopes.evaluation_message(evaluation)
                evaluations.append((evaluation.customer_id.encode(), message))
        producer = self.kafka_producer()
        checkpoint.deliver(await send_keyed(producer, self.drift_topic, drifts))
        checkpoint.deliver(await send_keyed(producer, self.alert_input_topic, evaluations))

        def save() -> None:
            for pw, result, _ in applied:
                self.state.save(pw, result)

        await checkpoint.persist(self.state.table, save)


def count_claims(result: StepResult) -> None:
    """The claim and close counters of a step: every claim read is, once, counted
    (processed), a duplicate, beyond the history or redelivered, after it waited (the pending
    gauge, set from the windows held) or not."""
    BUCKET_CLOSES.inc(result.closes)
    CLAIMS_PROCESSED.inc(result.counted)
    CLAIMS_DUPLICATE.inc(result.duplicates)
    CLAIMS_AMENDED.inc(result.amended)
    CLAIMS_REDELIVERED.inc(result.redelivered)
