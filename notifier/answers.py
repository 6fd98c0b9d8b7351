"""The HTTP API's answers as types.

The API builds its answers as these types (mypy checks each), and ``scripts/api_docs.py``
writes their JSON Schemas into ``openapi.json``, which the tests check real answers against.
Times are ``datetime`` and days ``date``: the API writes them as RFC 3339 / ISO dates.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from notifier.messages import Alert
from streams.domain.values import DriftType, Level, Status, Transition, Verdict

Share = Annotated[float, Field(ge=0, le=1)]
Strict = ConfigDict(extra="forbid")


@with_config(Strict)
class ActiveAlerts(TypedDict):
    """Open alerts."""

    customer_id: str
    alerts: list[Alert]


@with_config(Strict)
class DriftEvent(TypedDict):
    """A drift event as stored (docs/semantics.md says what each value means)."""

    event_id: str
    customer_id: str
    payer_id: str
    cpt_group: str
    drift_type: DriftType
    window_days: float
    baseline_start: datetime
    baseline_end: datetime
    current_start: datetime
    current_end: datetime
    baseline_value: float
    current_value: float
    delta_value: float
    baseline_n: int
    current_n: int
    p_value: float
    q_value: float
    severity: Share
    severity_level: Level
    confidence: Share
    detected_at: datetime


@with_config(Strict)
class DriftEventPage(TypedDict):
    """One page."""

    customer_id: str
    drift_events: list[DriftEvent]
    next_cursor: Annotated[str | None, Field(description="null on the last page")]


@with_config(Strict)
class DenialMonth(TypedDict):
    """Claims decided and denied in a month, by one payer."""

    month: Annotated[date, Field(description="its first day")]
    payer_id: str
    decided: int
    denied: int
    denial_rate: float | None


@with_config(Strict)
class DenialTrend(TypedDict):
    """Months in order, payers by id."""

    customer_id: str
    since: date
    until: date
    months: list[DenialMonth]


@with_config(Strict)
class SeriesDay(TypedDict):
    """One day of an alert's key."""

    day: date
    value: float | None
    claims: Annotated[int, Field(description="decided claims that day")]


@with_config(Strict)
class AlertSeries(TypedDict):
    """The daily values: denial rate, mean decision lag (days) or geometric-mean allowed
    amount ($), by the alert's drift type."""

    alert_id: str
    drift_type: DriftType
    baseline_value: float | None
    current_value: float | None
    baseline_start: datetime | None
    baseline_end: datetime | None
    current_start: datetime | None
    current_end: datetime | None
    days: list[SeriesDay]


@with_config(Strict)
class DetailDay(TypedDict):
    """One decided day of an alert's key: its three metrics (null without claims to measure)."""

    day: date
    claims: Annotated[int, Field(description="decided claims that day")]
    denial_rate: float | None
    decision_lag_days: Annotated[float | None, Field(description="mean days submitted→decided")]
    allowed_amount: Annotated[float | None, Field(description="geometric mean, $, of allowed > 0")]


@with_config(Strict)
class CodeChange(TypedDict):
    """A denial reason code or CPT code of the key: denials in each window, and how many more
    the current window has than the baseline's rate predicts (negative: fewer)."""

    code: str
    baseline_denials: int
    current_denials: int
    extra_denials: float


@with_config(Strict)
class HistoryEntry(TypedDict):
    """One version of the alert, as stored: what changed and who did it."""

    version: int
    transition: Transition
    status: Status
    severity_level: Level
    occurrence_count: int
    acknowledged_by: str | None
    resolved_by: str | None
    resolution: Literal["auto", "operator"] | None
    verdict: Verdict | None
    message: str
    assignee: str | None
    actor: Annotated[str | None, Field(description="the operator who made it (null: Upstream)")]
    note: str | None
    last_seen: Annotated[datetime, Field(description="event time of the key's latest close")]
    stored_at: Annotated[
        datetime | None,
        Field(
            description="when the sink stored this version, by the wall clock (null: not recorded)"
        ),
    ]


@with_config(Strict)
class AlertDetail(TypedDict):
    """An alert explained: its change in words, the drift event behind it, the reason and CPT
    codes that account for it, example claims, the key's three metrics day by day, and every
    version of the alert."""

    alert: Alert
    explanation: Annotated[
        str | None, Field(description="the change in words (null if the drift event is not stored)")
    ]
    drift_event: Annotated[
        DriftEvent | None,
        Field(description="the statistics: windows, values, claims counted, p and q values"),
    ]
    median_allowed: Annotated[
        float | None, Field(description="median allowed amount, $, of the baseline's paid claims")
    ]
    denial_reasons: Annotated[list[CodeChange], Field(description="most extra denials first")]
    cpt_codes: Annotated[list[CodeChange], Field(description="most extra denials first")]
    example_claim_ids: Annotated[
        list[str],
        Field(description="up to 5 of the current window: denied, slowest or least allowed"),
    ]
    days: list[DetailDay]
    history: Annotated[list[HistoryEntry], Field(description="oldest first")]


