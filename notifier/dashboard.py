"""The console's dashboard (``/api/dashboard``): one customer's open alerts, claims decided as
of its latest decided date, the payers whose denial rate rose most, and recent activity."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.answers import Activity, ClaimsPeriod, Dashboard, PayerChange, TrendDay
from notifier.explain import share
from sinks.dashboard import (
    daily_denials,
    latest_decided,
    open_alerts_by_level,
    payer_windows,
    recent_transitions,
)
from streams.domain.values import LEVELS

TOP_PAYERS = 5


async def dashboard(conn: AsyncConnection, customer_id: str) -> Dashboard:
    """Everything the dashboard shows, read in one connection."""
    levels = await open_alerts_by_level(conn, customer_id)
    as_of = await latest_decided(conn, customer_id)
    days = [] if as_of is None else await daily_denials(conn, customer_id, as_of)
    payers = [] if as_of is None else await payer_windows(conn, customer_id, as_of)
    activity = await recent_transitions(conn, customer_id)
    return Dashboard(
        customer_id=customer_id,
        as_of=as_of,
        open_alerts={level: levels.get(level, 0) for level in LEVELS},
        today=_period(days, as_of, 1),
        week=_period(days, as_of, 7),
        trend=[_trend_day(d) for d in days],
        top_payers=payer_changes(payers)[:TOP_PAYERS],
        activity=cast("list[Activity]", activity),
    )


def _trend_day(day: dict[str, Any]) -> TrendDay:
    rate = share(day["denied"], day["decided"])
    return TrendDay(day=day["day"], decided=day["decided"], denial_rate=rate)


def _period(days: list[dict[str, Any]], as_of: date | None, length: int) -> ClaimsPeriod:
    """Claims of the ``length`` days ending on ``as_of``."""
    shown = [] if as_of is None else [d for d in days if d["day"] > as_of - timedelta(days=length)]
    decided, denied = sum(d["decided"] for d in shown), sum(d["denied"] for d in shown)
    return ClaimsPeriod(decided=decided, denied=denied, denial_rate=share(denied, decided))


def payer_changes(payers: list[dict[str, Any]]) -> list[PayerChange]:
    """Payers by the rise of their denial rate, largest first (payers without claims in both
    windows last): the rise times current claims is the extra denials, priced at the median
    allowed amount of the baseline's paid claims."""
    out = []
    for p in payers:
        before = share(p["baseline_denied"], p["baseline_claims"])
        now = share(p["current_denied"], p["current_claims"])
        change = None if before is None or now is None else now - before
        extra = 0.0 if change is None else change * p["current_claims"]
        median = p["median_allowed"]
        out.append(PayerChange(
            payer_id=p["payer_id"], baseline_rate=before, current_rate=now, change=change,
            current_claims=p["current_claims"], extra_denials=round(extra, 1),
            at_stake=None if median is None or extra <= 0 else round(extra * median, 2),
        ))  # fmt: skip
    return sorted(out, key=lambda c: (c["change"] is None, -(c["change"] or 0), c["payer_id"]))
