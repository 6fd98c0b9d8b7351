"""Claims read back from ``claims.decided`` by offset, for the windows stage's dead letters."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.kafka import envelopes

log = logging.getLogger("upstream.worker")

SEEK_AHEAD = 500  # messages: a longer gap between two wanted offsets is skipped by a seek


class Originals:
    """Reads a claim back from ``claims.decided`` by offset, for a dead letter of the windows.

    The by-key topic carries validated claims, not their bytes; the rare claim the windows
    stage dead-letters is fetched again so that the DLQ holds the original key and value.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None

    async def read_many(
        self, origins: list[envelopes.Origin], timeout_s: float = 5.0
    ) -> dict[envelopes.Origin, Any]:
        """The messages at ``origins`` that could be read (not those gone or unreachable).

        Each partition is read forward from its first wanted offset, seeking ahead over gaps
        longer than ``SEEK_AHEAD`` messages, so a burst of dead letters costs a few fetches.
        """
        found: dict[envelopes.Origin, Any] = {}
        wanted: dict[TopicPartition, list[int]] = defaultdict(list)
        for origin in origins:
            wanted[TopicPartition(origin.topic, origin.partition)].append(origin.offset)
        try:
            consumer = await self._started()
            for tp, offsets in wanted.items():
                todo = sorted(set(offsets))
                consumer.assign([tp])
                position = None
                while todo:
                    if position is None or todo[0] - position > SEEK_AHEAD:
                        consumer.seek(tp, todo[0])
                    fetched = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000),
                                                     timeout_s)  # fmt: skip
                    messages = fetched.get(tp, [])
                    if not messages:
                        break
                    for message in messages:
                        if todo and message.offset == todo[0]:
                            found[envelopes.Origin(tp.topic, tp.partition, message.offset)] = (
                                message
                            )
                        while todo and todo[0] <= message.offset:
                            todo.pop(0)
                    position = messages[-1].offset + 1
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("originals of %d dead letters not all read: %s", len(origins), exc)
        return found

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
            )
            await self._consumer.start()
        return self._consumer

    async def close(self) -> None:
        """Stop the consumer, if one was started."""
        if self._consumer is not None:
            await self._consumer.stop()


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """A dead letter's message when the original could not be read back."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
