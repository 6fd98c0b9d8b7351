"""A sink batch: the rows decoded from one poll, each with the message it came from, and the
messages refused with their reason."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.codec import DecodeError, decode_row
from schemas.registry import ValueCodec
from sinks.rows import DRIFT_COLUMNS, Row, alert_row, claim_row, drift_row
from sinks.tables import ALERT_FIELDS
from streams.domain.claims import InvalidClaim
from streams.settings import Settings

log = logging.getLogger("upstream.sink")
_D_EVENT_ID = DRIFT_COLUMNS.index("event_id")
_A_ID, _A_VERSION = ALERT_FIELDS.index("alert_id"), ALERT_FIELDS.index("version")
_A_EVENT_ID = ALERT_FIELDS.index("drift_event_id")
# Messages decoded between two turns of the batch being written. Short: every statement the
# writer awaits resumes only at a turn, and Postgres waits meanwhile (250 → 50 gave the drift
# and alert path 16% more rows/s; a turn costs about a microsecond).
DECODE_SLICE = 25


@dataclass
class Batch:
    """Rows decoded from one poll, each with the message it came from."""

    drift: list[tuple[Any, Row]] = field(default_factory=list)
    alerts: list[tuple[Any, Row]] = field(default_factory=list)
    claims: list[tuple[Any, Row]] = field(default_factory=list)
    rejected: list[tuple[Any, str, str]] = field(default_factory=list)  # message, reason, detail
    offsets: dict[Any, int] = field(default_factory=dict)  # partition -> next offset to commit

    def extend(self, more: Batch) -> None:
        """Add the rows of a later poll (its offsets come after this batch's)."""
        self.drift += more.drift
        self.alerts += more.alerts
        self.claims += more.claims
        self.rejected += more.rejected
        self.offsets.update(more.offsets)

    def drift_event_ids(self) -> list[str]:
        """The ids of the batch's drift events, in order."""
        return [row[_D_EVENT_ID] for _, row in self.drift]

    def named_drift_event_ids(self) -> set[str]:
        """The drift event ids the batch's alert transitions name."""
        return {row[_A_EVENT_ID] for _, row in self.alerts if row[_A_EVENT_ID]}

    def rows(self) -> tuple[list[Row], list[Row], list[Row]]:
        """The rows by table: drift, alerts, claims."""
        return (
            [r for _, r in self.drift],
            [r for _, r in self.alerts],
            [r for _, r in self.claims],
        )


def log_stored(batch: Batch) -> None:
    """A line per drift event and alert transition stored (few, and what operators trace)."""
    if not log.isEnabledFor(logging.INFO):
        return
    for _, row in batch.drift:
        log.info("drift event stored", extra={"event_id": row[_D_EVENT_ID]})
    for _, row in batch.alerts:
        log.info("alert transition stored", extra={"alert_id": row[_A_ID],
                 "version": row[_A_VERSION], "event_id": row[_A_EVENT_ID]})  # fmt: skip


class BatchDecoder:
    """Decodes a poll of the sink's topics into a :class:`Batch`."""

    def __init__(self, codec: ValueCodec, settings: Settings) -> None:
        self.codec = codec
        self._decoders: dict[str, Callable[[Batch, Any], None]] = {
            settings.topic_drift: self._drift,
            settings.topic_alerts: self._alert,
        }
        if settings.sink_claims:
            self._decoders[settings.topic_claims] = self._claim

    async def decode(self, polled: dict[Any, list[Any]]) -> Batch:
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
                except Exception as exc:
                    log.warning("%s@%s:%s cannot be stored: %r", message.topic, message.partition,
                                message.offset, exc)  # fmt: skip
                    batch.rejected.append((message, "bad_record", f"{type(exc).__name__}: {exc}"))
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
        batch.claims.append((message, claim_row(record, message.partition, message.offset)))
