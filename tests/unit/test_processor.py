"""A windows partition: event time per customer, late claims that amend, idle customers."""

import zlib

from streams.domain.claims import Claim
from streams.domain.drift import DriftConfig
from streams.domain.partition import PartitionWindows
from streams.domain.processor import ClaimFromSource
from tests.unit.claims import DAY_MS, Feed, claim_for, claim_on_day, day_of_claims

CFG = DriftConfig(bucket_ms=DAY_MS)
GRACE = 3 * DAY_MS
MIN = 60_000


def _days(days: range, rate: float, payer: str = "payer-b", customer: str = "acme") -> list[Claim]:
    return [c for day in days for c in day_of_claims(day, rate, payer=payer, customer=customer)]


def _spike(customer: str = "acme", payer: str = "payer-b") -> list[Claim]:
    """90 steady days, then 10 days with the denial rate up 25 points."""
    return _days(range(0, 90), 0.10, payer, customer) + _days(range(90, 100), 0.35, payer, customer)


def test_buckets_close_behind_the_grace_and_the_drift_is_found() -> None:
    pw = PartitionWindows(0, CFG, GRACE)
    result = pw.apply(Feed().read(_spike()))
    assert pw.customers["acme"].watermark.closed_through == 95
    assert result.drifts
    assert all(d.payer_id == "payer-b" for d in result.drifts)
    assert min(d.detected_at_ms for d in result.drifts) > 90 * DAY_MS


def test_the_result_does_not_depend_on_batching() -> None:
    arrivals = Feed().read(_spike())
    whole = PartitionWindows(0, CFG, GRACE).apply(arrivals).drifts
    pw = PartitionWindows(0, CFG, GRACE)
    pieces = []
    for start in range(0, len(arrivals), 137):
        pieces.extend(pw.apply(arrivals[start : start + 137]).drifts)
    assert pieces == whole


def test_a_late_claim_inside_the_history_amends_its_closed_bucket() -> None:
    """Counted into its bucket, seen by every later close; not dead-lettered."""
    feed = Feed()
    pw = PartitionWindows(0, CFG, GRACE)
    pw.apply(feed.read(_days(range(0, 20), 0.1)))
    key = pw.customers["acme"].keys["acme|payer-b|radiology"]
    before = key.bucket(2)
    assert before is not None
    assert pw.customers["acme"].watermark.closed_through == 15
    late = claim_on_day(2, denied=True, payer="payer-b", i=77)
    result = pw.apply(feed.read([late]))
    assert result.beyond_history == []
    assert result.amended == 1
    after = key.bucket(2)
    assert after is not None
    assert after[0] == before[0] + 1
    assert after[1] == before[1] + 1
    assert pw.apply(feed.read([late])).duplicates == 1  # a resend counts once


def test_a_claim_older_than_its_customers_history_is_not_windowed() -> None:
    feed = Feed()
    pw = PartitionWindows(0, CFG, GRACE)
    pw.apply(feed.read(_days(range(0, 100), 0.1)))
    ancient = feed.read([claim_on_day(2, payer="payer-b", i=5)])
    result = pw.apply(ancient)
    assert result.beyond_history == ancient
    assert result.changed == {}
    assert result.amended == 0


def test_remittance_lag_loses_nothing_and_finds_the_shift() -> None:
    """Claims published 5–20 days after their decision, in order of publication: all are
    counted, none dead-lettered, and the shift is found."""
    by_publication: dict[int, list[Claim]] = {}
    for claim in _spike():
        day = claim.event_ms // DAY_MS
        lag = 5 + zlib.crc32(claim.claim_id.encode()) % 16  # not hash(): it varies by process
        by_publication.setdefault(day + lag, []).append(claim)
    published = [c for day in sorted(by_publication) for c in by_publication[day]]
    pw = PartitionWindows(0, CFG, GRACE)
    result = pw.apply(Feed().read(published))
    assert result.beyond_history == []
    assert result.amended > len(published) // 2
    key = pw.customers["acme"].keys["acme|payer-b|radiology"]
    oldest = 95 - CFG.history_buckets + 1  # closed through day 95: days before are pruned
    assert key.sums(0, 99).n == len(published) - 20 * oldest
    assert any(d.drift_type == "denial_rate" for d in result.drifts)


