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
from streams.domain.values import DriftType, Level

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
