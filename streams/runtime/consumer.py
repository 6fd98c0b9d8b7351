"""The worker's Kafka consumer: Faust's aiokafka consumer, delivering batch-topic messages
straight into their :class:`~streams.runtime.buffer.MessageBuffer` and losing none of them to a
rebalance (see :class:`BatchingConsumer`). :class:`streams.runtime.batches.UpstreamApp` makes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message

from streams.kafka.offsets import true_end_offsets
from streams.runtime.buffer import MessageBuffer, note_rewind


class BatchingConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, delivering :class:`BatchTopic` messages without tasks.

    The drain loop is Faust's (gaps, read offsets, periodic commits, yielding to the loop every
    100 messages) except for batch topics: their messages are appended to the buffer in place
    (and tracked as unacked once a batch is taken), instead of being delivered by two tasks
    racing ``suspend_flow``.

    Nothing fetched is lost to a rebalance. Faust suspends the app's flow, seeks the stream
    partitions to their committed offsets and resumes the flow — and each suspend and resume
    clears the buffers, in an order that lets messages fetched after the seek be cleared too
    (Faust's own loop loses those: a killed worker's successor never routed some claims). So a
    batch-topic message fetched while the flow is suspended is not kept, and whatever a clear
    drops is noted; so is every record Faust's ``getmany`` drops (see :meth:`getmany`). Once
    the flow is active again, each such partition still assigned here is sought back to the
    lowest offset dropped, and read again.
    """

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        app: Any = self.app
        buffers: dict[str, MessageBuffer] = app.batch_buffers
        rewinds: dict[tuple[str, int], int] = app.batch_rewinds
        flow_active = app.flow_control.is_active
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offsets = self._read_offset
        pressure: dict[Any, tuple[Callable[[], None], Callable[[], None]]] = {}
        delivered: dict[Any, int] = {}  # partition → the last offset delivered from it
        since_yield = 0
        stopped: tuple[type[BaseException], ...] = (
            *self.consumer_stopped_errors,
            asyncio.CancelledError,
        )
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                if rewinds and flow_active():
                    await self._rewind(rewinds)  # what the next fetch returns comes after it
                rewound: set[tuple[str, int]] = set()  # sought back during this fetch's records
                generation = app.consumer_generation_id
                records = self.getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    buffer = buffers.get(tp.topic)
                    if (rewinds or rewound or not flow_active()) and await self._dropped(
                        tp, message, buffer, rewound
                    ):
                        continue
                    offset = message.offset
                    r_offset = read_offsets[tp]
                    if r_offset is not None and offset < r_offset:
                        continue  # already read
                    if (
                        r_offset
                        and offset - r_offset > 1
                        and not await self._past_gap(
                            tp, message, r_offset, buffer, delivered.get(tp)
                        )
                    ):
                        continue  # what lies between comes again first, then this
                    if self._commit_every is not None:
                        await self._commit_when_due()
                    if buffer is None:
                        await self.wait_first(self.callback(message), self.suspend_flow.wait())
                    elif self._behind_a_rewind(tp, offset) or not await self._buffer(
                        buffer, tp, message, generation, pressure
                    ):
                        continue
                    read_offsets[tp] = delivered[tp] = offset
                    if app.batch_gaps:
                        app.batch_gaps.pop((tp.topic, tp.partition), None)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except stopped:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _dropped(
        self, tp: Any, message: Any, buffer: MessageBuffer | None, rewound: set[tuple[str, int]]
    ) -> bool:  # pragma: no cover - Faust's loop
        """Whether the drain loop drops ``message`` to read it again: a batch-topic message
        while the flow is stopped (its rewind noted), or one fetched before its partition was
        sought back (``rewound``: the partitions sought back during this fetch, added to here).
        The drain loop calls this only while a rewind or a stopped flow is about.
        """
        app: Any = self.app
        rewinds: dict[tuple[str, int], int] = app.batch_rewinds
        flow_active = app.flow_control.is_active()
        if buffer is not None and not flow_active:
            note_rewind(rewinds, tp.topic, tp.partition, message.offset)
            return True
        if rewinds and flow_active:
            rewound |= await self._rewind(rewinds)
        return bool(rewound) and (tp.topic, tp.partition) in rewound

    async def _past_gap(
        self,
        tp: Any,
        message: Any,
        read: int,
        buffer: MessageBuffer | None,
        last: int | None,
    ) -> bool:  # pragma: no cover - Faust's loop
        """Whether ``message``, past a gap after ``read`` (the partition's read offset), may be
        delivered with the gap counted as read (:meth:`_real_gap`). The drain loop calls this
        only for a gap, so the common message pays for no call."""
        offset = message.offset
        if not self.app.topics.acks_enabled_for(message.topic):
            return True
        if buffer is not None and not await self._real_gap(tp, read, offset, last):
            return False
        await self._add_gap(tp, read + 1, offset)
        return True

    async def _commit_when_due(self) -> None:  # pragma: no cover - Faust's loop
        """Faust's periodic commit every ``_commit_every`` acks, when so configured."""
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    async def _buffer(
        self,
        buffer: MessageBuffer,
        tp: Any,
        message: Any,
        generation: int,
        pressure: dict[Any, tuple[Callable[[], None], Callable[[], None]]],
    ) -> bool:  # pragma: no cover - Faust's loop
        """Put a fetched ``message`` into its batch ``buffer``; False when it is not delivered
        and is to be fetched again (a rewind is noted for it).

        A rebalance during an await of the loop ends the fetch's generation: its message is not
        delivered, and no read offset of that generation is written over the new one's (which
        would drop what the new generation reads below it as "already read").
        """
        app: Any = self.app
        rewinds: dict[tuple[str, int], int] = app.batch_rewinds
        flow_active = app.flow_control.is_active
        if not flow_active() or app.consumer_generation_id != generation:
            note_rewind(rewinds, tp.topic, tp.partition, message.offset)
            return False
        message.incref(1)
        if buffer.full():
            putting = buffer.put(message)
            waited = await self.wait_first(putting, self.suspend_flow.wait())
            landed = putting in waited.done and bool(waited.results[waited.done.index(putting)])
            if not landed:
                note_rewind(rewinds, tp.topic, tp.partition, message.offset)
                return False
            # Buffered, then cleared by a rebalance: clear() noted the rewind.
            return bool(flow_active() and app.consumer_generation_id == generation)
        high_drop = pressure.get(tp)
        if high_drop is None:  # Faust wants its TP, not aiokafka's
            faust_tp = TP(tp.topic, tp.partition)
            high_drop = pressure[tp] = (
                partial(self.on_buffer_full, faust_tp),
                partial(self.on_buffer_drop, faust_tp),
            )
        buffer.put_nowait_enhanced(
            message, on_pressure_high=high_drop[0], on_pressure_drop=high_drop[1]
        )
        return True

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 - Faust's signature
        """Faust's ``Consumer.getmany``, except that no record fetched is dropped unnoted.

        Faust's drops the rest of a fetch when its flow stops or the generation changes midway,
        a record of a partition not active, and a whole fetch that comes while its flow is
        stopped (it then seeks every partition to its committed offset, which leaves one
        without a committed offset where it was). aiokafka's position has moved past such
        records: nothing would read them again, and the next one delivered makes them look
        read. A CI run lost claims 0–3001 of a partition so: fetched while the recovery had
        the flow stopped, dropped, and the partition (nothing committed yet) read on from 3002.
        Here each dropped record is noted in the app's rewinds (the lowest offset per
        partition), and the drain loop seeks back to it once the flow is active.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return  # stopping: nothing more is delivered, nothing committed past it
        app: Any = self.app
        rewinds: dict[tuple[str, int], int] = app.batch_rewinds
        generation_id = app.consumer_generation_id
        records_it = self.scheduler.iterate(records)
        to_message = self._to_message
        flow_was_active = self.flow_active
        if flow_was_active:
            for tp, record in records_it:
                if not self.flow_active or app.consumer_generation_id != generation_id:
                    note_rewind(rewinds, tp.topic, tp.partition, record.offset)
                    break
                if (
                    active_partitions is None
                    or tp in active_partitions
                    or tp in self._buffered_partitions
                ):
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    yield tp, to_message(tp, record)
                else:
                    note_rewind(rewinds, tp.topic, tp.partition, record.offset)
        for tp, record in records_it:  # what is left of the fetch was not delivered
            note_rewind(rewinds, tp.topic, tp.partition, record.offset)
        if not flow_was_active:  # as Faust does
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as exc:  # as Faust: the rebalance in progress seeks again
                self.log.warning("exception performing seek when flow not active %r", exc)

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """Faust's end offsets, checked against the records (:func:`true_end_offsets`).

        Faust's table recovery reads each changelog partition up to these and then takes its
        table as restored: an end reported too low (the embedded Tansu reports the first offset
        of a partition's last record batch) leaves out the last changelog flush, atomic batch
        and all, while the offsets it covered stay committed. The worker restarted on that
        state lost what the flush had counted (a chaos run's drift events came out different).
        """
        reported = await super().highwaters(*partitions)
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in self.app.conf.broker)
        return await true_end_offsets(bootstrap, reported)

    def _behind_a_rewind(self, tp: Any, offset: int) -> bool:
        """Whether a batch-topic message must wait for its partition's rewind (and note itself
        in it): a clear during one of the loop's awaits for it (a gap check, a commit; the end
        of a recovery clears the buffers) dropped messages of its partition below it. Buffered
        now, it would be taken before them, and the windows skip a claim whose source offset
        lies below one applied (a chaos run lost claims so)."""
        app: Any = self.app
        rewinds: dict[tuple[str, int], int] = app.batch_rewinds
        if (tp.topic, tp.partition) not in rewinds:
            return False
        note_rewind(rewinds, tp.topic, tp.partition, offset)
        return True

    async def _real_gap(self, tp: Any, read: int, offset: int, last: int | None) -> bool:
        """Whether a batch-topic message past a gap (``read``, then ``offset``; ``last``
        delivered from its partition) may be delivered with the gap counted as read, which
        Faust commits past.

        A message fetched before a seek back comes again from the position
        (:meth:`_fetched_before_seek_back`). A gap above the last offset delivered is a hole in
        the log (a transaction's marker, records deleted by retention): read. A gap below it
        means the read offset was reset under what the loop delivered — at a recovery's end
        Faust seeks to the committed offsets while a fetch from there is drained — and the
        records between were dropped by the clear that follows, never routed (a CI chaos run
        lost claims so): read again from ``read`` (messages read twice are deduplicated
        downstream), unless the same gap comes again straight after that rewind (records
        deleted under it).
        """
        if await self._fetched_before_seek_back(tp, offset):
            return False
        if last is None or read >= last:
            return True
        app: Any = self.app
        gaps: dict[tuple[str, int], tuple[int, int]] = app.batch_gaps
        key = (tp.topic, tp.partition)
        if gaps.get(key) == (read, offset):
            self.log.warning("%s: offsets %d to %d are gone (retention): counted as read",
                             tp, read + 1, offset - 1)  # fmt: skip
            return True
        gaps[key] = (read, offset)
        note_rewind(app.batch_rewinds, tp.topic, tp.partition, read)
        return False

    async def _fetched_before_seek_back(self, tp: Any, offset: int) -> bool:
        """Whether a message past a gap lies at or beyond its partition's position: fetched
        before the partition was sought back (Faust seeks to the committed offsets at the end of
        every rebalance, while messages fetched before may still be on their way here).

        Delivered, it would make everything between the last offset read and it a gap, which
        Faust counts as read and commits past; a CI chaos run lost claims 448–3021 of a
        partition that way, it seems (committed through the end, never routed). Dropped, it
        comes again from the position. A real gap (a transaction marker, compaction) lies
        below the position, as everything fetched does. A partition no longer assigned here
        has no position: its message is not ours to deliver either.
        """
        try:
            position = await self.position(tp)
        except IllegalStateError:
            return True
        return position is not None and offset >= position

    async def _rewind(self, rewinds: dict[tuple[str, int], int]) -> set[tuple[str, int]]:
        """Seek each noted partition still assigned back to its offset; forget the notes.

        Only ever back: where the partition's position is at or before the note already (Faust
        sought it to the committed offset after a rebalance, say), the dropped messages come
        again anyway, and seeking "back" to the note would skip everything in between.
        """
        pending = dict(rewinds)
        rewinds.clear()
        assigned = self.assignment()
        done = set()
        for (topic, partition), offset in pending.items():
            tp = TP(topic, partition)
            if tp in assigned:
                position = await self.position(tp)
                if position is not None and position <= offset:
                    self.log.info("%s at offset %d already: no need to go back to %d",
                                  tp, position, offset)  # fmt: skip
                    continue
                self.log.info("reading %s again from offset %d", tp, offset)
                await self.seek(tp, offset)
                done.add((topic, partition))
        return done


class _ConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with the app's ``fetch_max_wait_ms`` (Faust fixes it at 1,500).

    Fetches to a broker go one at a time: while the one in flight waits for data on partitions
    that have none, partitions freed meanwhile (a resumed, paused partition) are not fetched.
    With two workers such waits added up to idle seconds between bursts of counting (one run
    each: 3,778 claims/s at 1,500 ms, 5,727 at 100). The app's default is Faust's 1,500; the
    worker passes ``Settings.fetch_max_wait_ms``.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app: Any = self.app
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms  # no public setter; read on start
        return consumer
