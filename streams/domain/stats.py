"""Statistics for drift tests: two-proportion z-test and Benjamini–Hochberg q-values.

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
