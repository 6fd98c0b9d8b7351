"""The Faust worker: thin tasks around the pure domain core.

1. ``route`` reads ``claims.decided`` in batches, decodes and validates each value; invalid
   ones go to the DLQ with headers. Valid ones are repartitioned by ``customer_id``: one
   message per windows partition and batch carries the claims for it, each with the claims
   partition and offset it was read at. The route keeps no state.
2. ``windows`` applies claims to :class:`PartitionWindows` (event time per customer, late
   claims amend their buckets), sends claims older than their customer's history to the DLQ
   (``beyond_history``, read back from ``claims.decided``), drift events to ``drift.events``
   and key evaluations to the alert input (keyed by customer). A timer advances customers
   whose feed is quiet by the wall clock after ``idle_close_after_s``.
3. ``commands`` validates ``alerts.commands`` and forwards them to the alert input, so that
   evaluations and commands of one customer are applied in one order.
4. ``alerts`` applies evaluations (with the rules from ``alerts.rules``) and commands to
   :class:`AlertLifecycle` and sends every transition to ``alerts.events``.

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
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams.domain.claims import InvalidClaim
from streams.domain.drift import DriftConfig
from streams.domain.processor import ClaimFromSource, PartitionWindows, StepResult
from streams.domain.rules import RuleBook
from streams.kafka import envelopes
from streams.kafka.originals import Originals, Rebuilt
from streams.kafka.records import alert_record, drift_record
from streams.kafka.rules_feed import RulesFeed
from streams.observability.health import Health
from streams.observability.metrics import (
    ACTIVE_KEYS,
    ALERT_TRANSITIONS,
    BUCKET_CLOSES,
    CLAIMS_AMENDED,
    CLAIMS_BY_OUTCOME,
    CLAIMS_DLQ,
    CLAIMS_DUPLICATE,
    CLAIMS_PENDING,
    CLAIMS_PROCESSED,
    CLAIMS_REDELIVERED,
    COMMANDS,
    CONSUMER_LAG,
    DRIFT_EVENTS,
    EVENT_TIME_LAG,
)
from streams.runtime.batches import BatchSubscription, BatchTopic, UpstreamApp
from streams.runtime.checkpoint import Checkpoint
from streams.runtime.jobs import ScheduledJobs
from streams.runtime.state import (
    ChangelogTable,
    StandardJsonTable,
    TableAlertStore,
    WindowsState,
    send_keyed,
)
from streams.settings import Settings
from streams.stages.alerts import apply_alert_input
from streams.stages.routing import Router
from streams.stages.windows import RELEASE_BUDGET, flush_slices

HEALTH_EVERY_S = 2.0
# A step applied to a partition's windows: the partition, what it produced, the id of its
# last claim (None for an idle tick), for the log line of each drift found.
_Applied = tuple[PartitionWindows, StepResult, str | None]
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
        windows_table, self.alerts_table = self.changelogs
        self.state = WindowsState(windows_table, drift_config(settings), settings.grace_ms)
        self.router = Router(codec, settings.topic_claims, settings.partitions)
        self.windows_lock = asyncio.Lock()  # the idle timer and the windows stage share state
        self.rules = RuleBook()
        self.rules_feed = RulesFeed(bootstrap, settings.topic_rules, codec, self.rules)
        self.originals = Originals(bootstrap)
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
        app.timer(HEALTH_EVERY_S)(self.check_health)
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_before_shutdown.connect(self.on_shutdown)
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

    async def on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:  # noqa: ARG002 - a Faust signal receiver
        """Close the consumer that reads originals back for dead letters."""
        await self.originals.close()

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:  # noqa: ARG002 - a Faust signal receiver
        """Forget in-memory windows; the new owner rebuilds them from the changelog.

        Under the lock: an idle tick in progress finishes (and flushes) before the partitions
        are handed over. (Faust then reads the windows changelog from its start: see
        :class:`WindowsState`.)
        """
        async with self.windows_lock:
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
        """Task: :meth:`windows` every batch of the by-key topic."""
        await self.consume(self.by_key_batches, self.windows, self.settings.windows_batch_within_s)

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
        async with self.windows_lock:
            sources = self.source_count()
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
                await self._emit(applied, checkpoint)
            ACTIVE_KEYS.set(self.state.key_count())
            CLAIMS_PENDING.set(self.state.pending_count())

    async def _apply(
        self,
        pw: PartitionWindows,
        arrivals: list[ClaimFromSource],
        now_ms: int,
        checkpoint: Checkpoint,
    ) -> _Applied:
        """Apply ``arrivals`` to one partition's windows and dead-letter the claims beyond
        their customer's history; the outputs and state are for :meth:`_emit`."""
        result = pw.apply(arrivals, now_ms=now_ms, release_budget=RELEASE_BUDGET)
        observe = EVENT_TIME_LAG.observe
        taken = arrivals[: result.taken]
        for arrival in taken:
            observe((now_ms - arrival.claim.event_ms) / 1000)
        await self._dead_letter_beyond_history(result.beyond_history, checkpoint)
        _count_claims(result)
        return pw, result, taken[-1].claim.claim_id if taken else None

    async def _dead_letter_beyond_history(
        self, arrivals: list[ClaimFromSource], checkpoint: Checkpoint
    ) -> None:
        """The original claims (or, failing that, the claims as validated) to the DLQ."""
        if not arrivals:
            return
        topic = self.settings.topic_claims
        origins = [envelopes.Origin(topic, a.source, a.offset) for a in arrivals]
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

    async def _emit(self, applied: list[_Applied], checkpoint: Checkpoint) -> None:
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
                record = drift_record(drift)
                value = self.codec.encode("DriftEvent", self.settings.topic_drift, record)
                drifts.append((drift.kafka_key.encode(), value))
            for evaluation in result.evaluations:
                message = envelopes.evaluation_message(evaluation)
                evaluations.append((evaluation.customer_id.encode(), message))
        producer = self.kafka_producer()
        checkpoint.deliver(await send_keyed(producer, self.drift_topic.get_topic_name(), drifts))
        topic = self.alert_input_topic.get_topic_name()
        checkpoint.deliver(await send_keyed(producer, topic, evaluations))

        def save() -> None:
            for pw, result, _ in applied:
                self.state.save(pw, result)

        await checkpoint.persist(self.state.table, save)

    async def advance_idle_partitions(self) -> None:
        """Timer: advance customers whose feed (or one of its sources) is quiet by the wall
        clock (idle_close_after_s)."""
        now_ms = int(time.time() * 1000)
        idle_ms = int(self.settings.idle_close_after_s * 1000)
        topic = self.by_key_topic.get_topic_name()
        await self.ensure_partition_metadata()
        async with self.windows_lock:
            # From a revoke until the changelogs are recovered the tables are incomplete, and
            # the assignor already names partitions not yet restored: loading one then would
            # keep a partial state for good.
            if self.app.rebalancing:
                return
            assigned = sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                              if tp.topic == topic)  # fmt: skip
            behind = [self.state.get(partition, self.source_count()) for partition in assigned]
            ticked = False
            while behind:  # a tick, then catching up with what its budget left due
                closed: list[_Applied] = []
                for pw in behind:
                    if ticked:
                        result = pw.apply([], release_budget=RELEASE_BUDGET)
                    else:
                        result = pw.idle_tick(now_ms, idle_ms, release_budget=RELEASE_BUDGET)
                    _count_claims(result)
                    if result.closes or result.pending_done:
                        closed.append((pw, result, None))
                behind = [pw for pw, result, _ in closed if result.budget_spent()]
                ticked = True
                if closed:
                    await self._emit(closed, Checkpoint())
                    CLAIMS_PENDING.set(self.state.pending_count())

    async def forward_commands(self) -> None:
        """Task: :meth:`commands` every batch of ``alerts.commands``."""
        await self.consume(
            self.commands_batches, self.commands, self.settings.alerts_batch_within_s
        )

    async def commands(self, messages: list[Any], checkpoint: Checkpoint) -> None:
        """Validate operator commands and forward them next to the customer's evaluations."""
        forwarded = []
        for message in messages:
            try:
                record = self.codec.decode(
                    message.value, "AlertCommand", self.settings.topic_commands
                )
                command = envelopes.command_from_record(record)
            except (DecodeError, KeyError, ValueError, TypeError) as exc:
                checkpoint.deliver([await self._reject(message, "invalid_command", str(exc))])
                continue
            forwarded.append((command.customer_id.encode(), envelopes.command_message(record)))
        topic = self.alert_input_topic.get_topic_name()
        checkpoint.deliver(await send_keyed(self.kafka_producer(), topic, forwarded))

    async def _reject(self, message: Any, reason: str, detail: str) -> Any:
        """Dead-letter a command or alert-input ``message`` (a Kafka message) it cannot apply;
        the future of its delivery."""
        COMMANDS.labels(outcome=reason).inc()
        letter = envelopes.dead_letter(message, "alerts", reason, detail)
        return await self.commands_dlq_topic.send(
            key=letter.key, value=letter.value, headers=letter.headers
        )

    async def apply_alert_input(self) -> None:
        """Task: :meth:`alerts` every batch of the alert input, once the rules are loaded."""
        await self.rules_feed.ready.wait()
        await self.consume(
            self.alert_input_batches, self.alerts, self.settings.alerts_batch_within_s
        )

    async def alerts(self, messages: list[Any], checkpoint: Checkpoint) -> None:
        """Apply evaluations (with the customer's rules) and commands, in order
        (:func:`apply_alert_input`); send every transition, then save the state that produced
        them."""
        applied = apply_alert_input(
            messages, partial(TableAlertStore, self.alerts_table), self.rules
        )
        for message, reason, detail in applied.rejected:
            checkpoint.deliver([await self._reject(message, reason, detail)])
        for outcome in applied.commands:
            COMMANDS.labels(outcome=outcome).inc()
        records = []
        for transition in applied.transitions:
            ALERT_TRANSITIONS.labels(transition=transition.transition).inc()
            log.info(
                "alert %s", transition.transition,
                extra={"alert_id": transition.alert_id, "version": transition.version,
                       "event_id": transition.drift_event_id,
                       "customer_id": transition.customer_id,
                       "transition": transition.transition},
            )  # fmt: skip
            value = self.codec.encode("AlertEvent", self.settings.topic_alerts,
                                      alert_record(transition))  # fmt: skip
            records.append((transition.customer_id.encode(), value))
        topic = self.alerts_topic.get_topic_name()
        checkpoint.deliver(await send_keyed(self.kafka_producer(), topic, records))
        await checkpoint.persist(self.alerts_table)  # the state that produced them


# Fetched but not yet taken, per batch topic: by messages alone, a backlog of by-key messages
# (up to routing.CHUNK_CLAIMS claims each) could hold millions of claims in memory.
BUFFER_BYTES = 16 << 20


def _count_claims(result: StepResult) -> None:
    """The claim and close counters of a step: every claim read is, once, counted
    (processed), a duplicate, beyond the history or redelivered, after it waited (the pending
    gauge, set from the windows held) or not."""
    BUCKET_CLOSES.inc(result.closes)
    CLAIMS_PROCESSED.inc(result.counted)
    CLAIMS_DUPLICATE.inc(result.duplicates)
    CLAIMS_AMENDED.inc(result.amended)
    CLAIMS_REDELIVERED.inc(result.redelivered)


def tune_gc(settings: Settings) -> None:
    """The worker process's garbage-collection threshold (``UPSTREAM_GC_THRESHOLD``); the
    older generations keep Python's."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_threshold, older, oldest)


def build_worker(
    settings: Settings, bootstrap: str, codec: ValueCodec, health: Health | None = None
) -> Worker:
    """Build the Faust app, its topics, tables and stages. Connects to nothing yet."""
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
