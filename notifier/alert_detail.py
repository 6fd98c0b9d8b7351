"""An alert explained (``/api/alert-detail``): its change in words, its drift event, the reason
and CPT codes behind it, example claims, its key's metrics day by day and its history."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.answers import AlertDetail, DetailDay, DriftEvent, HistoryEntry
from notifier.explain import cpt_changes, explain, reason_changes, share
from notifier.messages import Alert
from sinks.queries import (
    KeyWindows,
    alert_history,
    alert_with_drift,
    drift_event,
    key_breakdown,
    key_daily,
)
from sinks.tables import ALERT_FIELDS
from streams.domain.values import FEED_DRIFT_TYPES

DAYS_MAX = 400  # of a key's metrics the API reads at most (the detail: to its current window)
WINDOW_BOUNDS = ("baseline_start", "baseline_end", "current_start", "current_end")


async def alert_detail(
    conn: AsyncConnection, customer_id: str, alert_id: str
) -> AlertDetail | None:
    """The customer's alert explained, or None if it has no such alert."""
    row = await alert_with_drift(conn, customer_id, alert_id)
    if row is None:
        return None
    history = await alert_history(conn, customer_id, alert_id)
    drift = await drift_event(conn, customer_id, row["drift_event_id"])
    if drift is None or drift["drift_type"] in FEED_DRIFT_TYPES:  # a feed's: no key's claims
        return _detail(row, drift, history, {}, [])
    day = {name: drift[name].astimezone(UTC).date() for name in WINDOW_BOUNDS}  # UTC midnights
    key = KeyWindows(customer_id, drift["payer_id"], drift["cpt_group"],
                     *(day[name] for name in WINDOW_BOUNDS))  # fmt: skip
    breakdown = await key_breakdown(conn, key, drift["drift_type"])
    since = max(min(key.baseline_start, key.current_start),
                key.current_end - timedelta(days=DAYS_MAX))  # fmt: skip
    days = await key_daily(conn, customer_id, key.payer_id, key.cpt_group, since, key.current_end)
    return _detail(row, drift, history, breakdown, days)


_ALERT_KEYS = (*ALERT_FIELDS, "first_notified_at", "baseline_value", "current_value")


def _detail(
    row: dict[str, Any],
    drift: dict[str, Any] | None,
    history: list[dict[str, Any]],
    breakdown: dict[str, Any],
    days: list[dict[str, Any]],
) -> AlertDetail:
    """An alert's detail (:class:`AlertDetail`) from its row (``alert_with_drift``), its drift
    event (None if not stored), its versions and its key's claims."""
    codes = breakdown.get("cpt_codes", [])
    median = breakdown.get("median_allowed")
    return AlertDetail(
        alert=cast("Alert", {name: row[name] for name in _ALERT_KEYS}),
        explanation=None if drift is None else explain(drift, median),
        drift_event=cast("DriftEvent | None", drift),
        median_allowed=median,
        denial_reasons=reason_changes(
            breakdown.get("reasons", []),
            sum(c["baseline_claims"] for c in codes),
            sum(c["current_claims"] for c in codes),
        ),
        cpt_codes=cpt_changes(codes),
        example_claim_ids=breakdown.get("examples", []),
        days=[_detail_day(d) for d in days],
        history=cast("list[HistoryEntry]", history),
    )


def _detail_day(day: dict[str, Any]) -> DetailDay:
    return DetailDay(
        day=day["day"],
        claims=day["decided"],
        denial_rate=share(day["denied"], day["decided"]),
        decision_lag_days=day["lag_days"],
        allowed_amount=day["allowed_geomean"],
    )
