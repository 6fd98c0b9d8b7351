"""Two-proportion z-test and Benjamini–Hochberg against hand-computed values."""

import math

import pytest

from streams.domain.stats import benjamini_hochberg, normal_sf, two_proportion_z_test


@pytest.mark.parametrize(
    ("base_hits", "base_n", "cur_hits", "cur_n", "z", "p"),
    [
        # pooled p = 45/300 = 0.15; se = sqrt(.15*.85*(1/200+1/100)) = 0.043732; z = 0.15/0.043732
        (20, 200, 25, 100, 3.429972, 0.000604),
        # identical rates: z = 0, p = 1
        (10, 100, 10, 100, 0.0, 1.0),
        # a drop: pooled 0.2; se = sqrt(.2*.8*(2/100)) = 0.056569; z = -0.2/0.056569
        (30, 100, 10, 100, -3.535534, 0.000407),
    ],
)
def test_z_test_matches_hand_computation(
    base_hits: int, base_n: int, cur_hits: int, cur_n: int, z: float, p: float
) -> None:
    """The z statistic and two-sided p-value equal the textbook formula's values."""
    result = two_proportion_z_test(base_hits, base_n, cur_hits, cur_n)
    assert result.z == pytest.approx(z, abs=1e-5)
    assert result.p_value == pytest.approx(p, abs=2e-6)


def test_z_test_with_zero_variance_is_not_significant() -> None:
    """All-denied in both samples gives p = 1 instead of dividing by zero."""
    assert two_proportion_z_test(50, 50, 40, 40).p_value == 1.0


def test_z_test_rejects_empty_samples() -> None:
    """An empty sample is a caller error."""
    with pytest.raises(ValueError, match="at least one"):
        two_proportion_z_test(0, 0, 1, 10)


def test_normal_sf_known_points() -> None:
    """P(Z > 1.96) is 0.025 and P(Z > 0) is one half."""
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)
    assert normal_sf(0.0) == 0.5


@pytest.mark.parametrize(
    ("p_values", "q_values"),
    [
        ([0.01, 0.04, 0.03, 0.005], [0.02, 0.04, 0.04, 0.02]),
        ([0.5], [0.5]),
        ([], []),
        ([0.2, 0.2, 0.9], [0.3, 0.3, 0.9]),
    ],
)
def test_benjamini_hochberg(p_values: list[float], q_values: list[float]) -> None:
    """q-values are the step-up BH adjustment, returned in input order."""
    assert benjamini_hochberg(p_values) == pytest.approx(q_values)


def test_bh_q_never_below_p() -> None:
    """Adjustment only raises p-values."""
    ps = [math.exp(-i) for i in range(10)]
    assert all(q >= p for p, q in zip(ps, benjamini_hochberg(ps), strict=True))
