"""Alert dedup and lifecycle, with a dict as the store."""

import dataclasses

import pytest

from streams.domain.alerts import AlertLifecycle, AlertRule, AlertState, default_rule
from streams.domain.events import DriftDetected, KeyEvaluated

HOUR = 3_600_000
DAY = 24 * HOUR


class DictStore:
    """In-memory AlertStore."""

    def __init__(self) -> None:
        self.states: dict[str, AlertState] = {}

    def get(self, dedup_key: str) -> AlertState | None:
        state = self.states.get(dedup_key)
        return dataclasses.replace(state) if state else None

    def put(self, state: AlertState) -> None:
        self.states[state.dedup_key] = dataclasses.replace(state)


def drift(at_ms: int, severity: float = 0.5, payer: str = "payer-b") -> DriftDetected:
    level = "critical" if severity >= 0.6 else "warning" if severity >= 0.3 else "info"
    return DriftDetected(
        event_id=f"e-{at_ms}-{severity}",
        customer_id="acme",
        payer_id=payer,
        cpt_group="radiology",
        drift_type="denial_rate",
        window_days=7,
        baseline_start_ms=0,
        baseline_end_ms=0,
        current_start_ms=0,
        current_end_ms=at_ms,
        baseline_value=0.1,
        current_value=0.3,
        delta_value=0.2,
        baseline_n=1000,
        current_n=140,
        p_value=1e-9,
        q_value=1e-8,
        severity=severity,
        severity_level=level,
        confidence=1.0,
        detected_at_ms=at_ms,
    )


def evaluation(at_ms: int, *detections: DriftDetected, payer: str = "payer-b") -> KeyEvaluated:
    return KeyEvaluated("acme", payer, "radiology", at_ms, ("denial_rate",), tuple(detections))


RULES = [default_rule("acme")]


def run(*evaluations: KeyEvaluated, rules=RULES, store=None):
    lifecycle = AlertLifecycle(store or DictStore())
    out = []
    for e in evaluations:
        out.extend(lifecycle.apply_evaluation(e, rules))
    return out


def test_first_detection_triggers_and_redetections_update():
    """Daily re-detections within the dedup window update one alert."""
    out = run(*(evaluation(d * DAY, drift(d * DAY)) for d in range(1, 4)))
    assert [t.transition for t in out] == ["triggered", "updated", "updated"]
    assert len({t.alert_id for t in out}) == 1
    assert [t.version for t in out] == [1, 2, 3]
    assert out[-1].occurrence_count == 3
    assert out[-1].first_seen_ms == DAY and out[-1].last_seen_ms == 3 * DAY


@pytest.mark.parametrize(
    ("severities", "notifies"),
    [
        ([0.4, 0.4, 0.5], [True, False, False]),  # same level: silent
        ([0.4, 0.7, 0.7], [True, True, False]),  # warning → critical: re-notify once
        ([0.7, 0.4], [True, False]),  # max severity is kept
    ],
)
def test_updates_notify_only_when_level_rises(severities, notifies):
    """An update is re-notified only if the severity level rises."""
    out = run(
        *(evaluation((i + 1) * DAY, drift((i + 1) * DAY, s)) for i, s in enumerate(severities))
    )
    assert [t.notify for t in out] == notifies
    assert out[-1].severity == max(severities)


def test_below_rule_threshold_triggers_nothing():
    """An info-level drift does not match the default rule."""
    assert run(evaluation(DAY, drift(DAY, severity=0.1))) == []


def test_auto_resolve_after_clean_evaluations_then_new_alert():
    """Two clean evaluations resolve the alert; a later detection opens a new one."""
    out = run(
        evaluation(1 * DAY, drift(1 * DAY)),
        evaluation(2 * DAY),
        evaluation(3 * DAY),
        evaluation(4 * DAY, drift(4 * DAY)),
    )
    assert [(t.transition, t.status) for t in out] == [
        ("triggered", "active"),
        ("resolved", "resolved"),
        ("triggered", "active"),
    ]
    assert out[1].resolution == "auto"
    assert out[0].alert_id != out[2].alert_id


def test_one_clean_evaluation_is_not_enough_and_detection_resets_count():
    """Fewer clean evaluations than auto_resolve_after keep the alert; a detection resets them."""
    rules = [AlertRule("acme", "wide", dedup_window_hours=72)]
    out = run(
        evaluation(1 * DAY, drift(1 * DAY)),
        evaluation(2 * DAY),
        evaluation(3 * DAY, drift(3 * DAY)),
        evaluation(4 * DAY),
        rules=rules,
    )
    assert [t.transition for t in out] == ["triggered", "updated"]
    assert out[-1].status == "active"


def test_detection_after_dedup_window_opens_new_alert():
    """A re-detection more than dedup_window_hours after last_seen is a new alert."""
    out = run(evaluation(DAY, drift(DAY)), evaluation(3 * DAY, drift(3 * DAY)))
    assert [t.transition for t in out] == ["triggered", "resolved", "triggered"]
    assert out[0].alert_id == out[1].alert_id != out[2].alert_id


def test_replayed_evaluation_changes_nothing():
    """Redelivering an evaluation already applied emits no transition."""
    store = DictStore()
    first = run(evaluation(DAY, drift(DAY)), store=store)
    again = run(evaluation(DAY, drift(DAY)), store=store)
    assert len(first) == 1 and again == []


def test_rule_filters_by_payer():
    """A rule restricted to payer-a ignores payer-b."""
    rules = [AlertRule("acme", "only-a", payer_ids=("payer-a",))]
    assert run(evaluation(DAY, drift(DAY)), rules=rules) == []
    assert len(run(evaluation(DAY, drift(DAY, payer="payer-a"), payer="payer-a"), rules=rules)) == 1
