"""``upstream dlq stats|replay`` on the real broker: counts by customer and reason, a dry run
that sends nothing, and a replay that is safe to repeat (the claims count once)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.devtools.generator import Scenario, generate
from streams.devtools.probes import read_all, scrape
from streams.devtools.stack import free_port
from streams.kafka.topics import create_topics
from tests.integration.stack import ServiceStack, wait_until

pytestmark = pytest.mark.integration


async def test_dead_letters_are_counted_and_replayed_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    stack = ServiceStack(kafka_bootstrap, "", unique, tmp_path)
    s = stack.settings()
    await create_topics(s, kafka_bootstrap)
    claims = generate(Scenario("steady", "acme", days=30, claims_per_key_per_day=5))
    held = claims[100:300]  # dead-lettered by hand, as a deployment with a bug would have
    ancient = [{**c, "claim_id": f"old-{i}", "customer_id": "beta", "submitted_date": "2020-01-01",
                "decided_date": "2020-01-02", "decided_at": "2020-01-02T00:00:00Z"}
               for i, c in enumerate(claims[:7])]  # fmt: skip
    recent_beta = {**claims[-1], "claim_id": "beta-now", "customer_id": "beta"}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for claim in held:
            await producer.send(
                s.topic_claims_dlq, json.dumps(claim).encode(), key=claim["claim_id"].encode(),
                headers=[("error.stage", b"route"), ("error.reason", b"late")],
            )  # fmt: skip
        sent = [c for c in claims if c not in held]
        for claim in sent:
            await producer.send(s.topic_claims, json.dumps(claim).encode(),
                                key=claim["claim_id"].encode())  # fmt: skip
        for claim in [recent_beta, *ancient]:  # one partition: older than what it read before
            await producer.send(s.topic_claims, json.dumps(claim).encode(), partition=0)
        sent += [recent_beta, *ancient]
        junk = [("error.stage", b"decode"), ("error.reason", b"json")]
        await producer.send(s.topic_claims_dlq, b"\xff\x00", key=b"junk", headers=junk)
        await producer.flush()
    finally:
        await producer.stop()
    port = free_port()
    # A short idle wait: beta's claims reach one claims partition only.
    stack.start("worker", env={"UPSTREAM_METRICS_PORT": str(port),
                               "UPSTREAM_IDLE_CLOSE_AFTER_S": "3"})  # fmt: skip
    try:
        letters = await wait_until(lambda: _letters(stack, 200 + 1 + 7), 120, "the dead letters")
        assert sorted(letters) == sorted(
            [("acme", "late", 200), ("beta", "beyond_history", 7), ("(unreadable)", "json", 1)]
        )
        only_beta = await asyncio.to_thread(stack.cli, "dlq", "stats", "--customer", "beta")
        assert only_beta.returncode == 0, only_beta.stderr
        assert "beyond_history" in only_beta.stdout
        assert "acme" not in only_beta.stdout
        dry = await asyncio.to_thread(stack.cli, "dlq", "replay", "--reason", "late", "--dry-run")
        assert dry.returncode == 0
        assert "would republish 200 dead letter(s)" in dry.stderr
        metrics = f"http://127.0.0.1:{port}/metrics"
        await wait_until(lambda: _counted(metrics, len(sent) - 7), 120, "the claims counted")
        assert len(await read_all(kafka_bootstrap, s.topic_claims)) == len(sent)  # dry: none
        for _ in range(2):
            done = await asyncio.to_thread(stack.cli, "dlq", "replay", "--reason", "late")
            assert done.returncode == 0
            assert "republished 200 dead letter(s)" in done.stderr
        # The first replay's claims are counted, the second's are resends: counted once.
        counted = await wait_until(lambda: _counted(metrics, len(sent) - 7 + 400), 120,
                                   "the replayed claims")  # fmt: skip
        assert counted == {"processed": len(sent) - 7 + 200, "duplicate": 200}
        # Claims still older than their customer's history come back to the DLQ; the replay
        # sends what was there when it began, and ends.
        again = await asyncio.to_thread(stack.cli, "dlq", "replay", "--reason", "beyond_history")
        assert again.returncode == 0
        assert "republished 7 dead letter(s)" in again.stderr
        letters = await wait_until(lambda: _letters(stack, 200 + 1 + 14), 120, "7 more letters")
        assert ("beta", "beyond_history", 14) in letters
    finally:
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]


async def _letters(stack: ServiceStack, at_least: int) -> list[tuple[str, str, int]] | None:
    result = await asyncio.to_thread(stack.cli, "dlq", "stats", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    if sum(r["count"] for r in rows) < at_least:
        return None
    return [(r["customer_id"], r["reason"], r["count"]) for r in rows]


async def _counted(url: str, at_least: int) -> dict[str, float] | None:
    try:
        sample = await asyncio.to_thread(scrape, url)
    except OSError:
        return None
    counted = {
        "processed": sample.get("upstream_claims_processed_total", 0.0),
        "duplicate": sample.get("upstream_claims_duplicate_total", 0.0),
    }
    return counted if sum(counted.values()) >= at_least else None
