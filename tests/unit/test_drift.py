"""Drift evaluation at a bucket close and the partition processor around it."""

import pytest

from streams.domain.drift import DriftConfig, evaluate_close, severity_level
from streams.domain.processor import ClaimFromSource, PartitionWindows, SourceProgressed
from streams.domain.windows import KeyWindows
from tests.unit.claims import DAY_MS, claim_on_day

CFG = DriftConfig(bucket_ms=DAY_MS)


def _key(payer: str, rates: dict[range, float], per_day: int = 20) -> KeyWindows:
    """A key with ``per_day`` claims a day and a denial rate per day range."""
    key = KeyWindows(f"acme|{payer}|radiology", 0)
    for days, rate in rates.items():
        for day in days:
            denied_today = round(per_day * rate)
            for i in range(per_day):
                key.add(claim_on_day(day, denied=i < denied_today, payer=payer, i=i), day)
    return key


def test_spiked_key_is_detected_steady_key_is_not():
    """A 10 % → 35 % jump is a drift; a steady 10 % key is only evaluated."""
    spiked = _key("payer-b", {range(0, 90): 0.10, range(90, 100): 0.35})
    steady = _key("payer-a", {range(0, 100): 0.10})
    drifts, evaluated = evaluate_close(CFG, 99, [spiked, steady])
    assert {d.payer_id for d in drifts} == {"payer-b"}
    short = next(d for d in drifts if d.window_days == 7)
    assert short.baseline_value == pytest.approx(0.10)
    assert short.current_value == pytest.approx(0.35)
    assert short.current_n == 140
    assert short.baseline_n == 60 * 20
    assert short.severity_level == "critical"
    assert short.detected_at_ms == 100 * DAY_MS
    assert {e.payer_id for e in evaluated} == {"payer-a", "payer-b"}
    assert [len(e.detections) for e in sorted(evaluated, key=lambda e: e.payer_id)] == [0, 2]


@pytest.mark.parametrize(
    ("per_day", "current_rate", "expect"),
    [
        (3, 0.70, False),  # current window 21 claims < 30: below minimum samples
        (20, 0.13, False),  # 3 points: below the 5-point effect floor
        (20, 0.30, True),
    ],
)
def test_minimum_samples_and_effect_floor(per_day, current_rate, expect):
    """Below the minimum samples or the effect floor there is no event."""
    key = _key("payer-b", {range(0, 93): 0.10}, per_day=20)
    recent = _key("payer-b", {range(93, 100): current_rate}, per_day=per_day)
    for index, sums in recent.buckets.items():
        key.set_bucket(index, sums)
    drifts, _ = evaluate_close(CFG, 99, [key])
    assert any(d.window_days == 7 for d in drifts) is expect


def test_event_ids_are_deterministic():
    """The same windows give the same event ids."""
    key = _key("payer-b", {range(0, 90): 0.10, range(90, 100): 0.35})
    first, _ = evaluate_close(CFG, 99, [key])
    again, _ = evaluate_close(CFG, 99, [key])
    assert [d.event_id for d in first] == [d.event_id for d in again]
    assert len({d.event_id for d in first}) == len(first)


@pytest.mark.parametrize(
    ("severity", "level"), [(0.0, "info"), (0.29, "info"), (0.3, "warning"), (0.6, "critical")]
)
def test_severity_levels(severity, level):
    """Documented mapping: info < 0.3 ≤ warning < 0.6 ≤ critical."""
    assert severity_level(severity) == level


def _claims(days: range, rate: float, payer: str = "payer-b", source: int = 0, sources: int = 1):
    out = []
    for day in days:
        for i in range(20):
            claim = claim_on_day(day, denied=i < round(20 * rate), payer=payer, i=i)
            out.append(ClaimFromSource(source, sources, claim))
    return out


def test_processor_closes_buckets_and_detects_in_order():
    """Applying claims day by day closes buckets behind the grace and reports the drift."""
    pw = PartitionWindows(0, CFG, grace_ms=3 * DAY_MS)
    result = pw.apply(_claims(range(0, 90), 0.10) + _claims(range(90, 100), 0.35))
    assert pw.watermark.closed_through == 95
    assert result.drifts and all(d.payer_id == "payer-b" for d in result.drifts)
    assert min(d.detected_at_ms for d in result.drifts) > 90 * DAY_MS


def test_processor_result_does_not_depend_on_batching():
    """One batch or many: the same drifts in the same order."""
    claims = _claims(range(0, 90), 0.10) + _claims(range(90, 100), 0.35)
    whole = PartitionWindows(0, CFG, 3 * DAY_MS).apply(claims).drifts
    pw = PartitionWindows(0, CFG, 3 * DAY_MS)
    pieces = []
    for start in range(0, len(claims), 137):
        pieces.extend(pw.apply(claims[start : start + 137]).drifts)
    assert pieces == whole


