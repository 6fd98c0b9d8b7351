"""Batches of Kafka messages from a Faust app, without Faust's per-event machinery.

A Faust agent pays for every event: the consumer's drain loop runs each delivery as two tasks
(``wait_first(callback, suspend_flow.wait())``), the conductor builds an ``Event``, the stream
hops a queue and an iterator chain. At tens of thousands of claims a second that plumbing, not
the work, is the cost (profiled at ~6k events/s). :class:`UpstreamApp` keeps everything
else Faust gives — group membership and its assignor, fetching, flow control on rebalance,
acks and offset commits, tables, changelogs and recovery, timers — but its consumer
(:class:`~streams.runtime.consumer.BatchingConsumer`) appends the messages of a
:class:`BatchTopic` straight to a :class:`MessageBuffer`, which hands them out as lists.

A batch's messages must be acked (:meth:`BatchSubscription.ack`) once its outputs are
delivered and its state written; Faust commits offsets only up to acked messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from time import monotonic
from typing import Any

import faust
from faust.types import AppT, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streams.runtime.buffer import MessageBuffer
from streams.runtime.consumer import BatchingConsumer


class BatchTopic(faust.Topic):
    """A Faust topic whose subscriber gets raw ``Message`` lists instead of an event stream."""

    def _compile_decode(self) -> None:
        """No ``Event``: the message itself goes into the buffer (keys and values are bytes)."""

        async def decode(message: Message, *, propagate: bool = False) -> Message:  # noqa: ARG001 - the signature Faust calls
            return message

        self.decode = decode  # type: ignore[method-assign,assignment]  # as faust.Topic does

    def subscribe(self, maxsize: int, max_bytes: int = 1 << 62) -> BatchSubscription:
        """Subscribe (before the app starts); returns the batches (buffered: see
        :class:`MessageBuffer`).

        With an :class:`UpstreamApp` the consumer fills the buffer directly; with any other
        Faust app the conductor does, through the channel's queue (slower, same result).
        """
        upstream = self.app if isinstance(self.app, UpstreamApp) else None
        rewinds = upstream.batch_rewinds if upstream is not None else None
        buffer = MessageBuffer(maxsize, self.app.flow_control, rewinds, max_bytes)
        channel: Any = self.clone(queue=buffer, is_iterator=True)
        self.app.topics.add(channel)
        if upstream is not None:
            for name in self.topics:
                upstream.batch_buffers[name] = buffer
        return BatchSubscription(self.app, buffer)


class BatchSubscription:
    """The batches of one :class:`BatchTopic` subscription, and their acks."""

    def __init__(self, app: AppT, buffer: MessageBuffer) -> None:
        self.app = app
        self.buffer = buffer

    async def batches(self, max_messages: int, within_s: float) -> AsyncIterator[list[Message]]:
        """Lists of messages (see :meth:`MessageBuffer.take`); ack each before the next.

        A batch is tracked as unacked when it is taken, as Faust's streams track an event
        when they take it: a rebalance waits for batches in flight, not for messages it
        cleared from the buffer (those would never be acked, and it would wait forever). Its
        partitions are marked as taken in, as a stream's event marks them in Faust's monitor:
        otherwise Faust logs "Stream has not started processing" for each of them, at ERROR,
        every few seconds from five minutes after start.
        """
        while True:
            batch = await self.buffer.take(max_messages, within_s)
            consumer: Any = self.app.consumer
            consumer._unacked_messages.update(batch)  # Consumer.track_message, without sensors
            inbound = self.app.monitor.stream_inbound_time
            now = monotonic()
            for tp in {message.tp for message in batch}:
                inbound[tp] = now
            yield batch

    def ack(self, messages: list[Message]) -> None:
        """Mark ``messages`` processed: their offsets may be committed.

        What ``Message.ack`` and Faust's ``Consumer.ack`` do for each message, in one critical
        section for the batch: per message, Faust takes ``ack_lock`` four times and goes
        through four calls (~4 % of the worker's samples at 5,000 claims/s). A message still
        referenced elsewhere (``refcount`` above one) is not final-acked; an offset at or past
        the committed one is recorded once, for the consumer to commit past. This is
        faust-streaming 0.15.3's bookkeeping; a unit test compares the two on Faust's own
        consumer, so an upgrade that changes it fails there.
        """
        consumer: Any = self.app.consumer
        acks_enabled_for = self.app.topics.acks_enabled_for
        committed_offsets = consumer._committed_offset
        acked, acked_index = consumer._acked, consumer._acked_index
        unacked = consumer._unacked_messages
        newly_acked = 0
        with ack_lock:
            try:
                for message in messages:
                    if message.acked:
                        continue
                    refcount = message.refcount = max(message.refcount - 1, 0)
                    if refcount:
                        continue  # another reference still holds it
                    message.acked = True
                    if not acks_enabled_for(message.topic):
                        continue
                    tp, offset = message.tp, message.offset
                    committed = committed_offsets[tp]
                    if committed is None or offset >= committed:
                        index = acked_index[tp]
                        if offset not in index:
                            unacked.discard(message)
                            index.add(offset)
                            acked[tp].append(offset)
                            newly_acked += 1
            finally:
                consumer._n_acked += newly_acked
                notify(consumer._waiting_for_ack)


class UpstreamApp(faust.App):
    """A Faust app whose consumer feeds :class:`BatchTopic` buffers directly."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 1500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.batch_buffers: dict[str, MessageBuffer] = {}
        # (topic, partition) → the lowest offset dropped unread, to seek back to: batch-topic
        # messages a clear or a stopped flow dropped, and any record Faust's getmany dropped.
        self.batch_rewinds: dict[tuple[str, int], int] = {}
        # (topic, partition) → the last gap (offset read, offset past it) read again rather
        # than counted as read (see streams.runtime.consumer.BatchingConsumer._real_gap).
        self.batch_gaps: dict[tuple[str, int], tuple[int, int]] = {}

    def _new_consumer(self) -> Any:
        return BatchingConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.loop,
        )
