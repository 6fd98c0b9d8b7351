"""The percentiles every latency bench reports."""

from bench.harness import percentiles


def test_percentiles_are_inclusive_and_never_beyond_the_largest_sample() -> None:
    """p50/p99 interpolate within the samples; max is the largest; order does not matter."""
    samples = [float(x) for x in range(100, 0, -1)]
    assert percentiles(samples) == {"p50": 50.5, "p99": 99.0, "max": 100.0}


def test_percentiles_of_one_sample_and_of_none() -> None:
    """One sample is every percentile; no sample gives None (valid JSON, unlike NaN)."""
    assert percentiles([7.25]) == {"p50": 7.2, "p99": 7.2, "max": 7.2}
    assert percentiles([]) == {"p50": None, "p99": None, "max": None}
