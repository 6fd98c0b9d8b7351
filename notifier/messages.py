"""The WebSocket protocol's messages as types.

The server and the hub build their messages as these types (mypy checks every one), and
``scripts/api_docs.py`` writes their JSON Schemas into ``asyncapi.json`` (and the alert's into
``openapi.json``), which the tests check real messages against. Constraints that JSON Schema
states and Python types do not (ranges, formats) ride along as ``pydantic.Field`` metadata,
read only when the schemas are written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

import orjson
from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from streams.domain.values import DriftType, Level, Status, Transition, Verdict

MAX_DEPTH = 32  # how deep a client's JSON may nest (no message of the protocol needs 3)
BAD_MESSAGE = f"expected a JSON object, nested at most {MAX_DEPTH} deep, with finite numbers"
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Share = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=1)]


@with_config(ConfigDict(extra="forbid"))
class AlertEvent(TypedDict):
    """An alert as of one of its transitions, as on ``alerts.events`` (times in RFC 3339, UTC)."""

    alert_id: str
    version: Count
    dedup_key: str
    customer_id: str
    rule_id: str
    drift_event_id: str
    payer_id: str
    cpt_group: str
    drift_type: DriftType
    status: Status
    transition: Transition
    severity: Share
    severity_level: Level
    occurrence_count: Count
    first_seen: Timestamp
    last_seen: Timestamp
    acknowledged_by: str | None
    resolved_by: str | None
    resolution: Literal["auto", "operator"] | None
    verdict: Verdict | None
    message: str
    notify: bool
    assignee: Annotated[str | None, Field(description="the operator the alert is assigned to")]
    actor: Annotated[
        str | None,
        Field(description="the operator whose command made this transition (null: Upstream)"),
    ]
    note: Annotated[str | None, Field(description="that command's note")]


@with_config(ConfigDict(extra="forbid"))
class Alert(AlertEvent):
    """An alert as of one of its transitions, with its drift event's values and when operators
    were first told (times in RFC 3339, UTC)."""

    baseline_value: NotRequired[
        Annotated[
            float | None, Field(description="the drift event's baseline value (null if not stored)")
        ]
    ]
    current_value: NotRequired[
        Annotated[float | None, Field(description="the drift event's current value")]
    ]
    first_notified_at: Annotated[
        Timestamp | None,
        Field(
            description="when operators were first told of the alert, by the wall clock (the sink "
            "stored its first transition); first_seen and last_seen are event times, when the "
            "payer decided the claims. Null if not recorded."
        ),
    ]


class Auth(TypedDict):
    """First message when the URL carries no token."""

    type: Literal["auth"]
    token: str


class Subscribe(TypedDict):
    """Start the feed: a snapshot (or, with since, the missed transitions), then live alerts."""

    type: Literal["subscribe"]
    min_severity_level: NotRequired[Level]
    payer_ids: NotRequired[list[str]]
    drift_types: NotRequired[list[DriftType]]
    since: NotRequired[Annotated[int | None, Field(description="cursor to resume after")]]


class Acknowledge(TypedDict):
    """Acknowledge an alert (scope act)."""

    type: Literal["acknowledge"]
    alert_id: str
    command_id: NotRequired[str]
    note: NotRequired[str | None]


class Resolve(TypedDict):
    """Resolve an alert (scope act)."""

    type: Literal["resolve"]
    alert_id: str
    command_id: NotRequired[str]
    note: NotRequired[str | None]


class Judge(TypedDict):
    """Record a verdict on an alert (scope act)."""

    type: Literal["judge"]
    alert_id: str
    verdict: Verdict
    command_id: NotRequired[str]
    note: NotRequired[str | None]


class Note(TypedDict):
    """Add a note to an alert's history (scope act)."""

    type: Literal["note"]
    alert_id: str
    note: str
    command_id: NotRequired[str]


class Assign(TypedDict):
    """Assign an alert to an operator; an empty assignee unassigns it (scope act)."""

    type: Literal["assign"]
    alert_id: str
    assignee: str
    command_id: NotRequired[str]
    note: NotRequired[str | None]


Widget = Literal["open", "claims", "payers", "activity", "timeline", "feed"]
WIDGETS: tuple[Widget, ...] = ("open", "claims", "payers", "activity", "timeline", "feed")


@with_config(ConfigDict(extra="forbid"))
class Layout(TypedDict):
    """An operator's dashboard: its widgets in order, and those hidden."""

    order: Annotated[list[Widget], Field(description="every widget once, in the order shown")]
    hidden: list[Widget]


class SaveLayout(TypedDict):
    """Save the operator's dashboard layout (any scope); the server answers layout_saved."""

    type: Literal["layout"]
    layout: Layout


class Snapshot(TypedDict):
    """Open alerts at subscribe, as of cursor."""

    type: Literal["snapshot"]
    cursor: int
    alerts: list[Alert]


class AlertMessage(TypedDict):
    """One alert transition."""

    type: Literal["alert"]
    cursor: int
    alert: Alert


class Ack(TypedDict):
    """The outcome of a command: accepted (audited, on alerts.commands), refused or failed (not
    published), rejected (later, by the worker: error names the reason)."""

    type: Literal["ack"]
    command_id: str | None
    status: Literal["accepted", "refused", "failed", "rejected"]
    error: NotRequired[str]


class LayoutSaved(TypedDict):
    """The operator's layout as saved (GET /api/layout reads it back)."""

    type: Literal["layout_saved"]
    layout: Layout


class Error(TypedDict):
    """A message the server could not act on."""

    type: Literal["error"]
    message: str


ServerMessage = Snapshot | AlertMessage | Ack | LayoutSaved | Error

# Each message type of the protocol, by its ``type``, in the order the documents list them.
CLIENT_MESSAGES: dict[str, type] = {
    "auth": Auth,
    "subscribe": Subscribe,
    "acknowledge": Acknowledge,
    "resolve": Resolve,
    "judge": Judge,
    "note": Note,
    "assign": Assign,
    "layout": SaveLayout,
}
SERVER_MESSAGES: dict[str, type] = {
    "snapshot": Snapshot,
    "alert": AlertMessage,
    "ack": Ack,
    "layout_saved": LayoutSaved,
    "error": Error,
}


def parse_message(raw: str | bytes) -> dict[str, Any] | None:
    """A client's message: a JSON object nested at most :data:`MAX_DEPTH` deep, its numbers
    finite; None for anything else (orjson refuses deeper than 1,024 levels and infinities
    while it parses, so no input can exhaust the stack)."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    level: list[Any] = [message]
    for _ in range(MAX_DEPTH):
        level = [child for node in level
                 for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]  # fmt: skip
        if not level:
            return message
    return None
