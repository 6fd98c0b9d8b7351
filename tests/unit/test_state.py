"""Changelog flushes that a crash cannot cut in half, and windows rebuilt from what survived.

A flush is one record batch of values per partition (appended whole or not at all by the
broker), then tombstones; a rebuild drops records its watermark has pruned, since a crash can
leave their tombstones unsent.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP

from streams.domain.claims import parse_claim
from streams.domain.drift import DriftConfig
from streams.domain.processor import ClaimFromSource
from streams.runtime.state import BUCKET, PENDING, ChangelogTable, WindowsState
from streams.stages.windows import flush_slices
from tests.unit.changelog import FakeProducer, FakeTable, record_batches, recovered
from tests.unit.claims import DAY_MS, claim_on_day, raw_claim
from tests.unit.loop import run_ready

CFG = DriftConfig(bucket_ms=DAY_MS)
GRACE_MS = 2 * DAY_MS


def _wide_claims(count: int, key_chars: int) -> list[ClaimFromSource]:
    """Claims of ``count`` distinct keys, customer ids ``key_chars`` long (non-ASCII if > 20)."""
    claims = []
    for i in range(count):
        customer = f"{i:06d}" + ("é" if key_chars > 20 else "x") * (key_chars - 6)
        raw = raw_claim(claim_id=f"clm-{i:09d}", customer_id=customer)
        claims.append(ClaimFromSource(0, 1, i, parse_claim(raw)))
    return claims


async def test_a_flush_sends_each_partitions_values_as_one_batch_then_tombstones() -> None:
    producer = FakeProducer(deliver_at_once=False)
    table = ChangelogTable(FakeTable(), lambda: producer)
    for i in range(2_000):  # ~100 KB: six batches at aiokafka's default size
        table.put(i % 2, f"key-{i}", [i % 2, i, 2**70])
    table.delete(0, "gone-0")
    table.delete(1, "gone-1")
    table.put(0, "key-0", [0, -1])  # a second write of a key in one flush: the last one counts
    flushing = asyncio.ensure_future(table.flush())
    await run_ready()
    assert [(p, len(records)) for p, records in producer.batches] == [(0, 1_000), (1, 1_000)]
    assert ("key-0", [0, -1]) in producer.batches[0][1]
    producer.deliver()  # tombstones only once the values are delivered
    await run_ready()
    assert producer.batches[2:] == [(0, [("gone-0", None)]), (1, [("gone-1", None)])]
    assert flushing.done()  # without waiting for the tombstones' delivery
    await flushing
    table.put(0, "next", [0, 1])
    flushing = asyncio.ensure_future(table.flush())
    await run_ready()
    assert len(producer.batches) == 4  # the next flush first waits for those tombstones
    producer.deliver()
    await run_ready()
    assert producer.batches[4:] == [(0, [("next", [0, 1])])]
    producer.deliver()
    await flushing


async def test_a_flush_too_large_for_one_batch_is_split_and_counted() -> None:
    from streams.observability.metrics import CHANGELOG_SPLIT_FLUSHES

    before = CHANGELOG_SPLIT_FLUSHES._value.get()
    producer = FakeProducer()
    table = ChangelogTable(FakeTable(), lambda: producer)
    for i in range(12_000):
        table.put(0, f"key-{i:06d}", "x" * 80)
    await table.flush()
    assert len(producer.batches) == 2
    assert sum(len(records) for _, records in producer.batches) == 12_000
    assert CHANGELOG_SPLIT_FLUSHES._value.get() == before + 1


async def test_every_slice_of_worst_case_claims_flushes_as_one_batch() -> None:
    """flush_slices cuts where a partition's records could outgrow one atomic batch."""
    arrivals = _wide_claims(3_000, key_chars=128)
    slices = list(flush_slices(arrivals))
    assert len(slices) > 1
    assert [a for piece in slices for a in piece] == arrivals
    producer = FakeProducer()
    table = ChangelogTable(FakeTable(), lambda: producer)
    state = WindowsState(table, CFG, GRACE_MS)
    pw = state.get(0, 1)
    for piece in slices:
        result = pw.apply(piece)
        state.save(pw, result)
        sent_before = len(producer.batches)
        await table.flush()
        assert len(producer.batches) == sent_before + 1  # values of one partition: one batch
    # Per claim a bucket, a claim id and its customer's watermark; per slice the offsets.
    assert sum(len(records) for _, records in producer.batches) == 3 * 3_000 + len(slices)


