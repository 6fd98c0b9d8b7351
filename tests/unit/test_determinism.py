"""Property tests: batching, interleaving of sources and keys, and restarts change no output."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.claims import Claim
from streams.domain.drift import DriftConfig
from streams.domain.processor import (
    CLAIM_SCAN_BUCKETS,
    ClaimFromSource,
    PartitionWindows,
    SourceProgressed,
)
from streams.domain.windows import ClockHistory, KeyWindows, SourceClock, claim_hash
from tests.unit.claims import DAY_MS, claim_on_day

CFG = DriftConfig(
    bucket_ms=DAY_MS,
    short_window_buckets=3,
    long_window_buckets=6,
    baseline_buckets=10,
    min_current_n=10,
    min_baseline_n=20,
    fdr_q_max=0.05,
)
GRACE = 2 * DAY_MS


def _source_streams(seed: int, days: int = 40) -> list[list]:
    """Two sources, each in its own order with some disorder; payer-b shifts at day 25."""
    rng = random.Random(seed)
    streams: list[list] = [[], []]
    for day in range(days):
        for i in range(12):
            payer = ("payer-a", "payer-b")[i % 2]
            rate = 0.6 if payer == "payer-b" and day >= 25 else 0.1
            claim = claim_on_day(
                day - rng.choice((0, 0, 0, 1, 3)),
                denied=rng.random() < rate,
                payer=payer,
                i=day * 100 + i,
            )
            streams[rng.randrange(2)].append(claim)
    return streams


def _route(streams: list[list]) -> tuple[list[list], set[str]]:
    """Route each source in its own order: late claims out, progress after every claim."""
    routed: list[list] = [[], []]
    late: set[str] = set()
    for source, claims in enumerate(streams):
        clock = SourceClock(GRACE, DAY_MS)
        for claim in claims:
            if clock.is_late(claim.event_ms):
                late.add(claim.claim_id)
                continue
            clock.observe(claim.event_ms)
            routed[source].append(ClaimFromSource(source, 2, claim))
            routed[source].append(SourceProgressed(source, 2, clock.max_event_ms or 0))
    return routed, late


def _interleave(routed: list[list], rng: random.Random) -> list:
    """Merge the sources in a random order that keeps each source's own order."""
    queues = [list(r) for r in routed]
    out = []
    while any(queues):
        source = rng.choice([i for i, q in enumerate(queues) if q])
        out.append(queues[source].pop(0))
    return out


def _run(arrivals: list, cuts: list[int], restart_at: int | None = None) -> tuple:
    pw = PartitionWindows(0, CFG, GRACE, sources=2)
    drifts, evaluations, late = [], [], []
    bounds = sorted({0, *cuts, len(arrivals)})
    for start, end in itertools.pairwise(bounds):
        if restart_at is not None and start >= restart_at:
            pw = _restarted(pw)
            restart_at = None
        result = pw.apply(arrivals[start:end])
        drifts += result.drifts
        evaluations += result.evaluations
        late += result.late
    return drifts, evaluations, late


def _restarted(pw: PartitionWindows, sources: int = 2) -> PartitionWindows:
    """A new instance rebuilt from the JSON shape of the state, as after a worker restart."""
    fresh = PartitionWindows(pw.partition, pw.cfg, GRACE, sources=sources)
    fresh.watermark.restore(json.loads(json.dumps(pw.watermark.to_dict())))
    for name, key in pw.keys.items():
        fresh.keys[name] = KeyWindows.from_dict(json.loads(json.dumps(key.to_dict())))
    return fresh


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    order_seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 1200), max_size=8),
    restart=st.integers(0, 1200),
)
def test_outputs_do_not_depend_on_interleaving_batches_or_restarts(seed, order_seed, cuts, restart):
    """Any merge of the sources, any batch cuts, a restart anywhere: the same drifts."""
    routed, _ = _route(_source_streams(seed))
    reference = _run(_interleave(routed, random.Random(1)), [])
    merged = _interleave(routed, random.Random(order_seed))
    again = _run(merged, cuts, restart_at=restart)
    assert again[0] == reference[0]
    assert again[1] == reference[1]
    assert again[2] == [] and reference[2] == []  # nothing routed on time meets a closed bucket


def test_the_property_has_teeth():
    """The streams used above do contain late claims and a detected shift."""
    routed, late = _route(_source_streams(3))
    drifts, _, _ = _run(_interleave(routed, random.Random(1)), [])
    assert late
    assert drifts and {d.payer_id for d in drifts} == {"payer-b"}


