"""Property tests: a customer's outputs depend only on its own claims and their order within
each claims partition — not on other customers, the interleaving of partitions, batch
boundaries or restarts — amendments included."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.claims import Claim
from streams.domain.drift import DriftConfig
from streams.domain.events import DriftDetected, KeyEvaluated
from streams.domain.partition import PartitionWindows
from streams.domain.processor import CLAIM_SCAN_BUCKETS, ClaimFromSource
from streams.domain.windows import claim_hash
from streams.runtime.state import ChangelogTable, WindowsState
from tests.unit.changelog import FakeProducer, FakeTable, recovered
from tests.unit.claims import DAY_MS, Feed, claim_for, claim_on_day

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
SOURCES = 3
CUSTOMERS = ("ontime", "lagged", "onboard")
# A customer's drifts, evaluations and dead-lettered claim ids.
Outputs = tuple[list[DriftDetected], list[KeyEvaluated], list[str]]


def _customer_claims(customer: str, rng: random.Random, days: int = 40) -> list[tuple[int, Claim]]:
    """``(publication day, claim)`` of one customer; payer-b shifts at day 25.

    ``ontime`` publishes on the decision day (a little disorder), ``lagged`` 5–12 days after
    it (remittances), ``onboard`` its whole history on day 45, sorted by decision day.
    """
    out = []
    for day in range(days):
        for i in range(12):
            payer = ("payer-a", "payer-b")[i % 2]
            rate = 0.6 if payer == "payer-b" and day >= 25 else 0.1
            decided = day - rng.choice((0, 0, 0, 1, 3))
            claim = claim_for(customer, decided, denied=rng.random() < rate, payer=payer,
                              i=day * 100 + i)  # fmt: skip
            published = {"ontime": day, "lagged": day + rng.randint(5, 12), "onboard": 45}
            if rng.random() < 0.04:  # pended first, on an earlier day: the decision replaces it
                pended = claim_for(customer, decided - rng.randint(1, 6), payer=payer,
                                   i=day * 100 + i)._replace(outcome="PENDED")  # fmt: skip
                early = 0 if customer == "onboard" else rng.randint(0, 2)  # a burst: in order
                out.append((published[customer] - early, pended))
            out.append((published[customer], claim))
            if rng.random() < 0.05:  # a resend, sometimes corrected
                again = claim._replace(outcome="DENIED") if rng.random() < 0.5 else claim
                out.append((published[customer] + rng.randint(0, 3), again))
    return out


def _sources(customers: tuple[str, ...], seed: int) -> list[list[Claim]]:
    """Each customer's claims in order of publication, spread over the sources by claim id
    (as a producer keyed by claim id does): each source's own order."""
    rng = random.Random(seed)
    published = [pc for c in customers for pc in _customer_claims(c, random.Random(f"{seed}{c}"))]
    published.sort(key=lambda pc: pc[0])  # stable: a customer's order within a day is kept
    streams: list[list[Claim]] = [[] for _ in range(SOURCES)]
    for _, claim in published:
        streams[claim_hash(claim.claim_id) % SOURCES].append(claim)
    rng.shuffle(streams)
    return streams


def _interleave(streams: list[list[ClaimFromSource]], rng: random.Random) -> list[ClaimFromSource]:
    """Merge the sources in a random order that keeps each source's own order."""
    queues = [list(s) for s in streams]
    out = []
    while any(queues):
        source = rng.choice([i for i, q in enumerate(queues) if q])
        out.append(queues[source].pop(0))
    return out


def _read(streams: list[list[Claim]]) -> list[list[ClaimFromSource]]:
    feed = Feed(SOURCES)
    return [feed.read(claims, source) for source, claims in enumerate(streams)]


def _run(
    arrivals: list[ClaimFromSource],
    cuts: Sequence[int] = (),
    restarts: Sequence[int] = (),
    budget: int | None = None,
    step_restarts: frozenset[int] = frozenset(),
) -> dict[str, Outputs]:
    """Apply ``arrivals`` in batches cut at ``cuts``, rebuilt from the changelog (through
    :class:`WindowsState`, as after a crash) at each of ``restarts``; outputs per customer.

    With a release ``budget`` a batch takes as many steps as the worker's: each flushed, and
    a restart after each step numbered in ``step_restarts``."""
    return asyncio.run(_run_async(arrivals, cuts, restarts, budget, step_restarts))


