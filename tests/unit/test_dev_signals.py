"""``upstream dev`` stops on Ctrl-C even when the SIGINT lands while the generator finishes.

asyncio.run turns a first SIGINT into a cancel of its task, and aiokafka's producer swallows a
cancel that reaches it while it closes (it awaits its own cancelled task under
``suppress(CancelledError)``): the generator would return normally and the command wait for a
Ctrl-C it has already had.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.app import dev
from streams.devtools.generator import Scenario
from streams.settings import Settings


async def _produce_swallowing_the_cancel(*_: Any, **__: Any) -> int:
    """Ctrl-C arrives as the generator closes its producer, which swallows the cancel."""
    inner = asyncio.ensure_future(asyncio.sleep(3600))
    await asyncio.sleep(0)
    inner.cancel()
    os.kill(os.getpid(), signal.SIGINT)  # handled before the await below
    with contextlib.suppress(asyncio.CancelledError):
        await inner  # what AIOKafkaClient.close() does: a cancel of the caller is lost here
    return 1


def test_ctrl_c_as_the_generator_ends_stops_the_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    closed: list[bool] = []
    stack = SimpleNamespace(
        secret="s" * 32, notifier_port=1, bootstrap="127.0.0.1:9", procs={},
        close=lambda: closed.append(True),
    )  # fmt: skip
    monkeypatch.setattr(dev, "start_stack", lambda *_: stack)
    monkeypatch.setattr(dev, "produce", _produce_swallowing_the_cancel)
    # Were the Ctrl-C lost, the command would wait for another; a service that has exited makes
    # it return 1 instead, so the test fails at once rather than hanging.
    stack.procs["worker"] = SimpleNamespace(returncode=1, poll=lambda: 1)
    settings = Settings(worker_data_dir=str(tmp_path / "worker"))
    previous = signal.getsignal(signal.SIGINT)
    try:
        code = dev.run_dev(settings, Scenario(name="denial-spike", days=1), duration_s=0)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert code == 0
    assert closed == [True]
