"""The console's dashboard (``/api/dashboard``): one customer's open alerts, claims decided as
of its latest decided date, the payers whose denial rate rose most or put most money at stake,
a timeline of its alerts, recent activity, and the health of its feed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.answers import (
    Activity,
    ClaimsPeriod,
    Dashboard,
    FeedDay,
    FeedHealth,
    PayerChange,
    TimelineAlert,
    TrendDay,
)
from notifier.explain import share
from sinks.dashboard import (
    FEED_DAYS,
    alert_timeline,
    daily_denials,
    feed_days,
    last_received,
    latest_decided,
    open_alerts_by_level,
    payer_windows,
    recent_transitions,
)
from streams.domain.values import LEVELS

TOP_PAYERS = 5
FEED_SCORE_DAYS = 7
FORMULA = (
    "quality = 100 × (1 − dead-letter rate − ½ × duplicate rate − ¼ × amendment rate), at least 0,"
    " over the last 7 days: invalid claims count fully, resent ones half, amended ones a quarter"
)


async def dashboard(conn: AsyncConnection, customer_id: str) -> Dashboard:
    """Everything the dashboard shows, read in one connection."""
    levels = await open_alerts_by_level(conn, customer_id)
    as_of = await latest_decided(conn, customer_id)
    days = [] if as_of is None else await daily_denials(conn, customer_id, as_of)
    payers = [] if as_of is None else await payer_windows(conn, customer_id, as_of)
    activity = await recent_transitions(conn, customer_id)
    changes = payer_changes(payers)
    at_stake = sorted((c for c in changes if c["at_stake"] is not None),
                      key=lambda c: (-(c["at_stake"] or 0.0), c["payer_id"]))  # fmt: skip
    return Dashboard(
        customer_id=customer_id,
        as_of=as_of,
        open_alerts={level: levels.get(level, 0) for level in LEVELS},
        today=_period(days, as_of, 1),
        week=_period(days, as_of, 7),
        trend=[_trend_day(d) for d in days],
        top_payers=changes[:TOP_PAYERS],
        top_payers_at_stake=at_stake[:TOP_PAYERS],
        timeline=cast("list[TimelineAlert]", await alert_timeline(conn, customer_id)),
        activity=cast("list[Activity]", activity),
        feed=await _feed(conn, customer_id),
    )


async def _feed(conn: AsyncConnection, customer_id: str) -> FeedHealth:
    today = datetime.now(UTC).date()
    stored = {d["day"]: d for d in await feed_days(conn, customer_id, today)}
    days = [
        stored.get(day) or FeedDay(day=day, received=0, new=0, resent=0, amended=0, invalid=0)
        for day in (today - timedelta(days=n) for n in range(FEED_DAYS - 1, -1, -1))
    ]
    return feed_health(cast("list[FeedDay]", days), await last_received(conn, customer_id))


def feed_health(days: list[FeedDay], last_received_at: datetime | None) -> FeedHealth:
    """The feed's rates and quality score (:data:`FORMULA`) over its last
    :data:`FEED_SCORE_DAYS` of ``days`` (oldest first)."""
    recent = days[-FEED_SCORE_DAYS:]
    received = sum(d["received"] for d in recent)
    invalid = sum(d["invalid"] for d in recent)
    dead = share(invalid, received + invalid)
    duplicate = share(sum(d["resent"] for d in recent), received)
    amendment = share(sum(d["amended"] for d in recent), received)
    score = None
    if dead is not None:
        penalty = dead + 0.5 * (duplicate or 0.0) + 0.25 * (amendment or 0.0)
        score = round(max(0.0, 100 * (1 - penalty)), 1)
    return FeedHealth(
        last_received_at=last_received_at, days=days, received=received,
        dead_letter_rate=dead, duplicate_rate=duplicate, amendment_rate=amendment,
        quality_score=score, formula=FORMULA,
    )  # fmt: skip


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
