"""What the receivers are sent, and what the routes and silences API answers, as types.

``notifier.delivery.formats`` builds the request bodies as these types (mypy checks each), and
``scripts/api_docs.py`` writes their JSON Schemas into ``openapi.json`` (the receivers' bodies
as its ``webhooks``), which the tests check what local receivers get against. The PagerDuty
event follows PagerDuty's Events API v2 (``POST /v2/enqueue``): its limits are PagerDuty's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from notifier.delivery.routes import Event, ReceiverKind
from notifier.messages import AlertEvent
from streams.domain.values import DriftType, Level

Strict = ConfigDict(extra="forbid")


@with_config(Strict)
class WebhookBody(TypedDict):
    """The generic webhook's body (headers: ``Idempotency-Key: <alert_id>:<version>``, the same
    for every attempt; ``X-Upstream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>." + body>`` with the receiver's secret, when it has one)."""

    event: Annotated[
        Event,
        Field(description="what happened: a transition, or a reminder or escalation of the clock"),
    ]
    summary: Annotated[str, Field(description="one line for a person")]
    link: Annotated[str, Field(description="the alert in the console")]
    alert: AlertEvent


@with_config(Strict)
class SlackText(TypedDict):
    """A Slack mrkdwn text object."""

    type: Literal["mrkdwn"]
    text: str


@with_config(Strict)
class SlackBlock(TypedDict):
    """A Slack layout block: a section with text, or a context with elements."""

    type: Literal["section", "context"]
    text: NotRequired[SlackText]
    elements: NotRequired[list[SlackText]]


@with_config(Strict)
class SlackMessage(TypedDict):
    """A Slack incoming-webhook message: the summary, and the console link below it."""

    text: Annotated[
        str, Field(description="the summary (notifications and clients without blocks)")
    ]
    blocks: list[SlackBlock]


# The incident's details (a trigger only). "class" is a Python keyword: the functional form.
PagerDutyPayload = TypedDict(
    "PagerDutyPayload",
    {
        "summary": Annotated[str, Field(max_length=1024)],
        "source": str,
        "severity": Literal["critical", "error", "warning", "info"],
        "timestamp": Annotated[str, Field(json_schema_extra={"format": "date-time"})],
        "component": str,
        "group": str,
        "class": DriftType,
        "custom_details": dict[str, object],
    },
)
PagerDutyPayload.__pydantic_config__ = Strict  # type: ignore[attr-defined]  # as with_config sets it


@with_config(Strict)
class PagerDutyLink(TypedDict):
    """A link on the incident."""

    href: str
    text: str


@with_config(Strict)
class PagerDutyEvent(TypedDict):
    """A PagerDuty Events API v2 event: ``trigger`` when an alert opens, escalates or is due
    again, ``acknowledge`` and ``resolve`` with it, all by the alert's dedup key (its SHA-256
    when longer than 255 characters), so the incident follows the alert."""

    routing_key: Annotated[str, Field(description="the integration key of the receiver")]
    event_action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: Annotated[str, Field(max_length=255)]
    payload: NotRequired[PagerDutyPayload]
    links: NotRequired[list[PagerDutyLink]]


@with_config(Strict)
class ReceiverListed(TypedDict):
    """A receiver: kind, URL or address; its secret (webhook HMAC key, PagerDuty routing key)
    is ``***`` in answers and written in full only in a request."""

    kind: ReceiverKind
    target: str
    secret: NotRequired[str | None]


@with_config(Strict)
class RouteSpec(TypedDict):
    """A route as ``PUT /api/routes/{name}`` takes it (absent keys: their defaults)."""

    receivers: list[ReceiverListed]
    min_level: NotRequired[Level]
    drift_types: NotRequired[list[DriftType]]
    payer_ids: NotRequired[list[str]]
    cpt_groups: NotRequired[list[str]]
    events: NotRequired[
        Annotated[
            list[Literal["opened", "escalated", "acknowledged", "resolved"]],
            Field(description="the transitions that notify (default opened, escalated, resolved)"),
        ]
    ]
    repeat_interval_s: NotRequired[
        Annotated[int | None, Field(gt=0, description="re-send unacknowledged alerts (4 h)")]
    ]
    escalate_after_s: NotRequired[
        Annotated[int | None, Field(gt=0, description="then to the escalation receivers, once")]
    ]
    escalation: NotRequired[list[ReceiverListed]]


@with_config(Strict)
class RouteListed(TypedDict):
    """A route as stored, secrets masked."""

    customer_id: str
    name: str
    receivers: list[ReceiverListed]
    min_level: Level
    drift_types: list[DriftType]
    payer_ids: list[str]
    cpt_groups: list[str]
    events: list[Event]
    repeat_interval_s: int | None
    escalate_after_s: int | None
    escalation: list[ReceiverListed]


@with_config(Strict)
class Routes(TypedDict):
    """The customer's routes, by name."""

    customer_id: str
    routes: list[RouteListed]


@with_config(Strict)
class WeeklyWindow(TypedDict):
    """Every week on ``days`` (0 Monday … 6 Sunday) from ``start`` (HH:MM) for ``minutes``, on
    the wall clock of ``zone`` (an IANA time zone)."""

    days: list[Annotated[int, Field(ge=0, le=6)]]
    start: str
    minutes: Annotated[int, Field(ge=1, le=10079)]
    zone: NotRequired[str]


@with_config(Strict)
class SilenceAsked(TypedDict):
    """A silence as ``POST /api/silences`` takes it: from now for ``hours`` (default 2) or
    until ``ends_at``; empty matchers match everything."""

    hours: NotRequired[Annotated[float, Field(gt=0)]]
    ends_at: NotRequired[datetime]
    drift_types: NotRequired[list[DriftType]]
    payer_ids: NotRequired[list[str]]
    cpt_groups: NotRequired[list[str]]
    weekly: NotRequired[WeeklyWindow | None]
    comment: NotRequired[str]


@with_config(Strict)
class SilenceListed(TypedDict):
    """A silence not yet ended."""

    silence_id: str
    customer_id: str
    starts_at: datetime
    ends_at: datetime
    drift_types: list[DriftType]
    payer_ids: list[str]
    cpt_groups: list[str]
    comment: str
    weekly: WeeklyWindow | None
    active: NotRequired[Annotated[bool, Field(description="whether it holds now")]]


@with_config(Strict)
class Silences(TypedDict):
    """The customer's silences not yet ended, and its open alerts a silence holds now (they
    exist and show, but send nothing until it ends)."""

    customer_id: str
    silences: list[SilenceListed]
    silenced_alerts: list[str]


@with_config(Strict)
class Deleted(TypedDict):
    """The route deleted."""

    deleted: str


@with_config(Strict)
class Expired(TypedDict):
    """The silence ended."""

    expired: str