def test_a_customer_s_clock_moves_only_with_its_own_claims() -> None:
    """A far-future claim of one customer closes nothing of another's on the same partition."""
    feed = Feed()
    pw = PartitionWindows(0, CFG, GRACE)
    pw.apply(feed.read(_days(range(0, 20), 0.1, customer="lab")))
    pw.apply(feed.read([claim_for("other", 47_000, payer="payer-x")]))
    assert pw.customers["lab"].watermark.closed_through == 15
    late = feed.read([claim_for("lab", 16, payer="payer-b", i=900)])
    assert pw.apply(late).amended == 0  # bucket 16 of lab is still open


def test_each_customer_s_outputs_are_the_same_alone_and_mixed() -> None:
    """Another customer's claims on the same partition — earlier, later, denser, drifting —
    change nothing of a customer's drifts and evaluations (the BH family included)."""
    alone = PartitionWindows(0, CFG, GRACE).apply(Feed().read(_spike("lab")))
    noisy = [c for day in range(150, 300) for c in day_of_claims(day, 0.3 if day > 250 else 0.1,
             payer=f"payer-{day % 7}", customer="other", per_day=40)]  # fmt: skip
    mixed_in = _spike("lab")
    merged = [x for pair in zip(noisy, mixed_in, strict=False) for x in pair]
    merged += noisy[len(mixed_in) :]
    result = PartitionWindows(0, CFG, GRACE).apply(Feed().read(merged))
    lab = [d for d in result.drifts if d.customer_id == "lab"]
    assert alone.drifts
    assert lab == alone.drifts
    assert [e for e in result.evaluations if e.customer_id == "lab"] == alone.evaluations


def test_a_lagging_source_holds_closes_back_so_the_order_of_sources_does_not_matter() -> None:
    a = _spike()
    b = _days(range(0, 100), 0.10, payer="payer-a")
    feed = Feed(2)
    from_a, from_b = feed.read(a, 0), feed.read(b, 1)
    interleaved = [x for pair in zip(from_a, from_b, strict=True) for x in pair]
    results = []
    for order in (interleaved, from_a + from_b, from_b + from_a):
        result = PartitionWindows(0, CFG, GRACE, sources=2).apply(order)
        assert result.beyond_history == []
        results.append((result.drifts, result.evaluations))
    assert results[0] == results[1] == results[2]
    assert {d.payer_id for d in results[0][0]} == {"payer-b"}


def test_an_amendment_from_a_source_ahead_waits_for_the_close_its_source_had_reached() -> None:
    """Source 0 is at day 30 when it sends a claim of day 10; source 1 is at day 12. The
    claim is counted right after bucket 26 closes (30 − grace − 1), whichever source is read
    first, and never before."""
    feed = Feed(2)
    ahead = feed.read([*_days(range(0, 31), 0.1), claim_on_day(10, payer="payer-b", i=500)], 0)
    behind = feed.read(_days(range(0, 40), 0.1, payer="payer-a"), 1)
    pw = PartitionWindows(0, CFG, GRACE, sources=2)
    result = pw.apply(behind[: 20 * 13] + ahead)
    assert [p.effective for p in result.pending_added] == [26]
    assert result.amended == 0
    result = pw.apply(behind[20 * 13 :])
    assert [p.offset for p in result.pending_done] == [ahead[-1].offset]
    assert result.amended == 1


def test_a_redelivered_offset_is_skipped() -> None:
    """The same claims partition offset again (a replay after a crash) changes nothing."""
    arrivals = Feed().read(_days(range(0, 20), 0.1))
    pw = PartitionWindows(0, CFG, GRACE)
    pw.apply(arrivals)
    corrected = arrivals[5]._replace(claim=arrivals[5].claim._replace(outcome="DENIED"))
    result = pw.apply([*arrivals[:5], corrected])
    assert result.redelivered == 6
    assert result.changed == {}
    assert result.replaced == 0


def test_an_idle_customer_advances_by_the_wall_clock_after_idle_close_after() -> None:
    pw = PartitionWindows(0, CFG, GRACE)
    pw.apply(Feed().read(_days(range(0, 100), 0.1)), now_ms=1_000 * MIN)
    watermark = pw.customers["acme"].watermark
    assert watermark.closed_through == 95  # last event day 99.5, grace 3 days
    assert pw.idle_tick(1_005 * MIN, idle_after_ms=10 * MIN).drifts == []
    assert watermark.closed_through == 95  # not idle long enough yet
    pw.idle_tick(1_010 * MIN + 2 * DAY_MS, idle_after_ms=10 * MIN)
    assert watermark.closed_through == 97
    pw.idle_tick(1_010 * MIN + 2 * DAY_MS, idle_after_ms=10 * MIN)
    assert watermark.closed_through == 97  # repeated ticks do not compound


