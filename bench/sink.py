"""Sink throughput: rows/s through the sink's write path vs a raw COPY of the same rows.

Starts an embedded PostgreSQL; then, in each of ``--runs`` runs (medians reported), for N
claim rows and N drift + alert rows it measures (a) the sink service's own loop
(:meth:`SinkService.consume`: decode, row building, the writer's bulk path, one batch in
flight while the next is decoded, offsets committed) fed by an in-memory consumer in batches
of 5,000, so Kafka's share is left out, and (b) psycopg ``COPY … FROM STDIN`` of the same rows,
in the sink's wire format (text for claims, binary for drift and alert rows), into an empty,
logged clone of each table with its indexes: the claims into ``claim_records``, the drift events
into ``drift_events``, the alert transitions into ``alert_transitions`` and each alert's latest
state into ``alert_events`` (the ratio without that last table is reported too). The sink's
tables start each run empty, and autovacuum is off for every table the bench writes (see
:data:`NO_AUTOVACUUM`). The drift and alert records carry bucket-boundary timestamps, as the
worker's do. Prints JSON on stdout, progress and a table on stderr.

    python -m bench.sink --rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import psycopg
from sqlalchemy.ext.asyncio import create_async_engine

from bench.machine import machine
from schemas.codec import encode_single_object
from schemas.registry import ValueCodec
from sinks.rows import (
    ALERT_TYPES,
    CLAIM_COLUMNS,
    DRIFT_COLUMNS,
    DRIFT_TYPES,
    alert_row,
    claim_row,
    drift_row,
)
from sinks.service import SinkService
from sinks.tables import ALERT_FIELDS
from sinks.writer import PostgresWriter, _latest
from streams.app.services import migrate_database
from streams.devtools.generator import Scenario, generate
from streams.devtools.stack import EmbeddedPostgres
from streams.settings import Settings

BATCH = 5000
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000
EVENTS_PER_CLOSE = 100  # drift events (and alert transitions) per daily bucket close


class _Message:
    """Just what the sink reads from a Kafka record."""

    def __init__(self, value: bytes, partition: int, offset: int) -> None:
        self.value, self.partition, self.offset, self.topic = value, partition, offset, "t"


def _closed_at(i: int) -> int:
    """When the bucket close that emitted event ``i`` happened: a day's end, as in the worker
    (``streams/domain/drift.py``: every timestamp of a drift event is a bucket boundary), with
    :data:`EVENTS_PER_CLOSE` events each."""
    return T0_MS + (i // EVENTS_PER_CLOSE + 1) * DAY_MS


def _drift_record(i: int) -> dict[str, Any]:
    detected = _closed_at(i)
    return {"event_id": f"e-{i}", "customer_id": "acme", "payer_id": f"p{i % 50}",
            "cpt_group": "radiology", "drift_type": "denial_rate", "window_days": 7.0,
            "baseline_start": detected - 35 * DAY_MS, "baseline_end": detected - 7 * DAY_MS,
            "current_start": detected - 7 * DAY_MS, "current_end": detected,
            "baseline_value": 0.1, "current_value": 0.3, "delta_value": 0.2, "baseline_n": 100,
            "current_n": 40, "p_value": 1e-6, "q_value": 1e-5, "severity": 0.8,
            "severity_level": "critical", "confidence": 0.99,
            "detected_at": detected}  # fmt: skip


def _alert_record(i: int) -> dict[str, Any]:
    """Alert transition ``i`` (odd), of the drift event just before it, as the worker sends it:
    the sink stores an alert only after its drift event (see SinkService)."""
    return {"alert_id": f"a-{i // 3}", "version": i % 3 + 1, "dedup_key": f"k{i // 3}",
            "customer_id": "acme", "rule_id": "default", "drift_event_id": f"e-{i - i % 2}",
            "payer_id": "p1", "cpt_group": "radiology", "drift_type": "denial_rate",
            "status": "active", "transition": "updated", "severity": 0.5,
            "severity_level": "warning", "occurrence_count": 1, "first_seen": T0_MS,
            "last_seen": _closed_at(i), "acknowledged_by": None, "resolved_by": None,
            "resolution": None,
            "verdict": None, "message": "m", "notify": True}  # fmt: skip


class _Partition(NamedTuple):
    topic: str
    partition: int


class _Feed:
    """An in-memory stand-in for the consumer and the producer: batches, then stop."""

    def __init__(self, topics: dict[str, list[_Message]], service: SinkService) -> None:
        self.topics = {_Partition(topic, 0): messages for topic, messages in topics.items()}
        self.read = dict.fromkeys(self.topics, 0)  # partition -> messages read
        self.service = service
        self.committed: dict[Any, int] = {}

    def assignment(self) -> set[Any]:
        return set(self.topics)

    async def getmany(
        self,
        *partitions: Any,
        timeout_ms: int,  # noqa: ARG002 - the consumer method it stands in for
        max_records: int = BATCH,
    ) -> dict[Any, list[_Message]]:
        """An equal share of ``max_records`` from each of ``partitions`` (default: all); a poll
        of all that finds nothing stops the service."""
        wanted = partitions or tuple(self.topics)
        share = max_records // len(wanted)
        polled = {}
        for tp in wanted:
            messages = self.topics[tp][self.read[tp] : self.read[tp] + share]
            self.read[tp] += len(messages)
            if messages:
                polled[tp] = messages
        if not polled and not partitions:
            self.service.stop()
        return polled

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.committed.update(offsets)

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - a stand-in
        raise AssertionError("the bench's rows are all valid; nothing may be dead-lettered")


async def _through_sink(url: str, topics: dict[str, list[_Message]]) -> float:
    """Seconds the sink service takes to store the messages of ``topics``."""
    settings = Settings(sink_batch_max=BATCH)
    engine = create_async_engine(url, pool_size=settings.sink_claim_lanes)
    writer = PostgresWriter(engine, claim_lanes=settings.sink_claim_lanes)
    service = SinkService(settings, "unused:9092", writer, ValueCodec())
    feed = _Feed(topics, service)
    started = time.perf_counter()
    await service.consume(feed, feed)
    took = time.perf_counter() - started
    await engine.dispose()
    if feed.committed != {tp: ms[-1].offset + 1 for tp, ms in feed.topics.items()} or (
        service.dead_lettered
    ):
        raise RuntimeError(f"the sink did not store every message: {feed.committed}")
    return took


def _copy(
    url: str,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: Sequence[str] | None = None,
) -> float:
    """COPY ``rows`` into an empty, logged clone of ``table`` (indexes and all); seconds taken.

    In the sink's own wire format: binary with ``types``, text without.
    """
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TABLE bench_copy (LIKE {table} INCLUDING ALL) WITH ({NO_AUTOVACUUM})")
        conn.commit()
        started = time.perf_counter()
        binary = " (FORMAT BINARY)" if types else ""
        statement = f"COPY bench_copy ({', '.join(columns)}) FROM STDIN{binary}"
        with conn.cursor().copy(statement) as copy:
            if types:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        conn.commit()
        took = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
        conn.commit()
        return took


SINK_TABLES = ("claim_records", "drift_events", "alert_transitions", "alert_events")
# Autovacuum wakes once a minute and then vacuums whichever table a phase just filled, on the
# same two cores as the phase being timed: it is switched off for the bench's tables, sink's
# and COPY's alike, so neither side pays for the other's maintenance.
NO_AUTOVACUUM = "autovacuum_enabled = false"


def _empty_tables(url: str) -> None:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute(f"TRUNCATE {', '.join(SINK_TABLES)}")
        for table in SINK_TABLES:
            conn.execute(f"ALTER TABLE {table} SET ({NO_AUTOVACUUM})")


PHASES = ("claims", "events", "copy_claims", "copy_messages", "copy_latest")


def _ratio(sink: list[float], copy: list[float]) -> float:
    """The median over runs of COPY's seconds over the sink's: each run against its own COPY,
    as this machine's speed drifts by a third between minutes."""
    return round(statistics.median(c / s for s, c in zip(sink, copy, strict=True)), 3)


