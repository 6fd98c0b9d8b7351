"""Alert rules: which drift events of a customer become alerts.

Rules arrive on the compacted ``alerts.rules`` topic keyed ``customer_id|rule_id`` (a tombstone
deletes one). A customer with no rule gets :func:`default_rule`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from streams.domain.events import DriftDetected, KeyEvaluated
from streams.domain.values import DRIFT_TYPES, LEVELS, DriftType, Level

DriftTypes = tuple[DriftType, ...]


class InvalidRule(ValueError):  # noqa: N818 - the domain word; it is raised as an error
    """A rule record that cannot be applied."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One customer's rule: filters, thresholds, dedup window and auto-resolve."""

    customer_id: str
    rule_id: str
    drift_types: DriftTypes = DRIFT_TYPES
    min_severity_level: Level = "warning"
    min_confidence: float = 0.0
    payer_ids: tuple[str, ...] = ()
    cpt_groups: tuple[str, ...] = ()
    dedup_window_hours: int = 24
    auto_resolve_after: int = 2
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.customer_id or not self.rule_id or "|" in self.customer_id + self.rule_id:
            raise InvalidRule("customer_id and rule_id must be non-empty and free of '|'")
        unknown = set(self.drift_types) - set(DRIFT_TYPES)
        if unknown or not self.drift_types:
            raise InvalidRule(f"drift_types must be a non-empty subset of {list(DRIFT_TYPES)}")
        if self.min_severity_level not in LEVELS:
            raise InvalidRule(f"min_severity_level must be one of {list(LEVELS)}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise InvalidRule("min_confidence must be within 0..1")
        if self.dedup_window_hours < 1 or self.auto_resolve_after < 1:
            raise InvalidRule("dedup_window_hours and auto_resolve_after must be at least 1")

    @property
    def kafka_key(self) -> str:
        """``customer_id|rule_id``, the key on the compacted rules topic."""
        return f"{self.customer_id}|{self.rule_id}"

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

    def to_record(self) -> dict[str, Any]:
        """The AlertRule record (Avro/JSON field names)."""
        return {
            "customer_id": self.customer_id,
            "rule_id": self.rule_id,
            "drift_types": list(self.drift_types),
            "min_severity_level": self.min_severity_level,
            "min_confidence": self.min_confidence,
            "payer_ids": list(self.payer_ids) or None,
            "cpt_groups": list(self.cpt_groups) or None,
            "dedup_window_hours": self.dedup_window_hours,
            "auto_resolve_after": self.auto_resolve_after,
            "enabled": self.enabled,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AlertRule:
        """Parse an AlertRule record; raise :class:`InvalidRule`."""
        try:
            return cls(
                customer_id=str(record["customer_id"]),
                rule_id=str(record["rule_id"]),
                # Checked by __post_init__, as any rule is.
                drift_types=cast(DriftTypes, tuple(record.get("drift_types") or DRIFT_TYPES)),
                min_severity_level=cast(Level, str(record.get("min_severity_level") or "warning")),
                min_confidence=float(record.get("min_confidence") or 0.0),
                payer_ids=tuple(record.get("payer_ids") or ()),
                cpt_groups=tuple(record.get("cpt_groups") or ()),
                dedup_window_hours=int(record.get("dedup_window_hours") or 24),
                auto_resolve_after=int(record.get("auto_resolve_after") or 2),
                enabled=bool(record.get("enabled", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRule(f"invalid rule record: {exc}") from None


def default_rule(customer_id: str) -> AlertRule:
    """The rule a customer gets when it has none: all drift types, warning and above."""
    return AlertRule(customer_id=customer_id, rule_id="default")


@dataclass(slots=True)
class RuleBook:
    """All customers' rules, as last read from the rules topic."""

    rules: dict[str, AlertRule] = field(default_factory=dict)

    def apply(self, key: str, rule: AlertRule | None) -> None:
        """Set (or, with None, delete) the rule under ``customer_id|rule_id``."""
        if rule is None:
            self.rules.pop(key, None)
        else:
            self.rules[key] = rule

    def for_customer(self, customer_id: str) -> list[AlertRule]:
        """The customer's rules, sorted by id; the default rule when it has none."""
        own = sorted(
            (r for r in self.rules.values() if r.customer_id == customer_id),
            key=lambda r: r.rule_id,
        )
        return own or [default_rule(customer_id)]
