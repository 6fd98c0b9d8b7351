"""Fixtures of the integration suite: one test's own stack of real service processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streams.topics import create_topics
from tests.integration.stack import ServiceStack, create_database


@pytest.fixture
async def notifier_stack(
    postgres_url: str, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> AsyncIterator[ServiceStack]:
    """A database and a notifier process only."""
    database_url = create_database(postgres_url, f"it_{unique}")
    test_stack = ServiceStack(kafka_bootstrap, database_url, unique, tmp_path)
    test_stack.start("notifier")
    try:
        yield test_stack
    finally:
        assert test_stack.stop_all() == {"notifier": 0}, test_stack.log("notifier")[-3000:]


@pytest.fixture
async def stack(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> AsyncIterator[ServiceStack]:
    """Topics, database and the worker, sink and notifier processes of one test."""
    database_url = create_database(postgres_url, f"it_{unique}")
    test_stack = ServiceStack(kafka_bootstrap, database_url, unique, tmp_path)
    await create_topics(test_stack.settings(), kafka_bootstrap)
    for service in ("worker", "sink", "notifier"):
        test_stack.start(service)
    try:
        yield test_stack
    finally:
        codes = test_stack.stop_all()
        assert codes == {"worker": 0, "sink": 0, "notifier": 0}, (
            f"unclean exit {codes}\n{test_stack.log('worker')[-3000:]}"
        )
