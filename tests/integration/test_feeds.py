"""Real claim feeds on the real broker: three customers share ``claims.decided`` — one on
time, one a remittance feed 5–20 days late, one onboarding its history onto the running
system. Nothing valid is dead-lettered, each finds its shift, and each customer's drift events
and alerts are byte for byte what the same customer's claims give alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.registry import ValueCodec
from streams.devtools.generator import SPIKE_GROUP, SPIKE_PAYER, Scenario, generate_mix, produce
from streams.devtools.probes import read_all
from streams.kafka.topics import create_topics
from tests.integration.stack import wait_consumed, worker_stack

pytestmark = pytest.mark.integration

FEEDS = {"lab": "on-time", "remit": "remittance", "onboard": "onboarding"}
SCENARIOS = [
    Scenario(
        "denial-spike",
        customer,
        days=100,
        spike_day=70,
        claims_per_key_per_day=12,
        seed=40 + n,
        feed=feed,
        onboard_day=80,
    )
    for n, (customer, feed) in enumerate(FEEDS.items())
]


async def _run(claims: list[dict[str, Any]], bootstrap: str, unique: str, tmp: Path,
               suffix: str) -> dict[str, Any]:  # fmt: skip
    """Stream ``claims`` through a new worker; its raw outputs by customer."""
    (tmp / suffix).mkdir()
    stack = worker_stack(bootstrap, unique, tmp, suffix)
    s = stack.settings()
    await create_topics(s, bootstrap)
    stack.start("worker")
    try:
        await produce(SCENARIOS[0], bootstrap, s.topic_claims, claims=claims)
        await wait_consumed(stack, len(claims))
        codec = ValueCodec()
        out: dict[str, Any] = {c: {"drifts": {}, "alerts": {}, "dlq": []} for c in FEEDS}
        for m in await read_all(bootstrap, s.topic_drift):
            record = codec.decode(m.value, "DriftEvent", s.topic_drift)
            out[record["customer_id"]]["drifts"][record["event_id"]] = m.value
        for m in await read_all(bootstrap, s.topic_alerts):
            record = codec.decode(m.value, "AlertEvent", s.topic_alerts)
            out[record["customer_id"]]["alerts"][(record["alert_id"], record["version"])] = m.value
        for m in await read_all(bootstrap, s.topic_claims_dlq):
            out[m.key.decode().split("-")[0]]["dlq"].append(m.key)
        return out
    finally:
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]


async def test_each_feed_is_windowed_whole_and_alone_equals_mixed(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    mixed_claims = generate_mix(SCENARIOS)
    mixed = await _run(mixed_claims, kafka_bootstrap, unique, tmp_path, "mixed")
    codec = ValueCodec()
    for customer in FEEDS:
        found = mixed[customer]
        assert found["dlq"] == [], f"{customer}: valid claims dead-lettered"
        keys = {(r["payer_id"], r["cpt_group"], r["drift_type"])
                for r in (codec.decode(v, "DriftEvent", "drift.events")
                          for v in found["drifts"].values())}  # fmt: skip
        assert (SPIKE_PAYER, SPIKE_GROUP, "denial_rate") in keys, customer
        assert found["alerts"], customer
    for customer in FEEDS:
        alone_claims = [c for c in mixed_claims if c["customer_id"] == customer]
        alone = await _run(alone_claims, kafka_bootstrap, unique, tmp_path, customer)
        assert alone[customer] == mixed[customer], customer
