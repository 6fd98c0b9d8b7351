"""The commit protocol of a batch, in one place: deliver its outputs, persist the state that
produced them, then acknowledge its input (Faust then commits the offsets).

Every stage of the worker follows it (:meth:`WorkerStages.consume` opens one checkpoint per
batch), and so does the windows' idle timer, which has no input to acknowledge. In that order
a crash at any point loses nothing: input not yet acknowledged is read again, and state not
yet persisted is computed again from it, so its outputs go out again with the same ids, which
downstream readers deduplicate (Semantics, "Determinism and ids"). State persisted before its
outputs were delivered, or input acknowledged before its dead letters were, would lose them
for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol


class Flushable(Protocol):
    """A changelog-backed table (:class:`streams.runtime.state.ChangelogTable`)."""

    async def flush(self) -> None:
        """Write what was put since the last flush; return once it is delivered."""


class Acknowledging(Protocol):
    """A batch subscription (:class:`streams.runtime.batches.BatchSubscription`)."""

    def ack(self, messages: list[Any]) -> None:
        """Acknowledge ``messages``: their offsets may be committed."""


class Checkpoint:
    """One batch's outputs in flight, and the steps that may only follow their delivery."""

    def __init__(self) -> None:
        self._in_flight: list[Awaitable[Any]] = []

    def deliver(self, deliveries: Iterable[Awaitable[Any]]) -> None:
        """Hand over the delivery futures of outputs sent (records, dead letters)."""
        self._in_flight.extend(deliveries)

    async def delivered(self) -> None:
        """Wait until every output handed over so far is delivered (raise if one failed)."""
        in_flight, self._in_flight = self._in_flight, []
        await asyncio.gather(*in_flight)

    async def persist(self, table: Flushable, save: Callable[[], None] | None = None) -> None:
        """Once every output so far is delivered: ``save`` the state that produced them into
        ``table``, and flush it."""
        await self.delivered()
        if save is not None:
            save()
        await table.flush()

    async def acknowledge(self, subscription: Acknowledging, messages: list[Any]) -> None:
        """Once every output is delivered (and the state persisted by the stage before):
        acknowledge ``messages``."""
        await self.delivered()
        subscription.ack(messages)