@with_config(Strict)
class ClaimsPeriod(TypedDict):
    """Claims decided in a period and the share denied (null without claims)."""

    decided: int
    denied: int
    denial_rate: float | None


@with_config(Strict)
class TrendDay(TypedDict):
    """One decided day of the customer."""

    day: date
    decided: int
    denial_rate: float | None


@with_config(Strict)
class PayerChange(TypedDict):
    """A payer's denial rate in the last 30 days against the 60 before, and what the change
    means: extra denials (current claims × the rise) priced at the baseline's median allowed
    amount of paid claims."""

    payer_id: str
    baseline_rate: float | None
    current_rate: float | None
    change: float | None
    current_claims: int
    extra_denials: float
    at_stake: Annotated[float | None, Field(description="$; null without a baseline median")]


@with_config(Strict)
class TimelineAlert(TypedDict):
    """One alert on the drift timeline: its key, level and status, and the event time its
    drift was first and last seen."""

    alert_id: str
    payer_id: str
    cpt_group: str
    drift_type: DriftType
    severity_level: Level
    status: Status
    first_seen: datetime
    last_seen: datetime


@with_config(Strict)
class Activity(TypedDict):
    """One alert transition, newest first: what changed, who did it, when it was stored."""

    alert_id: str
    version: int
    transition: Transition
    status: Status
    severity_level: Level
    payer_id: str
    cpt_group: str
    drift_type: DriftType
    actor: str | None
    note: str | None
    assignee: str | None
    stored_at: datetime | None


@with_config(Strict)
class FeedDay(TypedDict):
    """What the customer's feed delivered on one day the sink stored it (UTC, wall clock)."""

    day: date
    received: Annotated[int, Field(description="claim messages stored: new + resent + amended")]
    new: Annotated[int, Field(description="claims not stored before")]
    resent: Annotated[int, Field(description="sent again with every value unchanged")]
    amended: Annotated[int, Field(description="sent again with a value changed")]
    invalid: Annotated[int, Field(description="rejected (dead-lettered)")]


@with_config(Strict)
class FeedHealth(TypedDict):
    """The customer's feed as it reached Upstream: per day, when it last delivered, and a
    quality score over the last 7 days (null rates and score: nothing delivered)."""

    last_received_at: Annotated[
        datetime | None, Field(description="when the latest claim was stored (wall clock)")
    ]
    days: Annotated[list[FeedDay], Field(description="the 14 days ending today, UTC, every day")]
    received: Annotated[int, Field(description="claim messages stored in the last 7 days")]
    dead_letter_rate: Annotated[float | None, Field(description="invalid / (received + invalid)")]
    duplicate_rate: Annotated[float | None, Field(description="resent / received")]
    amendment_rate: Annotated[float | None, Field(description="amended / received")]
    quality_score: Annotated[float | None, Field(description="0–100, see formula")]
    formula: str


@with_config(Strict)
class Dashboard(TypedDict):
    """The console's landing page for one customer. Claims are counted by decided date as of
    the customer's latest one (``as_of``; feeds arrive late), not by the wall clock."""

    customer_id: str
    as_of: Annotated[date | None, Field(description="the latest decided date (null: no claims)")]
    open_alerts: Annotated[dict[str, int], Field(description="open alerts by severity level")]
    today: ClaimsPeriod
    week: Annotated[ClaimsPeriod, Field(description="the 7 days ending on as_of")]
    trend: Annotated[list[TrendDay], Field(description="the 28 days ending on as_of")]
    top_payers: Annotated[list[PayerChange], Field(description="largest rise first, up to 5")]
    top_payers_at_stake: Annotated[
        list[PayerChange], Field(description="most allowed amount at stake first, up to 5")
    ]
    timeline: Annotated[
        list[TimelineAlert], Field(description="the 40 alerts seen last, by event time")
    ]
    activity: Annotated[list[Activity], Field(description="the latest 20 transitions")]
    feed: FeedHealth


@with_config(Strict)
class Session(TypedDict):
    """Who the session cookie set with this answer is for."""

    customer_id: str
    operator: str


@with_config(Strict)
class Check(TypedDict):
    """One readiness check."""

    ok: bool
    latency_ms: NotRequired[float]


@with_config(Strict)
class Ready(TypedDict):
    """Whether the notifier is ready, check by check."""

    status: Literal["ok", "unavailable"]
    checks: Annotated[
        dict[str, Check],
        Field(description="postgres (the hub follows it) and kafka (metadata answered)"),
    ]


@with_config(Strict)
class Live(TypedDict):
    """The process is up."""

    status: Literal["ok"]


@with_config(Strict)
class ErrorAnswer(TypedDict):
    """Why a request was refused."""

    error: str
