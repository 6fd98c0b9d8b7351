"""The sink service: claims, drift events and alert transitions from Kafka into Postgres.

Reads a batch, writes it in one transaction, and only then commits the offsets. If Postgres is
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
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from sinks.writer import PostgresWriter, alert_row, claim_row, claim_row_fast, drift_row
from streams.domain.claims import InvalidClaim
from streams.envelopes import dlq_headers
from streams.settings import Settings

log = logging.getLogger("upstream.sink")
MAX_BACKOFF_S = 10.0
# The bulk path talks to psycopg directly, so errors come from either layer.
UNAVAILABLE = (OperationalError, psycopg.OperationalError)
REJECTED = (DBAPIError, psycopg.DataError, psycopg.IntegrityError)


@dataclass
class Batch:
    """Rows decoded from one poll, each with the message it came from."""

    drift: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    alerts: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    claims: list[tuple[Any, tuple[Any, ...]]] = field(default_factory=list)
    rejected: list[tuple[Any, str, str]] = field(default_factory=list)  # message, reason, detail

    def rows(
        self,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[Any, ...]]]:
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
            while not self._stopping.is_set():
                polled = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.sink_batch_max
                )
                if not polled:
                    continue
                batch = self._decode(polled)
                await self._write(batch)
                for message, reason, detail in batch.rejected:
                    await self._dead_letter(producer, message, reason, detail)
                await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    def _decode(self, polled: dict[Any, list[Any]]) -> Batch:
        batch = Batch()
        for tp, messages in polled.items():
            decode = self._decoders[tp.topic]
            for message in messages:
                try:
                    decode(batch, message)
                except (DecodeError, InvalidClaim) as exc:
                    batch.rejected.append((message, exc.reason, exc.message))
                except (KeyError, ValueError, TypeError) as exc:
                    batch.rejected.append((message, "bad_record", str(exc)))
        return batch

    def _drift(self, batch: Batch, message: Any) -> None:
        record = self.codec.decode(message.value, "DriftEvent", message.topic)
        batch.drift.append((message, drift_row(record)))

    def _alert(self, batch: Batch, message: Any) -> None:
        record = self.codec.decode(message.value, "AlertEvent", message.topic)
        batch.alerts.append((message, alert_row(record)))

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
        drift: list[dict[str, Any]],
        alerts: list[dict[str, Any]],
        claims: list[tuple[Any, ...]],
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

    async def _dead_letter(
        self, producer: AIOKafkaProducer, message: Any, reason: str, detail: str
    ) -> None:
        self.dead_lettered += 1
        log.error("dead-lettering %s@%s:%s: %s", message.topic, message.partition,
                  message.offset, detail)  # fmt: skip
        headers = list(dlq_headers(message, "sink", reason, detail).items())
        await producer.send_and_wait(
            self.settings.topic_sink_dlq, key=message.key, value=message.value, headers=headers
        )
