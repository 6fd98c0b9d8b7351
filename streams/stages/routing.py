"""The route stage's work on one batch of ``claims.decided``, without Faust or Kafka.

:meth:`Router.plan` decodes and validates each claim, picks its windows partition (by
customer: a customer's keys, watermark and multiple-testing family live in one partition) and
packs the by-key messages; the worker (``WorkerStages.route``) sends what the plan says, and
the CPU bench (``bench.hotpath``) times this same code. The route keeps no state: when a claim
takes effect is decided by the windows (:mod:`streams.domain.processor`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams.domain.claims import Claim, InvalidClaim, parse_claim
from streams.kafka import envelopes
from streams.kafka.partitioner import default_partition

log = logging.getLogger("upstream.worker")
CHUNK_CLAIMS = 1000  # claims per by-key message (~150 bytes each; Kafka's default limit 1 MiB)

# A routed claim: its source partition and offset, the validated claim.
Routed = tuple[int, int, Claim]


@dataclass(slots=True)
class Refused:
    """A claim to dead-letter: its message, the stage that refused it, why."""

    message: Any
    stage: str  # "decode" or "validate"
    reason: str
    detail: str


@dataclass(slots=True)
class RoutePlan:
    """What one route batch comes to, in the order the worker sends it."""

    refused: list[Refused] = field(default_factory=list)
    by_key: list[tuple[int, bytes]] = field(default_factory=list)  # (windows partition, value)
    outcomes: Counter[str] = field(default_factory=Counter)  # valid claims by outcome


class Router:
    """Routes batches of claims messages (anything with ``partition``, ``offset`` and
    ``value``) to the windows partitions."""

    def __init__(self, codec: ValueCodec, topic: str, partitions: int) -> None:
        self.codec, self.topic, self.partitions = codec, topic, partitions
        self._partitions: dict[str, int] = {}  # customer id → by-key partition

    def plan(self, messages: Iterable[Any], sources: int) -> RoutePlan:
        """Route ``messages`` (one batch, in order) read from ``sources`` claims partitions.

        One by-key message per windows partition (chunked when large) carries the batch's
        claims for it, in order, each with the claims partition and offset it was read at.
        """
        plan = RoutePlan()
        refused, outcomes = plan.refused, plan.outcomes
        routed: dict[int, list[Routed]] = defaultdict(list)
        for message in messages:
            claim = self.valid_claim(message)
            if not isinstance(claim, Claim):  # a (stage, error): dead-letter it
                stage, error = claim
                refused.append(Refused(message, stage, error.reason, error.message))
                continue
            outcomes[claim.outcome] += 1
            routed[self.partition_of(claim.customer_id)].append(
                (message.partition, message.offset, claim)
            )
        for partition, claims in sorted(routed.items()):
            for start in range(0, len(claims), CHUNK_CLAIMS):
                chunk = claims[start : start + CHUNK_CLAIMS]
                plan.by_key.append((partition, envelopes.routed_batch(sources, chunk)))
        return plan

    def valid_claim(self, message: Any) -> Claim | tuple[str, DecodeError | InvalidClaim]:
        """The claim a message carries, or the stage that refused it and why."""
        try:
            return parse_claim(self.codec.decode(message.value, "ClaimDecided", self.topic))
        except DecodeError as exc:
            return "decode", exc
        except InvalidClaim as exc:
            return "validate", exc
        except Exception as exc:
            log.warning("%s@%s:%s refused: %r", self.topic, message.partition, message.offset,
                        exc)  # fmt: skip
            return "validate", InvalidClaim("bad_record", f"{type(exc).__name__}: {exc}")

    def partition_of(self, customer_id: str) -> int:
        """The by-key partition of ``customer_id``: Kafka's default (murmur2) partitioner."""
        partition = self._partitions.get(customer_id)
        if partition is None:
            if len(self._partitions) > 1_000_000:
                self._partitions.clear()
            partition = default_partition(customer_id.encode(), self.partitions)
            self._partitions[customer_id] = partition
        return partition