async def test_ascii_claims_flush_in_few_slices() -> None:
    """A batch of the worker's size (2,000 claims) of a few customers: one slice."""
    claims = [ClaimFromSource(0, 4, i, claim_on_day(10, payer=f"payer-{i % 50}", i=i))
              for i in range(2_000)]  # fmt: skip
    assert len(list(flush_slices(claims))) == 1


def _nothing_kept(table: ChangelogTable) -> bool:
    """Whether the table's memory is empty (windows live in domain objects)."""
    return not table._table.data


async def test_rebuild_drops_records_the_watermark_pruned_and_deletes_them_again() -> None:
    """A crash after a flush's values but before its tombstones: the rebuild finishes the job."""
    producer = FakeProducer()
    table = ChangelogTable(FakeTable(), lambda: producer)
    state = WindowsState(table, CFG, GRACE_MS)
    pw = state.get(0, 1)
    early = [ClaimFromSource(0, 1, i, claim_on_day(3, i=i)) for i in range(3)]
    later_day = 3 + CFG.history_buckets + 5
    later = [ClaimFromSource(0, 1, 10, claim_on_day(later_day, i=10))]
    state.save(pw, pw.apply(early))
    await table.flush()
    first = len(producer.batches)
    state.save(pw, pw.apply(later))
    await table.flush()
    assert _nothing_kept(table)
    # The values of the last flush reached the changelog, its tombstones did not.
    lost = [i for i, (_, records) in enumerate(producer.batches)
            if i >= first and all(value is None for _, value in records)]  # fmt: skip
    stale = {key for i in lost for key, _ in producer.batches[i][1]}
    assert any(key.startswith(BUCKET + "3|") for key in stale)
    state.forget()
    table._table.data = recovered([b for i, b in enumerate(producer.batches) if i not in lost])
    rebuilt = state.get(0, 1)
    floor = pw.customers["acme"].claims_floor  # ids below it are gone, if not yet scanned
    assert {k: (w.buckets, w.claims) for k, w in rebuilt.keys.items()} == {
        k: (w.buckets, {i: c for i, c in w.claims.items() if c >= floor})
        for k, w in pw.keys.items()
    }
    acme = rebuilt.customers["acme"].watermark
    assert acme.to_dict() == pw.customers["acme"].watermark.to_dict()
    assert rebuilt.offsets == pw.offsets == {0: 10}
    deleted = {k for k, (_, value) in table._pending.items() if value is None}
    # The lost tombstones again, and the ids the live windows had not scanned away yet.
    assert stale <= deleted
    assert all(k.startswith("c|") for k in deleted - stale)
    assert _nothing_kept(table)


async def test_rebuild_keeps_everything_inside_the_history() -> None:
    producer = FakeProducer()
    table = ChangelogTable(FakeTable(), lambda: producer)
    state = WindowsState(table, CFG, GRACE_MS)
    pw = state.get(0, 1)
    arrivals = [ClaimFromSource(0, 1, d, claim_on_day(d, i=d)) for d in range(1, 9)]
    state.save(pw, pw.apply(arrivals))
    await table.flush()
    assert _nothing_kept(table)
    state.forget()
    # Faust is told to read the windows changelog from its start; other tables resume.
    assert table._table.recovered == {TP("app-alerts-changelog", 0): 7}
    table._table.data = recovered(producer.batches)
    rebuilt = state.get(0, 1)
    assert {k: (w.buckets, w.claims) for k, w in rebuilt.keys.items()} == {
        k: (w.buckets, w.claims) for k, w in pw.keys.items()
    }
    assert not [v for _, v in table._pending.values() if v is None]
    assert _nothing_kept(table)


