"""The worker's batch path: packed claims, the by-key message, the message buffer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.errors import IllegalStateError
from faust.transport.conductor import Conductor
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from faust.types.tuples import Message as FaustMessage
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.claims import InvalidClaim, _cents, parse_claim
from streams.domain.processor import ClaimFromSource
from streams.kafka.envelopes import arrivals, routed_batch
from streams.runtime.batches import BatchSubscription, BatchTopic, UpstreamApp
from streams.runtime.buffer import MessageBuffer
from streams.runtime.consumer import BatchingConsumer
from streams.runtime.state import _dump
from tests.unit.claims import raw_claim
from tests.unit.loop import run_ready

CLAIM = parse_claim(raw_claim(payer_name="Payer A", decided_at="2026-01-11T09:30:00.250Z"))


def test_a_packed_claim_and_its_record_give_back_the_claim() -> None:
    """Compact form round-trips through JSON; the rebuilt record validates to the same claim."""
    packed = json.loads(json.dumps(CLAIM.to_compact()))
    assert type(CLAIM).from_compact(packed) == CLAIM
    assert parse_claim(CLAIM.to_record()) == CLAIM
    with pytest.raises(ValueError, match="not a packed claim"):
        type(CLAIM).from_compact([*packed[:7], "MAYBE", *packed[8:]])


def _decimal_cents(text: str) -> int | str:
    try:
        amount = Decimal(text.strip())
    except ArithmeticError:
        return "invalid"
    if not amount.is_finite() or amount < 0 or amount > Decimal("100000000"):
        return "invalid"
    return int((amount * 100).to_integral_value())


@given(
    st.one_of(
        st.from_regex(r"\A\d{1,10}(\.\d{0,3})?\Z"),
        st.decimals(min_value=0, max_value=10**9, places=2).map(str),
        st.text(alphabet="0123456789.e- ", max_size=12),
    )
)
def test_the_fast_amount_path_agrees_with_decimal(text: str) -> None:
    """Plain amounts skip Decimal; every string still gets Decimal's answer."""
    try:
        fast: int | str = _cents({"x": text}, "x")
    except InvalidClaim:
        fast = "invalid"
    assert fast == _decimal_cents(text) or (text.strip() == "" and fast == "invalid")


def test_the_by_key_message_keeps_order_and_origins() -> None:
    """Claims in their order, each with the claims partition and offset it was read at."""
    value = routed_batch(4, [(2, 17, CLAIM), (0, 5, CLAIM)])
    assert arrivals(json.loads(value)) == [
        ClaimFromSource(2, 4, 17, CLAIM),
        ClaimFromSource(0, 4, 5, CLAIM),
    ]


@pytest.mark.parametrize("value", ["w|0", 'quote"d|é', [1, 2, 3], [], [True, 1], {"a": [1]}])
def test_changelog_records_are_what_fausts_json_codec_writes(value: object) -> None:
    assert _dump(value) == json.dumps(value, separators=(",", ":")).encode()


class Message:
    def __init__(self, partition: int, offset: int, value: bytes = b"") -> None:
        self.topic, self.partition, self.offset = "claims", partition, offset
        self.value = value


class _FlowControl:
    def __init__(self) -> None:
        self.queues: list[MessageBuffer] = []

    def manage_queue(self, queue: MessageBuffer) -> None:
        self.queues.append(queue)


async def test_the_buffer_batches_pauses_and_resumes_and_clears() -> None:
    """Up to max per take; a partial batch waits ``within``; pressure pauses and resumes."""
    flow = _FlowControl()
    buffer = MessageBuffer(10, flow)
    events: list[str] = []
    high, drop = (lambda: events.append("pause")), (lambda: events.append("resume"))

    async def take(max_messages: int, within_s: float) -> list[int]:
        """``buffer.take``, of the ints put in as messages here."""
        return cast(list[int], await buffer.take(max_messages, within_s=within_s))

    for i in range(9):
        buffer.put_nowait_enhanced(
            cast(FaustMessage, i), on_pressure_high=high, on_pressure_drop=drop
        )
    assert events == ["pause"]  # once, at the high-water mark (8)
    assert await take(5, within_s=0.01) == [0, 1, 2, 3, 4]
    assert await take(5, within_s=0.01) == [5, 6, 7, 8]  # waited, then took what was there
    assert events[-1] == "resume"

    async def late_put() -> None:
        await asyncio.sleep(0.01)
        for i in range(3):
            await buffer.put(cast(FaustMessage, i))

    putter = asyncio.create_task(late_put())
    assert await take(3, within_s=5) == [0, 1, 2]  # filled before ``within``
    await putter
    buffer.put_nowait_enhanced(
        cast(FaustMessage, Message(0, 1)), on_pressure_high=high, on_pressure_drop=drop
    )
    flow.queues[0].clear()  # a rebalance
    assert len(buffer) == 0


