"""Alert deduplication, lifecycle and operator commands (anchored on Alertmanager, PagerDuty).

A drift that matches a rule triggers an alert keyed by
``dedup_key = customer|rule|payer|cpt_group|drift_type``. Re-detections within
``dedup_window_hours`` (event time) of ``last_seen`` update the open alert; an update notifies
only when the severity level rises and the alert is not acknowledged. After
``auto_resolve_after`` clean evaluations the alert resolves itself; a later detection opens a
new alert. Operators acknowledge, resolve, judge, note and assign; each command is a transition
that names its operator (``actor``) and carries its note. Evaluations are applied at most once
per dedup key (by evaluation time), and commands at most once per alert (by ``command_id``), so
redelivered input changes nothing.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from streams.domain.drift import severity_level
from streams.domain.events import AlertTransitioned, DriftDetected, KeyEvaluated
from streams.domain.rules import AlertRule
from streams.domain.values import (
    COMMANDS,
    FEED_DRIFT_TYPES,
    LEVELS,
    VERDICTS,
    DriftType,
    Status,
    Transition,
    Verdict,
    as_verdict,
)

ALERT_NAMESPACE = uuid.UUID("5d0c9b0e-2f0a-4a57-9b8e-3f6f0f7d2a41")
HOUR_MS = 3_600_000
REMEMBERED_COMMANDS = 64  # per alert; an operator sends a handful at most


@dataclass(slots=True)
class AlertState:
    """The latest state of one alert."""

    alert_id: str
    version: int
    dedup_key: str
    customer_id: str
    rule_id: str
    drift_event_id: str
    payer_id: str
    cpt_group: str
    drift_type: DriftType
    status: Status
    severity: float
    occurrence_count: int
    first_seen_ms: int
    last_seen_ms: int
    clean_evaluations: int = 0
    last_evaluation_ms: int = 0
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    verdict: Verdict | None = None
    message: str = ""
    applied_commands: list[str] = field(default_factory=list)
    assignee: str | None = None

    @property
    def is_open(self) -> bool:
        """Active or acknowledged."""
        return self.status != "resolved"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the changelog."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True, slots=True)
class AlertCommand:
    """An operator's command (imperative): acknowledge, resolve, judge, note or assign one alert
    (``assignee`` empty: unassign)."""

    command_id: str
    customer_id: str
    alert_id: str
    command: str
    operator: str
    verdict: str | None = None
    note: str | None = None
    issued_at_ms: int = 0
    assignee: str | None = None


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What a command did: transitions, or why it was rejected (``rejected`` reason code)."""

    transitions: list[AlertTransitioned]
    rejected: str | None = None
    detail: str = ""
    duplicate: bool = False


class AlertStore(Protocol):
    """Where alert states live (a changelog-backed table in the worker, a dict in tests)."""

    def current(self, dedup_key: str) -> AlertState | None:
        """The latest alert under ``dedup_key`` (open or resolved), if any."""

    def get(self, alert_id: str) -> AlertState | None:
        """The alert with ``alert_id``, if known."""

    def put(self, state: AlertState) -> None:
        """Save ``state`` under its alert id."""

    def point(self, dedup_key: str, alert_id: str) -> None:
        """Make ``alert_id`` the current alert of ``dedup_key``."""


def feed_message(drift_type: str, baseline: float, current: float, current_start_ms: int) -> str:
    """A sentence for a feed drift (the feed watch's): silence, a day's volume, dead letters."""
    if drift_type == "feed_silence":
        return (f"No claims received for {current:,.0f} h; this feed usually goes at most "
                f"{baseline:,.0f} h without one")  # fmt: skip
    if drift_type == "feed_volume":
        day = datetime.fromtimestamp(current_start_ms / 1000, UTC)
        return (f"{current:,.0f} claims received on {day:%a %d %b %Y} (UTC); a usual {day:%A} "
                f"brings {baseline:,.0f}")  # fmt: skip
    return f"{current:,.0f} claims rejected in the last hour; usually {baseline:,.1f} an hour"


