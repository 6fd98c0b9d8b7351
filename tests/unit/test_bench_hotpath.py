"""A small run of the per-claim CPU bench gives a complete report of the worker's stages."""

import gc
import json

import pytest

from bench import hotpath
from streams.settings import Settings


def test_hotpath_bench_smoke_run(capsys: pytest.CaptureFixture[str]) -> None:
    """6,000 claims of one customer (50 days) once through route, windows and alerts: each
    timed, every claim on a by-key message, at least one changelog record per claim (its
    claim id), the closes' evaluations applied and some of them alerting."""
    before = gc.get_threshold()
    assert hotpath.main(["--claims", "6000", "--customers", "1", "--repeats", "1"]) == 0
    assert gc.get_threshold() == before  # the worker's threshold only while it measures
    report = json.loads(capsys.readouterr().out)
    assert report["gc_threshold"] == Settings().gc_threshold
    assert report["claims"] == 6000
    assert report["route_us_per_claim"] > 0
    assert report["windows_us_per_claim"] > 0
    assert report["changelog_records_per_claim"] >= 1
    assert report["by_key_bytes_per_claim"] > 50
    assert report["evaluations"] > 0
    assert report["alerts_us_per_evaluation"] > 0
    assert report["alert_transitions"] > 0


def test_route_carries_every_claim_once() -> None:
    """Every generated claim rides on exactly one by-key message."""
    from bench.throughput import claims_for

    values = [json.dumps(c).encode() for c in claims_for(2500)]
    messages = hotpath.route(hotpath.claims_messages(values), Settings())
    offsets = [o for _, v in messages for _, o, _ in json.loads(v)["claims"]]
    assert sorted(offsets) == list(range(2500))
