"""The Faust worker: thin agents around the pure domain core.

1. ``route`` reads ``claims.decided``, decodes and validates each value; invalid ones go to the
   DLQ with headers, and so do claims later than the grace in their own partition's order
   (:class:`SourceClock`). Valid ones are repartitioned by ``customer_id|payer_id|cpt_group``
   with the partition they came from, and each source's progress is broadcast after a batch.
2. ``windows`` applies claims to :class:`PartitionWindows`, sends late claims to the DLQ, drift
   events to ``drift.events`` and key evaluations to the alert input (keyed by customer).
   A timer advances quiet partitions by the wall clock after ``idle_close_after_s``.
3. ``commands`` validates ``alerts.commands`` and forwards them to the alert input, so that
   evaluations and commands of one customer are applied in one order.
4. ``alerts`` applies evaluations (with the rules from ``alerts.rules``) and commands to
   :class:`AlertLifecycle` and sends every transition to ``alerts.events``.

Agents work in batches (``take_events``), events are acked after their batch, and outputs are
delivered *before* the state that produced them is written to the changelog: a crash replays
the batch and re-sends the same ids, never loses them. Faust flushes the producer before it
commits offsets, so delivery is at-least-once and every output is idempotent downstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import faust

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams import envelopes
from streams.domain.alerts import AlertCommand, AlertLifecycle
from streams.domain.claims import InvalidClaim, parse_claim
from streams.domain.drift import DriftConfig
from streams.domain.processor import Arrival, ClaimFromSource, PartitionWindows, StepResult
from streams.domain.rules import RuleBook
from streams.domain.windows import SourceClock
from streams.metrics import (
    ALERT_TRANSITIONS,
    CLAIMS_DLQ,
    CLAIMS_DUPLICATE,
    CLAIMS_PROCESSED,
    COMMANDS,
    DRIFT_EVENTS,
)
from streams.records import alert_record, drift_record
from streams.rules_feed import RulesFeed
from streams.settings import Settings
from streams.state import ChangelogTable, SourceClocks, TableAlertStore, WindowsState

log = logging.getLogger("upstream.worker")


@dataclass
class Worker:
    """The assembled Faust app (built by :func:`build_worker`)."""

    app: faust.App
    settings: Settings


def drift_config(settings: Settings) -> DriftConfig:
    """Domain drift configuration from settings."""
    return DriftConfig(
        bucket_ms=settings.bucket_hours * 3_600_000,
        short_window_buckets=settings.short_window_buckets,
        long_window_buckets=settings.long_window_buckets,
        baseline_buckets=settings.baseline_buckets,
        min_current_n=settings.min_current_n,
        min_baseline_n=settings.min_baseline_n,
        min_expected_count=settings.min_expected_count,
        denial_rate_floor=settings.denial_rate_floor,
        decision_lag_floor_days=settings.decision_lag_floor_days,
        allowed_amount_floor=settings.allowed_amount_floor,
        fdr_q_max=settings.fdr_q_max,
    )


def _take_events(stream: Any, settings: Settings) -> AsyncIterator[list[Any]]:
    """Batches of events: up to ``batch_max``, or what arrived within ``batch_within_s``."""
    batches: AsyncIterator[list[Any]] = stream.take_events(
        settings.batch_max, within=settings.batch_within_s
    )
    return batches


def build_worker(settings: Settings, bootstrap: str, codec: ValueCodec) -> Worker:
    """Build the Faust app, its topics, tables and agents. Connects to nothing yet."""
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=settings.worker_data_dir,
        key_serializer="raw",
        value_serializer="raw",
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    claims_topic = app.topic(settings.topic_claims, **raw)
    commands_topic = app.topic(settings.topic_commands, **raw)
    dlq_topic = app.topic(settings.topic_claims_dlq, **raw)
    commands_dlq_topic = app.topic(settings.topic_commands_dlq, **raw)
    drift_topic = app.topic(settings.topic_drift, **raw)
    alerts_topic = app.topic(settings.topic_alerts, **raw)
    internal: dict[str, Any] = {"internal": True, "partitions": settings.partitions, **raw}
    by_key_topic = app.topic(f"{settings.app_id}-claims-by-key", **internal)
    alert_input_topic = app.topic(f"{settings.app_id}-alert-input", **internal)
    # key_type=str with no value_type: Faust serializes both as JSON.
    table_opts: dict[str, Any] = {"partitions": settings.partitions, "key_type": str}
    tables = [
        app.Table(name, default=None, **table_opts) for name in ("windows", "route", "alerts")
    ]
    windows_table, route_table, alerts_table = (ChangelogTable(t) for t in tables)

    cfg = drift_config(settings)
    grace_ms = int(settings.grace_days * 86_400_000)
    state = WindowsState(windows_table, cfg, grace_ms)
    clocks = SourceClocks(route_table, grace_ms, cfg.bucket_ms)
    windows_lock = asyncio.Lock()  # the idle timer and the windows agent share the state
    rules = RuleBook()
    rules_feed = RulesFeed(bootstrap, settings.topic_rules, codec, rules)

    metadata_ready = asyncio.Lock()
    metadata_checked: list[bool] = []

    async def ensure_partition_metadata() -> None:
        """Wait until the producer knows every partition we address explicitly.

        Faust creates internal and changelog topics at start; a broker may report them with
        fewer partitions for a moment, and aiokafka asserts on an explicit partition it has not
        seen yet, which would crash the producer.
        """
        async with metadata_ready:
            if metadata_checked:
                return
            faust_producer: Any = app.producer  # the aiokafka producer has no public handle
            producer = faust_producer._ensure_producer()
            names = [by_key_topic.get_topic_name(), alert_input_topic.get_topic_name()]
            names += [t.changelog_topic.get_topic_name() for t in tables]
            for name in names:
                for _ in range(300):
                    if len(await producer.partitions_for(name) or ()) >= settings.partitions:
                        break
                    await producer.client.force_metadata_update()
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(
                        f"topic {name} never showed {settings.partitions} partitions"
                    )
            metadata_checked.append(True)

    def source_count() -> int:
        return app.consumer.topic_partitions(settings.topic_claims) or settings.partitions

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        state.forget()

    app.on_partitions_revoked.connect(on_revoked)

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def follow_rules() -> None:
        await rules_feed.run()

    async def send_dlq(event: Any, stage: str, reason: str, detail: str) -> None:
        CLAIMS_DLQ.labels(reason=reason).inc()
        headers = envelopes.dlq_headers(event.message, stage, reason, detail)
        await dlq_topic.send(key=event.key, value=event.value, headers=headers)

    @app.agent(claims_topic)
    async def route(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await ensure_partition_metadata()
        async for events in _take_events(stream, settings):
            source_clocks: dict[int, SourceClock] = {}
            sources = source_count()
            for event in events:
                try:
                    raw_claim = codec.decode(event.value, "ClaimDecided", settings.topic_claims)
                    claim = parse_claim(raw_claim)
                except DecodeError as exc:
                    await send_dlq(event, "decode", exc.reason, exc.message)
                    continue
                except InvalidClaim as exc:
                    await send_dlq(event, "validate", exc.reason, exc.message)
                    continue
                source = event.message.partition
                clock = source_clocks.get(source)
                if clock is None:
                    clock = source_clocks[source] = clocks.get(source)
                if clock.is_late(claim.event_ms):
                    await send_dlq(event, "route", "late", "later than the grace in its partition")
                    continue
                clock.observe(claim.event_ms)
                await by_key_topic.send(
                    key=claim.window_key.encode(),
                    value=envelopes.dumps(
                        {"source": source, "sources": sources, "claim": raw_claim}
                    ),
                )
            # Every windows partition needs every source's progress, even with no claim from
            # it, to move its watermark (the minimum over sources).
            for source, clock in sorted(source_clocks.items()):
                clocks.save(source, clock)
                if clock.max_event_ms is None:
                    continue
                value = envelopes.dumps(
                    {"source": source, "sources": sources, "max_event_ms": clock.max_event_ms}
                )
                for partition in range(settings.partitions):
                    await by_key_topic.send(key=b"", value=value, partition=partition)
            yield None

    @app.agent(by_key_topic)
    async def windows(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await ensure_partition_metadata()
        async for events in _take_events(stream, settings):
            by_partition: dict[int, list[tuple[Any, Arrival]]] = defaultdict(list)
            for event in events:
                try:
                    arrival = envelopes.arrival(json.loads(event.value))
                except (InvalidClaim, ValueError, KeyError, TypeError) as exc:
                    await send_dlq(event, "window", "invalid", str(exc))
                    continue
                by_partition[event.message.partition].append((event, arrival))
            now_ms = int(time.time() * 1000)
            async with windows_lock:
                for partition, items in by_partition.items():
                    pw = state.get(partition, source_count())
                    result = pw.apply([a for _, a in items], now_ms=now_ms)
                    await _dead_letter_late(items, result)
                    await _emit(pw, result)
            yield None

    async def _dead_letter_late(items: list[tuple[Any, Arrival]], result: StepResult) -> None:
        late_ids = {id(c) for c in result.late}
        for event, arrival in items:
            if isinstance(arrival, ClaimFromSource) and id(arrival.claim) in late_ids:
                await send_dlq(event, "window", "late", "event time is behind the watermark")
        claims = sum(isinstance(a, ClaimFromSource) for _, a in items)
        CLAIMS_PROCESSED.inc(claims - len(result.late) - result.duplicates)
        CLAIMS_DUPLICATE.inc(result.duplicates)

    async def _emit(pw: PartitionWindows, result: StepResult) -> None:
        """Deliver outputs, then persist the state that produced them."""
        pending: list[Awaitable[Any]] = []
        for drift in result.drifts:
            DRIFT_EVENTS.labels(drift_type=drift.drift_type, level=drift.severity_level).inc()
            value = codec.encode("DriftEvent", settings.topic_drift, drift_record(drift))
            pending.append(await drift_topic.send(key=drift.kafka_key.encode(), value=value))
        for evaluation in result.evaluations:
            pending.append(
                await alert_input_topic.send(
                    key=evaluation.customer_id.encode(),
                    value=envelopes.evaluation_message(evaluation),
                )
            )
        await asyncio.gather(*pending)
        state.save(pw, result.changed.values())

    @app.timer(settings.idle_check_interval_s)  # type: ignore[untyped-decorator]
    async def advance_idle_partitions() -> None:
        now_ms = int(time.time() * 1000)
        idle_ms = int(settings.idle_close_after_s * 1000)
        assigned = sorted(
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == by_key_topic.get_topic_name()
        )
        await ensure_partition_metadata()
        async with windows_lock:
            for partition in assigned:
                pw = state.get(partition, source_count())
                closed_before = pw.watermark.closed_through
                result = pw.idle_tick(now_ms, idle_ms)
                if pw.watermark.closed_through != closed_before:
                    await _emit(pw, result)

    @app.agent(commands_topic)
    async def commands(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await ensure_partition_metadata()
        async for events in _take_events(stream, settings):
            for event in events:
                try:
                    record = codec.decode(event.value, "AlertCommand", settings.topic_commands)
                    command = envelopes.command_from_record(record)
                except (DecodeError, KeyError, ValueError, TypeError) as exc:
                    await _reject(event, "invalid_command", str(exc))
                    continue
                await alert_input_topic.send(
                    key=command.customer_id.encode(),
                    value=envelopes.command_message(record),
                )
            yield None

    async def _reject(event: Any, reason: str, detail: str) -> None:
        COMMANDS.labels(outcome=reason).inc()
        headers = envelopes.dlq_headers(event.message, "alerts", reason, detail)
        await commands_dlq_topic.send(key=event.key, value=event.value, headers=headers)

    @app.agent(alert_input_topic)
    async def alerts(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await ensure_partition_metadata()
        await rules_feed.ready.wait()
        async for events in _take_events(stream, settings):
            for event in events:
                item = envelopes.alert_input(json.loads(event.value))
                lifecycle = AlertLifecycle(TableAlertStore(alerts_table, event.message.partition))
                if isinstance(item, AlertCommand):
                    outcome = lifecycle.apply_command(item)
                    if outcome.rejected:
                        await _reject(event, outcome.rejected, outcome.detail)
                        continue
                    COMMANDS.labels(outcome="duplicate" if outcome.duplicate else "applied").inc()
                    transitions = outcome.transitions
                else:
                    transitions = lifecycle.apply_evaluation(
                        item, rules.for_customer(item.customer_id)
                    )
                for transition in transitions:
                    ALERT_TRANSITIONS.labels(transition=transition.transition).inc()
                    value = codec.encode(
                        "AlertEvent", settings.topic_alerts, alert_record(transition)
                    )
                    await alerts_topic.send(key=transition.customer_id.encode(), value=value)
            yield None

    return Worker(app=app, settings=settings)