def test_late_claims_are_returned_not_counted():
    """A claim for a closed bucket comes back as late and changes no window."""
    pw = PartitionWindows(0, CFG, grace_ms=3 * DAY_MS)
    pw.apply(_claims(range(0, 20), 0.1))
    late = claim_on_day(2)
    result = pw.apply([ClaimFromSource(0, 1, late)])
    assert result.late == [late]
    assert result.changed == {}


def test_lagging_source_holds_closes_back_instead_of_making_claims_late():
    """Source 1 consumed after source 0 in full: nothing is late, the drift is the same."""
    a = _claims(range(0, 90), 0.10, source=0, sources=2) + _claims(
        range(90, 100), 0.35, source=0, sources=2
    )
    b = _claims(range(0, 100), 0.10, payer="payer-a", source=1, sources=2)
    interleaved = [x for pair in zip(a, b, strict=True) for x in pair]
    sequential = a + b
    results = []
    for order in (interleaved, sequential):
        pw = PartitionWindows(0, CFG, 3 * DAY_MS, sources=2)
        result = pw.apply(order)
        assert result.late == []
        results.append(result.drifts)
    assert results[0] == results[1]
    assert results[0] and {d.payer_id for d in results[0]} == {"payer-b"}


def test_source_progress_alone_moves_the_watermark():
    """A progress message from a source with no claims here still closes buckets."""
    pw = PartitionWindows(0, CFG, 3 * DAY_MS, sources=2)
    pw.apply(_claims(range(0, 20), 0.1, source=0, sources=2))
    assert pw.watermark.closed_through is None
    pw.apply([SourceProgressed(1, 2, 25 * DAY_MS)])
    assert pw.watermark.closed_through == 15


MIN = 60_000


def test_quiet_partition_advances_by_wall_clock_after_idle_close_after():
    """With no arrivals for idle_close_after, event time moves with the wall clock."""
    pw = PartitionWindows(0, CFG, 3 * DAY_MS)
    pw.apply(_claims(range(0, 100), 0.1), now_ms=1_000 * MIN)
    assert pw.watermark.closed_through == 95  # last event day 99.5, grace 3 days
    assert pw.idle_tick(1_005 * MIN, idle_after_ms=10 * MIN).drifts == []
    assert pw.watermark.closed_through == 95  # not idle long enough yet
    pw.idle_tick(1_010 * MIN + 2 * DAY_MS, idle_after_ms=10 * MIN)
    assert pw.watermark.closed_through == 97
    pw.idle_tick(1_010 * MIN + 2 * DAY_MS, idle_after_ms=10 * MIN)
    assert pw.watermark.closed_through == 97  # repeated ticks do not compound


def test_quiet_source_stops_holding_back_the_others():
    """A source silent for idle_close_after no longer holds the watermark at its last time."""
    pw = PartitionWindows(0, CFG, 3 * DAY_MS, sources=2)
    pw.apply(_claims(range(0, 10), 0.1, source=1, sources=2), now_ms=0)
    pw.apply(_claims(range(0, 60), 0.1, source=0, sources=2), now_ms=20 * MIN)
    assert pw.watermark.closed_through == 5  # held back by source 1 at day 9
    pw.idle_tick(21 * MIN, idle_after_ms=10 * MIN)
    assert pw.watermark.closed_through == 55


def test_a_source_not_heard_from_yet_holds_back_until_quiet_for_idle_close_after():
    """A source with nothing here yet is not idle at once: its claims may still be coming
    (say, while the worker that routes it starts, or after it was killed)."""
    pw = PartitionWindows(0, CFG, 3 * DAY_MS, sources=2)
    pw.apply(_claims(range(0, 60), 0.1, source=0, sources=2), now_ms=0)
    assert pw.watermark.closed_through is None  # source 1 has not reported
    pw.idle_tick(9 * MIN, idle_after_ms=10 * MIN)
    assert pw.watermark.closed_through is None  # quiet for 9 minutes only
    late_start = pw.apply(_claims(range(0, 10), 0.1, source=1, sources=2), now_ms=9 * MIN)
    assert late_start.late == []  # none of its claims met a closed bucket
    assert pw.watermark.closed_through == 5


def test_a_source_never_heard_from_stops_holding_back_after_idle_close_after():
    pw = PartitionWindows(0, CFG, 3 * DAY_MS, sources=2)
    pw.apply(_claims(range(0, 60), 0.1, source=0, sources=2), now_ms=0)
    pw.apply(_claims(range(60, 61), 0.1, source=0, sources=2), now_ms=10 * MIN)
    pw.idle_tick(10 * MIN, idle_after_ms=10 * MIN)
    assert pw.watermark.closed_through == 56
