"""Batched, idempotent writes of drift events and alert transitions.

Effectively-once by keys and versions, so a redelivered or replayed message changes nothing:

- ``drift_events``: insert, ``ON CONFLICT (event_id) DO NOTHING`` (ids are deterministic).
- ``alert_transitions``: insert, ``ON CONFLICT (alert_id, version) DO NOTHING``; ``seq`` is the
  notifier's replay cursor.
- ``alert_events``: upsert of the latest state, only when the incoming version is newer, so a
  stale transition never overwrites a newer one.

- ``claim_records``: one ``INSERT … SELECT FROM unnest(arrays) ON CONFLICT`` per batch (the
  bulk path), updated only by a later Kafka position of the claim, so a redelivered older
  version never overwrites a correction.
- ``operator_judgments``: the latest verdict per alert, by version.

Each batch is one transaction that also sends ``NOTIFY`` so notifiers wake up at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from sinks.tables import (
    ALERT_FIELDS,
    NOTIFY_CHANNEL,
    alert_events,
    alert_transitions,
    drift_events,
    operator_judgments,
)

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


_CLAIM_COLUMNS = (
    ("customer_id", "text"), ("claim_id", "text"), ("payer_id", "text"), ("payer_name", "text"),
    ("cpt_code", "text"), ("cpt_group", "text"), ("submitted_date", "date"),
    ("decided_date", "date"), ("decided_at", "timestamptz"), ("outcome", "text"),
    ("billed_amount", "numeric"), ("allowed_amount", "numeric"), ("paid_amount", "numeric"),
    ("denial_reason_codes", "text"), ("place_of_service", "text"),
    ("source_partition", "int"), ("source_offset", "bigint"),
)  # fmt: skip
_CLAIM_NAMES = [name for name, _ in _CLAIM_COLUMNS]
_CLAIMS_UPSERT = (
    f"INSERT INTO claim_records ({', '.join(_CLAIM_NAMES)}) "  # noqa: S608 - fixed text
    "SELECT " + ", ".join(
        "coalesce(string_to_array(denial_reason_codes, ','), '{}')"
        if name == "denial_reason_codes" else name
        for name in _CLAIM_NAMES
    )
    + " FROM unnest(" + ", ".join(f"%s::{kind}[]" for _, kind in _CLAIM_COLUMNS) + ") AS t("
    + ", ".join(_CLAIM_NAMES) + ") "
    "ON CONFLICT (customer_id, claim_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in _CLAIM_NAMES[2:])
    + ", stored_at = now() WHERE (claim_records.source_partition, claim_records.source_offset)"
    " < (excluded.source_partition, excluded.source_offset)"
)  # fmt: skip


def claim_row(record: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """A ``claim_records`` row from a validated ClaimDecided record and its Kafka position."""
    from streams.domain.claims import parse_claim

    claim = parse_claim(record)
    codes = record.get("denial_reason_codes") or []
    paid = record.get("paid_amount")
    return {
        "customer_id": claim.customer_id,
        "claim_id": claim.claim_id,
        "payer_id": claim.payer_id,
        "payer_name": claim.payer_name,
        "cpt_code": claim.cpt_code,
        "cpt_group": claim.cpt_group,
        "submitted_date": claim.submitted_date,
        "decided_date": claim.decided_date,
        "decided_at": datetime.fromtimestamp(claim.event_ms / 1000, tz=UTC),
        "outcome": claim.outcome,
        "billed_amount": Decimal(claim.billed_cents) / 100,
        "allowed_amount": Decimal(claim.allowed_cents) / 100,
        "paid_amount": None if paid in (None, "") else Decimal(str(paid)),
        "denial_reason_codes": ",".join(str(c) for c in codes) or None,
        "place_of_service": record.get("place_of_service"),
        "source_partition": partition,
        "source_offset": offset,
    }


def latest_claims(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim: the latest Kafka position wins (one upsert cannot touch a row twice)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["customer_id"], row["claim_id"])
        seen = latest.get(key)
        position = (row["source_partition"], row["source_offset"])
        if seen is None or position > (seen["source_partition"], seen["source_offset"]):
            latest[key] = row
    return [latest[k] for k in sorted(latest)]


class PostgresWriter:
    """Writes batches to Postgres through an async SQLAlchemy engine (psycopg 3)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(
        self,
        drift_rows: Sequence[dict[str, Any]],
        alert_rows: Sequence[dict[str, Any]],
        claim_rows: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Write one batch in one transaction; idempotent."""
        async with self.engine.begin() as conn:
            if claim_rows:
                rows = latest_claims(claim_rows)
                columns = tuple([row[name] for row in rows] for name in _CLAIM_NAMES)
                await conn.exec_driver_sql(_CLAIMS_UPSERT, columns)
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
                await self._judgments(conn, alert_rows)
                await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))

    @staticmethod
    async def _judgments(conn: Any, alert_rows: Sequence[dict[str, Any]]) -> None:
        judged: dict[str, dict[str, Any]] = {}
        for row in alert_rows:
            if row["transition"] == "judged" and row["verdict"]:
                seen = judged.get(row["alert_id"])
                if seen is None or row["version"] > seen["version"]:
                    judged[row["alert_id"]] = row
        if not judged:
            return
        stmt = insert(operator_judgments)
        stmt = stmt.on_conflict_do_update(
            index_elements=["alert_id"],
            set_={n: stmt.excluded[n] for n in ("version", "verdict", "judged_at")},
            where=operator_judgments.c.version < stmt.excluded.version,
        )
        values = [
            {"alert_id": r["alert_id"], "version": r["version"], "customer_id": r["customer_id"],
             "verdict": r["verdict"], "judged_at": r["last_seen"]}
            for r in sorted(judged.values(), key=lambda r: r["alert_id"])
        ]  # fmt: skip
        await conn.execute(stmt, values)
