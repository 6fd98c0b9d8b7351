"""Domain events, named in the past tense. Times are milliseconds since the epoch (UTC)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.domain.values import DriftType, Level, Status, Transition, Verdict


@dataclass(frozen=True, slots=True)
class DriftDetected:
    """A payer's behaviour in a current window differs from its baseline (a DriftEvent)."""

    event_id: str
    customer_id: str
    payer_id: str
    cpt_group: str
    drift_type: DriftType
    window_days: float
    baseline_start_ms: int
    baseline_end_ms: int
    current_start_ms: int
    current_end_ms: int
    baseline_value: float
    current_value: float
    delta_value: float
    baseline_n: int
    current_n: int
    p_value: float
    q_value: float
    severity: float
    severity_level: Level
    confidence: float
    detected_at_ms: int

    @property
    def window_key(self) -> str:
        """``customer_id|payer_id|cpt_group``."""
        return f"{self.customer_id}|{self.payer_id}|{self.cpt_group}"

    @property
    def kafka_key(self) -> str:
        """``customer_id|payer_id|cpt_group|drift_type``, the drift.events key."""
        return f"{self.window_key}|{self.drift_type}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftDetected:
        """Inverse of :meth:`to_dict`."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True, slots=True)
class KeyEvaluated:
    """A key was evaluated at a bucket close; ``drift_types`` were tested, ``detections`` fired.

    The alert lifecycle needs it to count clean evaluations towards auto-resolve.
    """

    customer_id: str
    payer_id: str
    cpt_group: str
    evaluated_at_ms: int
    drift_types: tuple[str, ...]
    detections: tuple[DriftDetected, ...]

    @property
    def window_key(self) -> str:
        """``customer_id|payer_id|cpt_group``."""
        return f"{self.customer_id}|{self.payer_id}|{self.cpt_group}"

    def with_detections(self, detections: Sequence[DriftDetected]) -> KeyEvaluated:
        """A copy carrying ``detections``."""
        return dataclasses.replace(self, detections=tuple(detections))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the internal alert-input topic."""
        return {
            "customer_id": self.customer_id,
            "payer_id": self.payer_id,
            "cpt_group": self.cpt_group,
            "evaluated_at_ms": self.evaluated_at_ms,
            "drift_types": list(self.drift_types),
            "detections": [d.to_dict() for d in self.detections],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyEvaluated:
        """Inverse of :meth:`to_dict`."""
        return cls(
            customer_id=data["customer_id"],
            payer_id=data["payer_id"],
            cpt_group=data["cpt_group"],
            evaluated_at_ms=int(data["evaluated_at_ms"]),
            drift_types=tuple(data["drift_types"]),
            detections=tuple(DriftDetected.from_dict(d) for d in data["detections"]),
        )


@dataclass(frozen=True, slots=True)
class AlertTransitioned:
    """One state transition of an alert (an AlertEvent). ``notify`` says whether to page."""

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
    transition: Transition
    severity: float
    severity_level: Level
    occurrence_count: int
    first_seen_ms: int
    last_seen_ms: int
    acknowledged_by: str | None
    resolved_by: str | None
    resolution: str | None
    verdict: Verdict | None
    message: str
    notify: bool
    assignee: str | None = None  # the operator the alert is assigned to
    actor: str | None = None  # the operator whose command made this transition
    note: str | None = None  # that command's note

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)
