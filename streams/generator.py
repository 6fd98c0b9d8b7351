"""Synthetic claims with named drift scenarios, deterministic for a seed.

Scenarios:

- ``steady``: every payer × CPT group key denies ~10 % of claims throughout.
- ``denial-spike``: as steady, plus one key (``SPIKE_PAYER`` × ``SPIKE_GROUP``) whose denial
  rate jumps from ~10 % to ~35 % on ``spike_day``.

Event time can be compressed: :func:`produce` paces sending so that ``days`` of claims take
about ``duration_s`` seconds of wall time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.registry import ValueCodec

SCENARIOS = ("steady", "denial-spike")
PAYERS = ("payer-a", "payer-b", "payer-c")
# (group, a representative CPT code, typical billed dollars)
GROUPS = (("radiology", "71046", 180.0), ("evaluation_management", "99213", 140.0))
SPIKE_PAYER = "payer-b"
SPIKE_GROUP = "radiology"
BASE_DENIAL_RATE = 0.10
SPIKE_DENIAL_RATE = 0.35


@dataclass(frozen=True, slots=True)
class Scenario:
    """What to generate."""

    name: str = "denial-spike"
    customer_id: str = "demo"
    start: date = date(2026, 1, 1)
    days: int = 120
    spike_day: int = 75
    claims_per_key_per_day: int = 20
    seed: int = 7

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; choose from {list(SCENARIOS)}")
        if self.days < 1 or self.claims_per_key_per_day < 1:
            raise ValueError("days and claims per key per day must be positive")

    @property
    def spike_key(self) -> str | None:
        """The ``customer|payer|cpt_group`` key that drifts, if any."""
        if self.name != "denial-spike":
            return None
        return f"{self.customer_id}|{SPIKE_PAYER}|{SPIKE_GROUP}"

    def denial_rate(self, payer: str, group: str, day: int) -> float:
        """The true denial probability of a key on a day."""
        spiked = self.name == "denial-spike" and payer == SPIKE_PAYER and group == SPIKE_GROUP
        return SPIKE_DENIAL_RATE if spiked and day >= self.spike_day else BASE_DENIAL_RATE


def generate(scenario: Scenario) -> Iterator[dict[str, Any]]:
    """ClaimDecided records (JSON field names), in event-time order, day by day."""
    rng = random.Random(scenario.seed)
    for day in range(scenario.days):
        decided_day = scenario.start + timedelta(days=day)
        batch = []
        for payer in PAYERS:
            for group, cpt, billed in GROUPS:
                for i in range(scenario.claims_per_key_per_day):
                    denied = rng.random() < scenario.denial_rate(payer, group, day)
                    lag_days = rng.randint(5, 30)
                    amount = round(billed * rng.uniform(0.8, 1.2), 2)
                    seconds = rng.randrange(86_400)
                    decided_at = datetime(
                        decided_day.year, decided_day.month, decided_day.day, tzinfo=UTC
                    ) + timedelta(seconds=seconds)
                    batch.append(
                        {
                            "claim_id": f"{scenario.customer_id}-{payer}-{group}-{day}-{i}",
                            "customer_id": scenario.customer_id,
                            "payer_id": payer,
                            "cpt_code": cpt,
                            "cpt_group": group,
                            "submitted_date": (decided_day - timedelta(days=lag_days)).isoformat(),
                            "decided_date": decided_day.isoformat(),
                            "decided_at": decided_at.isoformat().replace("+00:00", "Z"),
                            "outcome": "DENIED" if denied else "PAID",
                            "billed_amount": f"{amount:.2f}",
                            "allowed_amount": "0.00" if denied else f"{amount * 0.7:.2f}",
                        }
                    )
        batch.sort(key=lambda c: c["decided_at"])
        yield from batch


def total_claims(scenario: Scenario) -> int:
    """How many claims :func:`generate` yields."""
    return scenario.days * len(PAYERS) * len(GROUPS) * scenario.claims_per_key_per_day


def encode_claim(record: dict[str, Any], fmt: str, codec: ValueCodec, topic: str) -> bytes:
    """The claim as JSON or Avro bytes."""
    if fmt == "json":
        import json

        return json.dumps(record, separators=(",", ":")).encode()
    return codec.encode("ClaimDecided", topic, record)


async def produce(
    scenario: Scenario,
    bootstrap: str,
    topic: str,
    *,
    fmt: str = "json",
    codec: ValueCodec | None = None,
    duration_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Send the scenario's claims to ``topic`` keyed by ``claim_id``; return the count.

    With ``duration_s`` > 0 the days are spread evenly over that many seconds.
    """
    codec = codec or ValueCodec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    total = total_claims(scenario)
    per_day = total // scenario.days
    started = time.monotonic()
    try:
        for record in generate(scenario):
            value = encode_claim(record, fmt, codec, topic)
            await producer.send(topic, value=value, key=record["claim_id"].encode())
            sent += 1
            if sent % per_day == 0:
                if progress is not None:
                    progress(sent, total)
                if duration_s > 0:
                    due = started + duration_s * (sent / total)
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent
