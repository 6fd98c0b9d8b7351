"""Session fixtures: the real embedded broker and Postgres, or external ones from the env.

The broker: ``UPSTREAM_TEST_BROKER=kafka`` (``make test-kafka``) starts Apache Kafka (KRaft,
fetched with mvn) instead of the embedded Tansu. ``UPSTREAM_KAFKA_BOOTSTRAP`` /
``UPSTREAM_DATABASE_URL`` switch to external servers. Every test gets its own topics,
consumer groups and database, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from streams.devtools.apache_kafka import ApacheKafka
from streams.devtools.stack import EmbeddedKafka, EmbeddedPostgres
from streams.kafka.topics import create_topics
from streams.native import domain_compiled, stale_sources
from tests.integration.stack import ServiceStack, create_database

BROKER = os.environ.get("UPSTREAM_TEST_BROKER", "tansu")
if BROKER not in ("tansu", "kafka"):
    raise pytest.UsageError(f"UPSTREAM_TEST_BROKER must be tansu or kafka, not {BROKER!r}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a compiled domain module older than its source: the old build would run."""
    stale = stale_sources()
    if stale:
        names = ", ".join(str(path.relative_to(Path(__file__).parents[1])) for path in stale)
        pytest.exit(f"{names} changed since the domain was compiled: run `make install` "
                    "(or `make pure` to test the sources as Python)", returncode=4)  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the Apache Kafka suite, leave out the tests that use no broker (no broker fixture, no
    ``broker`` mark): they would repeat the embedded suite's run of them exactly."""
    if BROKER != "kafka":
        return
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        uses = {"kafka_bootstrap", "apache_kafka"} & set(fixtures) or item.get_closest_marker(
            "broker"
        )
        (kept if uses else left_out).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_report_header() -> str:
    """Say which domain this run tests."""
    return f"domain core: {'compiled (mypyc)' if domain_compiled() else 'Python (not compiled)'}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a running broker for the whole session."""
    external = os.environ.get("UPSTREAM_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = ApacheKafka().start() if BROKER == "kafka" else EmbeddedKafka().start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def apache_kafka() -> Iterator[ApacheKafka]:
    """An Apache Kafka broker of this module's own, for tests that restart it."""
    broker = ApacheKafka().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a running Postgres server for the whole session."""
    external = os.environ.get("UPSTREAM_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and database names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail a test that leaves child processes behind (session servers excepted)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    leftover = []
    for proc in me.children(recursive=True):
        try:
            # Children of a session server (Postgres' connection backends…) belong to it.
            if proc.pid in before or any(parent.pid in before for parent in proc.parents()):
                continue
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                leftover.append(proc)
        except psutil.NoSuchProcess:
            continue
    for proc in leftover:
        proc.kill()
    assert not leftover, f"test left processes behind: {[p.pid for p in leftover]}"


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