def test_idleness_is_per_customer() -> None:
    """A customer whose feed is busy is not idle because another's is quiet, and the other
    way round."""
    feed = Feed()
    pw = PartitionWindows(0, CFG, GRACE)
    busy_at = 2 * DAY_MS + 10 * MIN
    pw.apply(feed.read(_days(range(0, 30), 0.1, customer="quiet")), now_ms=0)
    pw.apply(feed.read(_days(range(0, 30), 0.1, customer="busy")), now_ms=busy_at)
    pw.idle_tick(busy_at + 5 * MIN, idle_after_ms=10 * MIN)
    assert pw.customers["busy"].watermark.closed_through == 25  # day 29.5 less the grace
    assert pw.customers["quiet"].watermark.closed_through == 27  # two days quiet: two more


def test_a_quiet_source_stops_holding_back_the_customer_s_others() -> None:
    feed = Feed(2)
    pw = PartitionWindows(0, CFG, GRACE, sources=2)
    pw.apply(feed.read(_days(range(0, 10), 0.1), 1), now_ms=0)
    pw.apply(feed.read(_days(range(0, 60), 0.1), 0), now_ms=20 * MIN)
    watermark = pw.customers["acme"].watermark
    assert watermark.closed_through == 5  # held back by source 1 at day 9.5
    pw.idle_tick(21 * MIN, idle_after_ms=10 * MIN)
    assert watermark.closed_through == 55


def test_a_source_not_heard_from_yet_holds_back_until_quiet_for_idle_close_after() -> None:
    """A source with none of the customer's claims yet is not idle at once: they may still
    be coming (say, while the worker that routes it starts, or after it was killed)."""
    feed = Feed(2)
    pw = PartitionWindows(0, CFG, GRACE, sources=2)
    pw.apply(feed.read(_days(range(0, 60), 0.1), 0), now_ms=0)
    watermark = pw.customers["acme"].watermark
    assert watermark.closed_through is None  # source 1 has not reported
    pw.idle_tick(9 * MIN, idle_after_ms=10 * MIN)
    assert watermark.closed_through is None  # quiet for 9 minutes only
    result = pw.apply(feed.read(_days(range(0, 10), 0.1, payer="payer-a"), 1), now_ms=9 * MIN)
    assert result.amended == 0  # none of its claims met a closed bucket
    assert watermark.closed_through == 5


def test_a_source_never_heard_from_stops_holding_back_after_idle_close_after() -> None:
    feed = Feed(2)
    pw = PartitionWindows(0, CFG, GRACE, sources=2)
    pw.apply(feed.read(_days(range(0, 60), 0.1), 0), now_ms=0)
    pw.apply(feed.read(_days(range(60, 61), 0.1), 0), now_ms=10 * MIN)
    pw.idle_tick(10 * MIN, idle_after_ms=10 * MIN)
    assert pw.customers["acme"].watermark.closed_through == 56


def test_claims_from_source_and_offset_are_named_tuples() -> None:
    arrival = ClaimFromSource(1, 4, 17, claim_on_day(3))
    assert (arrival.source, arrival.sources, arrival.offset) == (1, 4, 17)


def test_a_correction_never_loses_to_its_pending_original() -> None:
    """Claim X (day 20) waits for the close its partition's clock allows; its correction
    (day 40, denied) comes next on the same partition. Whichever partition is read first, X
    is counted, then replaced by the correction, before the same closes."""
    original = claim_for("acme", 20, payer="p")
    corrected = claim_for("acme", 40, denied=True, payer="p")._replace(claim_id=original.claim_id)
    feed = Feed(2)
    ahead = feed.read([claim_for("acme", 30, payer="q", i=1), original, corrected], 0)
    behind = feed.read([claim_for("acme", d, payer="q", i=2) for d in (31, 45)], 1)
    last = feed.read([claim_for("acme", 50, payer="q", i=3)], 0)
    outcomes = []
    for order in (ahead + behind + last, behind + ahead + last):
        pw = PartitionWindows(0, CFG, GRACE, sources=2)
        results = [pw.apply([arrival]) for arrival in order]
        key = pw.customers["acme"].keys["acme|p|radiology"]
        evaluations = [e for r in results for e in r.evaluations]
        outcomes.append(({b: sums[:2] for b, sums in key.buckets.items()}, evaluations))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == {20: [0, 0], 40: [1, 1]}  # the correction, denied, counted once
