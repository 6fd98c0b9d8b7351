"""End offsets as table recovery needs them: one past the last record, on either broker.

The embedded Tansu reports the first offset of a partition's last record batch as its end, so
Faust's recovery, reading a changelog up to it, would leave the last flush out.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from streams.kafka.offsets import true_end_offsets

pytestmark = pytest.mark.integration


async def test_end_offsets_count_every_record_of_the_last_batch(kafka_bootstrap: str) -> None:
    topic = f"ends-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:  # batches of many records in partition 0; one record alone in partition 1
        sent = [await producer.send(topic, b"x" * 100, partition=0) for _ in range(700)]
        sent.append(await producer.send(topic, b"y", partition=1))
        last = {r.partition: r.offset for r in await asyncio.gather(*sent)}
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        reported = {TP(tp.topic, tp.partition): end
                    for tp, end in (await consumer.end_offsets(tps)).items()}  # fmt: skip
    finally:
        await consumer.stop()
    ends = await true_end_offsets(kafka_bootstrap, reported)
    assert ends == {TP(topic, 0): last[0] + 1, TP(topic, 1): last[1] + 1}
