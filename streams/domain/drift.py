"""Drift evaluation at a bucket close: windows vs baseline, tests, BH, severity.

At the close of bucket ``c`` each key is tested in every current window (the last
``short_window_buckets`` and the last ``long_window_buckets`` buckets up to ``c``) against one
baseline (the ``baseline_buckets`` buckets before the long window). Tests that meet the minimum
samples enter Benjamini–Hochberg over all tests of the close; a drift is detected when its
q-value is at most ``fdr_q_max`` and its effect reaches the floor.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from streams.domain.events import DriftDetected, KeyEvaluated
from streams.domain.stats import benjamini_hochberg, two_proportion_z_test
from streams.domain.windows import KeyWindows, WindowSums

EVENT_NAMESPACE = uuid.UUID("8f5e2f8e-6f4b-4e8f-9a53-0c1d5d7a7c11")

# severity → level: info below 0.3, warning below 0.6, critical from 0.6.
WARNING_FROM = 0.3
CRITICAL_FROM = 0.6
LEVELS = ("info", "warning", "critical")
# A denial-rate change of this many points is severity 1.0.
DENIAL_RATE_FULL_SCALE = 0.25


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
    fdr_q_max: float = 0.001

    @property
    def history_buckets(self) -> int:
        """How many buckets back from a close any window reaches."""
        return self.long_window_buckets + self.baseline_buckets

    def current_windows(self) -> tuple[int, ...]:
        """Distinct current-window lengths, short first."""
        return tuple(sorted({self.short_window_buckets, self.long_window_buckets}))


def severity_level(severity: float) -> str:
    """Map a 0–1 severity to ``info`` / ``warning`` / ``critical``."""
    if severity >= CRITICAL_FROM:
        return "critical"
    if severity >= WARNING_FROM:
        return "warning"
    return "info"


@dataclass(frozen=True, slots=True)
class _Candidate:
    key: KeyWindows
    window_buckets: int
    baseline: WindowSums
    current: WindowSums
    baseline_value: float
    current_value: float
    p_value: float


def _denial_candidate(
    cfg: DriftConfig, key: KeyWindows, window: int, baseline: WindowSums, current: WindowSums
) -> _Candidate | None:
    if current.n < cfg.min_current_n or baseline.n < cfg.min_baseline_n:
        return None
    pooled = (baseline.denied + current.denied) / (baseline.n + current.n)
    for n in (baseline.n, current.n):
        if n * pooled < cfg.min_expected_count or n * (1 - pooled) < cfg.min_expected_count:
            return None
    test = two_proportion_z_test(baseline.denied, baseline.n, current.denied, current.n)
    return _Candidate(
        key, window, baseline, current, test.baseline_rate, test.current_rate, test.p_value
    )


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
        tested = False
        for window in cfg.current_windows():
            current = key.sums(closed_bucket - window + 1, closed_bucket)
            candidate = _denial_candidate(cfg, key, window, baseline, current)
            if candidate is not None:
                candidates.append(candidate)
                tested = True
        if tested:
            evaluated.append(_evaluated(cfg, key.key, closed_bucket, ("denial_rate",)))
    q_values = benjamini_hochberg([c.p_value for c in candidates])
    detected = [
        _drift_event(cfg, closed_bucket, c, q)
        for c, q in zip(candidates, q_values, strict=True)
        if q <= cfg.fdr_q_max and abs(c.current_value - c.baseline_value) >= cfg.denial_rate_floor
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
    delta = c.current_value - c.baseline_value
    severity = min(1.0, abs(delta) / DENIAL_RATE_FULL_SCALE)
    current_end_ms = (closed + 1) * cfg.bucket_ms
    current_start_ms = current_end_ms - c.window_buckets * cfg.bucket_ms
    baseline_end_ms = (closed + 1 - cfg.long_window_buckets) * cfg.bucket_ms
    baseline_start_ms = baseline_end_ms - cfg.baseline_buckets * cfg.bucket_ms
    event_id = uuid.uuid5(
        EVENT_NAMESPACE, f"{c.key.key}|denial_rate|{c.window_buckets}|{current_end_ms}"
    )
    return DriftDetected(
        event_id=str(event_id),
        customer_id=customer_id,
        payer_id=payer_id,
        cpt_group=cpt_group,
        drift_type="denial_rate",
        window_days=c.window_buckets * cfg.bucket_ms / 86_400_000,
        baseline_start_ms=baseline_start_ms,
        baseline_end_ms=baseline_end_ms,
        current_start_ms=current_start_ms,
        current_end_ms=current_end_ms,
        baseline_value=c.baseline_value,
        current_value=c.current_value,
        delta_value=delta,
        baseline_n=c.baseline.n,
        current_n=c.current.n,
        p_value=c.p_value,
        q_value=q_value,
        severity=severity,
        severity_level=severity_level(severity),
        confidence=max(0.0, 1.0 - q_value),
        detected_at_ms=current_end_ms,
    )
