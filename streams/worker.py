"""The Faust worker: thin agents around the pure domain core.

Flow (all keys explicit, all state in domain objects):

1. ``route`` reads ``claims.decided``, decodes and validates each value; invalid ones go to the
   DLQ with headers, valid ones are repartitioned by ``customer_id|payer_id|cpt_group``.
2. ``windows`` applies claims to :class:`PartitionWindows` per partition, sends late claims to
   the DLQ, drift events to ``drift.events`` and key evaluations to the alert input (keyed by
   ``customer_id``); changed key windows go to a changelog-backed table.
3. ``alerts`` applies evaluations to :class:`AlertLifecycle` and sends every transition to
   ``alerts.events``.

Agents work in batches (``take_events``) to stay off Faust's per-event overhead; events are
acked after their batch is handled, and Faust flushes the producer before committing offsets,
so delivery is at-least-once and every output is idempotent downstream.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import faust

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams.domain.alerts import AlertLifecycle, AlertState, default_rule
from streams.domain.claims import InvalidClaim, parse_claim
from streams.domain.drift import DriftConfig
from streams.domain.events import KeyEvaluated
from streams.domain.processor import Arrival, ClaimFromSource, PartitionWindows, SourceProgressed
from streams.domain.windows import KeyWindows
from streams.metrics import ALERT_TRANSITIONS, CLAIMS_DLQ, CLAIMS_PROCESSED, DRIFT_EVENTS
from streams.records import alert_record, drift_record
from streams.settings import Settings

log = logging.getLogger("upstream.worker")
WATERMARK_PREFIX = "__watermark__|"


class ChangelogTable:
    """A Faust table used as plain changelog-backed storage with explicit partitions.

    Faust's own ``table[k] = v`` picks the changelog partition from the implicit current event;
    batches span partitions, so every write here names its partition.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> Any:
        """The stored value, or None."""
        return self._table.data.get(key)

    def put(self, partition: int, key: str, value: Any) -> None:
        """Store ``value`` and append it to changelog partition ``partition``."""
        self._table.data[key] = value
        self._table.send_changelog(partition, key, value)

    def delete(self, partition: int, key: str) -> None:
        """Remove ``key`` and write a tombstone."""
        self._table.data.pop(key, None)
        self._table.send_changelog(partition, key, None, value_serializer="raw")

    def items(self) -> Iterable[tuple[str, Any]]:
        """Every stored item (all assigned partitions)."""
        return list(self._table.data.items())


class TableAlertStore:
    """:class:`AlertStore` over a changelog table, writing to one partition."""

    def __init__(self, table: ChangelogTable, partition: int) -> None:
        self.table = table
        self.partition = partition

    def get(self, dedup_key: str) -> AlertState | None:
        """The alert state under ``dedup_key``."""
        data = self.table.get(dedup_key)
        return AlertState.from_dict(data) if data else None

    def put(self, state: AlertState) -> None:
        """Persist ``state``."""
        self.table.put(self.partition, state.dedup_key, state.to_dict())


@dataclass
class Worker:
    """The assembled Faust app with its topics and tables (built by :func:`build_worker`)."""

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
        fdr_q_max=settings.fdr_q_max,
    )


