"""Sink throughput: rows/s through the sink's write path vs a raw COPY of the same rows.

Starts an embedded PostgreSQL, then for N claim rows and N drift + alert rows measures
(a) decode + row building + PostgresWriter in batches of 5,000, as the sink does (its bulk
path: COPY into a staging table, then one INSERT … SELECT … ON CONFLICT), and (b) psycopg
``COPY … FROM STDIN`` of the same rows into an empty copy of the table. Prints JSON and a table.

    python -m bench.sink --rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import create_async_engine

from bench.detection import _machine
from schemas.codec import encode_single_object
from schemas.registry import ValueCodec
from sinks.tables import ALERT_FIELDS
from sinks.writer import (
    CLAIM_COLUMNS,
    DRIFT_COLUMNS,
    PostgresWriter,
    alert_row,
    claim_row,
    claim_row_fast,
    drift_row,
)
from streams.devstack import EmbeddedPostgres
from streams.generator import Scenario, generate
from streams.services import migrate_database

BATCH = 5000


class _Message:
    """Just what the sink reads from a Kafka record."""

    def __init__(self, value: bytes, partition: int, offset: int) -> None:
        self.value, self.partition, self.offset, self.topic = value, partition, offset, "t"


def _drift_record(i: int) -> dict[str, Any]:
    return {"event_id": f"e-{i}", "customer_id": "acme", "payer_id": f"p{i % 50}",
            "cpt_group": "radiology", "drift_type": "denial_rate", "window_days": 7.0,
            "baseline_start": 0, "baseline_end": 1, "current_start": 2, "current_end": 3,
            "baseline_value": 0.1, "current_value": 0.3, "delta_value": 0.2, "baseline_n": 100,
            "current_n": 40, "p_value": 1e-6, "q_value": 1e-5, "severity": 0.8,
            "severity_level": "critical", "confidence": 0.99,
            "detected_at": 86_400_000 * i}  # fmt: skip


def _alert_record(i: int) -> dict[str, Any]:
    return {"alert_id": f"a-{i // 3}", "version": i % 3 + 1, "dedup_key": f"k{i // 3}",
            "customer_id": "acme", "rule_id": "default", "drift_event_id": f"e-{i}",
            "payer_id": "p1", "cpt_group": "radiology", "drift_type": "denial_rate",
            "status": "active", "transition": "updated", "severity": 0.5,
            "severity_level": "warning", "occurrence_count": 1, "first_seen": 0,
            "last_seen": i, "acknowledged_by": None, "resolved_by": None, "resolution": None,
            "verdict": None, "message": "m", "notify": True}  # fmt: skip


async def _through_sink(
    url: str, claims: list[_Message], events: list[tuple[str, _Message]]
) -> tuple[float, float]:
    codec = ValueCodec()
    engine = create_async_engine(url, pool_size=2)
    writer = PostgresWriter(engine)
    started = time.perf_counter()
    for i in range(0, len(claims), BATCH):
        rows = [
            claim_row_fast(codec.decode(m.value, "ClaimDecided", "t"), m.partition, m.offset)
            for m in claims[i : i + BATCH]
        ]
        await writer.write([], [], rows)
    claims_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        drifts, alerts = [], []
        for kind, m in events[i : i + BATCH]:
            if kind == "drift":
                drifts.append(drift_row(codec.decode(m.value, "DriftEvent", "t")))
            else:
                alerts.append(alert_row(codec.decode(m.value, "AlertEvent", "t")))
        await writer.write(drifts, alerts)
    events_s = time.perf_counter() - started
    await engine.dispose()
    return claims_s, events_s


def _copy(url: str, table: str, columns: Sequence[str], rows: list[Sequence[Any]]) -> float:
    """COPY ``rows`` into an empty clone of ``table`` (indexes and all); seconds taken."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TEMP TABLE bench_copy (LIKE {table} INCLUDING ALL)")
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY bench_copy ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="claim rows and event rows")
    args = parser.parse_args(argv)
    n = args.rows
    records = generate(Scenario(name="steady", days=max(1, n // 120 + 1)))[:n]
    claims = [_Message(json.dumps(r).encode(), 0, i) for i, r in enumerate(records)]
    events = [
        ("drift", _Message(encode_single_object("DriftEvent", _drift_record(i)), 0, i))
        if i % 2 == 0
        else ("alert", _Message(encode_single_object("AlertEvent", _alert_record(i)), 0, i))
        for i in range(n)
    ]
    server = EmbeddedPostgres().start()
    try:
        migrate_database(server.url)
        claims_s, events_s = asyncio.run(_through_sink(server.url, claims, events))
        codes = CLAIM_COLUMNS.index("denial_reason_codes")
        claim_rows: list[Sequence[Any]] = []
        for m in claims:  # typed by the validating builder; COPY does no coalescing
            row = list(claim_row(json.loads(m.value), 0, m.offset))
            row[codes] = row[codes] or "{}"
            claim_rows.append(row)
        copy_claims_s = _copy(server.url, "claim_records", CLAIM_COLUMNS, claim_rows)
        drift_rows = [drift_row(_drift_record(i)) for i in range(0, n, 2)]
        alert_rows = [alert_row(_alert_record(i)) for i in range(1, n, 2)]
        copy_events_s = _copy(
            server.url, "drift_events", DRIFT_COLUMNS,
            [[r[c] for c in DRIFT_COLUMNS] for r in drift_rows],
        )  # fmt: skip
        copy_events_s += _copy(
            server.url, "alert_transitions", ALERT_FIELDS,
            [[r[c] for c in ALERT_FIELDS] for r in alert_rows],
        )  # fmt: skip
    finally:
        server.stop()
    report = {
        "benchmark": "sink",
        "rows": n,
        "batch": BATCH,
        "claims": {"sink_rows_per_s": round(n / claims_s),
                   "copy_rows_per_s": round(n / copy_claims_s),
                   "ratio_to_copy": round(copy_claims_s / claims_s, 3)},
        "drift_and_alerts": {"sink_rows_per_s": round(n / events_s),
                             "copy_rows_per_s": round(n / copy_events_s),
                             "ratio_to_copy": round(copy_events_s / events_s, 3)},
        "machine": _machine(),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    print("| rows | sink rows/s | raw COPY rows/s | ratio |\n|---|---|---|---|", file=sys.stderr)
    for name in ("claims", "drift_and_alerts"):
        r = report[name]
        print(f"| {name} | {r['sink_rows_per_s']:,} | {r['copy_rows_per_s']:,} | "
              f"{r['ratio_to_copy']} |", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
