"""Schema migrations (Alembic), run by ``upstream db migrate`` and by services at start."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged ``sinks/migrations`` scripts."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("sinks") / "migrations"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision``. Safe to run concurrently."""
    config = alembic_config()
    with engine.begin() as connection:
        # One migrator at a time: several services may start together.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
