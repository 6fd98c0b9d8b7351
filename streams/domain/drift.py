"""Drift evaluation at a bucket close: windows vs baseline, three tests, BH, severity.

At the close of bucket ``c`` each key is tested in every current window (the last
``short_window_buckets`` and the last ``long_window_buckets`` buckets up to ``c``) against one
baseline (the ``baseline_buckets`` buckets before the long window):

- ``denial_rate``: pooled two-proportion z-test; value = denied / decided claims.
- ``decision_lag``: Welch's t-test on decision lag in days; value = mean days.
- ``allowed_amount``: Welch's t-test on ln(allowed $) of claims with an allowed amount;
  value = geometric mean in dollars, effect = relative change.

Tests that meet the minimum samples enter Benjamini–Hochberg over all tests of the close (every
key, window and type); a drift is detected when its q-value is at most ``fdr_q_max`` and its
effect reaches the type's floor. Severity = effect / FULL_SCALE, capped at 1.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from streams.domain.events import DriftDetected, KeyEvaluated
from streams.domain.stats import benjamini_hochberg, two_proportion_z_test, welch_t_test
from streams.domain.values import METRIC_DRIFT_TYPES, DriftType, Level
from streams.domain.windows import KeyWindows, WindowSums

EVENT_NAMESPACE = uuid.UUID("8f5e2f8e-6f4b-4e8f-9a53-0c1d5d7a7c11")

# severity → level: info below 0.3, warning below 0.6, critical from 0.6.
WARNING_FROM = 0.3
CRITICAL_FROM = 0.6
# Severity 1.0 at: a 25-point denial-rate change, a 10-day lag change, a 50 % amount change.
FULL_SCALE: dict[DriftType, float] = {"denial_rate": 0.25, "decision_lag": 10.0,
                                      "allowed_amount": 0.5}  # fmt: skip


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Window lengths (in buckets) and detection thresholds."""

    bucket_ms: int
    short_window_buckets: int = 7
    long_window_buckets: int = 30
    baseline_buckets: int = 60
    min_current_n: int = 30
    min_baseline_n: int = 100
    min_expected_count: float = 5.0
    denial_rate_floor: float = 0.05
    decision_lag_floor_days: float = 2.0
    allowed_amount_floor: float = 0.10
    fdr_q_max: float = 0.001
    drift_types: tuple[DriftType, ...] = METRIC_DRIFT_TYPES

    @property
    def history_buckets(self) -> int:
        """How many buckets back from a close any window reaches."""
        return self.long_window_buckets + self.baseline_buckets

    def current_windows(self) -> tuple[int, ...]:
        """Distinct current-window lengths, short first."""
        return tuple(sorted({self.short_window_buckets, self.long_window_buckets}))


def severity_level(severity: float) -> Level:
    """Map a 0–1 severity to ``info`` / ``warning`` / ``critical``."""
    if severity >= CRITICAL_FROM:
        return "critical"
    if severity >= WARNING_FROM:
        return "warning"
    return "info"


@dataclass(frozen=True, slots=True)
class _Test:
    """One test's outcome before multiple-testing correction."""

    baseline_n: int
    current_n: int
    baseline_value: float
    current_value: float
    effect: float  # |size| in the unit of the floor and the severity scale
    p_value: float


@dataclass(frozen=True, slots=True)
class _Candidate:
    key: KeyWindows
    drift_type: DriftType
    window_buckets: int
    test: _Test


def _denial_test(cfg: DriftConfig, base: WindowSums, cur: WindowSums) -> _Test | None:
    if cur.n < cfg.min_current_n or base.n < cfg.min_baseline_n:
        return None
    pooled = (base.denied + cur.denied) / (base.n + cur.n)
    for n in (base.n, cur.n):
        if n * pooled < cfg.min_expected_count or n * (1 - pooled) < cfg.min_expected_count:
            return None
    t = two_proportion_z_test(base.denied, base.n, cur.denied, cur.n)
    return _Test(base.n, cur.n, t.baseline_rate, t.current_rate, abs(t.delta), t.p_value)


def _lag_test(cfg: DriftConfig, base: WindowSums, cur: WindowSums) -> _Test | None:
    if cur.n < cfg.min_current_n or base.n < cfg.min_baseline_n:
        return None
    t = welch_t_test(base.n, base.lag_sum, base.lag_sq, cur.n, cur.lag_sum, cur.lag_sq)
    effect = abs(t.current_mean - t.baseline_mean)
    return _Test(base.n, cur.n, t.baseline_mean, t.current_mean, effect, t.p_value)