@settings(max_examples=50, deadline=None)
@given(times=st.lists(st.integers(0, 60 * DAY_MS), min_size=1, max_size=50))
def test_source_clock_late_iff_bucket_ended_a_grace_before_the_max(times):
    """A claim is late exactly when its bucket ended more than the grace before the max seen."""
    clock = SourceClock(GRACE, DAY_MS)
    seen: list[int] = []
    for t in times:
        expected = bool(seen) and (t // DAY_MS + 1) * DAY_MS <= max(seen) - GRACE
        assert clock.is_late(t) == expected
        if not expected:
            clock.observe(t)
            seen.append(t)


def _judge(history: ClockHistory, times: list[int], start: int, cuts: list[int], committed):
    """Route ``times[start:]`` in batches ending before each cut; verdicts by offset."""
    verdicts: dict[int, bool] = {}
    bounds = [c for c in cuts if c > start] + [len(times)]
    offset = start
    for end in bounds:
        if end <= offset:
            continue
        clock = SourceClock(GRACE, DAY_MS, history.before(offset))
        for o in range(offset, end):
            verdicts[o] = clock.is_late(times[o])
            if not verdicts[o]:
                clock.observe(times[o])
        history.record(end - 1, clock.max_event_ms, committed(end))
        offset = end
    return verdicts


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.integers(0, 40 * DAY_MS), min_size=2, max_size=60),
    data=st.data(),
)
def test_a_redelivered_claim_gets_the_verdict_of_its_first_delivery(times, data):
    """Crash after a batch whose offsets were not committed, resume from the commit: same verdicts.

    The clock was saved ahead of the committed offset; judging the redelivered claims against
    it would make some of them late that were on time (the route clock's at-least-once gap).
    """
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(times) - 1), max_size=10))))
    reference = _judge(ClockHistory(), times, 0, cuts, lambda end: None)
    crash_after = data.draw(st.integers(0, len(cuts)))  # batches done before the crash
    done = cuts[:crash_after]
    resume = data.draw(st.sampled_from([0, *done]))  # the last commit, at a batch boundary
    history = ClockHistory()
    _judge(history, times[: (done[-1] if done else 0)], 0, done, lambda end: resume)
    history = ClockHistory.restore(json.loads(json.dumps(history.to_list())))  # via the table
    again = _judge(history, times, resume, cuts, lambda end: resume)
    assert again == {o: v for o, v in reference.items() if o >= resume}


def test_clock_history_keeps_only_what_a_resume_needs():
    """Entries a resume from the committed offset cannot use are dropped; a rewind replaces."""
    history = ClockHistory()
    for last, value in ((9, 100), (19, 200), (29, 300)):
        history.record(last, value, committed=None)
    assert history.before(0) is None
    assert (history.before(10), history.before(20), history.before(30)) == (100, 200, 300)
    history.record(39, 400, committed=25)  # resumes at 25 need the entry at 19
    assert history.entries == [(19, 200), (29, 300), (39, 400)]
    history.record(29, 350, committed=25)  # replayed from 20 after a crash: the later run wins
    assert history.entries == [(19, 200), (29, 350)]
    assert ClockHistory.restore(7).before(0) == 7  # a clock saved before offsets were kept


def _past_the_history(closed: int) -> tuple[PartitionWindows, Claim]:
    """One source; a claim of day 1, then one of day 19, and progress until bucket ``closed``
    has closed (with the test's 16-bucket history, day 1 leaves it at the close of day 17)."""
    pw = PartitionWindows(0, CFG, GRACE, sources=1)
    old, recent = claim_on_day(1, i=1), claim_on_day(19, i=2)
    until = (closed + 1) * DAY_MS + GRACE  # the watermark reaches the end of bucket ``closed``
    pw.apply([ClaimFromSource(0, 1, old), ClaimFromSource(0, 1, recent),
              SourceProgressed(0, 1, until)])  # fmt: skip
    assert pw.watermark.closed_through == closed
    return pw, old


@pytest.mark.parametrize("how", ["as is", "scanned", "restarted"])
def test_a_claim_older_than_the_history_is_forgotten_before_its_id_is_scanned_away(how):
    """A close scans the keys' claim ids only every CLAIM_SCAN_BUCKETS buckets; until then an id
    older than the history stays in memory but counts as gone: an exact resend of its claim is
    late, as after the scan, and as after a restart."""
    pw, old = _past_the_history(closed=17)
    assert 17 % CLAIM_SCAN_BUCKETS != 0
    key = pw.keys[old.window_key]
    assert claim_hash(old.claim_id) in key.claims  # not scanned away yet
    if how == "scanned":
        key.prune_before(2)
        assert claim_hash(old.claim_id) not in key.claims
    elif how == "restarted":
        pw = _restarted(pw, sources=1)
    result = pw.apply([ClaimFromSource(0, 1, old)])
    assert (result.late, result.duplicates) == ([old], 0)


def test_ids_older_than_the_history_are_scanned_away_every_few_buckets():
    """At the first close on a multiple of CLAIM_SCAN_BUCKETS the id goes, with a tombstone."""
    pw, old = _past_the_history(closed=CLAIM_SCAN_BUCKETS * 3 - 1)
    key = pw.keys[old.window_key]
    assert claim_hash(old.claim_id) in key.claims
    key.take_changes()
    result = pw.apply([SourceProgressed(0, 1, (CLAIM_SCAN_BUCKETS * 3 + 1) * DAY_MS + GRACE)])
    assert claim_hash(old.claim_id) not in key.claims
    assert result.changed[old.window_key] is key
    assert key.take_changes()[1] == {claim_hash(old.claim_id): None}


def test_a_key_with_no_bucket_left_is_scanned_at_once_and_removed():
    """Emptiness cannot wait for a scan: a key whose buckets have all gone loses its ids."""
    pw = PartitionWindows(0, CFG, GRACE, sources=1)
    old = claim_on_day(1, i=1)
    pw.apply([ClaimFromSource(0, 1, old), SourceProgressed(0, 1, 18 * DAY_MS + GRACE)])
    assert pw.watermark.closed_through == 17
    assert old.window_key not in pw.keys