def _report(n: int, runs: int, times: dict[str, list[float]]) -> dict[str, Any]:
    copy_events = [m + a for m, a in zip(times["copy_messages"], times["copy_latest"], strict=True)]
    rate = {name: round(n / statistics.median(values)) for name, values in times.items()}
    return {
        "benchmark": "sink",
        "rows": n,
        "batch": BATCH,
        "runs": runs,
        "claims": {"sink_rows_per_s": rate["claims"],
                   "copy_rows_per_s": rate["copy_claims"],
                   "ratio_to_copy": _ratio(times["claims"], times["copy_claims"])},
        "drift_and_alerts": {"sink_rows_per_s": rate["events"],
                             "copy_rows_per_s": round(n / statistics.median(copy_events)),
                             "ratio_to_copy": _ratio(times["events"], copy_events),
                             "copy_without_latest_rows_per_s": rate["copy_messages"],
                             "ratio_to_copy_without_latest": _ratio(times["events"],
                                                                    times["copy_messages"])},
        "machine": machine(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="claim rows and event rows")
    parser.add_argument("--runs", type=int, default=3, help="runs; the medians are reported")
    args = parser.parse_args(argv)
    n = args.rows
    records = generate(Scenario(name="steady", days=max(1, n // 120 + 1)))[:n]
    claims = [_Message(json.dumps(r).encode(), 0, i) for i, r in enumerate(records)]
    drift = [
        _Message(encode_single_object("DriftEvent", _drift_record(i)), 0, i) for i in range(0, n, 2)
    ]
    alerts = [
        _Message(encode_single_object("AlertEvent", _alert_record(i)), 0, i) for i in range(1, n, 2)
    ]
    claim_rows = [claim_row(json.loads(m.value), 0, m.offset) for m in claims]
    drift_rows = [drift_row(_drift_record(i)) for i in range(0, n, 2)]
    alert_rows = [alert_row(_alert_record(i)) for i in range(1, n, 2)]
    # What alert_events holds once the sink has stored them: each alert's latest version.
    latest_rows = _latest(alert_rows, itemgetter(0), itemgetter(1))
    gc.freeze()  # the inputs above are the bench's, not the sink's: keep them out of its GCs
    s = Settings()
    times: dict[str, list[float]] = {name: [] for name in PHASES}
    server = EmbeddedPostgres().start()
    try:
        migrate_database(server.url)
        for run in range(1, args.runs + 1):
            _empty_tables(server.url)
            times["claims"].append(asyncio.run(_through_sink(server.url, {s.topic_claims: claims})))
            times["events"].append(
                asyncio.run(
                    _through_sink(server.url, {s.topic_drift: drift, s.topic_alerts: alerts})
                )
            )
            times["copy_claims"].append(
                _copy(server.url, "claim_records", CLAIM_COLUMNS, claim_rows)
            )
            times["copy_messages"].append(
                _copy(server.url, "drift_events", DRIFT_COLUMNS, drift_rows, DRIFT_TYPES)
                + _copy(server.url, "alert_transitions", ALERT_FIELDS, alert_rows, ALERT_TYPES)
            )
            times["copy_latest"].append(
                _copy(server.url, "alert_events", ALERT_FIELDS, latest_rows, ALERT_TYPES)
            )
            claims_rate, events_rate = n / times["claims"][-1], n / times["events"][-1]
            print(f"run {run}/{args.runs}: claims {claims_rate:,.0f} rows/s, "
                  f"drift+alerts {events_rate:,.0f} rows/s", file=sys.stderr)  # fmt: skip
    finally:
        server.stop()
    report = _report(n, args.runs, times)
    print(json.dumps(report, indent=2))
    print("| rows | sink rows/s | raw COPY rows/s | ratio |\n|---|---|---|---|", file=sys.stderr)
    for name in ("claims", "drift_and_alerts"):
        r = report[name]
        print(f"| {name} | {r['sink_rows_per_s']:,} | {r['copy_rows_per_s']:,} | "
              f"{r['ratio_to_copy']} |", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
