"""A rebalance while the drain loop waits to put into a full buffer skips nothing.

The real ``BatchingConsumer._drain_messages`` / ``getmany`` / ``_rewind`` and
``MessageBuffer`` run over a fake consumer: aiokafka is a position per partition over an
in-memory log; Faust's own ``seek`` / ``perform_seek`` / pause, resume and flow bookkeeping
are borrowed from its ``Consumer``. The rebalance is scripted as Faust 0.15 runs one right
after a worker starts (the embedded broker completes a join only after half the session
timeout, so a second one is common): revoke (Faust pops the read offsets; the app stops the
flow and clears the buffers), the same partition assigned again (positions at the committed
offset), recovery resumes the flow with the partition still paused, then resumes it and
seeks to the committed offsets — one offset lookup per assigned partition, while the drain
loop fetches meanwhile.

Without the guards, the sequence below routes the partition from its committed offset to
17,264, then from 19,366 on: 17,265–19,365 would come only after a later restart.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Concatenate, ParamSpec, TypeVar

from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from intervaltree import IntervalTree  # type: ignore[import-untyped]
from mode.services import Service
from mode.utils.queues import FlowControlEvent

from streams.runtime.buffer import MessageBuffer
from streams.runtime.consumer import BatchingConsumer

P = ParamSpec("P")
R = TypeVar("R")
P0 = TP("claims", 0)
COMMITTED = 16_759
END = 40_000


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Let the loop run until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.001)


def _borrowed(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[_Consumer, P], R]:
    """``method`` itself, typed as a method of the fake consumer it is lent to."""
    return method


class _Consumer:
    """A consumer whose fetching and seeking are fakes and whose drain loop is the real one."""

    _drain_messages = _borrowed(BatchingConsumer._drain_messages)
    getmany = _borrowed(BatchingConsumer.getmany)
    _rewind = _borrowed(BatchingConsumer._rewind)
    _fetched_before_seek_back = _borrowed(BatchingConsumer._fetched_before_seek_back)
    _real_gap = _borrowed(BatchingConsumer._real_gap)
    _behind_a_rewind = _borrowed(BatchingConsumer._behind_a_rewind)
    _dropped = _borrowed(BatchingConsumer._dropped)
    _past_gap = _borrowed(BatchingConsumer._past_gap)
    _commit_when_due = _borrowed(BatchingConsumer._commit_when_due)
    _add_gap = _borrowed(FaustConsumer._add_gap)
    _buffer = _borrowed(BatchingConsumer._buffer)
    seek = _borrowed(FaustConsumer.seek)
    perform_seek = _borrowed(FaustConsumer.perform_seek)
    on_buffer_full = _borrowed(FaustConsumer.on_buffer_full)
    on_buffer_drop = _borrowed(FaustConsumer.on_buffer_drop)
    pause_partitions = _borrowed(FaustConsumer.pause_partitions)
    resume_partitions = _borrowed(FaustConsumer.resume_partitions)
    _get_active_partitions = _borrowed(FaustConsumer._get_active_partitions)
    _set_active_tps = _borrowed(FaustConsumer._set_active_tps)
    stop_flow = _borrowed(FaustConsumer.stop_flow)
    resume_flow = _borrowed(FaustConsumer.resume_flow)
    wait_first = _borrowed(Service.wait_first)

    def __init__(self, app: Any, fetch_sizes: list[int]) -> None:
        self.app = app
        self.loop = asyncio.get_running_loop()
        self._stopped, self._crashed = asyncio.Event(), asyncio.Event()
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        quiet = SimpleNamespace(dev=lambda *a: None, info=lambda *a: None)
        self.log = SimpleNamespace(**vars(quiet), warning=lambda *a: None)
        self.callback = None
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.transport = SimpleNamespace(app=app)
        self._commit_every = None
        self._n_acked = 0
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._gap: dict[TP, Any] = defaultdict(IntervalTree)  # Faust's gaps (offsets read)
        self._active_partitions: set[TP] = set()
        self._paused_partitions: set[TP] = set()
        self._buffered_partitions: set[TP] = set()
        self.flow_active = True
        self.can_resume_flow, self.suspend_flow = asyncio.Event(), asyncio.Event()
        self.scheduler = SimpleNamespace(
            iterate=lambda records: ((tp, r) for tp, rs in records.items() for r in rs)
        )
        self.assigned = {P0}
        self.position_of = {P0: COMMITTED}
        self.fetch_sizes = list(fetch_sizes)
        self.fetch_gate: asyncio.Event | None = None  # the next fetch waits for it, if set
        self.sought = False
        self.fetched_after_seek = asyncio.Event()

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def position(self, tp: TP) -> int:
        await asyncio.sleep(0)  # a hop to the consumer thread
        return self.position_of[tp]

    async def _seek(self, tp: TP, offset: int) -> None:
        self.position_of[tp] = offset

    def highwater(self, tp: TP) -> int:
        return END

    def _to_message(self, tp: TP, record: Any) -> ConsumerMessage:
        return ConsumerMessage(tp.topic, tp.partition, record.offset, 0.0, 0, None, b"k", b"v",
                               None, tp=tp)  # fmt: skip

    async def _wait_next_records(self, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's
        if not self.flow_active:
            await self.can_resume_flow.wait()
        active = self._get_active_partitions()
        if self.fetch_gate is not None:
            await self.fetch_gate.wait()
        await asyncio.sleep(0)
        records = {}
        for tp in [*active, *(t for t in self._buffered_partitions if t not in active)]:
            if tp in self.assigned and self.fetch_sizes:
                start = self.position_of[tp]
                count = self.fetch_sizes.pop(0)
                records[tp] = [SimpleNamespace(offset=o) for o in range(start, start + count)]
                self.position_of[tp] = start + count
                if self.sought:
                    self.fetched_after_seek.set()
        return records, active

    async def seek_to_committed(self) -> dict[TP, int]:
        """aiokafka's: one offset lookup per assigned partition; the drain loop fetches while
        the lookups of the worker's other partitions are under way."""
        for tp in sorted(self.assigned):
            await asyncio.sleep(0)
            self.position_of[tp] = COMMITTED
            self.sought = True
        await self.fetched_after_seek.wait()
        return dict.fromkeys(self.assigned, COMMITTED)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def _app(flow: FlowControlEvent) -> SimpleNamespace:
    return SimpleNamespace(
        batch_buffers={}, batch_rewinds={}, batch_gaps={}, flow_control=flow,
        consumer_generation_id=1, topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
        in_recovery=False, should_stop=False,
    )  # fmt: skip


