"""Buckets, resend dedup and the partition watermark."""

import math
from array import array
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.claims import parse_claim
from streams.domain.watermark import Watermark
from streams.domain.windows import (
    LOG_SCALE,
    Added,
    Contribution,
    KeyWindows,
    bucket_of,
)
from tests.unit.claims import DAY_MS, claim_on_day, raw_claim


def test_bucket_sums_over_ranges() -> None:
    """A window's sums are the sums of its buckets."""
    key = KeyWindows("acme|payer-a|radiology", 0)
    for i, (day, denied) in enumerate([(1, True), (1, False), (2, True), (5, False)]):
        key.add(claim_on_day(day, denied=denied, i=i), day)
    assert key.sums(1, 2).n == 3
    assert key.sums(1, 2).denied == 2
    assert key.sums(3, 5).n == 1
    assert key.sums(1, 5).lag_sum == 40.0


def test_key_windows_round_trip_through_json_shape() -> None:
    """to_dict/from_dict survive JSON's string keys."""
    import json

    key = KeyWindows("k|p|g", 3)
    key.add(claim_on_day(4, denied=True), 4)
    back = KeyWindows.from_dict(json.loads(json.dumps(key.to_dict())))
    assert back == key


def test_prune_forgets_old_buckets_only() -> None:
    """Pruning drops buckets before the bound and reports whether it dropped any."""
    key = KeyWindows("k|p|g", 0)
    for day in (1, 2, 3):
        key.add(claim_on_day(day), day)
    assert key.prune_before(3) is True
    assert sorted(key.buckets) == [3]
    assert key.prune_before(3) is False


def test_watermark_closes_buckets_after_grace() -> None:
    """A bucket closes when max event time − grace passes its end."""
    wm = Watermark(grace_ms=3 * DAY_MS, bucket_ms=DAY_MS)
    assert wm.advance(10 * DAY_MS) == []  # first event: sets the start, closes nothing
    assert wm.closed_through == 6
    assert wm.advance(11 * DAY_MS) == [7]
    assert wm.advance(13 * DAY_MS + 5) == [8, 9]
    assert wm.advance(12 * DAY_MS) == []  # older events never move the watermark back


@given(st.lists(st.integers(min_value=0, max_value=400 * DAY_MS), min_size=1, max_size=60))
def test_watermark_closes_each_bucket_once_in_order(times: list[int]) -> None:
    """Whatever the arrival order, buckets close once each, in increasing order."""
    wm = Watermark(grace_ms=2 * DAY_MS, bucket_ms=DAY_MS)
    closed: list[int] = []
    for t in times:
        closed.extend(wm.advance(t))
    assert closed == sorted(set(closed))
    if closed:
        assert closed[-1] == (max(times) - 2 * DAY_MS) // DAY_MS - 1


def test_bucket_of_floor() -> None:
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
def test_resent_claims_count_once(
    resend: dict[str, str], expected: Added, n: int, denied: int
) -> None:
    """A claim id counts once; a resend with corrected values replaces the original."""
    key = KeyWindows("acme|payer-a|radiology", 0)
    first = parse_claim(raw_claim())
    assert key.add(first, 5) is Added.NEW
    again = parse_claim(raw_claim(**resend))
    assert key.add(again, 5) is expected
    assert (key.sums(0, 10).n, key.sums(0, 10).denied) == (n, denied)


def test_pended_then_decided_counts_the_decision() -> None:
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
def test_contribution_pack_round_trip(
    bucket: int, pended: bool, denied: bool, lag: int, cents: int
) -> None:
    """Packing a contribution into one int loses nothing within the documented ranges."""
    c = Contribution(bucket, pended, denied, lag, cents)
    assert Contribution.unpack(c.pack()) == c


def test_prune_forgets_claim_ids_with_their_buckets() -> None:
    """Claim ids leave memory together with the buckets they were counted in."""
    key = KeyWindows("k|p|g", 0)
    for day in (1, 2, 3):
        key.add(claim_on_day(day, i=day), day)
    key.prune_before(3)
    assert len(key.claims) == 1
    key.prune_before(10)
    assert key.is_empty


def _from_scratch(latest: dict[str, tuple[int, Contribution]]) -> dict[int, list[int]]:
    """Bucket sums computed afresh from each claim id's latest contribution."""
    buckets: dict[int, list[int]] = {}
    for bucket, c in latest.values():
        if c.pended:
            continue
        sums = buckets.setdefault(bucket, [0] * 7)
        log_amount = round(math.log(c.allowed_cents / 100.0) * LOG_SCALE) if c.allowed_cents else 0
        for i, value in enumerate(
            (1, c.denied, c.lag_days, c.lag_days**2, c.allowed_cents > 0, log_amount, log_amount**2)
        ):
            sums[i] += value
    return {b: sums for b, sums in sorted(buckets.items()) if any(sums)}


