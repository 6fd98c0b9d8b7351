"""The queue between Faust's consumer and a batch stage: bounded by messages and bytes, with
flow control, and a note of what a rebalance dropped so that it is read again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from faust.types import Message


class MessageBuffer:
    """The queue the consumer fills for one channel (duck-typed ``FlowControlQueue``).

    Above ``maxsize`` messages or ``max_bytes`` of values the consumer waits in :meth:`put`;
    above the high-water mark (four fifths of either) it stops fetching the partition until the
    buffer drains below the low-water mark (two fifths of both). The bytes bound matters where
    messages differ in size: a by-key message carries up to a thousand claims. The app's flow
    control clears it on rebalance. Those messages were never acked: a partition's new owner
    reads them again from the committed offset, and for a partition kept here the lowest
    offset dropped is noted in ``rewinds`` for :class:`BatchingConsumer` to seek back to.
    """

    def __init__(
        self,
        maxsize: int,
        flow_control: Any,
        rewinds: dict[tuple[str, int], int] | None = None,
        max_bytes: int = 1 << 62,
    ) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._bytes = 0  # of the buffered messages' values
        # (topic, partition) → the lowest offset dropped by clear(): to be read again.
        self.rewinds = rewinds if rewinds is not None else {}
        self.high, self.high_bytes = maxsize * 4 // 5, max_bytes * 4 // 5
        self.low, self.low_bytes = maxsize * 2 // 5, max_bytes * 2 // 5
        self._items: list[Message] = []
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._filled = asyncio.Event()  # set when ``_want`` messages are buffered, or plenty
        self._want = 0
        self._on_drop: dict[Any, Callable[[], None]] = {}
        self._clears = 0  # how many times clear() ran: a put waiting across one does not land
        flow_control.manage_queue(self)

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        """Whether the conductor must wait (see :meth:`put`)."""
        return len(self._items) >= self.maxsize or self._bytes >= self.max_bytes

    def _pressure_high(self) -> bool:
        return len(self._items) >= self.high or self._bytes >= self.high_bytes

    def _add(self, value: Message) -> None:
        self._items.append(value)
        self._bytes += _size(value)
        self._ready.set()
        if self._want and (len(self._items) >= self._want or self._pressure_high()):
            self._filled.set()

    def put_nowait_enhanced(
        self,
        value: Message,
        *,
        on_pressure_high: Callable[[], None],
        on_pressure_drop: Callable[[], None],
    ) -> None:
        """Append a message; past the high-water mark, pause fetching its partition."""
        self._add(value)
        key = id(on_pressure_drop)  # one per partition
        if self._pressure_high() and key not in self._on_drop:
            on_pressure_high()
            self._on_drop[key] = on_pressure_drop

    async def put(self, value: Message) -> bool:
        """Append a message once there is room; False, and nothing added, if the buffer was
        cleared meanwhile (a rebalance: the message belongs to the generation it ended)."""
        clears = self._clears
        while self.full():
            self._space.clear()
            await self._space.wait()
            if self._clears != clears:
                return False
        self._add(value)
        return True

    def clear(self) -> None:
        """Drop every buffered message (rebalance); note where to read them again."""
        self._clears += 1
        for message in self._items:
            note_rewind(self.rewinds, message.topic, message.partition, message.offset)
        self._items.clear()
        self._bytes = 0
        self._ready.clear()
        self._released()

    async def take(self, max_messages: int, within_s: float) -> list[Message]:
        """Up to ``max_messages``, oldest first: wait for one, then up to ``within_s`` for more.

        The consumer hands messages over as it fetches them; taking each as it comes would
        make batches of a few messages, each paying the per-batch costs (delivery round trip,
        state writes). Past the high-water mark there is no waiting: the partitions are paused,
        nothing more is coming (large messages reach the bytes mark long before the count).
        A rebalance may clear the buffer meanwhile: then wait again.
        """
        while True:
            while not self._items:
                self._ready.clear()
                await self._ready.wait()
            if len(self._items) < max_messages and not self._pressure_high():
                self._want = max_messages
                self._filled.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._filled.wait(), within_s)
                self._want = 0
            if self._items:
                break
        batch = self._items[:max_messages]
        del self._items[:max_messages]
        self._bytes -= sum(map(_size, batch))
        if not self._items:
            self._ready.clear()
        self._released()
        return batch

    def _released(self) -> None:
        if not self.full():
            self._space.set()
        drained = len(self._items) <= self.low and self._bytes <= self.low_bytes
        if drained and self._on_drop:
            callbacks, self._on_drop = list(self._on_drop.values()), {}
            for callback in callbacks:
                callback()


def _size(message: Message) -> int:
    """Bytes of a message's value (0 without one)."""
    return len(getattr(message, "value", None) or b"")


def note_rewind(
    rewinds: dict[tuple[str, int], int], topic: str, partition: int, offset: int
) -> None:
    """Remember ``offset`` as where to read ``topic``/``partition`` again, if it is lower."""
    key = (topic, partition)
    if offset < rewinds.get(key, offset + 1):
        rewinds[key] = offset
