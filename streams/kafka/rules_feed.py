"""Follow the compacted ``alerts.rules`` topic into a :class:`RuleBook` (every worker reads all).

A plain consumer without a group reads every partition from the beginning; ``ready`` is set
once it has caught up with the end offsets seen at start, so alerts are never evaluated against
a half-loaded rule set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams.domain.rules import AlertRule, InvalidRule, RuleBook
from streams.kafka.topics import topic_partitions

log = logging.getLogger("upstream.rules")


class RulesFeed:
    """Keeps a :class:`RuleBook` up to date with the rules topic."""

    def __init__(self, bootstrap: str, topic: str, codec: ValueCodec, book: RuleBook) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.codec = codec
        self.book = book
        self.ready = asyncio.Event()

    async def run(self, *, stop_when_ready: bool = False) -> None:
        """Consume until cancelled (or, with ``stop_when_ready``, until caught up)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )  # fmt: skip
        await consumer.start()
        try:
            partitions = await topic_partitions(self.bootstrap, self.topic)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            while True:
                if not self.ready.is_set() and await self._caught_up(consumer, end):
                    log.info("rules loaded: %d rule(s)", len(self.book.rules))
                    self.ready.set()
                    if stop_when_ready:
                        return
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for message in messages:
                        self._apply(message)
        finally:
            await consumer.stop()

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        for tp, offset in end.items():
            if await consumer.position(tp) < offset:
                return False
        return True

    def _apply(self, message: Any) -> None:
        key = message.key.decode("utf-8", "replace") if message.key else ""
        if message.value is None:
            self.book.apply(key, None)
            return
        try:
            rule = AlertRule.from_record(self.codec.decode(message.value, "AlertRule", self.topic))
        except (DecodeError, InvalidRule) as exc:
            log.error("ignoring invalid rule at %s:%s: %s", message.partition, message.offset, exc)
            return
        self.book.apply(rule.kafka_key, rule)
