"""Batched, idempotent writes of drift events and alert transitions.

Effectively-once by keys and versions, so a redelivered or replayed message changes nothing:

- ``drift_events``: insert, ``ON CONFLICT (event_id) DO NOTHING`` (ids are deterministic).
- ``alert_transitions``: insert, ``ON CONFLICT (alert_id, version) DO NOTHING``; ``seq`` is the
  notifier's replay cursor.
- ``alert_events``: upsert of the latest state, only when the incoming version is newer, so a
  stale transition never overwrites a newer one.

Each batch is one transaction that also sends ``NOTIFY`` so notifiers wake up at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from sinks.tables import ALERT_FIELDS, NOTIFY_CHANNEL, alert_events, alert_transitions, drift_events

_DRIFT_TIMES = ("baseline_start", "baseline_end", "current_start", "current_end", "detected_at")
_ALERT_TIMES = ("first_seen", "last_seen")


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def drift_row(record: dict[str, Any]) -> dict[str, Any]:
    """A ``drift_events`` row from a DriftEvent record."""
    row = {c.name: record[c.name] for c in drift_events.columns}
    for name in _DRIFT_TIMES:
        row[name] = _as_datetime(row[name])
    return row


def alert_row(record: dict[str, Any]) -> dict[str, Any]:
    """An ``alert_events`` / ``alert_transitions`` row from an AlertEvent record."""
    row = {name: record.get(name) for name in ALERT_FIELDS}
    row["notify"] = bool(record.get("notify", True))
    for name in _ALERT_TIMES:
        row[name] = _as_datetime(row[name])
    return row


class PostgresWriter:
    """Writes batches to Postgres through an async SQLAlchemy engine (psycopg 3)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(
        self, drift_rows: Sequence[dict[str, Any]], alert_rows: Sequence[dict[str, Any]]
    ) -> None:
        """Write one batch in one transaction; idempotent."""
        async with self.engine.begin() as conn:
            if drift_rows:
                await conn.execute(
                    insert(drift_events).on_conflict_do_nothing(index_elements=["event_id"]),
                    list(drift_rows),
                )
            if alert_rows:
                await conn.execute(
                    insert(alert_transitions).on_conflict_do_nothing(
                        index_elements=["alert_id", "version"]
                    ),
                    list(alert_rows),
                )
                latest: dict[str, dict[str, Any]] = {}
                for row in alert_rows:
                    current = latest.get(row["alert_id"])
                    if current is None or row["version"] > current["version"]:
                        latest[row["alert_id"]] = row
                stmt = insert(alert_events)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["alert_id"],
                    set_={name: stmt.excluded[name] for name in ALERT_FIELDS if name != "alert_id"},
                    where=alert_events.c.version < stmt.excluded.version,
                )
                await conn.execute(stmt, sorted(latest.values(), key=lambda r: r["alert_id"]))
                await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
