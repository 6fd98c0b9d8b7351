"""Fixtures of the integration suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from streams.app.services import migrate_database
from tests.integration.stack import create_database


@pytest.fixture
async def database(postgres_url: str, unique: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A fresh, migrated database (its URL) and an async engine on it."""
    url = create_database(postgres_url, f"db_{unique}")
    await asyncio.to_thread(migrate_database, url)
    engine = create_async_engine(url)
    try:
        yield url, engine
    finally:
        await engine.dispose()
