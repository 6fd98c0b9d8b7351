"""Statistics for drift tests: two-proportion z-test, Welch's t-test, Benjamini–Hochberg.

Pure functions over plain numbers; no numpy needed at these sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def normal_sf(z: float) -> float:
    """Upper tail of the standard normal distribution, P(Z > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """Result of a two-proportion z-test of current vs baseline."""

    baseline_rate: float
    current_rate: float
    z: float
    p_value: float

    @property
    def delta(self) -> float:
        """Current minus baseline rate."""
        return self.current_rate - self.baseline_rate


def two_proportion_z_test(
    baseline_hits: int, baseline_n: int, current_hits: int, current_n: int
) -> ProportionTest:
    """Two-sided pooled z-test for a difference in proportions.

    ``p_value`` is 1.0 when the pooled variance is zero (both samples all-hit or all-miss).
    """
    if baseline_n <= 0 or current_n <= 0:
        raise ValueError("both samples need at least one observation")
    p_base = baseline_hits / baseline_n
    p_cur = current_hits / current_n
    pooled = (baseline_hits + current_hits) / (baseline_n + current_n)
    variance = pooled * (1.0 - pooled) * (1.0 / baseline_n + 1.0 / current_n)
    if variance <= 0.0:
        return ProportionTest(p_base, p_cur, 0.0, 1.0)
    z = (p_cur - p_base) / math.sqrt(variance)
    return ProportionTest(p_base, p_cur, z, min(1.0, 2.0 * normal_sf(abs(z))))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q = [0.0] * m
    running_min = 1.0
    for rank in range(m, 0, -1):
        index = order[rank - 1]
        running_min = min(running_min, p_values[index] * m / rank)
        q[index] = running_min
    return q


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_two_sided(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with ``df`` degrees of freedom."""
    return regularized_beta(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True, slots=True)
class MeanTest:
    """Result of Welch's t-test of current vs baseline means."""

    baseline_mean: float
    current_mean: float
    t: float
    df: float
    p_value: float


def welch_t_test(
    baseline_n: int,
    baseline_sum: float,
    baseline_sq: float,
    current_n: int,
    current_sum: float,
    current_sq: float,
) -> MeanTest:
    """Welch's unequal-variance t-test from running sums (n, Σx, Σx²); needs n ≥ 2 each."""
    if baseline_n < 2 or current_n < 2:
        raise ValueError("both samples need at least two observations")
    m1, m2 = baseline_sum / baseline_n, current_sum / current_n
    v1 = max(0.0, (baseline_sq - baseline_sum * m1) / (baseline_n - 1))
    v2 = max(0.0, (current_sq - current_sum * m2) / (current_n - 1))
    a, b = v1 / baseline_n, v2 / current_n
    se2 = a + b
    if se2 <= 1e-18:
        return MeanTest(m1, m2, 0.0, float(baseline_n + current_n - 2), 1.0 if m1 == m2 else 0.0)
    t = (m2 - m1) / math.sqrt(se2)
    df = se2 * se2 / (a * a / (baseline_n - 1) + b * b / (current_n - 1))
    return MeanTest(m1, m2, t, df, min(1.0, student_t_two_sided(t, df)))