_SENDS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=7),  # claim id
        st.integers(min_value=100, max_value=130),  # day
        st.sampled_from(["PAID", "DENIED", "PENDED"]),
        st.sampled_from(["0", "0.50", "70.00", "123456.78"]),
    ),
    max_size=40,
)


@given(_SENDS)
def test_incremental_sums_equal_sums_from_scratch(sends: list[tuple[int, int, str, str]]) -> None:
    """Whatever the order of claims and resends, each bucket holds the sums of its claims'
    latest values, buckets stay sorted, and a window sums its buckets."""
    key = KeyWindows("k|p|g", 0)
    latest: dict[str, tuple[int, Contribution]] = {}
    for ident, day, outcome, allowed in sends:
        claim = claim_on_day(day, i=ident)
        claim = parse_claim({**claim.to_record(), "outcome": outcome, "allowed_amount": allowed})
        key.add(claim, day)
        latest[claim.claim_id] = (day, Contribution.of(claim, day))
    expected = _from_scratch(latest)
    assert {b: s for b, s in key.buckets.items() if any(s)} == expected
    assert list(key.buckets) == sorted(key.buckets)
    window = key.sums(105, 120)
    inside = [s for b, s in expected.items() if 105 <= b <= 120]
    assert (window.n, window.denied) == (sum(s[0] for s in inside), sum(s[1] for s in inside))
    assert window.amount_log_sq == sum(s[6] for s in inside) / LOG_SCALE**2


@given(st.permutations(range(12)))
def test_buckets_read_back_in_any_order_are_sorted(order: list[int]) -> None:
    """The changelog hands buckets back in any order; lookups and windows do not care."""
    key = KeyWindows("k|p|g", 0)
    for index in order:
        key.set_bucket(index * 3, [index, 0, 0, 0, 0, 0, 0])
    assert list(key.buckets) == [i * 3 for i in range(12)]
    assert key.bucket(9) == [3, 0, 0, 0, 0, 0, 0]
    assert key.bucket(10) is None
    assert key.sums(4, 13).n == 2 + 3 + 4
    key.set_bucket(9, [30, 0, 0, 0, 0, 0, 0])
    assert key.sums(9, 9).n == 30


def test_sums_beyond_int64_turn_the_key_into_python_ints() -> None:
    """A sum past int64 (~400k claims of one key in one bucket) is kept exactly, not lost."""
    huge = 2**63 - 10
    key = KeyWindows("k|p|g", 0)
    for day in (1, 2, 3):
        key.add(claim_on_day(day, i=day), day)
    before = cast(list[int], key.bucket(2))  # three days added: bucket 2 is there
    key.set_bucket(2, [*before[:6], huge])
    assert isinstance(key.rows, array)
    key.add(claim_on_day(2, i=99), 2)  # its log² pushes the sum past 2**63 - 1
    assert isinstance(key.rows, list)
    assert key.bucket(2)[6] == huge + before[6]
    assert key.bucket(2)[0] == 2
    key.set_bucket(5, [1, 0, 0, 0, 0, 0, 2**70])
    assert key.sums(1, 5).amount_log_sq == (huge + 3 * before[6] + 2**70) / LOG_SCALE**2
    assert key.prune_before(3) is True
    assert list(key.buckets) == [3, 5]
    back = KeyWindows.from_dict(key.to_dict())
    assert back.buckets == key.buckets


@given(
    outcome=st.sampled_from(["PAID", "DENIED", "PARTIAL", "PENDED"]),
    lag=st.integers(min_value=0, max_value=73_000),  # past 65,535, what a contribution holds
    allowed=st.sampled_from(["0", "0.01", "70.00", "99999999.99"]),
    bucket=st.integers(min_value=-20_000, max_value=2_000_000),
)
def test_the_hot_path_packs_a_claim_as_its_contribution_does(
    outcome: str, lag: int, allowed: str, bucket: int
) -> None:
    """packed_claim (one call per claim in the windows) is the claim's hash and packed
    Contribution, lags past what a contribution holds included."""
    from datetime import date, timedelta

    from streams.domain.windows import claim_hash, packed_claim

    decided = date(2100, 1, 1) - timedelta(days=1)
    raw = raw_claim(outcome=outcome, allowed_amount=allowed, decided_date=decided.isoformat(),
                    submitted_date=(decided - timedelta(days=lag)).isoformat())  # fmt: skip
    claim = parse_claim(raw)
    expected = (claim_hash(claim.claim_id), Contribution.of(claim, bucket).pack())
    assert packed_claim(claim, bucket) == expected
