"""Rows of the sink's tables, built from the Kafka records and checked on the way.

Drift and alert rows are typed Python values for binary ``COPY``; claim rows are text, validated
as the worker validates a claim, so the sink stores exactly the claims the worker counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, String, Table, Text

from sinks.tables import ALERT_FIELDS, alert_events, drift_events
from streams.domain.claims import parse_claim_record

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = tuple[Any, ...]

# Drift and alert rows are typed in Python and sent with binary COPY, which is ~10x cheaper to
# format than text for timestamps; a value of the wrong type is refused while building the row,
# before Postgres sees it.
_PG_TYPES = {str: "text", float: "float8", int: "int8", datetime: "timestamptz", bool: "bool"}
_INT64 = range(-(2**63), 2**63)
_ALWAYS_CHECKED = (int, datetime)  # a range to check; a naive datetime to make UTC


@dataclass(frozen=True)
class _Column:
    name: str
    kind: type
    nullable: bool


def _columns(table: Table) -> tuple[_Column, ...]:
    kinds = {String: str, Text: str, Float: float, BigInteger: int, DateTime: datetime,
             Boolean: bool}  # fmt: skip
    return tuple(
        _Column(
            c.name, next(k for t, k in kinds.items() if isinstance(c.type, t)), bool(c.nullable)
        )
        for c in table.columns
    )


def _coerce(column: _Column, value: Any) -> Any:
    """``value`` as ``column.kind``, or ValueError / TypeError naming the field."""
    kind = column.kind
    if value is None:
        if column.nullable:
            return None
        raise ValueError(f"{column.name} is required")
    if isinstance(value, bool) and kind is not bool:
        raise TypeError(f"{column.name} must be {kind.__name__}, not a boolean")
    if kind is int and isinstance(value, int) and value in _INT64:
        return value
    if kind is float and isinstance(value, int | float):
        return float(value)
    if kind is datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int):  # epoch milliseconds, as Avro's timestamp-millis
            try:
                return datetime.fromtimestamp(value / 1000, tz=UTC)
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"{column.name} is out of range: {value}") from None
    raise TypeError(f"{column.name} must be {kind.__name__}, not {type(value).__name__}")


def _typed_row(record: dict[str, Any], columns: tuple[_Column, ...]) -> Row:
    row = []
    for column in columns:
        value = record.get(column.name)
        if type(value) is not column.kind or column.kind in _ALWAYS_CHECKED:
            value = _coerce(column, value)
        row.append(value)
    return tuple(row)


_DRIFT = _columns(drift_events)
_ALERT = tuple(
    c for c in _columns(alert_events) if c.name in ALERT_FIELDS
)  # Postgres sets the rest
DRIFT_COLUMNS = tuple(c.name for c in _DRIFT)
DRIFT_TYPES = tuple(_PG_TYPES[c.kind] for c in _DRIFT)
ALERT_TYPES = tuple(_PG_TYPES[c.kind] for c in _ALERT)


def drift_row(record: dict[str, Any]) -> Row:
    """A ``drift_events`` row (:data:`DRIFT_COLUMNS`) from a DriftEvent record."""
    return _typed_row(record, _DRIFT)


def alert_row(record: dict[str, Any]) -> Row:
    """An ``alert_events`` / ``alert_transitions`` row (:data:`ALERT_FIELDS`) of an AlertEvent."""
    if record.get("notify") is None:  # written before the field existed
        record = {**record, "notify": True}
    return _typed_row(record, _ALERT)


CLAIM_COLUMNS = (
    "customer_id", "claim_id", "payer_id", "payer_name", "cpt_code", "cpt_group",
    "submitted_date", "decided_date", "decided_at", "outcome", "billed_amount", "allowed_amount",
    "paid_amount", "denial_reason_codes", "place_of_service", "source_partition", "source_offset",
)  # fmt: skip


def _pg_array(values: Sequence[Any]) -> str:
    """A Postgres text-array literal."""
    quoted = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def claim_row(record: dict[str, Any], partition: int, offset: int) -> Row:
    """A ``claim_records`` row (:data:`CLAIM_COLUMNS`, as text for COPY) of a ClaimDecided
    record, validated as the worker validates it (raises InvalidClaim): the sink stores exactly
    the claims the worker counts, with the values it counts them by."""
    claim, extras = parse_claim_record(record)
    paid = extras.paid_cents
    return (
        claim.customer_id, claim.claim_id, claim.payer_id, claim.payer_name, claim.cpt_code,
        claim.cpt_group, claim.submitted_date.isoformat(), claim.decided_date.isoformat(),
        # the event time the worker counts by, in one form: a claim sent again with its time
        # written another way is the same claim (feed health tells resent from amended by text)
        (_EPOCH + timedelta(milliseconds=claim.event_ms)).isoformat(), claim.outcome,
        _money(claim.billed_cents), _money(claim.allowed_cents),
        None if paid is None else _money(paid), _pg_array(extras.denial_reason_codes),
        extras.place_of_service, partition, offset,
    )  # fmt: skip