async def test_pending_claims_survive_a_rebuild_and_go_once_they_took_effect() -> None:
    """A claim waiting for its customer's watermark is a record of its own until it takes
    effect; a rebuild restores it, or drops it when the watermark shows it was counted."""
    producer = FakeProducer()
    table = ChangelogTable(FakeTable(), lambda: producer)
    state = WindowsState(table, CFG, GRACE_MS)
    pw = state.get(0, 2)
    # Source 0 runs ahead to day 20; a claim of day 5 read after it waits for source 1.
    ahead = [ClaimFromSource(0, 2, d, claim_on_day(d, i=d)) for d in range(1, 21)]
    amendment = ClaimFromSource(0, 2, 21, claim_on_day(5, i=99))
    result = pw.apply([*ahead, amendment])
    assert [p.offset for p in result.pending_added] == [21]
    state.save(pw, result)
    await table.flush()
    state.forget()
    table._table.data = recovered(producer.batches)
    rebuilt = state.get(0, 2)
    assert rebuilt.customers["acme"].pending == pw.customers["acme"].pending
    assert any(name.startswith(PENDING) for _, records in producer.batches for name, _ in records)
    behind = [ClaimFromSource(1, 2, d, claim_on_day(d, payer="payer-b", i=d))
              for d in range(1, 25)]  # fmt: skip
    result = rebuilt.apply(behind)
    assert [p.offset for p in result.pending_done] == [21]
    assert result.amended == 1
    state.save(rebuilt, result)
    await table.flush()
    assert rebuilt.customers["acme"].pending == []


def test_drop_forgets_faust_memory_store_partitions_too() -> None:
    """Faust's memory store remembers each recovered key's partition: drop() clears both."""
    store = SimpleNamespace(data={"b|1|k": [0, 1], "w|a": {}}, _key_partition={"b|1|k": 0})
    store.pop = store.data.pop
    fake = SimpleNamespace(data=store)
    table = ChangelogTable(fake, lambda: FakeProducer())
    table.drop(["b|1|k"])
    assert store.data == {"w|a": {}}
    assert store._key_partition == {}


class _HeldProducer:
    """aiokafka's batch API: each batch's topic, partition and record count; delivery held."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int]] = []  # (topic, partition, records)
        self.undelivered: list[asyncio.Future[None]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16_384, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        records = sum(len(list(b)) for b in record_batches(batch._build()))
        self.sent.append((topic, partition, records))
        self.undelivered.append(asyncio.get_running_loop().create_future())
        return self.undelivered[-1]


async def test_a_round_of_partitions_persists_once_its_outputs_are_delivered() -> None:
    """The windows' outputs of every partition in a round go out first, a record batch per
    output partition; their state follows in one flush, one atomic batch per windows
    partition, only once every output is delivered."""
    from schemas.registry import ValueCodec
    from streams.runtime.checkpoint import Checkpoint
    from streams.runtime.windows_stage import Applied, WindowsStage

    producer = _HeldProducer()
    small = DriftConfig(bucket_ms=DAY_MS, short_window_buckets=2, long_window_buckets=3,
                        baseline_buckets=5, min_current_n=2, min_baseline_n=2,
                        min_expected_count=0)  # fmt: skip
    state = WindowsState(ChangelogTable(FakeTable(), lambda: producer), small, GRACE_MS)
    unused: Any = None  # neither reads nor dead-letters claims here
    stage = WindowsStage(
        state, ValueCodec(), lambda: producer, "drift.events", "app-alert-input",
        "claims.decided", lambda: 1, unused, unused,
    )  # fmt: skip
    applied: list[Applied] = []
    for partition in (0, 1):
        pw = state.get(partition, 1)
        claims = [claim_on_day(d, denied=d > 12 and i < 2, payer=f"payer-{partition}", i=i)
                  for d in range(1, 20) for i in range(4)]  # fmt: skip
        arrivals = [ClaimFromSource(0, 1, i, claim) for i, claim in enumerate(claims)]
        applied.append((pw, pw.apply(arrivals), None))
    drifts = sum(len(result.drifts) for _, result, _ in applied)
    evaluations = sum(len(result.evaluations) for _, result, _ in applied)
    assert evaluations >= 2  # each partition's closes evaluated its key
    emitting = asyncio.ensure_future(stage.emit(applied, Checkpoint()))
    await run_ready()
    assert {topic for topic, _, _ in producer.sent} <= {"drift.events", "app-alert-input"}
    assert sum(n for _, _, n in producer.sent) == drifts + evaluations
    assert len(producer.sent) <= 8  # a batch per output partition, not a send per record
    held, producer.undelivered = producer.undelivered, []
    for future in held[:-1]:
        future.set_result(None)
    await run_ready()
    assert len(producer.sent) == len(held)  # one output still in flight: no state yet
    held[-1].set_result(None)
    await run_ready()
    flushed = [(p, n) for topic, p, n in producer.sent[len(held) :]]
    assert [p for p, _ in flushed][:2] == [0, 1]  # each windows partition's values: one batch
    for future in producer.undelivered:
        future.set_result(None)
    await emitting