async def test_a_rebalance_while_the_buffer_is_full_skips_no_offset() -> None:
    flow = FlowControlEvent(initially_suspended=False)
    app = _app(flow)
    # 17,265..19,365 fill the buffer; the put of 19,366 waits for room (a backlog).
    buffer = MessageBuffer(2101, flow, app.batch_rewinds)
    buffer.high = buffer.low = 10**9  # no partition pauses: not this path
    app.batch_buffers["claims"] = buffer
    consumer = _Consumer(app, [506, 2602, 5000, 5000, 5000])
    consumer.resume_flow()
    consumer._set_active_tps({P0})
    consumer._read_offset[P0] = consumer._committed_offset[P0] = COMMITTED

    routed: list[int] = []
    route_may_take = asyncio.Event()
    route_may_take.set()

    async def route() -> None:
        while True:
            await route_may_take.wait()
            batch = await buffer.take(506 if not routed else 2000, 0.001)
            routed.extend(m.offset for m in batch if m.tp == P0)
            if len(routed) == 506:
                route_may_take.clear()  # busy with its first batch (a slow delivery, say)

    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    drain = asyncio.ensure_future(consumer._drain_messages(fetcher))
    router = asyncio.ensure_future(route())
    try:
        await _until(lambda: len(routed) == 506 and len(buffer) == 2101, "a full buffer")
        # The revoke: Faust pops the read and committed offsets; the app stops and clears.
        consumer.fetch_gate = asyncio.Event()  # no fetch completes until the new assignment
        consumer._read_offset.pop(P0, None)
        consumer._committed_offset.pop(P0, None)
        consumer.stop_flow()
        flow.suspend()
        consumer.pause_partitions(consumer.assignment())
        flow.clear()
        route_may_take.set()
        await _until(lambda: not len(buffer) and app.batch_rewinds, "the buffer cleared, noted")
        # The same partition assigned again, its position back at the committed offset.
        app.consumer_generation_id = 2
        consumer.position_of[P0] = COMMITTED
        consumer._set_active_tps({P0})
        consumer.pause_partitions({P0})
        consumer.fetch_gate.set()
        consumer.fetch_gate = None
        flow.resume()  # the recovery, with nothing to restore, resumes the flow ...
        consumer.resume_flow()
        consumer.resume_partitions({P0})  # ... then the partition, then seeks
        await consumer.perform_seek()
        flow.resume()
        consumer.resume_flow()
        await _until(lambda: not consumer.fetch_sizes and not len(buffer), "every fetch taken")
    finally:
        drain.cancel()
        router.cancel()
    seen = set(routed)
    missing = [o for o in range(COMMITTED, max(routed)) if o not in seen]
    assert missing == [], f"never routed: {missing[0]}..{missing[-1]} ({len(missing)})"


