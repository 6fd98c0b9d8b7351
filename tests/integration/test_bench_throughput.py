"""Small runs of bench/throughput.py and bench/memory.py produce complete, consistent reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("UPSTREAM_TEST_BROKER") == "kafka",
        reason="the benches start an embedded broker of their own: make test runs them",
    ),
]


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


def test_memory_bench_smoke_run() -> None:
    """Tiny key counts and a 20 s soak: RSS per key and RSS samples come out consistent."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--keys", "1200", "--small-keys", "120",
         "--claims-per-key", "2", "--soak-minutes", "0.34", "--soak-keys", "60",
         "--soak-rate", "500", "--timeout", "240"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    per_key = report["per_key"]
    assert per_key["small"]["active_keys"] == 120 and per_key["large"]["active_keys"] == 1200
    assert per_key["large"]["claims"] == 2400 and per_key["large"]["rss_mib"] > 0
    growth = (per_key["large"]["rss_mib"] - per_key["small"]["rss_mib"]) * 1024 * 1024
    assert per_key["bytes_per_key"] == round(growth / 1080)
    samples = report["soak"]["samples"]
    assert len(samples) >= 2 and all(s["rss_mib"] > 0 for s in samples)
    assert [s["sent"] for s in samples] == sorted(s["sent"] for s in samples)
    assert "bytes per key" in result.stderr
