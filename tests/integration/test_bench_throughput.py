"""A small run of bench/throughput.py produces a complete, consistent report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_throughput_bench_smoke_run() -> None:
    """3,000 claims, one run, one worker: the ceiling, the worker's rate, RSS, keys."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--claims", "3000", "--runs", "1",
         "--workers", "1", "--timeout", "240"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["claims"] == 3000
    run = report["runs"][0]
    assert run["ceiling_claims_per_s"] > 0
    worker = run["workers_1"]
    assert worker["claims_per_s"] > 0 and worker["seconds"] > 0
    assert worker["active_keys"] > 0 and all(r > 0 for r in worker["rss_mib"])
    summary = report["summary"]
    assert (
        0
        < summary["workers_1_ratio_to_ceiling"]
        == pytest.approx(worker["claims_per_s"] / run["ceiling_claims_per_s"], abs=0.001)
    )
    assert "workers_1_claims_per_s" in result.stderr
