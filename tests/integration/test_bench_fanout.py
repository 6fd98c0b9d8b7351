"""Small runs of bench/fanout.py and bench/latency.py produce complete, consistent reports."""

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


def test_fanout_bench_smoke_run() -> None:
    """20 clients, 20 alerts/s for 3 s: every expected message delivered, every field there."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.fanout", "--clients", "20", "--customers", "5",
         "--rate", "20", "--duration-s", "3"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["messages_delivered"] == report["messages_expected"] > 0
    assert report["messages_expected"] == report["transitions_written"] * 20 // 5
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert report["notifier_cpu_share_of_one_core"] > 0
    assert "| clients | alerts/s |" in result.stderr


def test_latency_bench_smoke_run() -> None:
    """Worker, sink and notifier at 1,000 claims/s: alerts arrive and are timed, in order."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.latency", "--rate", "1000", "--customers", "2",
         "--days", "100", "--settle-s", "5"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["claims"] == 2 * 6 * 20 * 100 and report["customers"] == 2
    assert report["alerts_received"] == (
        report["samples"] + report["closed_by_idle_timer"] + report["other_transitions"]
    )
    assert report["samples"] > 0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert "| claims/s (achieved) |" in result.stderr
