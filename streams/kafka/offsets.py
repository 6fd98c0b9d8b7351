"""End offsets a broker reports, checked against the records it holds."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition


class Partition(Hashable, Protocol):
    """A topic partition of any client library (aiokafka's, Faust's)."""

    @property
    def topic(self) -> str:
        """The topic's name."""

    @property
    def partition(self) -> int:
        """The partition's number."""


P = TypeVar("P", bound=Partition)

END_PROBE_MS = 300  # how long a partition read from its reported end stays quiet: the end


async def true_end_offsets(bootstrap: str, reported: Mapping[P, int]) -> dict[P, int]:
    """``reported`` end offsets, raised to one past the last record each partition holds.

    A broker should report one past the last record; Tansu reports the first offset of the last
    record batch. Each partition is read from its reported end until nothing more comes for
    :data:`END_PROBE_MS` (on a broker that reports ends right, nothing comes at all).
    """
    ends = dict(reported)
    if not ends:
        return ends
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        kafka_tps = {TopicPartition(tp.topic, tp.partition): tp for tp in ends}
        consumer.assign(list(kafka_tps))
        for kafka_tp, tp in kafka_tps.items():
            consumer.seek(kafka_tp, ends[tp])
        while fetched := await consumer.getmany(timeout_ms=END_PROBE_MS):
            for kafka_tp, records in fetched.items():
                tp = kafka_tps[kafka_tp]
                ends[tp] = max(ends[tp], records[-1].offset + 1)
    finally:
        await consumer.stop()
    return ends