async def test_a_cleared_buffer_notes_where_to_read_again() -> None:
    """A rebalance's clear drops messages; the lowest offset per partition is kept to rewind."""
    rewinds: dict[tuple[str, int], int] = {("claims", 1): 3}
    buffer = MessageBuffer(100, _FlowControl(), rewinds)
    for partition, offset in ((0, 7), (0, 8), (1, 5), (2, 4), (2, 9)):
        buffer.put_nowait_enhanced(
            cast(FaustMessage, Message(partition, offset)),
            on_pressure_high=lambda: None,
            on_pressure_drop=lambda: None,
        )
    buffer.clear()
    assert rewinds == {("claims", 0): 7, ("claims", 1): 3, ("claims", 2): 4}


class _Consumer:
    """What BatchingConsumer._rewind uses: assignment, position, seek, log."""

    def __init__(self, positions: dict[TP, int | None]) -> None:
        self.positions = positions
        self.sought: dict[TP, int] = {}
        self.log = SimpleNamespace(info=lambda *args: None)

    def assignment(self) -> set[TP]:
        return set(self.positions)

    async def position(self, tp: TP) -> int | None:
        return self.positions[tp]

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought[tp] = offset
        self.positions[tp] = offset


async def test_a_rewind_only_ever_seeks_back() -> None:
    """Notes behind the position are read again; a note at or past it (the partition was
    sought back further already, to its committed offset) must not skip what lies between."""
    consumer = _Consumer({TP("claims", 0): 3022, TP("claims", 1): 448, TP("claims", 2): 10})
    rewinds = {("claims", 0): 448, ("claims", 1): 3022, ("claims", 2): 10, ("claims", 3): 5}
    done = await BatchingConsumer._rewind(consumer, rewinds)  # type: ignore[arg-type]
    assert consumer.sought == {TP("claims", 0): 448}
    assert done == {("claims", 0)}
    assert rewinds == {}  # every note handled; partition 3 is not assigned here any more


async def test_a_message_past_the_position_is_stale_not_a_gap() -> None:
    """After a seek back to the committed offset, a message fetched before it (beyond the new
    position) is dropped, not taken as the end of a gap; one below the position is a real gap."""
    consumer = _Consumer({TP("claims", 0): 448})
    fetched = BatchingConsumer._fetched_before_seek_back
    assert await fetched(consumer, TP("claims", 0), 3022)  # type: ignore[arg-type]
    assert await fetched(consumer, TP("claims", 0), 448)  # type: ignore[arg-type]
    consumer.positions[TP("claims", 0)] = 3100  # read on: 3022 was fetched after a marker
    assert not await fetched(consumer, TP("claims", 0), 3022)  # type: ignore[arg-type]


async def test_a_message_of_a_partition_no_longer_assigned_is_not_delivered() -> None:
    class _Revoked(_Consumer):
        async def position(self, tp: TP) -> int | None:
            raise IllegalStateError(f"No current assignment for partition {tp}")

    fetched = BatchingConsumer._fetched_before_seek_back
    assert await fetched(_Revoked({}), TP("claims", 0), 3022)  # type: ignore[arg-type]


