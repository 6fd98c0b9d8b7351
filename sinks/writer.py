"""Batched, idempotent writes of drift events and alert transitions.

Effectively-once by keys and versions, so a redelivered or replayed message changes nothing:

- ``drift_events``: insert, ``ON CONFLICT (event_id) DO NOTHING`` (ids are deterministic).
- ``alert_transitions``: insert, ``ON CONFLICT (alert_id, version) DO NOTHING``; ``seq`` is the
  notifier's replay cursor.
- ``alert_events``: upsert of the latest state, only when the incoming version is newer, so a
  stale transition never overwrites a newer one.

- ``claim_records``: upserted, and updated only by a later Kafka position of the claim, so a
  redelivered older version never overwrites a correction.

The bulk path: each batch is ``COPY``-ed into temporary staging tables (Postgres parses and
checks the values in C), then moved with one ``INSERT … SELECT … ON CONFLICT`` per table.
- ``operator_judgments``: the latest verdict per alert, by version.

Each batch is one transaction that also sends ``NOTIFY`` so notifiers wake up at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from sinks.tables import ALERT_FIELDS, NOTIFY_CHANNEL, drift_events

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


CLAIM_COLUMNS = (
    "customer_id", "claim_id", "payer_id", "payer_name", "cpt_code", "cpt_group",
    "submitted_date", "decided_date", "decided_at", "outcome", "billed_amount", "allowed_amount",
    "paid_amount", "denial_reason_codes", "place_of_service", "source_partition", "source_offset",
)  # fmt: skip
# The statements below are built once from fixed column names; no value is interpolated.
_STAGE_CLAIMS = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_claims ("
    + ", ".join(f"{c} text" for c in CLAIM_COLUMNS[:-2])
    + ", source_partition int, source_offset bigint) ON COMMIT DELETE ROWS"
)
_MOVE_CLAIMS = (
    f"INSERT INTO claim_records ({', '.join(CLAIM_COLUMNS)}) "
    "SELECT DISTINCT ON (customer_id, claim_id) customer_id, claim_id, payer_id, payer_name, "
    "cpt_code, cpt_group, submitted_date::date, decided_date::date, "
    "coalesce(decided_at::timestamptz, decided_date::date::timestamp AT TIME ZONE 'UTC'), "
    "upper(outcome), billed_amount::numeric(14, 2), allowed_amount::numeric(14, 2), "
    "paid_amount::numeric(14, 2), coalesce(denial_reason_codes::text[], '{}'), "
    "place_of_service, source_partition, source_offset FROM stage_claims "
    "ORDER BY customer_id, claim_id, source_partition DESC, source_offset DESC "
    "ON CONFLICT (customer_id, claim_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in CLAIM_COLUMNS[2:])
    + ", stored_at = now() WHERE (claim_records.source_partition, claim_records.source_offset)"
    " < (excluded.source_partition, excluded.source_offset)"
)
DRIFT_COLUMNS = tuple(c.name for c in drift_events.columns)
_STAGE_DRIFT = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_drift (LIKE drift_events) ON COMMIT DELETE ROWS"
)
_MOVE_DRIFT = "INSERT INTO drift_events SELECT * FROM stage_drift ON CONFLICT (event_id) DO NOTHING"
_STAGE_ALERTS = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_alerts (LIKE alert_events, ord int) "
    "ON COMMIT DELETE ROWS"
)
_ALERT_LIST = ", ".join(ALERT_FIELDS)
_MOVE_TRANSITIONS = (
    f"INSERT INTO alert_transitions ({_ALERT_LIST}) SELECT {_ALERT_LIST} FROM stage_alerts "
    "ORDER BY ord ON CONFLICT (alert_id, version) DO NOTHING"
)
_MOVE_ALERTS = (
    f"INSERT INTO alert_events ({_ALERT_LIST}) SELECT DISTINCT ON (alert_id) {_ALERT_LIST} "
    "FROM stage_alerts ORDER BY alert_id, version DESC ON CONFLICT (alert_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in ALERT_FIELDS[1:])
    + " WHERE alert_events.version < excluded.version"
)
_MOVE_JUDGMENTS = (
    "INSERT INTO operator_judgments (alert_id, version, customer_id, verdict, judged_at) "
    "SELECT DISTINCT ON (alert_id) alert_id, version, customer_id, verdict, last_seen "
    "FROM stage_alerts WHERE transition = 'judged' AND verdict IS NOT NULL "
    "ORDER BY alert_id, version DESC ON CONFLICT (alert_id) DO UPDATE SET "
    "version = excluded.version, verdict = excluded.verdict, judged_at = excluded.judged_at "
    "WHERE operator_judgments.version < excluded.version"
)


def _pg_array(values: Sequence[Any]) -> str | None:
    """A Postgres text-array literal, or None for no values."""
    if not values:
        return None
    quoted = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def claim_row_fast(record: dict[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
    """A staging row from a ClaimDecided record, with as little Python as possible.

    Postgres parses dates, times and amounts during COPY and the migration's CHECKs reject what
    :func:`streams.domain.claims.parse_claim` would; a batch that fails is retried row by row
    through :func:`claim_row`, which names the reason.
    """
    from streams.domain.cpt import cpt_group_for

    cpt_code = str(record["cpt_code"])
    paid = record.get("paid_amount")
    return (
        str(record["customer_id"]), str(record["claim_id"]), str(record["payer_id"]),
        record.get("payer_name"), cpt_code, record.get("cpt_group") or cpt_group_for(cpt_code),
        str(record["submitted_date"]), str(record["decided_date"]), record.get("decided_at"),
        str(record["outcome"]), str(record["billed_amount"]), str(record["allowed_amount"]),
        None if paid in (None, "") else str(paid),
        _pg_array(record.get("denial_reason_codes") or ()), record.get("place_of_service"),
        partition, offset,
    )  # fmt: skip


def claim_row(record: dict[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
    """A staging row from a ClaimDecided record, validated first (raises InvalidClaim)."""
    from streams.domain.claims import parse_claim

    claim = parse_claim(record)
    return claim_row_fast(
        {
            **record,
            "cpt_group": claim.cpt_group,
            "decided_at": datetime.fromtimestamp(claim.event_ms / 1000, tz=UTC).isoformat(),
            "outcome": claim.outcome,
            "billed_amount": str(Decimal(claim.billed_cents) / 100),
            "allowed_amount": str(Decimal(claim.allowed_cents) / 100),
        },
        partition,
        offset,
    )


class PostgresWriter:
    """Writes batches to Postgres through an async SQLAlchemy engine (psycopg 3)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(
        self,
        drift_rows: Sequence[dict[str, Any]],
        alert_rows: Sequence[dict[str, Any]],
        claim_rows: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """Write one batch in one transaction; idempotent."""
        async with self.engine.begin() as conn:
            raw = await conn.get_raw_connection()
            pg: Any = raw.driver_connection
            async with pg.cursor() as cur:
                if claim_rows:
                    await self._stage(cur, _STAGE_CLAIMS, "stage_claims", CLAIM_COLUMNS, claim_rows)
                    await cur.execute(_MOVE_CLAIMS)
                if drift_rows:
                    rows = [tuple(r[c] for c in DRIFT_COLUMNS) for r in drift_rows]
                    await self._stage(cur, _STAGE_DRIFT, "stage_drift", DRIFT_COLUMNS, rows)
                    await cur.execute(_MOVE_DRIFT)
                if alert_rows:
                    rows = [(*(r[c] for c in ALERT_FIELDS), i) for i, r in enumerate(alert_rows)]
                    columns = (*ALERT_FIELDS, "ord")
                    await self._stage(cur, _STAGE_ALERTS, "stage_alerts", columns, rows)
                    for move in (_MOVE_TRANSITIONS, _MOVE_ALERTS, _MOVE_JUDGMENTS):
                        await cur.execute(move)
                    await cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")

    @staticmethod
    async def _stage(
        cur: Any, create: str, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        await cur.execute(create)
        async with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)