def _amount_test(cfg: DriftConfig, base: WindowSums, cur: WindowSums) -> _Test | None:
    if cur.amount_n < cfg.min_current_n or base.amount_n < cfg.min_baseline_n:
        return None
    t = welch_t_test(
        base.amount_n,
        base.amount_log,
        base.amount_log_sq,
        cur.amount_n,
        cur.amount_log,
        cur.amount_log_sq,
    )
    # Values are geometric means in dollars; the effect is the relative change.
    base_value, cur_value = math.exp(t.baseline_mean), math.exp(t.current_mean)
    effect = abs(cur_value / base_value - 1.0)
    return _Test(base.amount_n, cur.amount_n, base_value, cur_value, effect, t.p_value)


_TESTS = {"denial_rate": _denial_test, "decision_lag": _lag_test, "allowed_amount": _amount_test}


def _floor(cfg: DriftConfig, drift_type: DriftType) -> float:
    return {
        "denial_rate": cfg.denial_rate_floor,
        "decision_lag": cfg.decision_lag_floor_days,
        "allowed_amount": cfg.allowed_amount_floor,
    }[drift_type]


def evaluate_close(
    cfg: DriftConfig, closed_bucket: int, keys: Iterable[KeyWindows]
) -> tuple[list[DriftDetected], list[KeyEvaluated]]:
    """Evaluate every key with data in the windows at the close of ``closed_bucket``.

    Returns the detected drifts and, per key evaluated, which drift types were tested.
    Deterministic: keys are evaluated in sorted order and ids derive from key and window.
    """
    base_last = closed_bucket - cfg.long_window_buckets
    base_first = base_last - cfg.baseline_buckets + 1
    candidates: list[_Candidate] = []
    evaluated: list[KeyEvaluated] = []
    for key in sorted(keys, key=lambda k: k.key):
        baseline = key.sums(base_first, base_last)
        tested: list[str] = []
        for window in cfg.current_windows():
            current = key.sums(closed_bucket - window + 1, closed_bucket)
            for drift_type in cfg.drift_types:
                test = _TESTS[drift_type](cfg, baseline, current)
                if test is not None:
                    candidates.append(_Candidate(key, drift_type, window, test))
                    if drift_type not in tested:
                        tested.append(drift_type)
        if tested:
            evaluated.append(_evaluated(cfg, key.key, closed_bucket, tuple(tested)))
    q_values = benjamini_hochberg([c.test.p_value for c in candidates])
    detected = [
        _drift_event(cfg, closed_bucket, c, q)
        for c, q in zip(candidates, q_values, strict=True)
        if q <= cfg.fdr_q_max and c.test.effect >= _floor(cfg, c.drift_type)
    ]
    by_key: dict[str, list[DriftDetected]] = {}
    for event in detected:
        by_key.setdefault(event.window_key, []).append(event)
    evaluated = [e.with_detections(by_key.get(e.window_key, [])) for e in evaluated]
    return detected, evaluated


def _evaluated(cfg: DriftConfig, key: str, closed: int, types: tuple[str, ...]) -> KeyEvaluated:
    customer_id, payer_id, cpt_group = key.split("|")
    return KeyEvaluated(
        customer_id=customer_id,
        payer_id=payer_id,
        cpt_group=cpt_group,
        evaluated_at_ms=(closed + 1) * cfg.bucket_ms,
        drift_types=types,
        detections=(),
    )


def _drift_event(cfg: DriftConfig, closed: int, c: _Candidate, q_value: float) -> DriftDetected:
    customer_id, payer_id, cpt_group = c.key.key.split("|")
    t = c.test
    severity = min(1.0, t.effect / FULL_SCALE[c.drift_type])
    current_end_ms = (closed + 1) * cfg.bucket_ms
    current_start_ms = current_end_ms - c.window_buckets * cfg.bucket_ms
    baseline_end_ms = (closed + 1 - cfg.long_window_buckets) * cfg.bucket_ms
    baseline_start_ms = baseline_end_ms - cfg.baseline_buckets * cfg.bucket_ms
    event_id = uuid.uuid5(
        EVENT_NAMESPACE, f"{c.key.key}|{c.drift_type}|{c.window_buckets}|{current_end_ms}"
    )
    return DriftDetected(
        event_id=str(event_id),
        customer_id=customer_id,
        payer_id=payer_id,
        cpt_group=cpt_group,
        drift_type=c.drift_type,
        window_days=c.window_buckets * cfg.bucket_ms / 86_400_000,
        baseline_start_ms=baseline_start_ms,
        baseline_end_ms=baseline_end_ms,
        current_start_ms=current_start_ms,
        current_end_ms=current_end_ms,
        baseline_value=t.baseline_value,
        current_value=t.current_value,
        delta_value=t.current_value - t.baseline_value,
        baseline_n=t.baseline_n,
        current_n=t.current_n,
        p_value=t.p_value,
        q_value=q_value,
        severity=severity,
        severity_level=severity_level(severity),
        confidence=max(0.0, 1.0 - q_value),
        detected_at_ms=current_end_ms,
    )