def _message(drift: DriftDetected) -> str:
    if drift.drift_type in FEED_DRIFT_TYPES:
        return feed_message(
            drift.drift_type, drift.baseline_value, drift.current_value, drift.current_start_ms
        )
    direction = "rose" if drift.delta_value > 0 else "fell"
    what = {
        "denial_rate": (f"{drift.baseline_value:.1%}", f"{drift.current_value:.1%}"),
        "decision_lag": (f"{drift.baseline_value:.1f} days", f"{drift.current_value:.1f} days"),
        "allowed_amount": (f"${drift.baseline_value:,.2f}", f"${drift.current_value:,.2f}"),
    }.get(drift.drift_type, (f"{drift.baseline_value:.4g}", f"{drift.current_value:.4g}"))
    label = drift.drift_type.replace("_", " ").capitalize()
    return (
        f"{label} of payer {drift.payer_id} for {drift.cpt_group} {direction} from {what[0]} "
        f"to {what[1]} ({drift.window_days:g}-day window vs baseline, q={drift.q_value:.2g})"
    )


def _transition(
    state: AlertState,
    transition: Transition,
    *,
    notify: bool,
    command: AlertCommand | None = None,
) -> AlertTransitioned:
    return AlertTransitioned(
        alert_id=state.alert_id,
        version=state.version,
        dedup_key=state.dedup_key,
        customer_id=state.customer_id,
        rule_id=state.rule_id,
        drift_event_id=state.drift_event_id,
        payer_id=state.payer_id,
        cpt_group=state.cpt_group,
        drift_type=state.drift_type,
        status=state.status,
        transition=transition,
        severity=state.severity,
        severity_level=severity_level(state.severity),
        occurrence_count=state.occurrence_count,
        first_seen_ms=state.first_seen_ms,
        last_seen_ms=state.last_seen_ms,
        acknowledged_by=state.acknowledged_by,
        resolved_by=state.resolved_by,
        resolution=state.resolution,
        verdict=state.verdict,
        message=state.message,
        notify=notify,
        assignee=state.assignee,
        actor=None if command is None else command.operator,
        note=None if command is None else command.note,
    )


