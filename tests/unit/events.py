"""Builders for drift event and alert transition records in tests."""

from typing import Any


def drift_event(i: int) -> dict[str, Any]:
    """A DriftEvent record with event id ``e-<i>``."""
    return {
        "event_id": f"e-{i}",
        "customer_id": "acme",
        "payer_id": f"p{i % 3}",
        "cpt_group": "radiology",
        "drift_type": "denial_rate",
        "window_days": 7.0,
        "baseline_start": 0,
        "baseline_end": 1,
        "current_start": 2,
        "current_end": 3,
        "baseline_value": 0.1,
        "current_value": 0.3,
        "delta_value": 0.2,
        "baseline_n": 100,
        "current_n": 40,
        "p_value": 1e-6,
        "q_value": 1e-5,
        "severity": 0.8,
        "severity_level": "critical",
        "confidence": 0.99,
        "detected_at": 86_400_000 * i,
    }


def alert_event(alert: str, version: int, transition: str, **kw: Any) -> dict[str, Any]:
    """An AlertEvent record of alert ``alert`` naming drift event ``e-1``."""
    return {
        "alert_id": alert,
        "version": version,
        "dedup_key": f"acme|default|{alert}",
        "customer_id": "acme",
        "rule_id": "default",
        "drift_event_id": "e-1",
        "payer_id": "p1",
        "cpt_group": "radiology",
        "drift_type": "denial_rate",
        "status": kw.get("status", "active"),
        "transition": transition,
        "severity": 0.5,
        "severity_level": "warning",
        "occurrence_count": version,
        "first_seen": 0,
        "last_seen": 1000 * version,
        "acknowledged_by": None,
        "resolved_by": None,
        "resolution": None,
        "verdict": kw.get("verdict"),
        "message": "m",
        "notify": True,
    }
