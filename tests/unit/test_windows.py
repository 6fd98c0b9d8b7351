"""Buckets, resend dedup and the partition watermark."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.claims import parse_claim
from streams.domain.windows import Added, Contribution, KeyWindows, Watermark, bucket_of
from tests.unit.claims import DAY_MS, claim_on_day, raw_claim


def test_bucket_sums_over_ranges():
    """A window's sums are the sums of its buckets."""
    key = KeyWindows("acme|payer-a|radiology", 0)
    for i, (day, denied) in enumerate([(1, True), (1, False), (2, True), (5, False)]):
        key.add(claim_on_day(day, denied=denied, i=i), day)
    assert key.sums(1, 2).n == 3
    assert key.sums(1, 2).denied == 2
    assert key.sums(3, 5).n == 1
    assert key.sums(1, 5).lag_sum == 40.0


def test_key_windows_round_trip_through_json_shape():
    """to_dict/from_dict survive JSON's string keys."""
    import json

    key = KeyWindows("k|p|g", 3)
    key.add(claim_on_day(4, denied=True), 4)
    back = KeyWindows.from_dict(json.loads(json.dumps(key.to_dict())))
    assert back == key


def test_prune_forgets_old_buckets_only():
    """Pruning drops buckets before the bound and reports whether it dropped any."""
    key = KeyWindows("k|p|g", 0)
    for day in (1, 2, 3):
        key.add(claim_on_day(day), day)
    assert key.prune_before(3) is True
    assert sorted(key.buckets) == [3]
    assert key.prune_before(3) is False


def test_watermark_closes_buckets_after_grace():
    """A bucket closes when max event time − grace passes its end."""
    wm = Watermark(grace_ms=3 * DAY_MS, bucket_ms=DAY_MS)
    assert wm.advance(10 * DAY_MS) == []  # first event: sets the start, closes nothing
    assert wm.closed_through == 6
    assert wm.advance(11 * DAY_MS) == [7]
    assert wm.advance(13 * DAY_MS + 5) == [8, 9]
    assert wm.advance(12 * DAY_MS) == []  # older events never move the watermark back


def test_late_means_bucket_already_closed():
    """A claim is late exactly when its bucket has closed."""
    wm = Watermark(grace_ms=3 * DAY_MS, bucket_ms=DAY_MS)
    wm.advance(10 * DAY_MS)
    assert wm.is_late(6 * DAY_MS + 1)
    assert not wm.is_late(7 * DAY_MS)


@given(st.lists(st.integers(min_value=0, max_value=400 * DAY_MS), min_size=1, max_size=60))
def test_watermark_closes_each_bucket_once_in_order(times):
    """Whatever the arrival order, buckets close once each, in increasing order."""
    wm = Watermark(grace_ms=2 * DAY_MS, bucket_ms=DAY_MS)
    closed: list[int] = []
    for t in times:
        closed.extend(wm.advance(t))
    assert closed == sorted(set(closed))
    if closed:
        assert closed[-1] == (max(times) - 2 * DAY_MS) // DAY_MS - 1


def test_bucket_of_floor():
    """Bucket index is floor division of event time."""
    assert bucket_of(DAY_MS - 1, DAY_MS) == 0
    assert bucket_of(DAY_MS, DAY_MS) == 1


@pytest.mark.parametrize(
    ("resend", "expected", "n", "denied"),
    [
        ({}, Added.DUPLICATE, 1, 0),  # the same claim again counts once
        ({"outcome": "DENIED", "allowed_amount": "0"}, Added.REPLACED, 1, 1),  # corrected
        ({"claim_id": "c-2"}, Added.NEW, 2, 0),  # another claim
        ({"outcome": "PENDED"}, Added.REPLACED, 0, 0),  # back to pended: not a decision
    ],
)
def test_resent_claims_count_once(resend, expected, n, denied):
    """A claim id counts once; a resend with corrected values replaces the original."""
    key = KeyWindows("acme|payer-a|radiology", 0)
    first = parse_claim(raw_claim())
    assert key.add(first, 5) is Added.NEW
    again = parse_claim(raw_claim(**resend))
    assert key.add(again, 5) is expected
    assert (key.sums(0, 10).n, key.sums(0, 10).denied) == (n, denied)


def test_pended_then_decided_counts_the_decision():
    """A PENDED claim is remembered but not counted until its decision arrives."""
    key = KeyWindows("acme|payer-a|radiology", 0)
    key.add(parse_claim(raw_claim(outcome="PENDED")), 5)
    assert key.sums(0, 10).n == 0
    key.add(parse_claim(raw_claim(outcome="DENIED")), 5)
    assert (key.sums(0, 10).n, key.sums(0, 10).denied) == (1, 1)


@given(
    bucket=st.integers(min_value=-20_000, max_value=2_000_000),
    pended=st.booleans(),
    denied=st.booleans(),
    lag=st.integers(min_value=0, max_value=65_535),
    cents=st.integers(min_value=0, max_value=10_000_000_000),
)
def test_contribution_pack_round_trip(bucket, pended, denied, lag, cents):
    """Packing a contribution into one int loses nothing within the documented ranges."""
    c = Contribution(bucket, pended, denied, lag, cents)
    assert Contribution.unpack(c.pack()) == c


def test_prune_forgets_claim_ids_with_their_buckets():
    """Claim ids leave memory together with the buckets they were counted in."""
    key = KeyWindows("k|p|g", 0)
    for day in (1, 2, 3):
        key.add(claim_on_day(day, i=day), day)
    key.prune_before(3)
    assert len(key.claims) == 1
    key.prune_before(10)
    assert key.is_empty
