"""The Faust worker: thin tasks around the pure domain core.

1. ``route`` reads ``claims.decided`` in batches, decodes and validates each value; invalid
   ones go to the DLQ with headers. Valid ones are repartitioned by ``customer_id``: one
   message per windows partition and batch carries the claims for it, each with the claims
   partition and offset it was read at. The route keeps no state.
2. ``windows`` (:mod:`streams.runtime.windows_stage`) applies claims to the windows (event
   time per customer, late claims amend their buckets), sends claims older than their
   customer's history to the DLQ, drift events to ``drift.events`` and key evaluations to the
   alert input (keyed by customer). A timer advances customers whose feed is quiet by the wall
   clock after ``idle_close_after_s``.
3. ``commands`` (:mod:`streams.runtime.alerts_stage`) validates ``alerts.commands`` and
   forwards them to the alert input, so that evaluations and commands of one customer are
   applied in one order.
4. ``alerts`` (the same module) applies evaluations (with the rules from ``alerts.rules``) and
   commands to the alert lifecycle and sends every transition to ``alerts.events``.

Every stage is a task over a :class:`BatchTopic` subscription (see :mod:`streams.runtime.batches`),
not a per-event agent: ``route`` and ``windows`` carry the volume, and a bucket close sends
``alerts`` an evaluation for every key at once (Faust's per-event delivery let them trickle in
over ~60 ms at 1,000 claims/s). Every stage works a batch at a time: outputs are delivered
first, then the state that produced them goes to the changelog (record batches per partition,
:class:`ChangelogTable`), then the batch is acked. The windows' state includes the last
offset applied of each claims partition, so claims that a crash makes the route send again
are skipped, not counted twice. A crash replays the batch and re-sends the same ids, never
loses them; delivery is at-least-once and every output idempotent downstream.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from schemas.registry import ValueCodec
from streams.domain.drift import DriftConfig
from streams.domain.rules import RuleBook
from streams.kafka import envelopes
from streams.kafka.originals import Originals
from streams.kafka.rules_feed import RulesFeed
from streams.observability.health import Health
from streams.observability.metrics import (
    ACTIVE_KEYS,
    CLAIMS_BY_OUTCOME,
    CLAIMS_DLQ,
    CONSUMER_LAG,
    GAUGES_EVERY_S,
)
from streams.runtime.alerts_stage import AlertsStage
from streams.runtime.batches import BatchSubscription, BatchTopic, UpstreamApp
from streams.runtime.checkpoint import Checkpoint
from streams.runtime.jobs import FeedOutputs, ScheduledJobs
from streams.runtime.state import (
    ChangelogTable,
    StandardJsonTable,
    WindowsState,
)
from streams.runtime.windows_stage import WindowsStage
from streams.settings import Settings
from streams.stages.routing import Router

log = logging.getLogger("upstream.worker")


@dataclass
class Worker:
    """The assembled Faust app (built by :func:`build_worker`)."""

    app: faust.App
    settings: Settings

    def run(self, loglevel: str, logging_config: dict[str, Any]) -> None:
        """Run the app in this process until SIGINT/SIGTERM (Faust's own signal handling)."""
        faust.Worker(
            self.app, loglevel=loglevel, logging_config=logging_config
        ).execute_from_commandline()


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


class WorkerStages:
    """The worker's topics, tables and stages: a task and a handler per stage (see
    :func:`build_worker`)."""

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
        self.claims_topic = BatchTopic(app, topics=[settings.topic_claims], **raw)
        self.commands_topic = BatchTopic(app, topics=[settings.topic_commands], **raw)
        self.dlq_topic = app.topic(settings.topic_claims_dlq, **raw)
        self.commands_dlq_topic = app.topic(settings.topic_commands_dlq, **raw)
        self.drift_topic = app.topic(settings.topic_drift, **raw)
        self.alerts_topic = app.topic(settings.topic_alerts, **raw)
        internal: dict[str, Any] = {"internal": True, "partitions": settings.partitions, **raw}
        self.by_key_topic = BatchTopic(app, topics=[f"{settings.app_id}-claims-by-key"], **internal)
        self.alert_input_topic = BatchTopic(
            app, topics=[f"{settings.app_id}-alert-input"], **internal
        )
        buffered = max(4 * settings.batch_max, app.conf.stream_buffer_maxsize)
        self.claims_batches = self.claims_topic.subscribe(buffered, BUFFER_BYTES)
        self.by_key_batches = self.by_key_topic.subscribe(buffered, BUFFER_BYTES)
        self.alert_input_batches = self.alert_input_topic.subscribe(buffered, BUFFER_BYTES)
        self.commands_batches = self.commands_topic.subscribe(buffered, BUFFER_BYTES)
        self.tables = [
            app.tables.add(
                StandardJsonTable(app, name=name, default=None, beacon=app.tables.beacon,
                                  partitions=settings.partitions, key_type=str)
            )  # what app.Table does, with the table class that keeps wide integers
            for name in ("windows", "alerts")
        ]  # fmt: skip
        self.changelogs = [ChangelogTable(t, self.kafka_producer) for t in self.tables]
        windows_table, alerts_table = self.changelogs
        self.state = WindowsState(windows_table, drift_config(settings), settings.grace_ms)
        self.router = Router(codec, settings.topic_claims, settings.partitions)
        self.rules = RuleBook()
        self.rules_feed = RulesFeed(bootstrap, settings.topic_rules, codec, self.rules)
        self.originals = Originals(bootstrap)
        self.windowing = WindowsStage(
            self.state, codec, self.kafka_producer, settings.topic_drift,
            self.alert_input_topic.get_topic_name(), settings.topic_claims, self.source_count,
            self.send_dlq, self.originals,
        )  # fmt: skip
        self.alerting = AlertsStage(
            alerts_table, self.rules, codec, self.kafka_producer, settings.topic_commands,
            self.alert_input_topic.get_topic_name(), settings.topic_alerts,
            self.commands_dlq_topic.send,
        )  # fmt: skip
        self._metadata_lock = asyncio.Lock()
        self._metadata_ready = False

    def register(self) -> None:
        """Attach the stages, the rules task, the idle timer and the revoke hook to the app."""
        app = self.app
        app.task(self.route_claims)
        app.task(self.window_claims)
        app.task(self.forward_commands)
        app.task(self.apply_alert_input)
        app.task(self.follow_rules)
        app.timer(self.settings.idle_check_interval_s)(self.advance_idle_partitions)
        app.timer(GAUGES_EVERY_S)(self.check_health)
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_before_shutdown.connect(self.on_shutdown)
        feeds = FeedOutputs(self.codec, self.kafka_producer, self.settings.topic_drift,
                            self.alert_input_topic.get_topic_name())  # fmt: skip
        ScheduledJobs(app, self.settings, feeds).register()

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

    async def on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:  # noqa: ARG002 - a Faust signal receiver
        """Close the consumer that reads originals back for dead letters."""
        await self.originals.close()

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:  # noqa: ARG002 - a Faust signal receiver
        """Forget in-memory windows; the new owner rebuilds them from the changelog.

        Under the lock: an idle tick in progress finishes (and flushes) before the partitions
        are handed over. (Faust then reads the windows changelog from its start: see
        :class:`WindowsState`.)
        """
        async with self.windowing.lock:
            self.state.forget()

    async def follow_rules(self) -> None:
        """Keep the rule book in step with the rules topic."""
        await self.rules_feed.run()

    def kafka_producer(self) -> Any:
        """The aiokafka producer under Faust's (it has no public handle)."""
        faust_producer: Any = self.app.producer
        return faust_producer._ensure_producer()

    async def ensure_partition_metadata(self) -> None:
        """Wait until the producer knows every partition we address explicitly.

        Faust creates internal and changelog topics at start; a broker may report them with
        fewer partitions for a moment, and aiokafka asserts on an explicit partition it has not
        seen yet, which would crash the producer.
        """
        async with self._metadata_lock:
            if self._metadata_ready:
                return
            producer = self.kafka_producer()
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

    async def send_dlq(self, message: Any, stage: str, reason: str, detail: str) -> Any:
        """Dead-letter a claim (a Kafka message, or one rebuilt with its origin); the future
        of its delivery, which the caller awaits before it acks or persists past it."""
        CLAIMS_DLQ.labels(reason=reason).inc()
        letter = envelopes.dead_letter(message, stage, reason, detail)
        return await self.dlq_topic.send(key=letter.key, value=letter.value, headers=letter.headers)

    async def consume(
        self,
        subscription: BatchSubscription,
        handle: Callable[[list[Any], Checkpoint], Awaitable[None]],
        within_s: float,
    ) -> None:
        """Hand each batch of ``subscription`` (waiting up to ``within_s`` for more messages)
        to ``handle`` with a :class:`Checkpoint`, then acknowledge it once its outputs are
        delivered; crash on an error."""
        await self.ensure_partition_metadata()
        try:
            async for messages in subscription.batches(self.settings.batch_max, within_s):
                checkpoint = Checkpoint()
                await handle(messages, checkpoint)
                await checkpoint.acknowledge(subscription, messages)
        except Exception as exc:  # a bug or an unreachable broker: stop, be restarted
            log.exception("%s failed", handle.__name__)
            await self.app.crash(exc)
            raise

    async def route_claims(self) -> None:
        """Task: :meth:`route` every batch of ``claims.decided``."""
        await self.consume(self.claims_batches, self.route, self.settings.batch_within_s)

    async def window_claims(self) -> None:
        """Task: :meth:`WindowsStage.windows` every batch of the by-key topic."""
        await self.consume(
            self.by_key_batches, self.windowing.windows, self.settings.windows_batch_within_s
        )

    async def route(self, messages: list[Any], checkpoint: Checkpoint) -> None:
        """Route a batch (see :meth:`Router.plan`): dead-letter what it refuses, send its
        by-key messages."""
        plan = self.router.plan(messages, self.source_count())
        checkpoint.deliver([await self.send_dlq(r.message, r.stage, r.reason, r.detail)
                            for r in plan.refused])  # fmt: skip
        for outcome, count in plan.outcomes.items():
            CLAIMS_BY_OUTCOME.labels(outcome=outcome).inc(count)
        checkpoint.deliver([await self.by_key_topic.send(value=value, partition=partition)
                            for partition, value in plan.by_key])  # fmt: skip

    async def advance_idle_partitions(self) -> None:
        """Timer: advance customers whose feed (or one of its sources) is quiet by the wall
        clock (idle_close_after_s)."""
        now_ms = int(time.time() * 1000)
        idle_ms = int(self.settings.idle_close_after_s * 1000)
        topic = self.by_key_topic.get_topic_name()
        await self.ensure_partition_metadata()
        async with self.windowing.lock:
            # From a revoke until the changelogs are recovered the tables are incomplete, and
            # the assignor already names partitions not yet restored: loading one then would
            # keep a partial state for good.
            if self.app.rebalancing:
                return
            assigned = sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                              if tp.topic == topic)  # fmt: skip
            await self.windowing.tick_idle(assigned, now_ms, idle_ms)

    async def forward_commands(self) -> None:
        """Task: :meth:`AlertsStage.commands` every batch of ``alerts.commands``."""
        await self.consume(
            self.commands_batches, self.alerting.commands, self.settings.alerts_batch_within_s
        )

    async def apply_alert_input(self) -> None:
        """Task: :meth:`AlertsStage.alerts` every batch of the alert input, once the rules are
        loaded."""
        await self.rules_feed.ready.wait()
        await self.consume(
            self.alert_input_batches, self.alerting.alerts, self.settings.alerts_batch_within_s
        )


# Fetched but not yet taken, per batch topic: by messages alone, a backlog of by-key messages
# (up to routing.CHUNK_CLAIMS claims each) could hold millions of claims in memory.
BUFFER_BYTES = 16 << 20


def tune_gc(settings: Settings) -> None:
    """The worker process's garbage-collection threshold (``UPSTREAM_GC_THRESHOLD``); the
    older generations keep Python's."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_threshold, older, oldest)


def build_worker(
    settings: Settings, bootstrap: str, codec: ValueCodec, health: Health | None = None
) -> Worker:
    """Build the Faust app, its topics, tables and stages, and its data directory (Faust makes
    only the last level of it). Connects to nothing yet."""
    Path(settings.worker_data_dir).mkdir(parents=True, exist_ok=True)
    app = UpstreamApp(
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
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        table_standby_replicas=settings.standby_replicas,
    )
    WorkerStages(app, settings, bootstrap, codec, health).register()
    return Worker(app=app, settings=settings)