def _dlq_headers(event: Any, stage: str, reason: str, message: str) -> dict[str, bytes]:
    msg = event.message
    return {
        "error.stage": stage.encode(),
        "error.reason": reason.encode(),
        "error.message": message.encode("utf-8", "replace")[:1000],
        "source.topic": str(msg.topic).encode(),
        "source.partition": str(msg.partition).encode(),
        "source.offset": str(msg.offset).encode(),
    }


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _arrival(envelope: dict[str, Any]) -> Arrival:
    """Decode a message of the internal by-key topic."""
    source, sources = int(envelope["source"]), int(envelope["sources"])
    if "claim" in envelope:
        return ClaimFromSource(source, sources, parse_claim(envelope["claim"]))
    return SourceProgressed(source, sources, int(envelope["max_event_ms"]))


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
    dlq_topic = app.topic(settings.topic_claims_dlq, **raw)
    drift_topic = app.topic(settings.topic_drift, **raw)
    alerts_topic = app.topic(settings.topic_alerts, **raw)
    by_key_topic = app.topic(
        f"{settings.app_id}-claims-by-key", internal=True, partitions=settings.partitions, **raw
    )
    alert_input_topic = app.topic(
        f"{settings.app_id}-alert-input", internal=True, partitions=settings.partitions, **raw
    )
    # key_type=str with no value_type: Faust serializes both as JSON.
    table_opts: dict[str, Any] = {"partitions": settings.partitions, "key_type": str}
    windows_table = ChangelogTable(app.Table("windows", default=None, **table_opts))
    alerts_table = ChangelogTable(app.Table("alerts", default=None, **table_opts))

    cfg = drift_config(settings)
    grace_ms = int(settings.grace_days * 86_400_000)
    partitions: dict[int, PartitionWindows] = {}

    def partition_windows(partition: int) -> PartitionWindows:
        pw = partitions.get(partition)
        if pw is None:
            pw = partitions[partition] = PartitionWindows(partition, cfg, grace_ms)
            saved = windows_table.get(f"{WATERMARK_PREFIX}{partition}")
            if saved:
                pw.watermark.restore(saved)
            for key, value in windows_table.items():
                if (
                    not key.startswith(WATERMARK_PREFIX)
                    and value
                    and value["partition"] == partition
                ):
                    pw.keys[key] = KeyWindows.from_dict(value)
            log.info("partition %d: loaded %d keys", partition, len(pw.keys))
        return pw

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The new owner rebuilds from the changelog; keeping a stale copy would fork state.
        partitions.clear()

    app.on_partitions_revoked.connect(on_revoked)

    async def send_dlq(event: Any, stage: str, reason: str, message: str) -> None:
        CLAIMS_DLQ.labels(reason=reason).inc()
        await dlq_topic.send(
            key=event.key, value=event.value, headers=_dlq_headers(event, stage, reason, message)
        )

    @app.agent(claims_topic)
    async def route(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in _take_events(stream, settings):
            progress: dict[int, int] = {}
            sources = app.consumer.topic_partitions(settings.topic_claims) or settings.partitions
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
                progress[source] = max(progress.get(source, claim.event_ms), claim.event_ms)
                await by_key_topic.send(
                    key=claim.window_key.encode(),
                    value=_dumps({"source": source, "sources": sources, "claim": raw_claim}),
                )
            await _broadcast_progress(progress, sources)
            yield None

    async def _broadcast_progress(progress: dict[int, int], sources: int) -> None:
        # Every windows partition needs every source's progress, even with no claim from it,
        # to move its watermark (the minimum over sources).
        for source, max_event_ms in sorted(progress.items()):
            value = _dumps({"source": source, "sources": sources, "max_event_ms": max_event_ms})
            for partition in range(settings.partitions):
                await by_key_topic.send(key=b"", value=value, partition=partition)

    @app.agent(by_key_topic)
    async def windows(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in _take_events(stream, settings):
            by_partition: dict[int, list[tuple[Any, Arrival]]] = defaultdict(list)
            for event in events:
                try:
                    arrival = _arrival(json.loads(event.value))
                except (InvalidClaim, ValueError, KeyError, TypeError) as exc:
                    await send_dlq(event, "window", "invalid", str(exc))
                    continue
                by_partition[event.message.partition].append((event, arrival))
            for partition, items in by_partition.items():
                await _apply_partition(partition, items)
            yield None

    async def _apply_partition(partition: int, items: list[tuple[Any, Arrival]]) -> None:
        pw = partition_windows(partition)
        result = pw.apply([arrival for _, arrival in items])
        late_ids = {id(c) for c in result.late}
        for event, arrival in items:
            if isinstance(arrival, ClaimFromSource) and id(arrival.claim) in late_ids:
                await send_dlq(event, "window", "late", "event time is behind the watermark")
        CLAIMS_PROCESSED.inc(
            sum(isinstance(a, ClaimFromSource) for _, a in items) - len(result.late)
        )
        for drift in result.drifts:
            DRIFT_EVENTS.labels(drift_type=drift.drift_type, level=drift.severity_level).inc()
            value = codec.encode("DriftEvent", settings.topic_drift, drift_record(drift))
            await drift_topic.send(key=drift.kafka_key.encode(), value=value)
        for evaluation in result.evaluations:
            await alert_input_topic.send(
                key=evaluation.customer_id.encode(), value=_dumps(evaluation.to_dict())
            )
        for key in result.changed_keys:
            windows_table.put(partition, key, pw.keys[key].to_dict())
        for key in result.removed_keys:
            windows_table.delete(partition, key)
        windows_table.put(partition, f"{WATERMARK_PREFIX}{partition}", pw.watermark.to_dict())

    @app.agent(alert_input_topic)
    async def alerts(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in _take_events(stream, settings):
            for event in events:
                evaluation = KeyEvaluated.from_dict(json.loads(event.value))
                lifecycle = AlertLifecycle(TableAlertStore(alerts_table, event.message.partition))
                rules = [default_rule(evaluation.customer_id)]
                for transition in lifecycle.apply_evaluation(evaluation, rules):
                    ALERT_TRANSITIONS.labels(transition=transition.transition).inc()
                    value = codec.encode(
                        "AlertEvent", settings.topic_alerts, alert_record(transition)
                    )
                    await alerts_topic.send(key=transition.customer_id.encode(), value=value)
            yield None

    return Worker(app=app, settings=settings)
