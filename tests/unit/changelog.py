"""Fakes of what :class:`streams.runtime.state.ChangelogTable` uses of Faust and aiokafka, and the
table a recovery rebuilds from what was sent."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from faust.types import TP

from streams.runtime.state import ATOMIC_BATCH_BYTES


class FakeTable:
    """What ChangelogTable uses of a Faust table: its data, its changelog topic's name, and
    the offsets Faust's recovery has read each changelog partition up to."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "app-windows-changelog")
        self.recovered = {TP("app-windows-changelog", 0): 41, TP("app-alerts-changelog", 0): 7}
        self.app = SimpleNamespace(
            tables=SimpleNamespace(recovery=SimpleNamespace(active_offsets=self.recovered))
        )


class FakeProducer:
    """aiokafka's batch API, keeping each batch's records; delivery waits for ``deliver()``."""

    def __init__(self, deliver_at_once: bool = True) -> None:
        self.deliver_at_once = deliver_at_once
        self.batches: list[tuple[int, list[tuple[str, Any]]]] = []  # (partition, records)
        self.undelivered: list[asyncio.Future[None]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16_384, 0)  # aiokafka's default max_batch_size

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        assert batch.size() <= ATOMIC_BATCH_BYTES + 100
        records = [
            (json.loads(r.key), None if r.value is None else json.loads(r.value))
            for records in record_batches(batch._build())
            for r in records
        ]
        self.batches.append((partition, records))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.deliver_at_once:
            future.set_result(None)
        else:
            self.undelivered.append(future)
        return future

    def deliver(self) -> None:
        for future in self.undelivered:
            future.set_result(None)
        self.undelivered.clear()


def record_batches(buffer: bytes) -> list[Any]:
    records, found = MemoryRecords(bytes(buffer)), []
    while records.has_next():
        found.append(records.next_batch())
    return found


def recovered(batches: list[tuple[int, list[tuple[str, Any]]]]) -> dict[str, Any]:
    """What Faust's recovery puts in a table's memory: the changelog replayed from its start."""
    data: dict[str, Any] = {}
    for _, records in batches:
        for key, value in records:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
    return data
