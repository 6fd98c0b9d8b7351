"""Drift evaluation at a bucket close."""

import pytest

from streams.domain.drift import DriftConfig, evaluate_close, severity_level
from streams.domain.windows import KeyWindows
from tests.unit.claims import DAY_MS, claim_on_day

CFG = DriftConfig(bucket_ms=DAY_MS)


def _key(payer: str, rates: dict[range, float], per_day: int = 20) -> KeyWindows:
    """A key with ``per_day`` claims a day and a denial rate per day range."""
    key = KeyWindows(f"acme|{payer}|radiology", 0)
    for days, rate in rates.items():
        for day in days:
            denied_today = round(per_day * rate)
            for i in range(per_day):
                key.add(claim_on_day(day, denied=i < denied_today, payer=payer, i=i), day)
    return key


def test_spiked_key_is_detected_steady_key_is_not() -> None:
    """A 10 % → 35 % jump is a drift; a steady 10 % key is only evaluated."""
    spiked = _key("payer-b", {range(0, 90): 0.10, range(90, 100): 0.35})
    steady = _key("payer-a", {range(0, 100): 0.10})
    drifts, evaluated = evaluate_close(CFG, 99, [spiked, steady])
    assert {d.payer_id for d in drifts} == {"payer-b"}
    short = next(d for d in drifts if d.window_days == 7)
    assert short.baseline_value == pytest.approx(0.10)
    assert short.current_value == pytest.approx(0.35)
    assert short.current_n == 140
    assert short.baseline_n == 60 * 20
    assert short.severity_level == "critical"
    assert short.detected_at_ms == 100 * DAY_MS
    assert {e.payer_id for e in evaluated} == {"payer-a", "payer-b"}
    assert [len(e.detections) for e in sorted(evaluated, key=lambda e: e.payer_id)] == [0, 2]


@pytest.mark.parametrize(
    ("per_day", "current_rate", "expect"),
    [
        (3, 0.70, False),  # current window 21 claims < 30: below minimum samples
        (20, 0.13, False),  # 3 points: below the 5-point effect floor
        (20, 0.30, True),
    ],
)
def test_minimum_samples_and_effect_floor(per_day: int, current_rate: float, expect: bool) -> None:
    """Below the minimum samples or the effect floor there is no event."""
    key = _key("payer-b", {range(0, 93): 0.10}, per_day=20)
    recent = _key("payer-b", {range(93, 100): current_rate}, per_day=per_day)
    for index, sums in recent.buckets.items():
        key.set_bucket(index, sums)
    drifts, _ = evaluate_close(CFG, 99, [key])
    assert any(d.window_days == 7 for d in drifts) is expect


def test_event_ids_are_deterministic() -> None:
    """The same windows give the same event ids."""
    key = _key("payer-b", {range(0, 90): 0.10, range(90, 100): 0.35})
    first, _ = evaluate_close(CFG, 99, [key])
    again, _ = evaluate_close(CFG, 99, [key])
    assert [d.event_id for d in first] == [d.event_id for d in again]
    assert len({d.event_id for d in first}) == len(first)


@pytest.mark.parametrize(
    ("severity", "level"), [(0.0, "info"), (0.29, "info"), (0.3, "warning"), (0.6, "critical")]
)
def test_severity_levels(severity: float, level: str) -> None:
    """Documented mapping: info < 0.3 ≤ warning < 0.6 ≤ critical."""
    assert severity_level(severity) == level
