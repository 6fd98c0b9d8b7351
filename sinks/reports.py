"""Scheduled jobs' SQL: the weekly drift summary per customer, and retention.

Each function is one statement (or one per table for retention) with bound parameters only.
Weeks are ISO weeks (Monday 00:00 UTC) of the drift events' ``detected_at``, the event time.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_WEEKLY = text(
    """
    WITH drift AS (
        SELECT customer_id, drift_type, severity_level, payer_id
        FROM drift_events
        WHERE detected_at >= :start AND detected_at < :end
    ), alerts AS (
        SELECT customer_id, transition
        FROM alert_transitions
        WHERE last_seen >= :start AND last_seen < :end
    ), customers AS (
        SELECT customer_id FROM drift UNION SELECT customer_id FROM alerts
    )
    SELECT c.customer_id,
           (SELECT count(*) FROM drift d WHERE d.customer_id = c.customer_id) AS drift_events,
           (SELECT coalesce(jsonb_object_agg(k, n), '{}'::jsonb) FROM (
               SELECT drift_type || ':' || severity_level AS k, count(*) AS n
               FROM drift d WHERE d.customer_id = c.customer_id GROUP BY 1) t) AS by_type_level,
           (SELECT coalesce(jsonb_agg(jsonb_build_object('payer_id', payer_id, 'drift_events', n)
                                      ORDER BY n DESC, payer_id), '[]'::jsonb) FROM (
               SELECT payer_id, count(*) AS n FROM drift d WHERE d.customer_id = c.customer_id
               GROUP BY payer_id ORDER BY n DESC, payer_id LIMIT 5) t) AS top_payers,
           (SELECT coalesce(jsonb_object_agg(transition, n), '{}'::jsonb) FROM (
               SELECT transition, count(*) AS n FROM alerts a
               WHERE a.customer_id = c.customer_id GROUP BY 1) t) AS alert_transitions
    FROM customers c
    ORDER BY c.customer_id
    """
)

_UPSERT = text(
    "INSERT INTO weekly_reports (customer_id, week_start, report) "
    "VALUES (:customer_id, :week_start, CAST(:report AS jsonb)) "
    "ON CONFLICT (customer_id, week_start) DO UPDATE SET report = excluded.report, "
    "created_at = now()"
)

# Table -> its time column; rows older than the cutoff go. Open alerts and the audit trail stay.
RETENTION = {
    "claim_records": "decided_date",
    "drift_events": "detected_at",
    "alert_transitions": "last_seen",
}
# A transition a pending notification is about stays until it is sent or given up.
_NOT_PENDING = (
    " AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.seq = t.seq AND n.status = 'pending')"
)
# Tables kept by the wall clock (what the sink received, and when): older than the cutoff go.
WALL_CLOCK_RETENTION = {"feed_days": "day", "claim_rejections": "rejected_at"}


def last_full_week(now: datetime) -> date:
    """The Monday that starts the last ISO week that has fully ended before ``now`` (UTC)."""
    today = now.astimezone(UTC).date()
    return today - timedelta(days=today.weekday() + 7)


async def weekly_summaries(conn: AsyncConnection, week_start: date) -> list[dict[str, Any]]:
    """One summary per customer with drift events or alert transitions in that week."""
    start = datetime.combine(week_start, time(), UTC)
    params = {"start": start, "end": start + timedelta(days=7)}
    return [
        {"week_start": week_start.isoformat(), **dict(row)}
        for row in (await conn.execute(_WEEKLY, params)).mappings()
    ]


async def store_summaries(conn: AsyncConnection, summaries: list[dict[str, Any]]) -> None:
    """Upsert the summaries into ``weekly_reports`` (a rerun of the same week replaces them)."""
    for summary in summaries:
        await conn.execute(
            _UPSERT,
            {"customer_id": summary["customer_id"],
             "week_start": date.fromisoformat(summary["week_start"]),
             "report": json.dumps(summary)},
        )  # fmt: skip


async def apply_retention(
    conn: AsyncConnection, cutoff: datetime, age: timedelta
) -> dict[str, int]:
    """Delete rows older than ``cutoff`` (now less the retention ``age``) from
    :data:`RETENTION`'s tables; counts per table.

    A customer's rows within ``age`` of its own latest row stay: a feed that stalled, or a
    customer onboarding months of history, keeps what its windows (which run on the customer's
    event time) still hold. Resolved alerts whose last transition is older than ``cutoff`` also
    leave ``alert_events``; open ones stay. Feed health (:data:`WALL_CLOCK_RETENTION`), the
    delivery log's settled notifications of closed alerts and ended silences go by the wall
    clock alone.
    """
    deleted = {}
    for table, column in RETENTION.items():
        statement = text(
            f"DELETE FROM {table} t USING (SELECT customer_id, max({column}) AS latest "  # noqa: S608 -- fixed names
            f"FROM {table} GROUP BY customer_id) m WHERE t.customer_id = m.customer_id "
            f"AND t.{column} < :cutoff AND t.{column} < m.latest - :age"
            + (_NOT_PENDING if table == "alert_transitions" else "")
        )
        params = {"cutoff": cutoff if column != "decided_date" else cutoff.date(), "age": age}
        result = await conn.execute(statement, params)
        deleted[table] = result.rowcount
    for table, column in WALL_CLOCK_RETENTION.items():
        statement = text(f"DELETE FROM {table} WHERE {column} < :cutoff")  # noqa: S608 -- fixed names
        whole_days = column == "day"  # a day goes once all of it is past the cutoff
        result = await conn.execute(statement, {"cutoff": cutoff.date() if whole_days else cutoff})
        deleted[table] = result.rowcount
    result = await conn.execute(
        text("DELETE FROM alert_events WHERE status = 'resolved' AND last_seen < :cutoff"),
        {"cutoff": cutoff},
    )
    deleted["alert_events"] = result.rowcount
    # The delivery log: settled notifications of alerts no longer open (an open alert's first
    # and last notifications time its reminders and escalation), and silences long ended.
    result = await conn.execute(
        text(
            "DELETE FROM notifications n WHERE n.status <> 'pending' AND n.created_at < :cutoff"
            " AND NOT EXISTS (SELECT 1 FROM alert_events a WHERE a.alert_id = n.alert_id"
            " AND a.status <> 'resolved')"
        ),
        {"cutoff": cutoff},
    )
    deleted["notifications"] = result.rowcount
    result = await conn.execute(
        text("DELETE FROM silences WHERE ends_at < :cutoff"), {"cutoff": cutoff}
    )
    deleted["silences"] = result.rowcount
    return deleted
