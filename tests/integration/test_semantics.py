"""Semantics on the real broker: deterministic replay, rules and operator commands."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas.registry import ValueCodec
from streams.devtools.generator import SPIKE_GROUP, SPIKE_PAYER, Scenario, generate, produce
from streams.devtools.probes import TopicTail, read_all
from streams.kafka.topics import create_topics
from tests.integration.stack import ServiceStack, outputs, wait_consumed, wait_until, worker_stack

pytestmark = pytest.mark.integration

# Late deliveries (some beyond the grace: they amend their buckets), exact and corrected
# resends, and a denial spike.
MIXED = Scenario(
    name="denial-spike",
    days=70,
    spike_day=50,
    late_fraction=0.03,
    very_late_fraction=0.01,
    resend_fraction=0.05,
    correction_fraction=0.02,
)


async def _until_routed(stack: ServiceStack, claims: int) -> None:
    """Until the stack's worker has routed (or dead-lettered) ``claims`` claims."""
    s = stack.settings()
    internal = f"{s.app_id}-claims-by-key"
    tail = TopicTail(stack.bootstrap, [internal, s.topic_claims_dlq], s.topic_claims)

    async def routed() -> bool:
        await tail.poll()
        return len(tail.accounted) >= claims

    try:
        await wait_until(routed, 120, f"{claims} claims routed")
    finally:
        await tail.close()


