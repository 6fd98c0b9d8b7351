"""What needs a broker that keeps its data: a broker restart and a worker killed in a group.

These run on an Apache Kafka broker of their own (KRaft, data on disk) in both suites; the
embedded Tansu keeps everything in memory, so a restart of it would lose the topics.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from streams.devtools.apache_kafka import ApacheKafka
from streams.devtools.generator import SPIKE_GROUP, SPIKE_PAYER, Scenario, generate, produce
from streams.devtools.probes import TopicTail, read_all, routed_claims
from streams.kafka.topics import create_topics
from tests.integration.stack import (
    ServiceStack,
    outputs,
    wait_consumed,
    worker_stack,
)

pytestmark = pytest.mark.integration

SCENARIO = Scenario(name="denial-spike", days=60, spike_day=42, resend_fraction=0.03)
CLAIMS = generate(SCENARIO)


async def _run(stack: ServiceStack, during: Any = None) -> dict[str, Any]:
    """Stream the claims in two halves through the stack's worker(s); ``during`` in between."""
    topic = stack.settings().topic_claims
    half = len(CLAIMS) // 2
    await produce(SCENARIO, stack.bootstrap, topic, claims=CLAIMS[:half])
    if during is not None:
        await during()
    await produce(SCENARIO, stack.bootstrap, topic, claims=CLAIMS[half:])
    await wait_consumed(stack, len(CLAIMS))
    return await outputs(stack)


@pytest.fixture(scope="module")
async def reference(
    apache_kafka: ApacheKafka, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The outputs of one worker that nothing interrupts."""
    stack = worker_stack(apache_kafka.bootstrap, "reference", tmp_path_factory.mktemp("r"), "")
    await create_topics(stack.settings(), apache_kafka.bootstrap)
    stack.start("worker")
    try:
        result = await _run(stack)
    finally:
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]
    assert {(d["payer_id"], d["cpt_group"]) for d in result["drifts"].values()} == {
        (SPIKE_PAYER, SPIKE_GROUP)
    }
    return result


async def _until_routed(stack: ServiceStack, claims: int) -> None:
    """Wait until the worker has routed ``claims`` claims: it is mid-stream."""
    tail = TopicTail(stack.bootstrap, [f"{stack.settings().app_id}-claims-by-key"])
    try:
        for _ in range(600):
            await tail.poll()
            if len(tail.accounted) >= claims:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the worker routed only {len(tail.accounted)} claims")
    finally:
        await tail.close()


def _generations(stack: ServiceStack, name: str) -> list[int]:
    """The group generations worker ``name`` has synced, in order (from its log)."""
    return [int(g) for g in re.findall(r"synced group \S+ with generation (\d+)", stack.log(name))]


async def _one_generation(stack: ServiceStack, names: list[str]) -> int:
    """Wait until the workers ``names`` have all synced the same, latest generation."""
    for _ in range(600):
        latest = {name: _generations(stack, name)[-1:] for name in names}
        if all(latest.values()) and len({g[0] for g in latest.values()}) == 1:
            return latest[names[0]][0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"the workers never shared a generation: {latest}")


async def test_broker_restart_mid_stream_loses_nothing(
    reference: dict[str, Any], unique: str, tmp_path: Path
) -> None:
    """The broker stops and starts again mid-stream: the same drift events and alerts.

    A broker of its own, so the restart disturbs no other test.
    """
    broker = ApacheKafka().start()
    try:
        stack = worker_stack(broker.bootstrap, unique, tmp_path, "")
        await create_topics(stack.settings(), broker.bootstrap)
        stack.start("worker")

        async def restart_broker() -> None:
            await _until_routed(stack, 1000)
            await asyncio.to_thread(broker.restart)

        try:
            result = await _run(stack, restart_broker)
        finally:
            assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]
        tail = TopicTail(broker.bootstrap, [stack.settings().topic_claims])
        await tail.poll()
        await tail.close()
        assert tail.counts[stack.settings().topic_claims] == len(CLAIMS)  # every claim kept
    finally:
        broker.stop()
    assert result["drifts"] == reference["drifts"]
    assert result["alerts"] == reference["alerts"]
    assert result["dlq"] == reference["dlq"]


async def test_two_workers_one_killed_the_other_takes_over(
    apache_kafka: ApacheKafka, reference: dict[str, Any], unique: str, tmp_path: Path
) -> None:
    """Two workers share the partitions; one is SIGKILLed mid-stream; the same outputs.

    Every claim reaches the windows or the DLQ, and the drift events, alerts and dead letters
    equal the uninterrupted run's: claims the killed worker had routed but not committed come
    again and are judged against the source clock as it stood at their offsets.
    """
    stack = worker_stack(apache_kafka.bootstrap, unique, tmp_path, "")
    settings = stack.settings()
    await create_topics(settings, apache_kafka.bootstrap)
    stack.start("worker", "worker-1")
    stack.start("worker", "worker-2")

    async def kill_one() -> None:
        await _until_routed(stack, 1000)  # mid-stream
        stack.kill("worker-2")

    try:
        shared = await _one_generation(stack, ["worker-1", "worker-2"])  # both own partitions
        result = await _run(stack, kill_one)
        assert "worker-2" not in stack.procs
    finally:
        assert stack.stop_all() == {"worker-1": 0}, stack.log("worker-1")[-3000:]
    assert _generations(stack, "worker-1")[-1] > shared, "worker-1 never took over"
    by_key = await read_all(apache_kafka.bootstrap, f"{settings.app_id}-claims-by-key")
    routed = {c["claim_id"] for m in by_key for c in routed_claims(m.value)}
    dlq = await read_all(apache_kafka.bootstrap, settings.topic_claims_dlq)
    dead = {json.loads(m.value)["claim_id"] for m in dlq}  # both stages: the claim as it came
    assert routed | dead == {c["claim_id"] for c in CLAIMS}
    assert result["drifts"] == reference["drifts"]
    assert result["alerts"] == reference["alerts"]
    assert result["dlq"] == reference["dlq"]
