"""The sink service: ``drift.events`` and ``alerts.events`` from Kafka into Postgres.

Reads a batch, writes it in one transaction, and only then commits the offsets. If Postgres
is unreachable the batch is retried with backoff and no offset is committed, so nothing is lost;
the writes are idempotent, so nothing is doubled when a batch is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy.exc import DBAPIError, OperationalError

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from sinks.writer import PostgresWriter, alert_row, drift_row
from streams.settings import Settings

log = logging.getLogger("upstream.sink")
MAX_BACKOFF_S = 10.0


class SinkService:
    """Consumes the output topics and writes them with :class:`PostgresWriter`."""

    def __init__(
        self, settings: Settings, bootstrap: str, writer: PostgresWriter, codec: ValueCodec
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.writer = writer
        self.codec = codec
        self.rows_written = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish the batch in flight, commit, and return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`."""
        consumer = AIOKafkaConsumer(
            self.settings.topic_drift,
            self.settings.topic_alerts,
            bootstrap_servers=self.bootstrap,
            group_id=self.settings.sink_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
        )
        await consumer.start()
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.sink_batch_max
                )
                if not batches:
                    continue
                await self._write_with_retry(batches)
                await consumer.commit()
        finally:
            await consumer.stop()

    async def _write_with_retry(self, batches: dict[Any, list[Any]]) -> None:
        drift_rows: list[dict[str, Any]] = []
        alert_rows: list[dict[str, Any]] = []
        for tp, messages in batches.items():
            for message in messages:
                try:
                    if tp.topic == self.settings.topic_drift:
                        record = self.codec.decode(message.value, "DriftEvent", tp.topic)
                        drift_rows.append(drift_row(record))
                    else:
                        record = self.codec.decode(message.value, "AlertEvent", tp.topic)
                        alert_rows.append(alert_row(record))
                except (DecodeError, KeyError, ValueError) as exc:
                    log.error(
                        "skipping undecodable %s@%s:%s: %s",
                        tp.topic,
                        tp.partition,
                        message.offset,
                        exc,
                    )
        backoff = 0.2
        while True:
            try:
                await self.writer.write(drift_rows, alert_rows)
                self.rows_written += len(drift_rows) + len(alert_rows)
                return
            except (OperationalError, DBAPIError) as exc:
                if not getattr(exc, "connection_invalidated", False) and not isinstance(
                    exc, OperationalError
                ):
                    raise
                log.warning("postgres unavailable (%s); retrying in %.1fs", exc.orig, backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
