"""Read-side queries of the console's dashboard: one customer's open alerts, claims and
operator activity. Each is one SQL statement over bound parameters."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from sinks.tables import alert_events, alert_transitions

TREND_DAYS = 28  # the denial-rate trend, ending on the as-of date
CURRENT_DAYS, BASELINE_DAYS = 30, 60  # the top payers' windows, ending on the as-of date


async def open_alerts_by_level(conn: AsyncConnection, customer_id: str) -> dict[str, int]:
    """Open (active or acknowledged) alerts per severity level."""
    a = alert_events.c
    stmt = (
        select(a.severity_level, func.count())
        .where(a.customer_id == customer_id, a.status != "resolved")
        .group_by(a.severity_level)
    )
    return {level: count for level, count in (await conn.execute(stmt)).all()}


async def latest_decided(conn: AsyncConnection, customer_id: str) -> date | None:
    """The customer's latest decided date of a decided claim, tomorrow at the latest (a
    mistyped far date does not empty the dashboard): its "today" (feeds arrive late)."""
    stmt = text(
        "SELECT max(decided_date) FROM claim_records WHERE customer_id = :customer_id"
        " AND outcome <> 'PENDED' AND decided_date <= current_date + 1"
    )
    value: date | None = (await conn.execute(stmt, {"customer_id": customer_id})).scalar()
    return value


_DAILY = text(
    """
    SELECT decided_date AS day,
           count(*) AS decided,
           count(*) FILTER (WHERE outcome = 'DENIED') AS denied
    FROM claim_records
    WHERE customer_id = :customer_id AND outcome <> 'PENDED'
      AND decided_date > :until - :days AND decided_date <= :until
    GROUP BY decided_date
    ORDER BY decided_date
    """
)


async def daily_denials(
    conn: AsyncConnection, customer_id: str, until: date, days: int = TREND_DAYS
) -> list[dict[str, Any]]:
    """Decided and denied claims per decided day, the ``days`` days ending on ``until``."""
    params = {"customer_id": customer_id, "until": until, "days": days}
    return [dict(row) for row in (await conn.execute(_DAILY, params)).mappings()]


_PAYERS = text(
    """
    SELECT payer_id,
           count(*) FILTER (WHERE decided_date <= :baseline_end) AS baseline_claims,
           count(*) FILTER (WHERE decided_date <= :baseline_end AND outcome = 'DENIED')
               AS baseline_denied,
           count(*) FILTER (WHERE decided_date > :baseline_end) AS current_claims,
           count(*) FILTER (WHERE decided_date > :baseline_end AND outcome = 'DENIED')
               AS current_denied,
           (percentile_cont(0.5) WITHIN GROUP (ORDER BY allowed_amount) FILTER (
               WHERE decided_date <= :baseline_end AND outcome = 'PAID' AND allowed_amount > 0
           ))::float8 AS median_allowed
    FROM claim_records
    WHERE customer_id = :customer_id AND outcome <> 'PENDED'
      AND decided_date > :baseline_start AND decided_date <= :until
    GROUP BY payer_id
    """
)


async def payer_windows(
    conn: AsyncConnection, customer_id: str, until: date
) -> list[dict[str, Any]]:
    """Per payer: claims and denials of the :data:`CURRENT_DAYS` ending on ``until`` and of the
    :data:`BASELINE_DAYS` before, and the median allowed amount of the baseline's paid claims."""
    params = {
        "customer_id": customer_id,
        "until": until,
        "baseline_end": until - timedelta(days=CURRENT_DAYS),
        "baseline_start": until - timedelta(days=CURRENT_DAYS + BASELINE_DAYS),
    }
    return [dict(row) for row in (await conn.execute(_PAYERS, params)).mappings()]


TIMELINE_ALERTS = 40


async def alert_timeline(
    conn: AsyncConnection, customer_id: str, limit: int = TIMELINE_ALERTS
) -> list[dict[str, Any]]:
    """The customer's ``limit`` alerts seen last (event time), open or resolved, with the event
    time each first and last saw its drift."""
    a = alert_events.c
    stmt = (
        select(
            a.alert_id, a.payer_id, a.cpt_group, a.drift_type, a.severity_level, a.status,
            a.first_seen, a.last_seen,
        )
        .where(a.customer_id == customer_id)
        .order_by(a.last_seen.desc(), a.alert_id)
        .limit(limit)
    )  # fmt: skip
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]


async def recent_transitions(
    conn: AsyncConnection, customer_id: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The customer's latest alert transitions, newest first, with who made them and when."""
    t = alert_transitions.c
    stmt = (
        select(
            t.alert_id, t.version, t.transition, t.status, t.severity_level, t.payer_id,
            t.cpt_group, t.drift_type, t.actor, t.note, t.assignee, t.stored_at,
        )
        .where(t.customer_id == customer_id)
        .order_by(t.seq.desc())
        .limit(limit)
    )  # fmt: skip
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]


FEED_DAYS = 14  # the feed's days on the dashboard, ending today (UTC)

_FEED = text(
    """
    SELECT day, received, new, resent, amended, invalid
    FROM feed_days
    WHERE customer_id = :customer_id AND day > :today - :days AND day <= :today
    ORDER BY day
    """
)


async def feed_days(
    conn: AsyncConnection, customer_id: str, today: date, days: int = FEED_DAYS
) -> list[dict[str, Any]]:
    """What the customer's feed delivered per day the sink stored it, the ``days`` ending on
    ``today``; days it delivered nothing are absent."""
    params = {"customer_id": customer_id, "today": today, "days": days}
    return [dict(row) for row in (await conn.execute(_FEED, params)).mappings()]


async def last_received(conn: AsyncConnection, customer_id: str) -> datetime | None:
    """When the sink last stored a claim of the customer's feed (wall clock)."""
    stmt = text("SELECT max(last_received_at) FROM feed_days WHERE customer_id = :customer_id")
    value: datetime | None = (await conn.execute(stmt, {"customer_id": customer_id})).scalar()
    return value