async def test_a_taken_batch_marks_its_partitions_in_faust_s_monitor() -> None:
    """Faust's monitor sees each batch's partitions as taken in, as a stream's event: without
    it Faust logs "Stream has not started processing" at ERROR for every batch partition."""
    buffer = MessageBuffer(10, _FlowControl())
    for partition, offset in ((0, 1), (2, 5), (0, 2)):
        message = Message(partition, offset)
        message.tp = TP("claims", partition)  # type: ignore[attr-defined]
        await buffer.put(message)  # type: ignore[arg-type]
    app = SimpleNamespace(
        consumer=SimpleNamespace(_unacked_messages=set()),
        monitor=SimpleNamespace(stream_inbound_time={}),
    )
    batches = BatchSubscription(app, buffer).batches(10, within_s=0.01)  # type: ignore[arg-type]
    batch = await anext(batches)
    assert len(batch) == 3
    assert set(app.monitor.stream_inbound_time) == {TP("claims", 0), TP("claims", 2)}
    assert app.consumer._unacked_messages == set(batch)


async def test_a_batch_ack_keeps_faust_s_bookkeeping() -> None:
    """One ack for a batch leaves Faust's consumer as its per-message acks do: offsets at or
    past the committed one recorded once, to commit past; one below it acked, not recorded; a
    message referenced twice not acked yet; one acked already, or twice in a batch, once."""

    async def consumer_after(ack: Callable[[BatchSubscription, list[Any]], None]) -> Any:
        app = UpstreamApp("ack-test", broker="kafka://127.0.0.1:9", store="memory://",
                          web_enabled=False)  # fmt: skip
        subscription = BatchTopic(app, topics=["claims"]).subscribe(100)
        # as on start: acks enabled for the topic
        await cast(Conductor, app.topics)._update_indices()
        consumer: Any = app.consumer
        tp = TP("claims", 0)
        consumer._committed_offset[tp] = 3
        messages = [ConsumerMessage("claims", 0, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)
                    for offset in range(8)]  # fmt: skip
        for message in messages:
            message.incref(1)  # as the consumer does when it buffers one
        messages[5].incref(1)
        messages[6].acked = True
        consumer._unacked_messages.update(messages)
        ack(subscription, [*messages[:7], messages[4]])
        consumer._thread.thread_loop.close()  # never started: nothing else closes it
        return {
            "acked": dict(consumer._acked),
            "index": dict(consumer._acked_index),
            "n_acked": consumer._n_acked,
            "unacked": sorted(m.offset for m in consumer._unacked_messages),
            "messages": [(m.acked, m.refcount) for m in messages],
        }

    def one_by_one(subscription: BatchSubscription, messages: list[Any]) -> None:
        for message in messages:
            message.ack(subscription.app.consumer)

    batched = await consumer_after(BatchSubscription.ack)
    assert batched == await consumer_after(one_by_one)
    assert batched["acked"] == {TP("claims", 0): [3, 4]}
    assert batched["n_acked"] == 2
    assert batched["unacked"] == [0, 1, 2, 5, 6, 7]
    assert batched["messages"][5] == (False, 1)


async def test_the_buffer_is_bounded_in_bytes_too() -> None:
    """Large messages pause fetching and make the consumer wait before the message count
    would: a by-key message carries up to a thousand claims."""
    flow = _FlowControl()
    buffer = MessageBuffer(100, flow, max_bytes=1000)
    events: list[str] = []
    high, drop = (lambda: events.append("pause")), (lambda: events.append("resume"))
    for i in range(4):
        buffer.put_nowait_enhanced(
            cast(FaustMessage, Message(0, i, b"x" * 250)),
            on_pressure_high=high,
            on_pressure_drop=drop,
        )
    assert events == ["pause"]  # 800 bytes: four fifths of the bound, at 4 of 100 messages
    assert buffer.full()
    putter = asyncio.create_task(buffer.put(Message(0, 4, b"x" * 250)))  # type: ignore[arg-type]
    await run_ready()
    assert not putter.done()  # waits for room
    assert len(await buffer.take(2, within_s=0.01)) == 2  # 500 bytes left: room, not drained
    await putter
    assert events == ["pause"]
    assert len(await buffer.take(10, within_s=0.01)) == 3  # drained: fetching resumes
    assert events == ["pause", "resume"]
    assert not buffer.full()


