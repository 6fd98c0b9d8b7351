"""Alert dedup and lifecycle, with a dict as the store."""

import dataclasses
from typing import Any, cast

import pytest

from streams.domain.alerts import AlertCommand, AlertLifecycle, AlertState, AlertStore
from streams.domain.events import AlertTransitioned, DriftDetected, KeyEvaluated
from streams.domain.rules import AlertRule, default_rule
from streams.domain.values import Level

HOUR = 3_600_000
DAY = 24 * HOUR


class DictStore:
    """In-memory AlertStore."""

    def __init__(self) -> None:
        self.states: dict[str, AlertState] = {}
        self.pointers: dict[str, str] = {}

    def current(self, dedup_key: str) -> AlertState | None:
        alert_id = self.pointers.get(dedup_key)
        return self.get(alert_id) if alert_id else None

    def get(self, alert_id: str) -> AlertState | None:
        state = self.states.get(alert_id)
        return dataclasses.replace(state) if state else None

    def put(self, state: AlertState) -> None:
        self.states[state.alert_id] = dataclasses.replace(state)

    def point(self, dedup_key: str, alert_id: str) -> None:
        self.pointers[dedup_key] = alert_id


def drift(at_ms: int, severity: float = 0.5, payer: str = "payer-b") -> DriftDetected:
    level: Level = "critical" if severity >= 0.6 else "warning" if severity >= 0.3 else "info"
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


def run(
    *evaluations: KeyEvaluated, rules: list[AlertRule] = RULES, store: AlertStore | None = None
) -> list[AlertTransitioned]:
    lifecycle = AlertLifecycle(store or DictStore())
    out: list[AlertTransitioned] = []
    for e in evaluations:
        out.extend(lifecycle.apply_evaluation(e, rules))
    return out


def test_first_detection_triggers_and_redetections_update() -> None:
    """Daily re-detections within the dedup window update one alert."""
    out = run(*(evaluation(d * DAY, drift(d * DAY)) for d in range(1, 4)))
    assert [t.transition for t in out] == ["triggered", "updated", "updated"]
    assert len({t.alert_id for t in out}) == 1
    assert [t.version for t in out] == [1, 2, 3]
    assert out[-1].occurrence_count == 3
    assert out[-1].first_seen_ms == DAY
    assert out[-1].last_seen_ms == 3 * DAY


@pytest.mark.parametrize(
    ("severities", "notifies"),
    [
        ([0.4, 0.4, 0.5], [True, False, False]),  # same level: silent
        ([0.4, 0.7, 0.7], [True, True, False]),  # warning → critical: re-notify once
        ([0.7, 0.4], [True, False]),  # max severity is kept
    ],
)
def test_updates_notify_only_when_level_rises(
    severities: list[float], notifies: list[bool]
) -> None:
    """An update is re-notified only if the severity level rises."""
    out = run(
        *(evaluation((i + 1) * DAY, drift((i + 1) * DAY, s)) for i, s in enumerate(severities))
    )
    assert [t.notify for t in out] == notifies
    assert out[-1].severity == max(severities)


def test_below_rule_threshold_triggers_nothing() -> None:
    """An info-level drift does not match the default rule."""
    assert run(evaluation(DAY, drift(DAY, severity=0.1))) == []


def test_auto_resolve_after_clean_evaluations_then_new_alert() -> None:
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


def test_one_clean_evaluation_is_not_enough_and_detection_resets_count() -> None:
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


def test_detection_after_dedup_window_opens_new_alert() -> None:
    """A re-detection more than dedup_window_hours after last_seen is a new alert."""
    out = run(evaluation(DAY, drift(DAY)), evaluation(3 * DAY, drift(3 * DAY)))
    assert [t.transition for t in out] == ["triggered", "resolved", "triggered"]
    assert out[0].alert_id == out[1].alert_id != out[2].alert_id


def test_replayed_evaluation_changes_nothing() -> None:
    """Redelivering an evaluation already applied emits no transition."""
    store = DictStore()
    first = run(evaluation(DAY, drift(DAY)), store=store)
    again = run(evaluation(DAY, drift(DAY)), store=store)
    assert len(first) == 1
    assert again == []


def test_rule_filters_by_payer() -> None:
    """A rule restricted to payer-a ignores payer-b."""
    rules = [AlertRule("acme", "only-a", payer_ids=("payer-a",))]
    assert run(evaluation(DAY, drift(DAY)), rules=rules) == []
    assert len(run(evaluation(DAY, drift(DAY, payer="payer-a"), payer="payer-a"), rules=rules)) == 1


def _command(alert_id: str, command: str, command_id: str = "cmd-1", **kw: Any) -> AlertCommand:
    return AlertCommand(
        command_id=command_id,
        customer_id=kw.pop("customer_id", "acme"),
        alert_id=alert_id,
        command=command,
        operator="olga",
        **kw,
    )


