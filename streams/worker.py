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
from streams.health import Health
from streams.jobs import ScheduledJobs
from streams.metrics import (
    ACTIVE_KEYS,
    ALERT_TRANSITIONS,
    BUCKET_CLOSES,
    CLAIMS_BY_OUTCOME,
    CLAIMS_DLQ,
    CLAIMS_DUPLICATE,
    CLAIMS_PROCESSED,
    COMMANDS,
    CONSUMER_LAG,
    DRIFT_EVENTS,
    EVENT_TIME_LAG,
)
from streams.records import alert_record, drift_record
from streams.rules_feed import RulesFeed
from streams.settings import Settings
from streams.state import (
    ChangelogTable,
    SourceClocks,
    StandardJsonTable,
    TableAlertStore,
    WindowsState,
)

HEALTH_EVERY_S = 2.0
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


class WorkerAgents:
    """The worker's topics, tables and agents: one method per agent (see :func:`build_worker`)."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        bootstrap: str,
        codec: ValueCodec,
        health: Health | None = None,
    ):
        self.app, self.settings, self.codec = app, settings, codec
        self.health = health or Health("worker")
        raw: dict[str, Any] = {
            "key_type": bytes, "value_type": bytes, "key_serializer": "raw",
            "value_serializer": "raw",
        }  # fmt: skip
        self.claims_topic = app.topic(settings.topic_claims, **raw)
        self.commands_topic = app.topic(settings.topic_commands, **raw)
        self.dlq_topic = app.topic(settings.topic_claims_dlq, **raw)
        self.commands_dlq_topic = app.topic(settings.topic_commands_dlq, **raw)
        self.drift_topic = app.topic(settings.topic_drift, **raw)
        self.alerts_topic = app.topic(settings.topic_alerts, **raw)
        internal: dict[str, Any] = {"internal": True, "partitions": settings.partitions, **raw}
        self.by_key_topic = app.topic(f"{settings.app_id}-claims-by-key", **internal)
        self.alert_input_topic = app.topic(f"{settings.app_id}-alert-input", **internal)
        self.tables = [
            app.tables.add(
                StandardJsonTable(app, name=name, default=None, beacon=app.tables.beacon,
                                  partitions=settings.partitions, key_type=str)
            )  # what app.Table does, with the table class that keeps wide integers
            for name in ("windows", "route", "alerts")
        ]  # fmt: skip
        windows_table, route_table, self.alerts_table = (ChangelogTable(t) for t in self.tables)
        cfg = drift_config(settings)
        grace_ms = int(settings.grace_days * 86_400_000)
        self.state = WindowsState(windows_table, cfg, grace_ms)
        self.clocks = SourceClocks(route_table, grace_ms, cfg.bucket_ms)
        self.windows_lock = asyncio.Lock()  # the idle timer and the windows agent share state
        self.rules = RuleBook()
        self.rules_feed = RulesFeed(bootstrap, settings.topic_rules, codec, self.rules)
        self._metadata_lock = asyncio.Lock()
        self._metadata_ready = False

    def register(self) -> None:
        """Attach the agents, the rules task, the idle timer and the revoke hook to the app."""
        app = self.app
        app.agent(self.claims_topic, name="route")(self.route)
        app.agent(self.by_key_topic, name="windows")(self.windows)
        app.agent(self.commands_topic, name="commands")(self.commands)
        app.agent(self.alert_input_topic, name="alerts")(self.alerts)
        app.task(self.follow_rules)
        app.timer(self.settings.idle_check_interval_s)(self.advance_idle_partitions)
        app.timer(HEALTH_EVERY_S)(self.check_health)
        app.on_partitions_revoked.connect(self.on_revoked)
        ScheduledJobs(app, self.settings).register()

    async def check_health(self) -> None:
        """Readiness: partitions assigned, rules loaded, consumer lag below the limit."""
        consumer = self.app.consumer
        assigned = consumer.assignment()
        lag = 0
        for tp in assigned:
            position, end = await consumer.position(tp), consumer.highwater(tp)
            if position is not None and end is not None:  # None until the first fetch
                behind = max(0, end - position)
                CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(behind)
                lag += behind
        ACTIVE_KEYS.set(self.state.key_count())
        self.health.record("kafka", bool(assigned), partitions=len(assigned))
        self.health.record("rules", self.rules_feed.ready.is_set(), rules=len(self.rules.rules))
        self.health.record("lag", lag <= self.settings.ready_max_lag, messages=lag,
                           limit=self.settings.ready_max_lag)  # fmt: skip

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Forget in-memory windows; the new owner rebuilds them from the changelog."""
        self.state.forget()

    async def follow_rules(self) -> None:
        """Keep the rule book in step with the rules topic."""
        await self.rules_feed.run()

    async def ensure_partition_metadata(self) -> None:
        """Wait until the producer knows every partition we address explicitly.

        Faust creates internal and changelog topics at start; a broker may report them with
        fewer partitions for a moment, and aiokafka asserts on an explicit partition it has not
        seen yet, which would crash the producer.
        """
        async with self._metadata_lock:
            if self._metadata_ready:
                return
            faust_producer: Any = self.app.producer  # the aiokafka producer has no public handle
            producer = faust_producer._ensure_producer()
            names = [self.by_key_topic.get_topic_name(), self.alert_input_topic.get_topic_name()]
            names += [t.changelog_topic.get_topic_name() for t in self.tables]
            for name in names:
                for _ in range(300):
                    if len(await producer.partitions_for(name) or ()) >= self.settings.partitions:
                        break
                    await producer.client.force_metadata_update()
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(f"topic {name} never showed all its partitions")
            self._metadata_ready = True

    def source_count(self) -> int:
        """Partitions of the claims topic (the sources of every windows partition)."""
        counted = self.app.consumer.topic_partitions(self.settings.topic_claims)
        return counted or self.settings.partitions

    async def send_dlq(self, event: Any, stage: str, reason: str, detail: str) -> None:
        """Dead-letter a claim with the DESIGN.md headers."""
        CLAIMS_DLQ.labels(reason=reason).inc()
        headers = envelopes.dlq_headers(event.message, stage, reason, detail)
        await self.dlq_topic.send(key=event.key, value=event.value, headers=headers)

    async def route(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Validate claims, judge lateness per source partition, repartition by window key."""
        await self.ensure_partition_metadata()
        async for events in _take_events(stream, self.settings):
            source_clocks: dict[int, SourceClock] = {}
            sources = self.source_count()
            for event in events:
                await self._route_one(event, source_clocks, sources)
            await self._broadcast_progress(source_clocks, sources)
            yield None

    async def _route_one(
        self, event: Any, source_clocks: dict[int, SourceClock], sources: int
    ) -> None:
        try:
            raw_claim = self.codec.decode(event.value, "ClaimDecided", self.settings.topic_claims)
            claim = parse_claim(raw_claim)
        except DecodeError as exc:
            await self.send_dlq(event, "decode", exc.reason, exc.message)
            return
        except InvalidClaim as exc:
            await self.send_dlq(event, "validate", exc.reason, exc.message)
            return
        CLAIMS_BY_OUTCOME.labels(outcome=claim.outcome).inc()
        source = event.message.partition
        clock = source_clocks.get(source)
        if clock is None:
            clock = source_clocks[source] = self.clocks.get(source)
        if clock.is_late(claim.event_ms):
            await self.send_dlq(event, "route", "late", "later than the grace in its partition")
            return
        clock.observe(claim.event_ms)
        envelope = {"source": source, "sources": sources, "claim": raw_claim}
        await self.by_key_topic.send(key=claim.window_key.encode(), value=envelopes.dumps(envelope))

    async def _broadcast_progress(
        self, source_clocks: dict[int, SourceClock], sources: int
    ) -> None:
        # Every windows partition needs every source's progress, even with no claim from it,
        # to move its watermark (the minimum over sources).
        for source, clock in sorted(source_clocks.items()):
            self.clocks.save(source, clock)
            if clock.max_event_ms is None:
                continue
            value = envelopes.dumps(
                {"source": source, "sources": sources, "max_event_ms": clock.max_event_ms}
            )
            for partition in range(self.settings.partitions):
                await self.by_key_topic.send(key=b"", value=value, partition=partition)

    async def windows(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Apply claims and progress to the partitions' windows; emit what the closes find."""
        await self.ensure_partition_metadata()
        async for events in _take_events(stream, self.settings):
            by_partition: dict[int, list[tuple[Any, Arrival]]] = defaultdict(list)
            for event in events:
                try:
                    arrival = envelopes.arrival(json.loads(event.value))
                except (InvalidClaim, ValueError, KeyError, TypeError) as exc:
                    await self.send_dlq(event, "window", "invalid", str(exc))
                    continue
                by_partition[event.message.partition].append((event, arrival))
            now_ms = int(time.time() * 1000)
            async with self.windows_lock:
                for partition, items in by_partition.items():
                    pw = self.state.get(partition, self.source_count())
                    closed_before = pw.watermark.closed_through
                    result = pw.apply([a for _, a in items], now_ms=now_ms)
                    _count_closes(closed_before, pw.watermark.closed_through)
                    closing_claim = None  # the last claim applied: its batch made the close
                    for _, arrival in items:
                        if isinstance(arrival, ClaimFromSource):
                            EVENT_TIME_LAG.observe((now_ms - arrival.claim.event_ms) / 1000)
                            closing_claim = arrival.claim.claim_id
                    await self._dead_letter_late(items, result)
                    await self._emit(pw, result, closing_claim)
            yield None

    async def _dead_letter_late(self, items: list[tuple[Any, Arrival]], result: StepResult) -> None:
        late_ids = {id(c) for c in result.late}
        for event, arrival in items:
            if isinstance(arrival, ClaimFromSource) and id(arrival.claim) in late_ids:
                await self.send_dlq(event, "window", "late", "event time is behind the watermark")
        claims = sum(isinstance(a, ClaimFromSource) for _, a in items)
        CLAIMS_PROCESSED.inc(claims - len(result.late) - result.duplicates)
        CLAIMS_DUPLICATE.inc(result.duplicates)

    async def _emit(
        self, pw: PartitionWindows, result: StepResult, closing_claim: str | None = None
    ) -> None:
        """Deliver outputs, then persist the state that produced them."""
        pending: list[Awaitable[Any]] = []
        for drift in result.drifts:
            DRIFT_EVENTS.labels(drift_type=drift.drift_type, level=drift.severity_level).inc()
            log.info(
                "drift detected: %s %s", drift.kafka_key, drift.severity_level,
                extra={"event_id": drift.event_id, "claim_id": closing_claim,
                       "customer_id": drift.customer_id, "drift_type": drift.drift_type},
            )  # fmt: skip
            value = self.codec.encode("DriftEvent", self.settings.topic_drift, drift_record(drift))
            pending.append(await self.drift_topic.send(key=drift.kafka_key.encode(), value=value))
        for evaluation in result.evaluations:
            message = envelopes.evaluation_message(evaluation)
            key = evaluation.customer_id.encode()
            pending.append(await self.alert_input_topic.send(key=key, value=message))
        await asyncio.gather(*pending)
        self.state.save(pw, result.changed.values())

    async def advance_idle_partitions(self) -> None:
        """Timer: advance quiet sources and partitions by the wall clock (idle_close_after_s)."""
        now_ms = int(time.time() * 1000)
        idle_ms = int(self.settings.idle_close_after_s * 1000)
        topic = self.by_key_topic.get_topic_name()
        assigned = sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                          if tp.topic == topic)  # fmt: skip
        await self.ensure_partition_metadata()
        async with self.windows_lock:
            for partition in assigned:
                pw = self.state.get(partition, self.source_count())
                closed_before = pw.watermark.closed_through
                result = pw.idle_tick(now_ms, idle_ms)
                _count_closes(closed_before, pw.watermark.closed_through)
                if pw.watermark.closed_through != closed_before:
                    await self._emit(pw, result)

    async def commands(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Validate operator commands and forward them next to the customer's evaluations."""
        await self.ensure_partition_metadata()
        async for events in _take_events(stream, self.settings):
            for event in events:
                try:
                    record = self.codec.decode(
                        event.value, "AlertCommand", self.settings.topic_commands
                    )
                    command = envelopes.command_from_record(record)
                except (DecodeError, KeyError, ValueError, TypeError) as exc:
                    await self._reject(event, "invalid_command", str(exc))
                    continue
                await self.alert_input_topic.send(
                    key=command.customer_id.encode(), value=envelopes.command_message(record)
                )
            yield None

    async def _reject(self, event: Any, reason: str, detail: str) -> None:
        COMMANDS.labels(outcome=reason).inc()
        headers = envelopes.dlq_headers(event.message, "alerts", reason, detail)
        await self.commands_dlq_topic.send(key=event.key, value=event.value, headers=headers)

    async def alerts(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Apply evaluations (with the customer's rules) and commands; emit every transition."""
        await self.ensure_partition_metadata()
        await self.rules_feed.ready.wait()
        async for events in _take_events(stream, self.settings):
            for event in events:
                try:
                    item = envelopes.alert_input(json.loads(event.value))
                except (KeyError, ValueError, TypeError) as exc:  # never crash the agent
                    await self._reject(event, "invalid_alert_input", str(exc))
                    continue
                store = TableAlertStore(self.alerts_table, event.message.partition)
                lifecycle = AlertLifecycle(store)
                if isinstance(item, AlertCommand):
                    outcome = lifecycle.apply_command(item)
                    if outcome.rejected:
                        await self._reject(event, outcome.rejected, outcome.detail)
                        continue
                    COMMANDS.labels(outcome="duplicate" if outcome.duplicate else "applied").inc()
                    transitions = outcome.transitions
                else:
                    rules = self.rules.for_customer(item.customer_id)
                    transitions = lifecycle.apply_evaluation(item, rules)
                for transition in transitions:
                    ALERT_TRANSITIONS.labels(transition=transition.transition).inc()
                    log.info(
                        "alert %s", transition.transition,
                        extra={"alert_id": transition.alert_id, "version": transition.version,
                               "event_id": transition.drift_event_id,
                               "customer_id": transition.customer_id,
                               "transition": transition.transition},
                    )  # fmt: skip
                    record = alert_record(transition)
                    value = self.codec.encode("AlertEvent", self.settings.topic_alerts, record)
                    await self.alerts_topic.send(key=transition.customer_id.encode(), value=value)
            yield None


def _count_closes(before: int | None, after: int | None) -> None:
    if after is not None:
        BUCKET_CLOSES.inc(after - before if before is not None else 1)


def build_worker(
    settings: Settings, bootstrap: str, codec: ValueCodec, health: Health | None = None
) -> Worker:
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
    WorkerAgents(app, settings, bootstrap, codec, health).register()
    return Worker(app=app, settings=settings)