async def _run_async(
    arrivals: list[ClaimFromSource],
    cuts: Sequence[int],
    restarts: Sequence[int],
    budget: int | None,
    step_restarts: frozenset[int],
) -> dict[str, Outputs]:
    producer = FakeProducer()
    table = ChangelogTable(FakeTable(), lambda: producer)
    state = WindowsState(table, CFG, GRACE)
    outputs: dict[str, Outputs] = {c: ([], [], []) for c in CUSTOMERS}
    bounds = sorted({0, *cuts, *restarts, len(arrivals)})
    steps = 0

    def restart() -> None:
        state.forget()
        table._table.data = recovered(producer.batches)
        table._pending.clear()

    for start, end in itertools.pairwise(bounds):
        if start in restarts:
            restart()
        batch = arrivals[start:end]
        while True:
            pw = state.get(0, SOURCES)
            result = pw.apply(batch, release_budget=budget)
            for drift in result.drifts:
                outputs[drift.customer_id][0].append(drift)
            for evaluation in result.evaluations:
                outputs[evaluation.customer_id][1].append(evaluation)
            for arrival in result.beyond_history:
                outputs[arrival.claim.customer_id][2].append(arrival.claim.claim_id)
            state.save(pw, result)
            await table.flush()
            batch = batch[result.taken :]
            steps += 1
            if steps in step_restarts:
                restart()
            if not batch and not result.budget_spent():
                break
    for _, _, beyond in outputs.values():
        beyond.sort()  # across sources, the order they are met in is the interleaving's
    return outputs


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    order_seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
    restarts=st.lists(st.integers(0, 4000), max_size=3),
)
def test_outputs_do_not_depend_on_interleaving_batches_or_restarts(
    seed: int, order_seed: int, cuts: list[int], restarts: list[int]
) -> None:
    """Any merge of the sources, any batch cuts, restarts anywhere: each customer's drifts,
    evaluations and dead letters are the same."""
    streams = _read(_sources(CUSTOMERS, seed))
    reference = _run(_interleave(streams, random.Random(1)))
    again = _run(_interleave(streams, random.Random(order_seed)), cuts, restarts)
    assert again == reference


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    budget=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 4000), max_size=4),
    restart_every=st.integers(1, 4),
)
def test_a_release_budget_and_restarts_between_its_steps_change_no_output(
    seed: int, budget: int, cuts: list[int], restart_every: int
) -> None:
    """Steps that may release only ``budget`` pending claims each (the worker's, so that a
    step's state fits one atomic flush), restarts between them: the same outputs as steps
    without a budget (the onboarding customer's burst alone releases hundreds at one close)."""
    streams = _read(_sources(CUSTOMERS, seed))
    arrivals = _interleave(streams, random.Random(seed))
    reference = _run(arrivals)
    step_restarts = frozenset(range(restart_every, 2000, restart_every))
    assert _run(arrivals, cuts, budget=budget, step_restarts=step_restarts) == reference


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), order_seed=st.integers(0, 10_000))
def test_each_customer_alone_gives_what_it_gives_mixed_with_the_others(
    seed: int, order_seed: int
) -> None:
    """A customer's outputs on an empty system equal its outputs among the others (each
    source keeps the customer's claims in the same order in both)."""
    mixed = _run(_interleave(_read(_sources(CUSTOMERS, seed)), random.Random(order_seed)))
    for customer in CUSTOMERS:
        alone = _run(_interleave(_read(_sources((customer,), seed)), random.Random(order_seed)))
        assert alone[customer] == mixed[customer], customer


def test_the_property_has_teeth() -> None:
    """The streams used above amend many claims, and each customer's shift is found."""
    streams = _read(_sources(CUSTOMERS, 3))
    arrivals = _interleave(streams, random.Random(1))
    result = PartitionWindows(0, CFG, GRACE, sources=SOURCES).apply(arrivals)
    assert result.amended > 200
    assert result.replaced
    assert result.duplicates
    assert result.pending_added  # some amendments waited for a lagging source
    for customer in CUSTOMERS:
        found = {d.payer_id for d in result.drifts if d.customer_id == customer}
        assert found == {"payer-b"}, customer
    reversed_sources = _interleave(streams[::-1], random.Random(2))
    assert _run(reversed_sources) == _run(arrivals)


