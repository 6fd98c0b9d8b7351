"""Alert rules, deduplication and lifecycle (anchored on Alertmanager and PagerDuty).

A drift that matches a rule triggers an alert keyed by
``dedup_key = customer|rule|payer|cpt_group|drift_type``. Re-detections within
``dedup_window_hours`` (event time) of ``last_seen`` update the open alert; an update notifies
only when the severity level rises and the alert is not acknowledged. After
``auto_resolve_after`` clean evaluations the alert resolves itself. Evaluations are applied at
most once per dedup key (by evaluation time), so a replayed input changes nothing.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from streams.domain.drift import LEVELS, severity_level
from streams.domain.events import AlertTransitioned, DriftDetected, KeyEvaluated

ALERT_NAMESPACE = uuid.UUID("5d0c9b0e-2f0a-4a57-9b8e-3f6f0f7d2a41")
DRIFT_TYPES = ("denial_rate", "decision_lag", "allowed_amount")
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Which drifts of one customer become alerts, and how they are deduplicated."""

    customer_id: str
    rule_id: str
    drift_types: tuple[str, ...] = DRIFT_TYPES
    min_severity_level: str = "warning"
    min_confidence: float = 0.0
    payer_ids: tuple[str, ...] = ()
    cpt_groups: tuple[str, ...] = ()
    dedup_window_hours: int = 24
    auto_resolve_after: int = 2
    enabled: bool = True

    def matches(self, drift: DriftDetected) -> bool:
        """Whether ``drift`` passes this rule's filters and thresholds."""
        return (
            self.enabled
            and drift.customer_id == self.customer_id
            and drift.drift_type in self.drift_types
            and LEVELS.index(drift.severity_level) >= LEVELS.index(self.min_severity_level)
            and drift.confidence >= self.min_confidence
            and (not self.payer_ids or drift.payer_id in self.payer_ids)
            and (not self.cpt_groups or drift.cpt_group in self.cpt_groups)
        )

    def covers(self, evaluation: KeyEvaluated, drift_type: str) -> bool:
        """Whether an evaluation of ``drift_type`` on that key falls under this rule."""
        return (
            self.enabled
            and drift_type in self.drift_types
            and (not self.payer_ids or evaluation.payer_id in self.payer_ids)
            and (not self.cpt_groups or evaluation.cpt_group in self.cpt_groups)
        )


def default_rule(customer_id: str) -> AlertRule:
    """The rule a customer gets when it has none: all drift types, warning and above."""
    return AlertRule(customer_id=customer_id, rule_id="default")


@dataclass(slots=True)
class AlertState:
    """The latest state of the alert (open or last resolved) under one dedup key."""

    alert_id: str
    version: int
    dedup_key: str
    customer_id: str
    rule_id: str
    drift_event_id: str
    payer_id: str
    cpt_group: str
    drift_type: str
    status: str
    severity: float
    occurrence_count: int
    first_seen_ms: int
    last_seen_ms: int
    clean_evaluations: int = 0
    last_evaluation_ms: int = 0
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    verdict: str | None = None
    message: str = ""

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


class AlertStore(Protocol):
    """Where alert states live (a changelog-backed table in the worker, a dict in tests)."""

    def get(self, dedup_key: str) -> AlertState | None:
        """The state under ``dedup_key``, if any."""

    def put(self, state: AlertState) -> None:
        """Save ``state`` under its dedup key."""


def _message(drift: DriftDetected) -> str:
    direction = "rose" if drift.delta_value > 0 else "fell"
    return (
        f"Denial rate of payer {drift.payer_id} for {drift.cpt_group} {direction} from "
        f"{drift.baseline_value:.1%} to {drift.current_value:.1%} "
        f"({drift.window_days:g}-day window vs baseline, q={drift.q_value:.2g})"
        if drift.drift_type == "denial_rate"
        else f"{drift.drift_type} of payer {drift.payer_id} for {drift.cpt_group} {direction} "
        f"from {drift.baseline_value:.4g} to {drift.current_value:.4g}"
    )


def _transition(state: AlertState, transition: str, *, notify: bool) -> AlertTransitioned:
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
    )


class AlertLifecycle:
    """Applies key evaluations to alert states kept in an :class:`AlertStore`."""

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
                    (
                        rule.customer_id,
                        rule.rule_id,
                        evaluation.payer_id,
                        evaluation.cpt_group,
                        drift_type,
                    )
                )
                state = self.store.get(dedup_key)
                if state is not None and evaluation.evaluated_at_ms <= state.last_evaluation_ms:
                    continue  # already applied: a redelivery
                hits = [
                    d
                    for d in evaluation.detections
                    if d.drift_type == drift_type and rule.matches(d)
                ]
                for drift in hits:
                    state = self._detected(state, rule, dedup_key, drift, out)
                if not hits and state is not None and state.is_open:
                    self._clean(state, rule, out)
                if state is not None:
                    state.last_evaluation_ms = evaluation.evaluated_at_ms
                    self.store.put(state)
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
        state: AlertState, resolution: str, operator: str | None, out: list[AlertTransitioned]
    ) -> None:
        state.version += 1
        state.status = "resolved"
        state.resolution = resolution
        state.resolved_by = operator
        out.append(_transition(state, "resolved", notify=True))
