"""Small runs of every bench in bench/ produce complete, consistent reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("UPSTREAM_TEST_BROKER") == "kafka",
        reason="the benches start an embedded broker of their own: make test runs them",
    ),
]


def run_bench(module: str, *args: str, timeout_s: float = 400) -> tuple[dict[str, Any], str]:
    """Run ``python -m bench.<module> args``: its JSON report and its stderr (the table)."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


def test_fanout_bench_smoke_run() -> None:
    """20 clients, 20 alerts/s for 3 s: every expected message delivered, every field there."""
    report, stderr = run_bench(
        "fanout", "--clients", "20", "--customers", "5", "--rate", "20", "--duration-s", "3",
        timeout_s=240,
    )  # fmt: skip
    assert report["messages_delivered"] == report["messages_expected"] > 0
    assert report["messages_expected"] == report["transitions_written"] * 20 // 5
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert report["notifier_cpu_share_of_one_core"] > 0
    assert "| clients | alerts/s |" in stderr


def test_dashboard_bench_smoke_run() -> None:
    """One console load of 1,000 open alerts over 500 keys (a claim a key a day): timed."""
    report, stderr = run_bench("dashboard", "--loads", "1", "--claims-per-day", "1")
    assert (report["open_alerts"], report["keys"], report["claims"]) == (1000, 500, 45_000)
    assert 0 < report["table_live_ms"]["p50"] <= report["dashboard_filled_ms"]["max"]
    assert report["api_dashboard_ms"]["p50"] > 0
    assert report["api_alerts_ms"]["p50"] > 0
    assert "| open alerts | keys |" in stderr


def test_latency_bench_smoke_run() -> None:
    """Worker, sink and notifier at 1,000 claims/s: alerts arrive and are timed, in order."""
    report, stderr = run_bench(
        "latency", "--rate", "1000", "--customers", "2", "--days", "100", "--settle-s", "5"
    )  # fmt: skip
    assert report["claims"] == 2 * 6 * 20 * 100
    assert report["customers"] == 2
    assert report["alerts_received"] == (
        report["samples"] + report["closed_by_idle_timer"] + report["other_transitions"]
    )
    assert report["samples"] > 0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    hops = report["hops_ms"]
    assert hops["samples"] + hops["unmatched"] == report["samples"]
    assert hops["samples"] > 0
    assert hops["unmatched"] == 0
    for hop in hops["hops"]:
        assert hops[hop]["p50"] <= hops[hop]["p99"] <= hops[hop]["max"]
    # the hops add up to the whole (each sample exactly; medians only roughly)
    assert sum(hops[hop]["max"] for hop in hops["hops"]) >= latency["max"] - 1
    assert "| claims/s (achieved) |" in stderr
    assert "| hop (" in stderr


def test_throughput_bench_smoke_run() -> None:
    """3,000 claims, one run, one worker: the ceiling, the worker's rate, RSS, keys."""
    report, stderr = run_bench(
        "throughput", "--claims", "3000", "--runs", "1", "--workers", "1", "--timeout", "240"
    )  # fmt: skip
    assert report["claims"] == 3000
    run = report["runs"][0]
    assert run["ceiling_claims_per_s"] > 0
    worker = run["workers_1"]
    assert worker["claims_per_s"] > 0
    assert worker["seconds"] > 0
    assert worker["active_keys"] > 0
    assert all(r > 0 for r in worker["rss_mib"])
    summary = report["summary"]
    assert (
        0
        < summary["workers_1_ratio_to_ceiling"]
        == pytest.approx(worker["claims_per_s"] / run["ceiling_claims_per_s"], abs=0.001)
    )
    assert "workers_1_claims_per_s" in stderr


def test_memory_bench_smoke_run() -> None:
    """Tiny key counts and a 20 s soak: RSS per key and RSS samples come out consistent."""
    report, stderr = run_bench(
        "memory", "--keys", "1200", "--small-keys", "120", "--claims-per-key", "2",
        "--soak-minutes", "0.34", "--soak-keys", "60", "--soak-rate", "500", "--timeout", "240",
    )  # fmt: skip
    per_key = report["per_key"]
    assert per_key["small"]["active_keys"] == 120
    assert per_key["large"]["active_keys"] == 1200
    assert per_key["large"]["claims"] == 2400
    assert per_key["large"]["rss_mib"] > 0
    growth = (per_key["large"]["rss_mib"] - per_key["small"]["rss_mib"]) * 1024 * 1024
    assert per_key["bytes_per_key"] == round(growth / 1080)
    samples = report["soak"]["samples"]
    assert len(samples) >= 2
    assert all(s["rss_mib"] > 0 for s in samples)
    assert [s["sent"] for s in samples] == sorted(s["sent"] for s in samples)
    assert "bytes per key" in stderr


def test_delivery_bench_smoke_run() -> None:
    """200 transitions to 3 receivers: every notification delivered once, the delays there."""
    report, stderr = run_bench("delivery", "--rate", "100", "--receivers", "3", "--seconds", "2")
    assert (report["transitions"], report["notifications"]) == (200, 600)
    assert (report["delivered"], report["requests"], report["repeats"]) == (600, 600, 0)
    delays = report["enqueue_to_delivery_ms"]
    assert 0 <= delays["p50"] <= delays["p99"] <= delays["max"]
    assert report["stored_to_received_ms"]["p50"] is not None
    assert report["dispatcher_cpu_us_per_notification"] > 0
    assert "| offered |" in stderr


def test_sink_bench_smoke_run() -> None:
    """2,000 rows, two runs: every rate and ratio there, the ratios each run's COPY over sink."""
    report, stderr = run_bench("sink", "--rows", "2000", "--runs", "2")
    assert report["rows"] == 2000
    assert report["runs"] == 2
    claims, events = report["claims"], report["drift_and_alerts"]
    for part in (claims, events):
        assert part["sink_rows_per_s"] > 0
        assert part["copy_rows_per_s"] > 0
        assert part["ratio_to_copy"] > 0
    # COPY of the three tables takes longer than COPY of two of them, in every run.
    assert events["copy_without_latest_rows_per_s"] > events["copy_rows_per_s"]
    assert events["ratio_to_copy_without_latest"] < events["ratio_to_copy"]
    assert "| drift_and_alerts |" in stderr


def test_detection_bench_smoke_run() -> None:
    """A tiny domain-engine run of the three feeds: valid JSON with every group per feed, the
    12-point shift found on each feed, nothing dead-lettered, each customer alone as mixed."""
    report, _ = run_bench("detection", "--engine", "domain", "--scale", "0.05", "--alone")
    assert set(report["feeds"]) == {"on-time", "remittance", "onboarding"}
    for feed, found in report["feeds"].items():
        groups = found["groups"]
        assert set(groups) >= {"denial+12", "steady", "low-volume", "weekday-seasonal"}, feed
        assert groups["denial+12"]["recall"] == 1.0, feed
        assert found["claims_dead_lettered"] == 0, feed
    assert report["alone_equals_mixed"] == {"customers_checked": 24, "customers_differing": []}
