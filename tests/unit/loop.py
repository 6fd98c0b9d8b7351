"""Letting other tasks run, without waiting on the clock."""

from __future__ import annotations

import asyncio


async def run_ready(rounds: int = 50) -> None:
    """Yield to the event loop ``rounds`` times: every task that can make progress without I/O
    or a timer does (fakes deliver through futures, so that is all of them)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
