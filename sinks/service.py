"""The sink service: claims, drift events and alert transitions from Kafka into Postgres.

Reads a batch, writes it in one transaction, and only then commits its offsets; while one batch
is being written the next is polled and decoded, so Python and Postgres work at the same time
(one batch in flight at most). If Postgres is
unreachable the batch is retried with backoff and no offset is committed, so nothing is lost;
the writes are idempotent (keys and versions), so nothing is doubled when a batch is
redelivered. A message that cannot be decoded, or a row Postgres rejects (a constraint, an
encoding), goes to ``sink.dlq`` with the reason, and the rest of the batch is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.codec import DecodeError, decode_row
from schemas.registry import ValueCodec
from sinks.writer import PostgresWriter, Row, alert_row, claim_row, claim_row_fast, drift_row
from streams.domain.claims import InvalidClaim
from streams.envelopes import dlq_headers
from streams.settings import Settings

log = logging.getLogger("upstream.sink")
MAX_BACKOFF_S = 10.0
DECODE_SLICE = 250  # messages decoded between two turns of the batch being written
# The bulk path talks to psycopg directly, so errors come from either layer.
UNAVAILABLE = (OperationalError, psycopg.OperationalError)
REJECTED = (DBAPIError, psycopg.DataError, psycopg.IntegrityError)


@dataclass
class Batch:
    """Rows decoded from one poll, each with the message it came from."""

    drift: list[tuple[Any, Row]] = field(default_factory=list)
    alerts: list[tuple[Any, Row]] = field(default_factory=list)
    claims: list[tuple[Any, Row]] = field(default_factory=list)
    rejected: list[tuple[Any, str, str]] = field(default_factory=list)  # message, reason, detail
    offsets: dict[Any, int] = field(default_factory=dict)  # partition -> next offset to commit

    def rows(self) -> tuple[list[Row], list[Row], list[Row]]:
        """The rows by table: drift, alerts, claims."""
        return (
            [r for _, r in self.drift],
            [r for _, r in self.alerts],
            [r for _, r in self.claims],
        )


def _reason(exc: Exception) -> str:
    """The database's own message, without SQLAlchemy's wrapping."""
    return str(getattr(exc, "orig", None) or exc)[:500]


class SinkService:
    """Consumes the topics and writes them with :class:`PostgresWriter`."""

    def __init__(
        self, settings: Settings, bootstrap: str, writer: PostgresWriter, codec: ValueCodec
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.writer = writer
        self.codec = codec
        self.rows_written = 0
        self.dead_lettered = 0
        self._stopping = asyncio.Event()
        self._decoders: dict[str, Callable[[Batch, Any], None]] = {
            settings.topic_drift: self._drift,
            settings.topic_alerts: self._alert,
        }
        if settings.sink_claims:
            self._decoders[settings.topic_claims] = self._claim

    def stop(self) -> None:
        """Finish the batch in flight, commit, and return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`."""
        consumer = AIOKafkaConsumer(
            *self._decoders,
            bootstrap_servers=self.bootstrap,
            group_id=self.settings.sink_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        await consumer.start()
        try:
            await self.consume(consumer, producer)
        finally:
            await consumer.stop()
            await producer.stop()

    async def consume(self, consumer: Any, producer: Any) -> None:
        """Poll, decode and store batches until :meth:`stop`; one batch is written at a time."""
        in_flight: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                polled = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.sink_batch_max
                )
                if not polled:
                    if in_flight is not None:
                        await in_flight
                        in_flight = None
                    continue
                batch = await self._decode(polled)
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(self._store(consumer, producer, batch))
        finally:
            if in_flight is not None:
                await in_flight

    async def _store(self, consumer: Any, producer: Any, batch: Batch) -> None:
        """Write, dead-letter the rejects, then commit the batch's offsets."""
        await self._write(batch)
        for message, reason, detail in batch.rejected:
            await self._dead_letter(producer, message, reason, detail)
        try:
            await consumer.commit(batch.offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # Rebalanced away: the new owner redelivers, and the writes are idempotent.
            log.warning("offsets not committed (%s); the batch will be redelivered", exc)

    async def _decode(self, polled: dict[Any, list[Any]]) -> Batch:
        """Decode a poll into rows, handing the loop to the batch in flight now and then.

        Without the yields the batch in flight would wait for the whole decode before sending
        more rows, and Python and Postgres would take turns instead of working together.
        """
        batch = Batch()
        for tp, messages in polled.items():
            decode = self._decoders[tp.topic]
            batch.offsets[tp] = messages[-1].offset + 1
            for i, message in enumerate(messages, 1):
                try:
                    decode(batch, message)
                except (DecodeError, InvalidClaim) as exc:
                    batch.rejected.append((message, exc.reason, exc.message))
                except (KeyError, ValueError, TypeError) as exc:
                    batch.rejected.append((message, "bad_record", str(exc)))
                if i % DECODE_SLICE == 0:
                    await asyncio.sleep(0)
        return batch

    # The table's columns are the schema's fields (tests/unit/test_sink_rows.py checks it), so
    # a value in the current schema is read straight into a row, typed by Avro itself.
    def _drift(self, batch: Batch, message: Any) -> None:
        row = decode_row(message.value, "DriftEvent") if message.value else None
        if row is None:
            row = drift_row(self.codec.decode(message.value, "DriftEvent", message.topic))
        batch.drift.append((message, row))

    def _alert(self, batch: Batch, message: Any) -> None:
        row = decode_row(message.value, "AlertEvent") if message.value else None
        if row is None:
            row = alert_row(self.codec.decode(message.value, "AlertEvent", message.topic))
        batch.alerts.append((message, row))

    def _claim(self, batch: Batch, message: Any) -> None:
        record = self.codec.decode(message.value, "ClaimDecided", message.topic)
        batch.claims.append((message, claim_row_fast(record, message.partition, message.offset)))

    async def _write(self, batch: Batch) -> None:
        """Write the batch; on a rejected row, write row by row and dead-letter the rejects."""
        try:
            await self._with_retry(lambda: self.writer.write(*batch.rows()))
            self.rows_written += sum(len(rows) for rows in batch.rows())
            return
        except REJECTED as exc:
            log.warning("batch rejected (%s); writing row by row", _reason(exc))
        for message, drift in batch.drift:
            await self._write_one(batch, message, [drift], [], [])
        for message, alert in batch.alerts:
            await self._write_one(batch, message, [], [alert], [])
        for message, _ in batch.claims:
            # Validated in Python this time, so a rejected claim is named precisely.
            record = self.codec.decode(message.value, "ClaimDecided", message.topic)
            try:
                row = claim_row(record, message.partition, message.offset)
            except InvalidClaim as exc:
                batch.rejected.append((message, exc.reason, exc.message))
                continue
            await self._write_one(batch, message, [], [], [row])

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
            batch.rejected.append((message, "rejected_by_database", _reason(exc)))

    async def _with_retry(self, write: Callable[[], Any]) -> None:
        backoff = 0.2
        while True:
            try:
                await write()
                return
            except UNAVAILABLE as exc:
                log.warning("postgres unavailable (%s); retrying in %.1fs", _reason(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def _dead_letter(self, producer: Any, message: Any, reason: str, detail: str) -> None:
        self.dead_lettered += 1
        log.error("dead-lettering %s@%s:%s: %s", message.topic, message.partition,
                  message.offset, detail)  # fmt: skip
        headers = list(dlq_headers(message, "sink", reason, detail).items())
        await producer.send_and_wait(
            self.settings.topic_sink_dlq, key=message.key, value=message.value, headers=headers
        )
