"""The commit protocol: outputs delivered, then state persisted, then input acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.runtime.checkpoint import Checkpoint


class _Log:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def flush(self) -> None:
        self.events.append("flushed")

    def ack(self, messages: list[Any]) -> None:
        self.events.append(f"acked {len(messages)}")


async def test_state_is_saved_and_flushed_only_once_every_output_is_delivered() -> None:
    log, checkpoint = _Log(), Checkpoint()
    loop = asyncio.get_running_loop()
    outputs = [loop.create_future() for _ in range(3)]
    checkpoint.deliver(outputs[:2])
    checkpoint.deliver(outputs[2:])
    persisting = asyncio.ensure_future(checkpoint.persist(log, lambda: log.events.append("saved")))
    for future in outputs[:2]:
        future.set_result(None)
    for _ in range(10):
        await asyncio.sleep(0)
    assert log.events == []  # one output still in flight
    outputs[2].set_result(None)
    await persisting
    assert log.events == ["saved", "flushed"]


async def test_input_is_acknowledged_only_after_its_outputs_and_dead_letters() -> None:
    log, checkpoint = _Log(), Checkpoint()
    dead_letter = asyncio.get_running_loop().create_future()
    checkpoint.deliver([dead_letter])
    acknowledging = asyncio.ensure_future(checkpoint.acknowledge(log, ["m1", "m2"]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert log.events == []
    dead_letter.set_result(None)
    await acknowledging
    assert log.events == ["acked 2"]


async def test_a_failed_delivery_stops_the_batch_before_state_or_acknowledgement() -> None:
    log, checkpoint = _Log(), Checkpoint()
    failed = asyncio.get_running_loop().create_future()
    failed.set_exception(ConnectionError("broker gone"))
    checkpoint.deliver([failed])
    with pytest.raises(ConnectionError):
        await checkpoint.persist(log, lambda: log.events.append("saved"))
    assert log.events == []
    checkpoint.deliver([failed])
    with pytest.raises(ConnectionError):
        await checkpoint.acknowledge(log, ["m1"])
    assert log.events == []
