"""How a service process waits (for its signal, or for its own task to end); the sink's groups."""

from __future__ import annotations

import asyncio

import pytest

from sinks.service import ConsumerGroup, SinkService
from streams.app.services import raise_if_ended, until_stopped
from streams.settings import Settings


async def test_a_failed_service_task_ends_the_wait_before_any_signal() -> None:
    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("the sink's loop broke")

    task = asyncio.create_task(fails())
    await asyncio.wait_for(until_stopped(asyncio.Event(), task), 5)
    with pytest.raises(RuntimeError, match="loop broke"):
        await task


async def test_the_signal_ends_the_wait_and_leaves_the_task_running() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    await asyncio.wait_for(until_stopped(stop, task), 5)
    assert not task.done()
    task.cancel()


async def test_any_of_several_tasks_ending_ends_the_wait() -> None:
    forever = asyncio.create_task(asyncio.sleep(60))
    ends = asyncio.create_task(asyncio.sleep(0.01))
    await asyncio.wait_for(until_stopped(asyncio.Event(), forever, ends), 5)
    assert ends.done()
    assert not forever.done()
    forever.cancel()


async def test_a_task_that_ended_by_itself_is_raised_as_an_error() -> None:
    async def fails() -> None:
        raise LookupError("relation does not exist")  # any error the task did not catch

    async def returns() -> None:
        return None

    failed, returned = asyncio.create_task(fails()), asyncio.create_task(returns(), name="hub")
    running = asyncio.create_task(asyncio.sleep(60))
    await asyncio.wait({failed, returned})
    with pytest.raises(LookupError, match="does not exist"):
        raise_if_ended([running, failed, returned])
    with pytest.raises(RuntimeError, match="the hub task ended by itself"):
        raise_if_ended([running, returned])
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    raise_if_ended([running])  # cancelled (by the shutdown): not an error


@pytest.mark.parametrize("store_claims", [True, False])
def test_drift_and_alerts_have_a_consumer_group_apart_from_the_claims(store_claims: bool) -> None:
    settings = Settings(sink_group="g", sink_claims=store_claims, sink_claims_poll_every_s=0.2)
    groups = SinkService(settings, "unused:9092", writer=None, codec=None).consumer_groups()  # type: ignore[arg-type]
    expected = [ConsumerGroup("g-events", (settings.topic_drift, settings.topic_alerts), 0.0)]
    if store_claims:
        expected.append(ConsumerGroup("g", (settings.topic_claims,), 0.2))
    assert groups == expected


def test_the_worker_collects_its_youngest_generation_at_the_configured_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """UPSTREAM_GC_THRESHOLD sets the youngest generation's threshold; the older keep theirs."""
    import gc

    from streams.runtime.worker import tune_gc

    before = gc.get_threshold()
    monkeypatch.setenv("UPSTREAM_GC_THRESHOLD", "12345")
    try:
        tune_gc(Settings())
        assert gc.get_threshold() == (12345, *before[1:])
    finally:
        gc.set_threshold(*before)
