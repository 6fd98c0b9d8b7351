"""Read-side queries the notifier's HTTP API serves; each is one SQL statement (no N+1).

All take an async SQLAlchemy connection and bound parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from sinks.tables import alert_events, drift_events
from streams.domain.values import LEVELS


async def active_alerts(conn: AsyncConnection, customer_id: str) -> list[dict[str, Any]]:
    """The customer's open (active or acknowledged) alerts, most recently seen first, each with
    its drift event's ``baseline_value`` and ``current_value`` (null if not stored)."""
    a, d = alert_events.c, drift_events.c
    stmt = (
        select(alert_events, d.baseline_value, d.current_value)
        .outerjoin(drift_events, d.event_id == a.drift_event_id)
        .where(a.customer_id == customer_id, a.status != "resolved")
        .order_by(a.last_seen.desc(), a.alert_id)
    )
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]


@dataclass(frozen=True, slots=True)
class DriftFilter:
    """Filters of :func:`drift_events_page`; None means no filter."""

    min_severity_level: str = "info"
    payer_id: str | None = None
    drift_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def drift_events_page(
    conn: AsyncConnection,
    customer_id: str,
    filters: DriftFilter,
    limit: int = 100,
    before: tuple[datetime, str] | None = None,
) -> list[dict[str, Any]]:
    """Drift events newest first, keyset-paginated by ``(detected_at, event_id)``."""
    c = drift_events.c
    levels = LEVELS[LEVELS.index(filters.min_severity_level) :]
    conditions = [c.customer_id == customer_id, c.severity_level.in_(levels)]
    if filters.payer_id is not None:
        conditions.append(c.payer_id == filters.payer_id)
    if filters.drift_type is not None:
        conditions.append(c.drift_type == filters.drift_type)
    if filters.since is not None:
        conditions.append(c.detected_at >= filters.since)
    if filters.until is not None:
        conditions.append(c.detected_at < filters.until)
    if before is not None:
        conditions.append(
            (c.detected_at < before[0]) | and_(c.detected_at == before[0], c.event_id < before[1])
        )
    stmt = (
        select(drift_events)
        .where(*conditions)
        .order_by(c.detected_at.desc(), c.event_id.desc())
        .limit(limit)
    )
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]


_MONTHLY_DENIALS = text(
    """
    SELECT date_trunc('month', decided_date)::date AS month,
           payer_id,
           count(*) FILTER (WHERE outcome <> 'PENDED') AS decided,
           count(*) FILTER (WHERE outcome = 'DENIED') AS denied,
           round(count(*) FILTER (WHERE outcome = 'DENIED')::numeric
                 / nullif(count(*) FILTER (WHERE outcome <> 'PENDED'), 0), 4) AS denial_rate
    FROM claim_records
    WHERE customer_id = :customer_id AND decided_date >= :since AND decided_date < :until
    GROUP BY 1, 2
    ORDER BY month, payer_id COLLATE "C"
    """
)


async def monthly_denial_trend(
    conn: AsyncConnection, customer_id: str, since: date, until: date
) -> list[dict[str, Any]]:
    """Decided and denied claims and the denial rate per month and payer (the roadmap's QW-1)."""
    params = {"customer_id": customer_id, "since": since, "until": until}
    return [dict(row) for row in (await conn.execute(_MONTHLY_DENIALS, params)).mappings()]


async def alert_with_drift(
    conn: AsyncConnection, customer_id: str, alert_id: str
) -> dict[str, Any] | None:
    """One alert of the customer with its drift event's values and windows (None if unknown)."""
    a, d = alert_events.c, drift_events.c
    stmt = (
        select(
            alert_events, d.baseline_value, d.current_value, d.window_days, d.baseline_start,
            d.baseline_end, d.current_start, d.current_end,
        )
        .outerjoin(drift_events, d.event_id == a.drift_event_id)
        .where(a.customer_id == customer_id, a.alert_id == alert_id)
    )  # fmt: skip
    row = (await conn.execute(stmt)).mappings().first()
    return None if row is None else dict(row)


_KEY_DAILY = text(
    """
    SELECT decided_date AS day,
           count(*) AS decided,
           count(*) FILTER (WHERE outcome = 'DENIED') AS denied,
           avg(decided_date - submitted_date)::float8 AS lag_days,
           exp(avg(ln(allowed_amount)) FILTER (WHERE allowed_amount > 0))::float8 AS allowed_geomean
    FROM claim_records
    WHERE customer_id = :customer_id AND payer_id = :payer_id AND cpt_group = :cpt_group
      AND outcome <> 'PENDED' AND decided_date >= :since AND decided_date < :until
    GROUP BY decided_date
    ORDER BY decided_date
    """
)


async def key_daily(
    conn: AsyncConnection, customer_id: str, payer_id: str, cpt_group: str, since: date,
    until: date,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per decided day of one key: decided and denied claims, mean decision lag in days and
    geometric-mean allowed amount: the daily values behind the worker's three drift types."""
    params = {"customer_id": customer_id, "payer_id": payer_id, "cpt_group": cpt_group,
              "since": since, "until": until}  # fmt: skip
    return [dict(row) for row in (await conn.execute(_KEY_DAILY, params)).mappings()]
