"""Read-side queries the notifier's HTTP API serves; each is one SQL statement (no N+1).

All take an async SQLAlchemy connection and bound parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from sinks.tables import alert_events, alert_transitions, drift_events
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


async def drift_event(
    conn: AsyncConnection, customer_id: str, event_id: str
) -> dict[str, Any] | None:
    """One drift event of the customer, as stored (None if unknown)."""
    d = drift_events.c
    stmt = select(drift_events).where(d.customer_id == customer_id, d.event_id == event_id)
    row = (await conn.execute(stmt)).mappings().first()
    return None if row is None else dict(row)


async def alert_history(
    conn: AsyncConnection, customer_id: str, alert_id: str
) -> list[dict[str, Any]]:
    """Every stored version of one alert of the customer, oldest first, with who acted and
    when the sink stored it."""
    t = alert_transitions.c
    stmt = (
        select(
            t.version, t.transition, t.status, t.severity_level, t.occurrence_count,
            t.acknowledged_by, t.resolved_by, t.resolution, t.verdict, t.message, t.assignee,
            t.actor, t.note, t.last_seen, t.stored_at,
        )
        .where(t.customer_id == customer_id, t.alert_id == alert_id)
        .order_by(t.version)
    )  # fmt: skip
    return [dict(row) for row in (await conn.execute(stmt)).mappings()]


@dataclass(frozen=True, slots=True)
class KeyWindows:
    """One key and a drift event's two windows of decided dates (each end excluded)."""

    customer_id: str
    payer_id: str
    cpt_group: str
    baseline_start: date
    baseline_end: date
    current_start: date
    current_end: date

    def params(self) -> dict[str, Any]:
        """The bound parameters of the queries below."""
        return {name: getattr(self, name) for name in self.__slots__}


_KEY_IN_WINDOWS = """
    FROM claim_records
    WHERE customer_id = :customer_id AND payer_id = :payer_id AND cpt_group = :cpt_group
      AND outcome <> 'PENDED'
      AND decided_date >= least(:baseline_start, :current_start)
      AND decided_date < greatest(:baseline_end, :current_end)
"""
_IN_BASELINE = "decided_date >= :baseline_start AND decided_date < :baseline_end"
_IN_CURRENT = "decided_date >= :current_start AND decided_date < :current_end"
# Per denial reason code: the denials that carry it in each window.
_REASONS = text(
    f"""
    SELECT code,
           count(*) FILTER (WHERE {_IN_BASELINE}) AS baseline,
           count(*) FILTER (WHERE {_IN_CURRENT}) AS current
    FROM (SELECT decided_date, unnest(denial_reason_codes) AS code {_KEY_IN_WINDOWS}
          AND outcome = 'DENIED') AS denials
    GROUP BY code
    """  # noqa: S608 - fixed fragments; values are bound parameters
)
# Per CPT code: claims decided and denied in each window.
_CPT_CODES = text(
    f"""
    SELECT cpt_code AS code,
           count(*) FILTER (WHERE {_IN_BASELINE}) AS baseline_claims,
           count(*) FILTER (WHERE {_IN_BASELINE} AND outcome = 'DENIED') AS baseline,
           count(*) FILTER (WHERE {_IN_CURRENT}) AS current_claims,
           count(*) FILTER (WHERE {_IN_CURRENT} AND outcome = 'DENIED') AS current
    {_KEY_IN_WINDOWS}
    GROUP BY cpt_code
    """
)
_MEDIAN_ALLOWED = text(
    f"""
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY allowed_amount)::float8
    {_KEY_IN_WINDOWS} AND {_IN_BASELINE} AND outcome = 'PAID' AND allowed_amount > 0
    """
)
# A handful of the current window's claims that show the change, by drift type.
_EXAMPLES = {
    drift_type: text(
        f"SELECT claim_id {_KEY_IN_WINDOWS} AND {_IN_CURRENT} {where} "
        f"ORDER BY {order}, claim_id LIMIT 5"
    )
    for drift_type, where, order in (
        ("denial_rate", "AND outcome = 'DENIED'", "decided_date DESC"),
        ("decision_lag", "", "decided_date - submitted_date DESC"),
        ("allowed_amount", "AND allowed_amount > 0", "allowed_amount"),
    )
}


async def key_breakdown(conn: AsyncConnection, key: KeyWindows, drift_type: str) -> dict[str, Any]:
    """What the claims of ``key`` say about a change between its two windows: denials per
    reason code and claims and denials per CPT code in each window, the median allowed amount
    of the baseline's paid claims, and up to five example claim ids of the current window
    (denied; decided slowest; allowed least: by ``drift_type``)."""
    params = key.params()
    return {
        "reasons": [dict(r) for r in (await conn.execute(_REASONS, params)).mappings()],
        "cpt_codes": [dict(r) for r in (await conn.execute(_CPT_CODES, params)).mappings()],
        "median_allowed": (await conn.execute(_MEDIAN_ALLOWED, params)).scalar(),
        "examples": list((await conn.execute(_EXAMPLES[drift_type], params)).scalars()),
    }
