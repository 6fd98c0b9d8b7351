"""The worker's wiring: its settings reaching Faust and aiokafka, and each stage's batch wait."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import AppT

from streams.runtime.batches import UpstreamApp
from streams.runtime.consumer import _ConsumerThread
from tests.unit.loop import run_ready


def test_the_worker_s_consumer_fetches_with_the_app_s_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust fixes aiokafka's fetch_max_wait_ms at 1,500; the app's own reaches the consumer."""
    built = SimpleNamespace(_fetch_max_wait_ms=1500)  # what Faust's thread builds
    monkeypatch.setattr(
        AIOKafkaConsumerThread, "_create_worker_consumer", lambda self, transport: built
    )
    thread = object.__new__(_ConsumerThread)
    thread.app = cast(AppT, SimpleNamespace(fetch_max_wait_ms=77))
    assert thread._create_worker_consumer(None) is built
    assert built._fetch_max_wait_ms == 77
    assert UpstreamApp("t", fetch_max_wait_ms=77).fetch_max_wait_ms == 77


@pytest.mark.parametrize(
    ("environ", "expected"), [({}, 0), ({"UPSTREAM_STANDBY_REPLICAS": "1"}, 1)]
)
def test_the_worker_keeps_standby_tables_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], expected: int
) -> None:
    """No standby copies by default (each read every changelog record of another worker's
    partitions, per event); UPSTREAM_STANDBY_REPLICAS asks for them."""
    from schemas.registry import ValueCodec
    from streams.runtime.worker import build_worker
    from streams.settings import Settings

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    worker = build_worker(Settings(), "127.0.0.1:9", ValueCodec())
    assert worker.app.conf.table_standby_replicas == expected


async def test_each_stage_waits_for_its_own_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The route waits UPSTREAM_BATCH_WITHIN_S for more claims; the windows, which read the
    routes' bursts of by-key messages, UPSTREAM_WINDOWS_BATCH_WITHIN_S; the alerts (once the
    rules are loaded) and the commands, UPSTREAM_ALERTS_BATCH_WITHIN_S."""
    from schemas.registry import ValueCodec
    from streams.runtime.worker import WorkerStages
    from streams.settings import Settings

    monkeypatch.setenv("UPSTREAM_BATCH_WITHIN_S", "0.07")
    monkeypatch.setenv("UPSTREAM_WINDOWS_BATCH_WITHIN_S", "0.003")
    monkeypatch.setenv("UPSTREAM_ALERTS_BATCH_WITHIN_S", "0.004")
    stages = WorkerStages(UpstreamApp("t"), Settings(), "127.0.0.1:9", ValueCodec())
    waits: dict[Any, float] = {}

    async def consume(subscription: Any, handle: Any, within_s: float) -> None:
        waits[subscription] = within_s

    monkeypatch.setattr(stages, "consume", consume)
    await stages.route_claims()
    await stages.window_claims()
    await stages.forward_commands()
    alerts = asyncio.ensure_future(stages.apply_alert_input())
    await run_ready()
    assert not alerts.done()  # the rules first
    stages.rules_feed.ready.set()
    await alerts
    assert waits == {
        stages.claims_batches: 0.07, stages.by_key_batches: 0.003,
        stages.commands_batches: 0.004, stages.alert_input_batches: 0.004,
    }  # fmt: skip


def test_the_worker_makes_its_data_directory_with_its_parents(tmp_path: Path) -> None:
    """A worker started where the data directory's parents do not exist (the default,
    ``.cache/worker``, in a fresh directory) makes them rather than failing at start."""
    from schemas.registry import ValueCodec
    from streams.runtime.worker import build_worker
    from streams.settings import Settings

    data_dir = tmp_path / "not" / "yet" / "worker"
    build_worker(Settings(worker_data_dir=str(data_dir)), "127.0.0.1:9", ValueCodec())
    assert data_dir.is_dir()
