"""Rows the sink builds: typed for binary COPY, wrong types refused before Postgres sees them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.codec import decode_row, decode_single_object, encode_single_object, load_schema_json
from sinks.rows import DRIFT_COLUMNS, alert_row, claim_row, drift_row
from sinks.tables import ALERT_FIELDS
from sinks.writer import PostgresWriter
from streams.domain.claims import InvalidClaim
from tests.unit.claims import raw_claim


def _drift(**changes: Any) -> dict[str, Any]:
    record = {
        "event_id": "e1", "customer_id": "acme", "payer_id": "p1", "cpt_group": "radiology",
        "drift_type": "denial_rate", "window_days": 7, "baseline_start": 0,
        "baseline_end": 86_400_000, "current_start": datetime(2026, 1, 2),  # noqa: DTZ001 - a naive time, read as UTC
        "current_end": datetime(2026, 1, 3, tzinfo=UTC), "baseline_value": 0.1,
        "current_value": 0.3, "delta_value": 0.2, "baseline_n": 100, "current_n": 40,
        "p_value": 1e-6, "q_value": 1e-5, "severity": 1, "severity_level": "critical",
        "confidence": 0.99, "detected_at": 1_767_312_000_000,
    }  # fmt: skip
    return {**record, **changes}


def test_drift_row_is_typed_in_column_order() -> None:
    row = dict(zip(DRIFT_COLUMNS, drift_row(_drift()), strict=True))
    assert row["window_days"] == 7.0
    assert isinstance(row["window_days"], float)
    assert row["severity"] == 1.0
    assert isinstance(row["severity"], float)
    assert row["baseline_end"] == datetime(1970, 1, 2, tzinfo=UTC)  # epoch milliseconds
    assert row["current_start"] == datetime(2026, 1, 2, tzinfo=UTC)  # naive taken as UTC
    assert row["detected_at"] == datetime(2026, 1, 2, tzinfo=UTC)
    assert row["baseline_n"] == 100


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("severity", "high", "severity must be float, not str"),
        ("baseline_n", 2**64, "baseline_n must be int, not int"),
        ("baseline_n", 1.5, "baseline_n must be int, not float"),
        ("current_n", True, "current_n must be int, not a boolean"),
        ("detected_at", "2026-01-01", "detected_at must be datetime, not str"),
        ("detected_at", 10**20, "detected_at is out of range"),
        ("customer_id", 7, "customer_id must be str, not int"),
        ("customer_id", None, "customer_id is required"),
    ],
)
def test_drift_row_refuses_a_wrong_type_naming_the_field(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        drift_row(_drift(**{field: value}))


def _alert(**changes: Any) -> dict[str, Any]:
    record = {name: None for name in ALERT_FIELDS} | {
        "alert_id": "a1", "version": 2, "dedup_key": "k", "customer_id": "acme",
        "rule_id": "default", "drift_event_id": "e1", "payer_id": "p1",
        "cpt_group": "radiology", "drift_type": "denial_rate", "status": "active",
        "transition": "updated", "severity": 0.5, "severity_level": "warning",
        "occurrence_count": 2, "first_seen": 0, "last_seen": 1000, "message": "m",
    }  # fmt: skip
    return {**record, **changes}


def test_alert_row_defaults_notify_and_keeps_nullable_fields() -> None:
    record = _alert()
    row = dict(zip(ALERT_FIELDS, alert_row(record), strict=True))
    assert row["notify"] is True
    assert row["verdict"] is None
    assert row["acknowledged_by"] is None
    assert row["last_seen"] == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_claim_row_is_the_claim_the_worker_counts() -> None:
    row = claim_row(
        {"customer_id": "acme", "claim_id": "c1", "payer_id": "p1", "cpt_code": "99213",
         "submitted_date": "2026-01-01", "decided_date": "2026-01-05", "outcome": "denied",
         "billed_amount": "100.00", "allowed_amount": "0", "denial_reason_codes": ['CO "97"']},
        3, 42,
    )  # fmt: skip
    assert row[5] == "evaluation_management"  # the CPT group from the mapping
    assert row[8] == "2026-01-05T00:00:00+00:00"  # decided_at: midnight UTC of decided_date
    assert row[9] == "DENIED"
    assert row[10:13] == ("100.00", "0.00", None)  # amounts as validated, in cents
    assert row[13] == '{"CO \\"97\\""}'  # a Postgres array literal, quotes escaped
    assert row[-2:] == (3, 42)


def test_claim_row_refuses_what_the_worker_refuses() -> None:
    """The sink's row and the worker's claim come from one validation."""
    with pytest.raises(InvalidClaim) as refused:
        claim_row(raw_claim(decided_at={"t": 1}), 0, 0)
    assert refused.value.reason == "wrong_type"


@pytest.mark.parametrize(
    ("schema", "columns", "row_of"),
    [("DriftEvent", DRIFT_COLUMNS, drift_row), ("AlertEvent", ALERT_FIELDS, alert_row)],
)
def test_avro_fast_path_gives_the_typed_row(schema: str, columns: Any, row_of: Any) -> None:
    """The sink's straight-to-row read of current-schema Avro equals decode + typing."""
    assert tuple(f["name"] for f in load_schema_json(schema)["fields"]) == tuple(columns)
    record = _drift() if schema == "DriftEvent" else _alert(notify=False, verdict="confirmed")
    record = {**record, "current_start": 1_767_225_600_000}  # Avro writes epoch milliseconds
    value = encode_single_object(schema, {k: v for k, v in record.items() if k in columns})
    assert decode_row(value, schema) == row_of(decode_single_object(value, schema))
    assert decode_row(value, "AlertEvent" if schema == "DriftEvent" else "DriftEvent") is None
    assert decode_row(json.dumps({"a": 1}).encode(), schema) is None  # JSON: the slow path


@pytest.mark.parametrize(
    ("claims", "lanes", "min_rows", "sizes"),
    [
        (0, 2, 1000, [0]),  # nothing: one empty lane, so the events still get a transaction
        (1999, 2, 1000, [1999]),  # too few for two lanes of 1,000
        (2000, 2, 1000, [1000, 1000]),
        (2001, 2, 1000, [1001, 1000]),
        (5000, 3, 1000, [1667, 1667, 1666]),
        (5000, 1, 1000, [5000]),
        (4, 3, 1, [2, 1, 1]),  # never an empty lane
    ],
)
def test_claims_split_into_consecutive_lanes(
    claims: int, lanes: int, min_rows: int, sizes: list[int]
) -> None:
    """Lanes hold consecutive runs of the batch, every claim once, none under the minimum."""
    writer = PostgresWriter(engine=None, claim_lanes=lanes)  # type: ignore[arg-type]
    writer.MIN_LANE_ROWS = min_rows
    rows: list[list[tuple[Any, ...]]] = [[(i,)] for i in range(claims)]  # one version each
    split = writer._claim_lanes(rows)
    assert [len(part) for part in split] == sizes
    assert [row for part in split for row in part] == rows


def test_claim_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PostgresWriter(engine=None, claim_lanes=0)  # type: ignore[arg-type]
