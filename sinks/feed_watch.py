"""What the feed watch reads of each customer's feed: its days in ``feed_days`` and its rejected
claims in ``claim_rejections`` (both written by the sink), as of the wall clock ``now``."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.stages.feed_watch import FeedState

_DAYS = text(
    "SELECT customer_id, day, received, last_received_at FROM feed_days WHERE day >= :since"
)
_REJECTED = text(
    """
    SELECT customer_id,
           count(*) FILTER (WHERE rejected_at >= :hour_ago) AS last_hour,
           count(*) FILTER (WHERE rejected_at < :hour_ago) AS week_before
    FROM claim_rejections
    WHERE rejected_at >= :week_ago AND rejected_at < :now AND customer_id IS NOT NULL
    GROUP BY customer_id
    """
)


async def feed_states(conn: AsyncConnection, now: datetime, history_days: int) -> list[FeedState]:
    """Every customer with claims in the last ``history_days`` (UTC days, today included), by
    customer id."""
    since = now.date() - timedelta(days=history_days)
    received: dict[str, dict[date, int]] = {}
    last: dict[str, datetime] = {}
    for customer, day, count, at in await conn.execute(_DAYS, {"since": since}):
        received.setdefault(customer, {})[day] = count
        if at is not None and (customer not in last or at > last[customer]):
            last[customer] = at
    hour_ago = now - timedelta(hours=1)
    params = {"now": now, "hour_ago": hour_ago, "week_ago": hour_ago - timedelta(days=7)}
    rejected = {r[0]: (r[1], r[2]) for r in await conn.execute(_REJECTED, params)}
    return [
        FeedState(customer, days, last.get(customer), *rejected.get(customer, (0, 0)))
        for customer, days in sorted(received.items())
    ]
