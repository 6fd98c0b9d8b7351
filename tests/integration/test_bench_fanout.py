"""A small run of bench/fanout.py produces a complete, consistent report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


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
