"""The sink service: claims, drift events and alert transitions from Kafka into Postgres.

Two consumer groups, each with its own loop: drift events and alert transitions
(``<UPSTREAM_SINK_GROUP>-events``), and the claims (``UPSTREAM_SINK_GROUP``), so an alert never
waits behind a batch of claims. Each loop reads a batch, writes it (drift events and alerts in
one transaction, the claims split over ``UPSTREAM_SINK_CLAIM_LANES`` transactions at once:
:class:`~sinks.writer.PostgresWriter`), and only once all have committed commits its offsets,
while it writes the next batch. While one batch is being written the next is polled and
decoded, so Python and Postgres work at the same time (one batch in flight at most). If
Postgres is unreachable the batch is retried with backoff and no offset is committed, so nothing
is lost; the writes are idempotent (keys and versions), so nothing is doubled when a batch is
redelivered, or written again after some of its transactions committed. A claim is validated
by the worker's own function (:func:`~streams.domain.claims.parse_claim_record`). A message
that cannot be decoded or validated, or a row Postgres rejects (a constraint), goes to
``sink.dlq`` with the reason (by reference if too large to copy), and the rest of the batch is
written: no record stops the sink. A rejected claim is also stored in ``claim_rejections`` and
counted in its customer's feed health (:mod:`sinks.feed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import Counter, Gauge, Histogram

from schemas.registry import ValueCodec
from sinks.batches import Batch, BatchDecoder, log_stored
from sinks.feed import rejection_row
from sinks.retrying import REJECTED, UNAVAILABLE, postgres_retrying, reason_of
from sinks.rows import Row
from sinks.writer import PostgresWriter
from streams.kafka.envelopes import dead_letter
from streams.observability.health import Health
from streams.settings import Settings

log = logging.getLogger("upstream.sink")
HEALTH_EVERY_S = 2.0
# The longest a batch reads on for the drift events its alert transitions name (see
# SinkService.with_their_drift_events): they are in Kafka already, unless another sink owns them.
DRIFT_WAIT_S = 2.0
# Drift event ids this sink has handed to its writer, most recent last, that a batch's alerts
# are checked against before Postgres is asked (see SinkService.with_their_drift_events).
RECENT_DRIFT_EVENTS = 10_000
BATCH_SECONDS = Histogram(
    "upstream_sink_batch_duration_seconds", "Time to write one batch (retries included)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
ROWS = Counter("upstream_sink_rows_total", "Rows written", ["table"])
SINK_DLQ = Counter("upstream_sink_dlq_total", "Messages sent to sink.dlq", ["reason"])
SINK_LAG = Gauge(
    "upstream_sink_consumer_lag_messages", "Messages not yet consumed", ["topic", "partition"]
)


async def _finish(*tasks: asyncio.Task[None] | None) -> None:
    """Await each task in turn (the first that failed raises)."""
    for task in tasks:
        if task is not None:
            await task


class ConsumerGroup(NamedTuple):
    """One of the sink's consumer groups: its topics, and how often its loop polls at most."""

    group_id: str
    topics: tuple[str, ...]
    poll_every_s: float