@pytest.mark.parametrize(
    ("commands", "transitions", "status"),
    [
        ([("acknowledge", {})], ["acknowledged"], "acknowledged"),
        ([("resolve", {})], ["resolved"], "resolved"),
        ([("acknowledge", {}), ("resolve", {})], ["acknowledged", "resolved"], "resolved"),
        ([("judge", {"verdict": "false_positive"})], ["judged"], "active"),
        (
            [("resolve", {}), ("judge", {"verdict": "true_positive"})],
            ["resolved", "judged"],
            "resolved",
        ),
        ([("note", {"note": "payer confirmed"})], ["noted"], "active"),
        ([("assign", {"assignee": "ravi"})], ["assigned"], "active"),
        ([("resolve", {}), ("note", {"note": "appealed"})], ["resolved", "noted"], "resolved"),
    ],
)
def test_operator_commands(
    commands: list[tuple[str, dict[str, str]]], transitions: list[str], status: str
) -> None:
    """Acknowledge / resolve / judge move the alert and emit one transition each."""
    store = DictStore()
    (trigger,) = run(evaluation(DAY, drift(DAY)), store=store)
    lifecycle = AlertLifecycle(store)
    out: list[AlertTransitioned] = []
    for i, (name, extra) in enumerate(commands):
        outcome = lifecycle.apply_command(_command(trigger.alert_id, name, f"c{i}", **extra))
        assert outcome.rejected is None
        out.extend(outcome.transitions)
    assert [t.transition for t in out] == transitions
    assert out[-1].status == status
    assert [t.version for t in out] == list(range(2, 2 + len(out)))


@pytest.mark.parametrize(
    ("alert", "command", "extra", "reason"),
    [
        ("nope", "acknowledge", {}, "unknown_alert"),
        (None, "acknowledge", {"customer_id": "other"}, "foreign_customer"),
        (None, "explode", {}, "invalid_command"),
        (None, "judge", {"verdict": "maybe"}, "invalid_command"),
        (None, "note", {}, "invalid_command"),
        (None, "note", {"note": ""}, "invalid_command"),
        (None, "assign", {}, "invalid_command"),
    ],
)
def test_invalid_commands_are_rejected_never_applied(
    alert: str | None, command: str, extra: dict[str, str], reason: str
) -> None:
    """Unknown alert, foreign customer, bad command or verdict: rejected with a reason."""
    store = DictStore()
    (trigger,) = run(evaluation(DAY, drift(DAY)), store=store)
    outcome = AlertLifecycle(store).apply_command(
        _command(alert or trigger.alert_id, command, **extra)
    )
    assert (outcome.rejected, outcome.transitions) == (reason, [])
    assert cast(AlertState, store.get(trigger.alert_id)).version == 1


def test_a_command_names_its_operator_and_carries_its_note_and_assignment_stays() -> None:
    """A command's actor and note belong to its transition; the assignee to the alert, on
    every later transition, until an empty assignee unassigns it."""
    store = DictStore()
    (trigger,) = run(evaluation(DAY, drift(DAY)), store=store)
    assert (trigger.actor, trigger.note, trigger.assignee) == (None, None, None)
    lifecycle = AlertLifecycle(store)
    (assigned,) = lifecycle.apply_command(
        _command(trigger.alert_id, "assign", "c1", assignee="ravi", note="yours")
    ).transitions
    assert (assigned.actor, assigned.note, assigned.assignee) == ("olga", "yours", "ravi")
    assert not assigned.notify  # pages nobody: who owns an alert is not news of the payer
    (noted,) = lifecycle.apply_command(
        _command(trigger.alert_id, "note", "c2", note="payer confirmed a policy change")
    ).transitions
    assert (noted.actor, noted.note, noted.assignee, noted.notify) == (
        "olga", "payer confirmed a policy change", "ravi", False
    )  # fmt: skip
    (update,) = run(evaluation(DAY + 1, drift(DAY + 1)), store=store)
    assert (update.actor, update.note, update.assignee) == (None, None, "ravi")
    (unassigned,) = lifecycle.apply_command(
        _command(trigger.alert_id, "assign", "c3", assignee="")
    ).transitions
    assert (unassigned.transition, unassigned.assignee) == ("assigned", None)


def test_commands_apply_exactly_once_by_command_id() -> None:
    """The same command_id twice: the second is a no-op, not a rejection."""
    store = DictStore()
    (trigger,) = run(evaluation(DAY, drift(DAY)), store=store)
    lifecycle = AlertLifecycle(store)
    first = lifecycle.apply_command(_command(trigger.alert_id, "judge", verdict="true_positive"))
    again = lifecycle.apply_command(_command(trigger.alert_id, "judge", verdict="true_positive"))
    assert len(first.transitions) == 1
    assert again.transitions == []
    assert again.duplicate
    assert again.rejected is None


def test_acknowledged_alert_updates_silently_and_still_auto_resolves() -> None:
    """While acknowledged, updates never notify, even on a level rise; clean evaluations resolve."""
    store = DictStore()
    (trigger,) = run(evaluation(DAY, drift(DAY, 0.4)), store=store)
    AlertLifecycle(store).apply_command(_command(trigger.alert_id, "acknowledge"))
    out = run(
        evaluation(2 * DAY, drift(2 * DAY, 0.9)),
        evaluation(3 * DAY),
        evaluation(4 * DAY),
        store=store,
    )
    assert [(t.transition, t.notify) for t in out] == [("updated", False), ("resolved", True)]
    assert out[0].status == "acknowledged"


def test_old_alert_can_be_judged_after_a_new_one_opened() -> None:
    """Judging a superseded alert works and does not disturb the current one."""
    store = DictStore()
    out = run(evaluation(DAY, drift(DAY)), evaluation(5 * DAY, drift(5 * DAY)), store=store)
    old, new = out[0].alert_id, out[-1].alert_id
    assert old != new
    outcome = AlertLifecycle(store).apply_command(_command(old, "judge", verdict="false_positive"))
    assert outcome.transitions[0].alert_id == old
    more = run(evaluation(6 * DAY, drift(6 * DAY)), store=store)
    assert more[0].alert_id == new
    assert more[0].transition == "updated"