async def test_replay_with_a_restart_gives_the_same_outputs(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The same claims twice, once with a worker restart midway: identical records, ids included.

    The stream ends with claims older than the customer's history: dead-lettered
    ``beyond_history``, once each; the late deliveries inside it are not."""
    claims = generate(MIXED)
    ancient = [{**claim, "claim_id": f"ancient-{i}", "submitted_date": "2025-01-02",
                "decided_date": "2025-01-05", "decided_at": "2025-01-05T10:00:00Z"}
               for i, claim in enumerate(claims[:5])]  # fmt: skip
    claims += ancient
    runs = []
    for suffix, restart in (("a", False), ("b", True)):
        (tmp_path / suffix).mkdir()
        stack = worker_stack(kafka_bootstrap, unique, tmp_path, suffix)
        await create_topics(stack.settings(), kafka_bootstrap)
        stack.start("worker")
        try:
            half = len(claims) // 2
            await produce(
                MIXED, kafka_bootstrap, stack.settings().topic_claims, claims=claims[:half]
            )
            if restart:  # mid-stream: once the worker has routed a third of what it was sent
                await _until_routed(stack, half // 3)
                assert stack.stop_all() == {"worker": 0}
                stack.start("worker")
            await produce(
                MIXED, kafka_bootstrap, stack.settings().topic_claims, claims=claims[half:]
            )
            await wait_consumed(stack, len(claims))
            runs.append(await outputs(stack))
        finally:
            assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]
    first, second = runs
    assert first["drifts"], "the spike produced no drift event"
    assert {(r["payer_id"], r["cpt_group"]) for r in first["drifts"].values()} == {
        (SPIKE_PAYER, SPIKE_GROUP)
    }
    assert first["drifts"] == second["drifts"]
    assert first["alerts"] == second["alerts"]
    assert first["dlq"] == second["dlq"]
    assert first["dlq"] == {(c["claim_id"].encode(), b"beyond_history") for c in ancient}


async def _cli(stack: ServiceStack, *args: str) -> str:
    result = await asyncio.to_thread(stack.cli, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_rules_and_operator_commands(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """A custom rule names the alert; commands apply once; bad commands, and garbage on the
    alert input, are dead-lettered."""
    stack = ServiceStack(kafka_bootstrap, "", unique, tmp_path)
    s = stack.settings()
    await create_topics(s, kafka_bootstrap)
    await _cli(
        stack,
        "rules",
        "set",
        "--customer",
        "demo",
        "--rule",
        "radiology-only",
        "--cpt-groups",
        "radiology",
        "--drift-types",
        "denial_rate",
    )
    await _cli(stack, "rules", "set", "--customer", "demo", "--rule", "doomed")
    await _cli(stack, "rules", "delete", "--customer", "demo", "--rule", "doomed")
    listed = [json.loads(line) for line in (await _cli(stack, "rules", "list")).splitlines()]
    assert [r["rule_id"] for r in listed] == ["radiology-only"]

    stack.start("worker")
    try:
        sent = await produce(Scenario(days=70, spike_day=50), kafka_bootstrap, s.topic_claims)
        await wait_consumed(stack, sent)
        codec = ValueCodec()
        alerts = [
            codec.decode(m.value, "AlertEvent", s.topic_alerts)
            for m in await read_all(kafka_bootstrap, s.topic_alerts)
        ]
        assert alerts
        assert {a["rule_id"] for a in alerts} == {"radiology-only"}
        alert_id = alerts[-1]["alert_id"]

        def command(
            command_id: str, name: str, customer: str = "demo", alert: str = alert_id, **extra: Any
        ) -> bytes:
            return json.dumps(
                {
                    "command_id": command_id,
                    "customer_id": customer,
                    "alert_id": alert,
                    "command": name,
                    "operator": "olga",
                    "issued_at": 0,
                    **extra,
                }
            ).encode()

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        for value in (
            command("c1", "acknowledge"),
            command("c1", "acknowledge"),  # the same command again: applied once
            command("c2", "judge", verdict="true_positive"),
            command("c3", "acknowledge", alert="no-such-alert"),
            command("c4", "resolve", customer="intruder"),
            b"{not json",
        ):
            await producer.send_and_wait(s.topic_commands, value=value, key=b"demo")
        # Garbage on the internal alert input (a stray producer, say) is dead-lettered too.
        await producer.send_and_wait(f"{s.app_id}-alert-input", value=b"[1", key=b"demo")
        await producer.stop()

        async def transitions() -> list[str] | None:
            records = [
                codec.decode(m.value, "AlertEvent", s.topic_alerts)
                for m in await read_all(kafka_bootstrap, s.topic_alerts, idle_s=0.5)
            ]
            mine = [r["transition"] for r in records if r["alert_id"] == alert_id]
            return mine if "judged" in mine else None

        mine = await wait_until(transitions, 60, "the judged transition")
        assert mine[-2:] == ["acknowledged", "judged"]
        dlq = await wait_until(
            lambda: _dlq_reasons(kafka_bootstrap, s.topic_commands_dlq), 30, "rejected commands"
        )
        assert sorted(dlq) == [
            "foreign_customer", "invalid_alert_input", "invalid_command", "unknown_alert"
        ]  # fmt: skip
    finally:
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]


async def _dlq_reasons(bootstrap: str, topic: str) -> list[str] | None:
    messages = await read_all(bootstrap, topic, idle_s=0.5)
    reasons = [dict(m.headers)["error.reason"].decode() for m in messages]
    return reasons if len(reasons) >= 4 else None


async def test_quiet_source_partition_is_advanced_past_by_the_idle_timer(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """All claims in one of two partitions: the silent one stops holding the watermark back."""
    stack = ServiceStack(kafka_bootstrap, "", unique, tmp_path)
    stack.extra_env = {"UPSTREAM_IDLE_CLOSE_AFTER_S": "2", "UPSTREAM_IDLE_CHECK_INTERVAL_S": "0.5"}
    s = stack.settings()
    await create_topics(s, kafka_bootstrap)
    stack.start("worker")
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()
        for claim in generate(Scenario(days=70, spike_day=50)):
            await producer.send(s.topic_claims, json.dumps(claim).encode(), partition=0)
        await producer.stop()
        codec = ValueCodec()

        async def drifts() -> list[dict[str, Any]] | None:
            messages = await read_all(kafka_bootstrap, s.topic_drift, idle_s=0.5)
            return [codec.decode(m.value, "DriftEvent", s.topic_drift) for m in messages] or None

        found = await wait_until(drifts, 120, "drift events once partition 1 counts as idle")
        assert {(d["payer_id"], d["cpt_group"]) for d in found} == {(SPIKE_PAYER, SPIKE_GROUP)}
    finally:
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]