class AlertLifecycle:
    """Applies key evaluations and operator commands to alerts in an :class:`AlertStore`."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store

    def apply_evaluation(
        self, evaluation: KeyEvaluated, rules: list[AlertRule]
    ) -> list[AlertTransitioned]:
        """Trigger, update or count clean evaluations for every rule covering the key."""
        out: list[AlertTransitioned] = []
        for rule in sorted(rules, key=lambda r: r.rule_id):
            for drift_type in evaluation.drift_types:
                if not rule.covers(evaluation, drift_type):
                    continue
                dedup_key = "|".join(
                    (rule.customer_id, rule.rule_id, evaluation.payer_id,
                     evaluation.cpt_group, drift_type)
                )  # fmt: skip
                state = self.store.current(dedup_key)
                if state is not None and evaluation.evaluated_at_ms <= state.last_evaluation_ms:
                    continue  # already applied: a redelivery
                hits = [
                    d for d in evaluation.detections
                    if d.drift_type == drift_type and rule.matches(d)
                ]  # fmt: skip
                before = state.alert_id if state else None
                for drift in hits:
                    state = self._detected(state, rule, dedup_key, drift, out)
                if not hits and state is not None and state.is_open:
                    self._clean(state, rule, out)
                if state is not None:
                    state.last_evaluation_ms = evaluation.evaluated_at_ms
                    self.store.put(state)
                    if state.alert_id != before:
                        self.store.point(dedup_key, state.alert_id)
        return out

    def _detected(
        self,
        state: AlertState | None,
        rule: AlertRule,
        dedup_key: str,
        drift: DriftDetected,
        out: list[AlertTransitioned],
    ) -> AlertState:
        window_ms = rule.dedup_window_hours * HOUR_MS
        if state is not None and state.is_open:
            if drift.detected_at_ms - state.last_seen_ms <= window_ms:
                old_level = severity_level(state.severity)
                state.version += 1
                state.occurrence_count += 1
                state.last_seen_ms = max(state.last_seen_ms, drift.detected_at_ms)
                state.severity = max(state.severity, drift.severity)
                state.drift_event_id = drift.event_id
                state.message = _message(drift)
                state.clean_evaluations = 0
                rose = LEVELS.index(severity_level(state.severity)) > LEVELS.index(old_level)
                out.append(_transition(state, "updated", notify=rose and state.status == "active"))
                return state
            self._resolve(state, "auto", None, out)
            self.store.put(state)
        alert_id = uuid.uuid5(ALERT_NAMESPACE, f"{dedup_key}|{drift.detected_at_ms}")
        new = AlertState(
            alert_id=str(alert_id),
            version=1,
            dedup_key=dedup_key,
            customer_id=rule.customer_id,
            rule_id=rule.rule_id,
            drift_event_id=drift.event_id,
            payer_id=drift.payer_id,
            cpt_group=drift.cpt_group,
            drift_type=drift.drift_type,
            status="active",
            severity=drift.severity,
            occurrence_count=1,
            first_seen_ms=drift.detected_at_ms,
            last_seen_ms=drift.detected_at_ms,
            message=_message(drift),
            last_evaluation_ms=state.last_evaluation_ms if state else 0,
        )
        out.append(_transition(new, "triggered", notify=True))
        return new

    def _clean(self, state: AlertState, rule: AlertRule, out: list[AlertTransitioned]) -> None:
        state.clean_evaluations += 1
        if state.clean_evaluations >= rule.auto_resolve_after:
            self._resolve(state, "auto", None, out)

    @staticmethod
    def _resolve(
        state: AlertState,
        resolution: str,
        operator: str | None,
        out: list[AlertTransitioned],
        command: AlertCommand | None = None,
    ) -> None:
        state.version += 1
        state.status = "resolved"
        state.resolution = resolution
        state.resolved_by = operator
        out.append(_transition(state, "resolved", notify=True, command=command))

    def apply_command(self, command: AlertCommand) -> CommandOutcome:
        """Apply an operator command exactly once; reject it (never apply) when invalid."""
        problem = _validate(command)
        if problem:
            return CommandOutcome([], "invalid_command", problem)
        state = self.store.get(command.alert_id)
        if state is None:
            return CommandOutcome([], "unknown_alert", f"no alert {command.alert_id}")
        if state.customer_id != command.customer_id:
            return CommandOutcome([], "foreign_customer", "the alert belongs to another customer")
        if command.command_id in state.applied_commands:
            return CommandOutcome([], duplicate=True)
        out: list[AlertTransitioned] = []
        if command.command == "acknowledge":
            if state.status != "active":
                return CommandOutcome([], "invalid_state", f"alert is {state.status}")
            state.version += 1
            state.status = "acknowledged"
            state.acknowledged_by = command.operator
            out.append(_transition(state, "acknowledged", notify=True, command=command))
        elif command.command == "resolve":
            if not state.is_open:
                return CommandOutcome([], "invalid_state", "alert is resolved already")
            self._resolve(state, "operator", command.operator, out, command)
        else:
            state.version += 1
            if command.command == "judge":
                state.verdict = as_verdict(command.verdict)  # checked by _validate
            elif command.command == "assign":
                state.assignee = command.assignee or None
            transition = _COMMAND_TRANSITIONS[command.command]
            out.append(_transition(state, transition, notify=False, command=command))
        state.applied_commands = [*state.applied_commands, command.command_id][
            -REMEMBERED_COMMANDS:
        ]
        self.store.put(state)
        return CommandOutcome(out)


# The transition of each command that changes neither status nor resolution.
_COMMAND_TRANSITIONS: dict[str, Transition] = {
    "judge": "judged", "note": "noted", "assign": "assigned"
}  # fmt: skip


def _validate(command: AlertCommand) -> str:
    if command.command not in COMMANDS:
        return f"command must be one of {list(COMMANDS)}"
    if not command.command_id or not command.operator or not command.alert_id:
        return "command_id, alert_id and operator are required"
    if command.command == "judge" and command.verdict not in VERDICTS:
        return f"judge needs a verdict in {list(VERDICTS)}"
    if command.command == "note" and not command.note:
        return "note needs a note"
    if command.command == "assign" and command.assignee is None:
        return "assign needs an assignee (empty to unassign)"
    return ""