def _until(closed: int, feed: Feed) -> list[ClaimFromSource]:
    """A claim of another key whose event time brings the watermark to the end of bucket
    ``closed``."""
    claim = claim_on_day(closed, payer="payer-z", i=closed)
    return feed.read([claim._replace(event_ms=(closed + 1) * DAY_MS + GRACE)])


def _past_the_history(closed: int) -> tuple[PartitionWindows, Claim, Feed]:
    """One source; a claim of day 1, then one of day 19, then claims until bucket ``closed``
    has closed (with the test's 16-bucket history, day 1 leaves it at the close of day 17)."""
    feed = Feed()
    pw = PartitionWindows(0, CFG, GRACE, sources=1)
    old, recent = claim_on_day(1, i=1), claim_on_day(19, i=2)
    pw.apply(feed.read([old, recent]) + _until(closed, feed))
    assert pw.customers["acme"].watermark.closed_through == closed
    return pw, old, feed


@pytest.mark.parametrize("how", ["as is", "scanned", "restarted"])
def test_a_claim_older_than_the_history_is_forgotten_before_its_id_is_scanned_away(
    how: str,
) -> None:
    """A close scans the keys' claim ids only every CLAIM_SCAN_BUCKETS buckets; until then an id
    older than the history stays in memory but counts as gone: an exact resend of its claim is
    beyond the history, as after the scan, and as after a restart."""
    pw, old, feed = _past_the_history(closed=17)
    assert 17 % CLAIM_SCAN_BUCKETS != 0
    key = pw.keys[old.window_key]
    assert claim_hash(old.claim_id) in key.claims  # not scanned away yet
    if how == "scanned":
        key.prune_before(2)
        assert claim_hash(old.claim_id) not in key.claims
    elif how == "restarted":
        pw = asyncio.run(_restarted(pw))
    resend = feed.read([old])
    result = pw.apply(resend)
    assert (result.beyond_history, result.duplicates) == (resend, 0)


async def _restarted(pw: PartitionWindows) -> PartitionWindows:
    """``pw`` written to a changelog and rebuilt from it, as after a worker restart."""
    producer = FakeProducer()
    table = ChangelogTable(FakeTable(), lambda: producer)
    state = WindowsState(table, CFG, GRACE)
    state.partitions[pw.partition] = pw
    result = pw.apply([])
    result.changed.update(pw.keys)
    result.customers.update(pw.customers)
    for key in pw.keys.values():
        key.dirty_buckets, key.dirty_claims = set(key.buckets), dict(key.claims)
    state.save(pw, result)
    await table.flush()
    state.forget()
    table._table.data = recovered(producer.batches)
    return state.get(pw.partition, 1)


def test_ids_older_than_the_history_are_scanned_away_every_few_buckets() -> None:
    """At the first close on a multiple of CLAIM_SCAN_BUCKETS the id goes, with a tombstone."""
    pw, old, feed = _past_the_history(closed=CLAIM_SCAN_BUCKETS * 3 - 1)
    key = pw.keys[old.window_key]
    assert claim_hash(old.claim_id) in key.claims
    key.take_changes()
    result = pw.apply(_until(CLAIM_SCAN_BUCKETS * 3, feed))
    assert claim_hash(old.claim_id) not in key.claims
    assert result.changed[old.window_key] is key
    assert key.take_changes()[1] == {claim_hash(old.claim_id): None}


def test_a_key_with_no_bucket_left_is_scanned_at_once_and_removed() -> None:
    """Emptiness cannot wait for a scan: a key whose buckets have all gone loses its ids."""
    feed = Feed()
    pw = PartitionWindows(0, CFG, GRACE, sources=1)
    old = claim_on_day(1, i=1)
    pw.apply(feed.read([old]) + _until(17, feed))
    assert pw.customers["acme"].watermark.closed_through == 17
    assert old.window_key not in pw.keys
