"""How a service process waits (for its signal, or for its own task to end); the sink's groups."""

from __future__ import annotations

import asyncio

import pytest

from sinks.service import ConsumerGroup, SinkService
from streams.services import until_stopped
from streams.settings import Settings


async def test_a_failed_service_task_ends_the_wait_before_any_signal() -> None:
    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("the sink's loop broke")

    task = asyncio.create_task(fails())
    await asyncio.wait_for(until_stopped(task, asyncio.Event()), 5)
    with pytest.raises(RuntimeError, match="loop broke"):
        await task


async def test_the_signal_ends_the_wait_and_leaves_the_task_running() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    await asyncio.wait_for(until_stopped(task, stop), 5)
    assert not task.done()
    task.cancel()


@pytest.mark.parametrize("store_claims", [True, False])
def test_drift_and_alerts_have_a_consumer_group_apart_from_the_claims(store_claims: bool) -> None:
    settings = Settings(sink_group="g", sink_claims=store_claims, sink_claims_poll_every_s=0.2)
    groups = SinkService(settings, "unused:9092", writer=None, codec=None).consumer_groups()  # type: ignore[arg-type]
    expected = [ConsumerGroup("g-events", (settings.topic_drift, settings.topic_alerts), 0.0)]
    if store_claims:
        expected.append(ConsumerGroup("g", (settings.topic_claims,), 0.2))
    assert groups == expected
