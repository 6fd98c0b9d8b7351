"""A cancel that aiokafka swallows (AIOKafkaClient.close() suppresses the caller's
CancelledError) must not keep the notifier's rejections reader, or its shutdown, running."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiokafka import TopicPartition

from notifier import commands
from streams.app.services import cancel_and_wait


async def swallowing_topic_partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    # As AIOKafkaClient.close(): cancel an inner task, await it under suppress(CancelledError).
    inner = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    inner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await inner  # a cancel of the caller arriving now is swallowed
    return [TopicPartition(topic, 0)]


class FakeConsumer:
    def __init__(self, **_: Any) -> None:
        self.stopped = False

    async def start(self) -> None: ...
    def assign(self, partitions: Any) -> None: ...
    async def seek_to_end(self, *partitions: Any) -> None: ...

    async def getmany(self, timeout_ms: int) -> dict[Any, Any]:
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def stop(self) -> None:
        self.stopped = True


async def test_a_cancel_swallowed_by_aiokafka_still_ends_the_rejections_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commands, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(commands, "topic_partitions", swallowing_topic_partitions)

    async def nothing(*_: Any) -> None: ...

    task = asyncio.create_task(commands.Rejections("b", "dlq", None, nothing).run())
    await asyncio.sleep(0)  # the reader is now in topic_partitions, awaiting the inner task
    await asyncio.sleep(0)
    task.cancel()  # once, as the notifier's shutdown did
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done
    assert task.cancelled()


async def test_cancel_and_wait_cancels_again_a_task_that_swallowed_the_first_cancel() -> None:
    async def swallows_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)

    task = asyncio.create_task(swallows_once())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], timeout_s=5, again_s=0.05), 2)
    assert task.cancelled()