async def test_past_the_high_water_mark_a_take_does_not_wait_for_more() -> None:
    """Paused partitions send nothing more: waiting ``within_s`` for a full count of large
    messages would only add latency to every batch of a backlog."""
    buffer = MessageBuffer(100, _FlowControl(), max_bytes=1000)
    for i in range(4):  # 800 bytes: the bytes mark, 4 of 100 messages
        buffer.put_nowait_enhanced(
            cast(FaustMessage, Message(0, i, b"x" * 200)),
            on_pressure_high=lambda: None,
            on_pressure_drop=lambda: None,
        )
    assert len(await asyncio.wait_for(buffer.take(100, within_s=30), 1)) == 4

    async def fill() -> None:  # a take already waiting is woken by the mark, not the count
        await asyncio.sleep(0.01)
        for i in range(4):
            await buffer.put(Message(0, 4 + i, b"x" * 200))  # type: ignore[arg-type]

    filler = asyncio.create_task(fill())
    assert len(await asyncio.wait_for(buffer.take(100, within_s=30), 1)) == 4
    await filler


class _Fetching:
    """What BatchingConsumer.getmany uses of Faust's consumer, with one fetch to hand out."""

    def __init__(self, records: dict[TP, list[int]], active: set[TP] | None = None) -> None:
        self.records = {tp: [SimpleNamespace(offset=o) for o in offsets]
                        for tp, offsets in records.items()}  # fmt: skip
        self.active = active
        self.flow_active = True
        self.should_stop = False
        self._buffered_partitions: set[TP] = set()
        self.sought = 0
        self.app = SimpleNamespace(
            batch_rewinds={}, batch_gaps={}, consumer_generation_id=3,
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
        )  # fmt: skip
        self.scheduler = SimpleNamespace(iterate=self._round_robin)
        self.log = SimpleNamespace(dev=lambda *args: None, warning=lambda *args: None)

    @staticmethod
    def _round_robin(records: dict[TP, list[Any]]) -> Any:
        iterators = {tp: iter(rs) for tp, rs in records.items()}
        while iterators:
            for tp, it in list(iterators.items()):
                record = next(it, None)
                if record is None:
                    del iterators[tp]
                else:
                    yield tp, record

    async def _wait_next_records(self, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's
        return self.records, self.active

    def _to_message(self, tp: TP, record: Any) -> Any:
        return record.offset

    def highwater(self, tp: TP) -> int:
        return 0

    async def perform_seek(self) -> None:
        self.sought += 1


async def _delivered(
    consumer: _Fetching, stop_after: int | None = None, change: Any = None
) -> list[tuple[int, object]]:
    got: list[tuple[int, object]] = []
    async for tp, offset in BatchingConsumer.getmany(consumer, 1.0):  # type: ignore[arg-type]
        got.append((tp.partition, offset))
        if len(got) == stop_after:
            change(consumer)
    return got


async def test_a_fetch_cut_short_is_noted_to_be_read_again() -> None:
    """Faust drops the rest of a fetch when the flow stops or the generation changes midway:
    each partition's lowest undelivered offset is noted instead, to be read again."""
    a, b = TP("claims", 0), TP("claims", 1)

    def stop(consumer: _Fetching) -> None:
        consumer.flow_active = False

    def rebalance(consumer: _Fetching) -> None:
        consumer.app.consumer_generation_id += 1

    for change in (stop, rebalance):
        consumer = _Fetching({a: [10, 11, 12], b: [50, 51]})
        got = await _delivered(consumer, stop_after=3, change=change)
        assert got == [(0, 10), (1, 50), (0, 11)]
        assert consumer.app.batch_rewinds == {("claims", 0): 12, ("claims", 1): 51}


async def test_a_fetch_while_the_flow_is_stopped_is_noted_not_lost() -> None:
    """The CI failure: a fetch arriving while recovery has the flow stopped. Faust drops it and
    seeks to committed offsets, which moves no partition without one; the notes bring it back."""
    a, b = TP("claims", 0), TP("claims", 1)
    consumer = _Fetching({a: [0, 1, 2], b: [7]})
    consumer.flow_active = False
    assert await _delivered(consumer) == []
    assert consumer.app.batch_rewinds == {("claims", 0): 0, ("claims", 1): 7}
    assert consumer.sought == 1  # and Faust's seek to the committed offsets still happens


async def test_a_record_of_a_partition_not_active_is_noted() -> None:
    a, b = TP("claims", 0), TP("claims", 1)
    consumer = _Fetching({a: [4, 5], b: [9]}, active={a})
    assert await _delivered(consumer) == [(0, 4), (0, 5)]
    assert consumer.app.batch_rewinds == {("claims", 1): 9}