class SinkService:
    """Consumes the topics and writes them with :class:`PostgresWriter`."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        writer: PostgresWriter,
        codec: ValueCodec,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.health = health or Health("sink")
        self.bootstrap = bootstrap
        self.writer = writer
        self.codec = codec
        self.rows_written = 0
        self.dead_lettered = 0
        self._stopping = asyncio.Event()
        # Drift event ids of the batches handed to the writer (the one in flight included),
        # oldest first, at most RECENT_DRIFT_EVENTS: see with_their_drift_events.
        self._handed_on: OrderedDict[str, None] = OrderedDict()
        self._decoder = BatchDecoder(codec, settings)

    def stop(self) -> None:
        """Finish the batch in flight, commit, and return from :meth:`run`."""
        self._stopping.set()

    def consumer_groups(self) -> list[ConsumerGroup]:
        """The consumer groups the sink reads with.

        Drift events and alert transitions have a group of their own, ``<sink_group>-events``,
        polled as soon as a batch is written, so that an alert is written as soon as it arrives,
        not after the claims polled before it. The claims (when stored) keep ``sink_group``, and
        are polled every ``sink_claims_poll_every_s`` at most, in fewer, larger batches.
        """
        s = self.settings
        groups = [ConsumerGroup(f"{s.sink_group}-events", (s.topic_drift, s.topic_alerts), 0.0)]
        if s.sink_claims:
            groups.append(
                ConsumerGroup(s.sink_group, (s.topic_claims,), s.sink_claims_poll_every_s)
            )
        return groups

    async def run(self) -> None:
        """Consume until :meth:`stop`: one loop per consumer group, each one batch in flight."""
        groups = self.consumer_groups()
        consumers = [
            AIOKafkaConsumer(
                *group.topics,
                bootstrap_servers=self.bootstrap,
                group_id=group.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
            )
            for group in groups
        ]
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        for consumer in consumers:
            await consumer.start()
        checking = asyncio.create_task(self._check_health(consumers))
        try:
            async with asyncio.TaskGroup() as loops:  # one failing stops the other
                for group, consumer in zip(groups, consumers, strict=True):
                    loops.create_task(self.consume(consumer, producer, group.poll_every_s))
        finally:
            checking.cancel()
            for consumer in consumers:
                await consumer.stop()
            await producer.stop()

    async def _check_health(self, consumers: list[AIOKafkaConsumer]) -> None:
        """Every few seconds: Postgres answers, partitions assigned, lag below the limit."""
        while True:
            started = time.monotonic()
            try:
                await asyncio.wait_for(self.writer.ping(), HEALTH_EVERY_S)
                self.health.record("postgres", True, (time.monotonic() - started) * 1000)
            except (TimeoutError, *UNAVAILABLE, OSError) as exc:
                self.health.record("postgres", False, error=str(exc)[:200])
            lag, partitions, every_group_assigned = 0, 0, True
            for consumer in consumers:
                assigned = consumer.assignment()
                partitions += len(assigned)
                every_group_assigned = every_group_assigned and bool(assigned)
                for tp in assigned:
                    end = consumer.highwater(tp)
                    if end is not None:
                        behind = max(0, end - await consumer.position(tp))
                        SINK_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(behind)
                        lag += behind
            self.health.record("kafka", every_group_assigned, partitions=partitions)
            self.health.record("lag", lag <= self.settings.ready_max_lag, messages=lag,
                               limit=self.settings.ready_max_lag)  # fmt: skip
            await asyncio.sleep(HEALTH_EVERY_S)

    async def consume(self, consumer: Any, producer: Any, poll_every_s: float = 0.0) -> None:
        """Poll (at most every ``poll_every_s``), decode and store batches until :meth:`stop`.

        One batch is written at a time, and the next one is polled and decoded meanwhile. A
        batch's offsets are committed once it is written (its rejects dead-lettered) and the
        batch before it committed, while the next batch is being written: the commit is a
        round trip to Kafka that the next batch's rows need not wait for.
        """
        writing: asyncio.Task[None] | None = None
        committing: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        try:
            while not self._stopping.is_set():
                if (wait := next_poll - loop.time()) > 0:
                    await asyncio.sleep(wait)
                polled = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.sink_batch_max
                )
                next_poll = loop.time() + poll_every_s
                if not polled:
                    await _finish(writing, committing)
                    writing = committing = None
                    continue
                batch = await self._decoder.decode(polled)
                await self.with_their_drift_events(consumer, batch)
                if writing is not None:
                    await writing
                if committing is not None and committing.done():
                    committing.result()  # a commit that failed stops the loop here
                self._hand_on(batch)
                writing = asyncio.create_task(self._store(producer, batch))
                committing = asyncio.create_task(
                    self._commit_after(consumer, writing, committing, batch.offsets)
                )
        except BaseException:
            self._handed_on.clear()  # the batch in flight may not have been stored
            # Let what is in flight end (the error raised is the loop's own).
            await asyncio.gather(*(t for t in (writing, committing) if t), return_exceptions=True)
            raise
        await _finish(writing, committing)

    async def with_their_drift_events(self, consumer: Any, batch: Batch) -> None:
        """Read on in ``drift.events`` until every drift event that the batch's alert
        transitions name is in the batch, in one written before it (:meth:`_hand_on`) or
        stored, for at most :data:`DRIFT_WAIT_S`.

        The worker delivers a drift event before the evaluation that leads to its alert is even
        sent, but one poll can bring the alert without it (a poll takes what each partition's
        fetch has brought). Written first, the alert would reach operators without its baseline
        and current values: the notifier joins them from ``drift_events`` as it fans the
        transition out, and a CI run showed the console "– → –" so. Past the bound (a drift
        partition owned by another sink) the alert is written all the same: nothing waits for
        good.
        """
        wanted = batch.named_drift_event_ids() - set(batch.drift_event_ids())
        wanted -= self._handed_on.keys()  # stored before this batch is, or the loop stops
        if not wanted:
            return
        wanted -= await self.writer.stored_drift_events(wanted)
        drift = [tp for tp in consumer.assignment() if tp.topic == self.settings.topic_drift]
        deadline = time.monotonic() + DRIFT_WAIT_S
        while wanted and drift and (left_s := deadline - time.monotonic()) > 0:
            polled = await consumer.getmany(*drift, timeout_ms=int(min(left_s, 0.2) * 1000) + 1)
            more = await self._decoder.decode(polled)
            batch.extend(more)
            wanted -= set(more.drift_event_ids())
        if wanted:
            log.warning(
                "alert transitions stored before their drift events (not read here within "
                "%.0f s): %s", DRIFT_WAIT_S, sorted(wanted)[:5],
            )  # fmt: skip

    def _hand_on(self, batch: Batch) -> None:
        """Remember the drift events of ``batch``, about to be written.

        The loop writes one batch at a time, and stops when one fails: an alert of a later
        batch whose drift event is here needs neither a query nor a read-on. Without this, an
        alert polled while its drift event's batch was still being written found it neither
        in its own batch nor in Postgres, and waited DRIFT_WAIT_S for a message already read.
        """
        handed_on = self._handed_on
        for event_id in batch.drift_event_ids():
            handed_on[event_id] = None
        while len(handed_on) > RECENT_DRIFT_EVENTS:
            handed_on.popitem(last=False)

    async def _store(self, producer: Any, batch: Batch) -> None:
        """Write the batch, store its rejected claims (feed health), dead-letter its rejects."""
        await self._write(batch)
        claims_topic = self.settings.topic_claims
        rejections = [
            rejection_row(m.partition, m.offset, self._record(m), reason, detail)
            for m, reason, detail in batch.rejected
            if m.topic == claims_topic
        ]
        if rejections:
            await self._with_retry(lambda: self.writer.reject_claims(rejections))
        for message, reason, detail in batch.rejected:
            await self._dead_letter(producer, message, reason, detail)

    def _record(self, message: Any) -> Any:
        """The decoded value of a rejected claim message, or None if it does not decode."""
        try:
            return self.codec.decode(message.value, "ClaimDecided", message.topic)
        except Exception:
            return None

    @staticmethod
    async def _commit_after(
        consumer: Any,
        stored: asyncio.Task[None],
        previous: asyncio.Task[None] | None,
        offsets: dict[Any, int],
    ) -> None:
        """Commit ``offsets`` once the ``previous`` commit is done and their batch is ``stored``;
        nothing if the batch was not stored (the loop raises the store's error)."""
        if previous is not None:
            await previous
        await asyncio.wait({stored})
        if stored.cancelled() or stored.exception() is not None:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Rebalanced away: the new owner redelivers, and the writes are idempotent.
            log.warning("offsets not committed (%s); the batch will be redelivered", exc)

    async def _write(self, batch: Batch) -> None:
        """Write the batch; on a rejected row, write row by row and dead-letter the rejects."""
        rows = batch.rows()
        try:
            with BATCH_SECONDS.time():
                await self._with_retry(lambda: self.writer.write(*rows))
            for table, table_rows in zip(("drift_events", "alert_transitions", "claim_records"),
                                         rows, strict=True):  # fmt: skip
                ROWS.labels(table=table).inc(len(table_rows))
            log_stored(batch)
            self.rows_written += sum(map(len, rows))
            return
        except REJECTED as exc:
            log.warning("batch rejected (%s); writing row by row", reason_of(exc))
        for message, drift in batch.drift:
            await self._write_one(batch, message, [drift], [], [])
        for message, alert in batch.alerts:
            await self._write_one(batch, message, [], [alert], [])
        for message, claim in batch.claims:
            await self._write_one(batch, message, [], [], [claim])

    async def _write_one(
        self,
        batch: Batch,
        message: Any,
        drift: list[Row],
        alerts: list[Row],
        claims: list[Row],
    ) -> None:
        try:
            await self._with_retry(lambda: self.writer.write(drift, alerts, claims))
            self.rows_written += 1
        except REJECTED as exc:
            batch.rejected.append((message, "rejected_by_database", reason_of(exc)))

    async def _with_retry(self, write: Callable[[], Any]) -> None:
        """``write()``, again with backoff for as long as Postgres is unreachable."""
        async for attempt in postgres_retrying():
            with attempt:
                await write()

    async def _dead_letter(self, producer: Any, message: Any, reason: str, detail: str) -> None:
        self.dead_lettered += 1
        SINK_DLQ.labels(reason=reason).inc()
        log.error("dead-lettering %s@%s:%s: %s", message.topic, message.partition,
                  message.offset, detail)  # fmt: skip
        letter = dead_letter(message, "sink", reason, detail)
        headers = list(letter.headers.items())
        await producer.send_and_wait(
            self.settings.topic_sink_dlq, key=letter.key, value=letter.value, headers=headers
        )