async def test_a_put_that_waited_across_a_clear_does_not_land() -> None:
    """A put waiting for room when the buffer is cleared (a rebalance) adds nothing: the
    message belongs to the generation the clear ended, and its offset is read again."""
    flow = FlowControlEvent(initially_suspended=False)
    buffer = MessageBuffer(1, flow, {})
    first = ConsumerMessage("claims", 0, 5, 0.0, 0, None, b"k", b"v", None, tp=P0)
    second = ConsumerMessage("claims", 0, 6, 0.0, 0, None, b"k", b"v", None, tp=P0)
    assert await buffer.put(first) is True
    waiting = asyncio.ensure_future(buffer.put(second))
    await _until(lambda: not buffer._space.is_set(), "the put waiting for room")
    buffer.clear()
    assert await waiting is False
    assert len(buffer) == 0


async def test_a_clear_at_a_recoverys_end_mid_fetch_keeps_each_partition_in_order() -> None:
    """The end of a recovery seeks to the committed offsets (Faust resets the read offsets
    while a fetch from there is being drained) and then clears the buffers (resuming the flow)
    while the loop awaits its gap check for the next message. That message must not be
    buffered ahead of the cleared ones, nor the gap below it counted as read: the windows skip
    a claim whose source offset lies below one applied, and Faust commits past a gap."""
    flow = FlowControlEvent(initially_suspended=False)
    app = _app(flow)
    buffer = MessageBuffer(10_000, flow, app.batch_rewinds)
    buffer.high = buffer.low = 10**9
    app.batch_buffers["claims"] = buffer
    consumer = _Consumer(app, [300, 300, 300])
    consumer.resume_flow()
    consumer._set_active_tps({P0})
    script = {"reset": False, "cleared": False}

    def iterate(records: dict[TP, list[Any]]) -> Any:
        for tp, batch in records.items():
            for i, record in enumerate(batch):
                if i == 101 and not script["reset"]:  # perform_seek, at the loop's yield
                    consumer._read_offset[tp] = consumer._committed_offset[tp] = COMMITTED
                    script["reset"] = True
                yield tp, record

    async def position(tp: TP) -> int:  # the gap check's hop: the recovery resumes the flow
        if script["reset"] and not script["cleared"]:
            script["cleared"] = True
            flow.resume()
        await asyncio.sleep(0)
        return consumer.position_of[tp]

    consumer.scheduler = SimpleNamespace(iterate=iterate)
    consumer.position = position  # type: ignore[method-assign]
    drain = asyncio.ensure_future(
        consumer._drain_messages(SimpleNamespace(_stopped=asyncio.Event()))
    )
    try:
        await _until(lambda: not consumer.fetch_sizes and len(buffer) > 0, "every fetch drained")
        await asyncio.sleep(0.05)
    finally:
        drain.cancel()
    taken = [m.offset for m in await buffer.take(10_000, 0.001)]
    first_seen: list[int] = []
    for offset in taken:
        if offset not in first_seen:
            first_seen.append(offset)
    assert first_seen == sorted(first_seen), f"out of order from {first_seen[:3]}"
    assert first_seen[0] == COMMITTED
    assert first_seen == list(range(COMMITTED, COMMITTED + len(first_seen)))
    assert not consumer._gap[P0], "a gap counted as read"


async def test_a_hole_in_the_log_is_read_past_without_a_rewind() -> None:
    """A transaction's commit marker (or records deleted by retention) leaves an offset no
    record has: above the last offset delivered, it is counted as read at once, as Faust does,
    and the partition is not read again."""
    flow = FlowControlEvent(initially_suspended=False)
    app = _app(flow)
    buffer = MessageBuffer(10_000, flow, app.batch_rewinds)
    buffer.high = buffer.low = 10**9
    app.batch_buffers["claims"] = buffer
    consumer = _Consumer(app, [300])
    consumer.resume_flow()
    consumer._set_active_tps({P0})
    consumer._read_offset[P0] = consumer._committed_offset[P0] = COMMITTED
    marker = COMMITTED + 50

    def iterate(records: dict[TP, list[Any]]) -> Any:
        for tp, batch in records.items():
            yield from ((tp, r) for r in batch if r.offset != marker)

    consumer.scheduler = SimpleNamespace(iterate=iterate)
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    drain = asyncio.ensure_future(consumer._drain_messages(fetcher))
    try:
        await _until(lambda: len(buffer) == 299, "the fetch buffered")
        await asyncio.sleep(0.05)
    finally:
        drain.cancel()
    taken = [m.offset for m in await buffer.take(10_000, 0.001)]
    assert taken == [o for o in range(COMMITTED, COMMITTED + 300) if o != marker]
    assert app.batch_rewinds == {}
    assert consumer._gap[P0].overlaps(marker)
