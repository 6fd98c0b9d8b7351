"""Mapping between domain events and the Avro/JSON records (docs/semantics.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from streams.domain.events import AlertTransitioned, DriftDetected

_DRIFT_TIMES = {
    "baseline_start": "baseline_start_ms",
    "baseline_end": "baseline_end_ms",
    "current_start": "current_start_ms",
    "current_end": "current_end_ms",
    "detected_at": "detected_at_ms",
}
_ALERT_TIMES = {"first_seen": "first_seen_ms", "last_seen": "last_seen_ms"}


def drift_record(event: DriftDetected) -> dict[str, Any]:
    """DriftEvent record (times in epoch milliseconds, as Avro timestamp-millis)."""
    data = event.to_dict()
    for record_name, domain_name in _DRIFT_TIMES.items():
        data[record_name] = data.pop(domain_name)
    return data


def alert_record(event: AlertTransitioned) -> dict[str, Any]:
    """AlertEvent record (times in epoch milliseconds, as Avro timestamp-millis)."""
    data = event.to_dict()
    for record_name, domain_name in _ALERT_TIMES.items():
        data[record_name] = data.pop(domain_name)
    return data


def to_epoch_ms(value: Any) -> int:
    """Avro readers return timestamp-millis as aware datetimes; JSON carries numbers."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    return int(value)
