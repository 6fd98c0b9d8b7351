"""Composition root: build each service from settings and run it until a signal stops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from notifier.api import HttpApi
from notifier.commands import KafkaCommands, Rejections
from notifier.hub import Hub, psycopg_conninfo
from notifier.revocations import Revocations
from notifier.server import Limits, NotifierServer
from notifier.tokens import Keys
from notifier.web import Web
from notifier.web import serve as serve_web
from schemas.registry import ValueCodec
from sinks.migrate import migrate
from sinks.retrying import UNAVAILABLE, postgres_retrying
from sinks.service import SinkService
from sinks.writer import PostgresWriter
from streams.kafka.topics import create_topics
from streams.observability.health import Health, serve
from streams.observability.logs import logging_config
from streams.settings import Settings, SettingsError

log = logging.getLogger("upstream")


def require_bootstrap(settings: Settings) -> str:
    """The Kafka bootstrap servers, or a clear error."""
    if not settings.kafka_bootstrap:
        raise SettingsError(
            "UPSTREAM_KAFKA_BOOTSTRAP is not set (host:port of a Kafka broker); "
            "`upstream dev` starts an embedded one"
        )
    return settings.kafka_bootstrap


def require_database(settings: Settings) -> str:
    """The database URL, or a clear error."""
    if not settings.database_url:
        raise SettingsError(
            "UPSTREAM_DATABASE_URL is not set (postgresql+psycopg://user@host:port/db); "
            "`upstream dev` starts an embedded Postgres"
        )
    return settings.database_url


def require_keys(settings: Settings) -> Keys:
    """The notifier's signing secret and the earlier ones still accepted, or a clear error."""
    previous = settings.notifier_previous_secrets.get_secret_value().replace(",", " ").split()
    try:
        return Keys(require_secret(settings), previous)
    except ValueError as exc:
        raise SettingsError(f"UPSTREAM_NOTIFIER_PREVIOUS_SECRETS: {exc}") from None


def require_secret(settings: Settings) -> str:
    """The notifier signing secret, or a clear error."""
    from notifier.tokens import check_secret

    secret = settings.notifier_secret.get_secret_value()
    try:
        check_secret(secret)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return secret


def migrate_database(database_url: str) -> None:
    """Apply the schema migrations."""
    engine = create_engine(database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


async def migrate_when_reachable(
    database_url: str, stop: asyncio.Event, health: Health | None = None
) -> bool:
    """Apply the migrations once Postgres answers; False if ``stop`` comes first.

    Until then the service is not ready (check ``postgres``) and tries again with backoff, as
    it does when Postgres goes away while it runs: a service started before its database, or
    while it restarts, waits for it instead of exiting.
    """

    async def nap(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def not_ready(error: BaseException | None) -> None:
        if health is not None:
            health.record("postgres", False, error=str(error)[:200])

    retrying = postgres_retrying(not_ready, stop=lambda _: stop.is_set(), sleep=nap)
    try:
        async for attempt in retrying:
            with attempt:
                await asyncio.to_thread(migrate_database, database_url)
    except UNAVAILABLE:
        if stop.is_set():
            return False
        raise
    return True


async def _until_signalled(start: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await start(stop)


async def until_stopped(stop: asyncio.Event, *tasks: asyncio.Task[Any]) -> None:
    """Wait until ``stop`` is set or one of ``tasks`` ends by itself, whichever comes first.

    A service whose task failed must not leave its process idling until a signal, its health
    checks frozen at their last (good) values.
    """
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], timeout_s: float = 10.0, again_s: float = 1.0
) -> None:
    """Cancel ``tasks`` and wait until they end, cancelling again any still running after
    ``again_s``; give up (logged) after ``timeout_s``.

    A single cancel is not enough: aiokafka's ``AIOKafkaClient.close()`` awaits its own
    cancelled task under ``suppress(CancelledError)``, so a cancel that reaches the caller
    there is swallowed and the caller (the rejections reader) goes on running.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            names = sorted(task.get_name() for task in pending)
            log.error("still running %.0fs after being cancelled: %s", timeout_s, names)
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(again_s, left))


def raise_if_ended(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Raise the error of the first of ``tasks`` that ended by itself (before any signal): a
    service's process then exits non-zero, to be restarted. One that returned, though it was
    to run until cancelled, is an error too."""
    for task in tasks:
        if task.done() and not task.cancelled():
            task.result()  # its own error, if it failed
            raise RuntimeError(f"the {task.get_name()} task ended by itself")


def run_worker(settings: Settings) -> None:
    """Run the Faust worker in this process until SIGINT/SIGTERM."""
    _exit_cleanly_on_sigterm()  # until Faust installs its own handlers
    from streams.runtime.worker import build_worker, tune_gc

    tune_gc(settings)
    health = _serve_health("worker", settings)
    # Internal topics exist before the group forms (see streams.kafka.topics.worker_topics).
    asyncio.run(create_topics(settings, require_bootstrap(settings), public=False))
    worker = build_worker(
        settings, require_bootstrap(settings), ValueCodec(settings.schema_registry_url), health
    )
    level = logging.getLevelName(logging.getLogger().level)
    worker.run(level, logging_config("worker", level, settings.log_format))


def _serve_health(service: str, settings: Settings) -> Health:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``UPSTREAM_METRICS_PORT`` when it is set."""
    health = Health(service)
    if settings.metrics_port:
        serve(health, settings.metrics_host, settings.metrics_port)
    return health


def _exit_cleanly_on_sigterm() -> None:
    """Until the event loop takes over the signals, SIGTERM means a clean exit (status 0)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def run_sink(settings: Settings) -> None:
    """Run the sink until SIGINT/SIGTERM; the batch in flight is written and committed."""
    _exit_cleanly_on_sigterm()
    database_url = require_database(settings)
    bootstrap = require_bootstrap(settings)
    health = _serve_health("sink", settings)

    async def main(stop: asyncio.Event) -> None:
        if not await migrate_when_reachable(database_url, stop, health):
            return
        # pre_ping: after a Postgres restart, pooled connections are checked before use. A
        # connection per claim lane, one for the drift and alert loop, one for the health check.
        engine = create_async_engine(
            database_url, pool_size=max(4, settings.sink_claim_lanes + 2), pool_pre_ping=True
        )
        service = SinkService(
            settings,
            bootstrap,
            PostgresWriter(engine, claim_lanes=settings.sink_claim_lanes),
            ValueCodec(settings.schema_registry_url),
            health,
        )
        task = asyncio.create_task(service.run())
        await until_stopped(stop, task)
        service.stop()
        try:
            await task  # a sink that failed raises here: the process exits non-zero
        finally:
            await engine.dispose()
        log.info("sink stopped after %d rows", service.rows_written)

    asyncio.run(_until_signalled(main))


def run_notifier(settings: Settings) -> None:
    """Run the WebSocket/HTTP notifier until SIGINT/SIGTERM, or until its alert hub or its
    rejections reader fails (then it exits non-zero: a notifier fanning out nothing must not
    look healthy)."""
    _exit_cleanly_on_sigterm()
    database_url = require_database(settings)
    bootstrap = require_bootstrap(settings)
    keys = require_keys(settings)

    async def main(stop: asyncio.Event) -> None:
        if not await migrate_when_reachable(database_url, stop):
            return
        revocations = Revocations(database_url, lambda jtis: notifier.revoke(jtis))
        await revocations.load()  # before the first connection is served
        hub = Hub(database_url)
        hub_task = asyncio.create_task(hub.run(), name="alert hub")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        commands = KafkaCommands(
            producer,
            ValueCodec(settings.schema_registry_url),
            settings.topic_commands,
            psycopg_conninfo(database_url),
        )
        engine = create_async_engine(database_url, pool_size=4, pool_pre_ping=True)
        api = HttpApi(engine, keys, lambda: hub.last_seq, revoked=revocations)
        checks = {"kafka": commands.kafka_ready}
        limits = Limits(
            connections_per_address=settings.notifier_connections_per_address,
            connections_per_operator=settings.notifier_connections_per_operator,
            commands_per_second=settings.notifier_commands_per_second,
        )
        notifier = NotifierServer(hub, keys, commands, limits, api.layouts, revocations)
        web = Web(notifier, api, checks, settings.delivery_private_targets).app()
        server = await serve_web(web, settings.notifier_host, settings.notifier_port)
        rejections = Rejections(
            bootstrap, settings.topic_commands_dlq, commands.codec, notifier.rejected
        )
        rejections_task = asyncio.create_task(rejections.run(), name="command rejections")
        revocations_task = asyncio.create_task(revocations.run(), name="token revocations")
        for address in server.addresses:
            log.info("notifier listening on %s", address)
        tasks = (hub_task, rejections_task, revocations_task)
        await until_stopped(stop, *tasks)
        ended = [task for task in tasks if task.done()]  # by themselves: a failure
        for task in ended:
            error = None if task.cancelled() else task.exception()
            log.error("the notifier's %s task ended; stopping", task.get_name(), exc_info=error)
        await server.stop()
        await commands.close()
        await producer.stop()
        await engine.dispose()
        await cancel_and_wait(tasks)
        raise_if_ended(ended)  # the process exits non-zero, to be restarted

    asyncio.run(_until_signalled(main))


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def run_dispatcher(settings: Settings) -> None:
    """Run the alert dispatcher until SIGINT/SIGTERM: a pass every ``dispatcher_poll_s``."""
    from notifier.delivery.dispatcher import Backoff, Dispatcher, Mail, Pace

    _exit_cleanly_on_sigterm()
    database_url = require_database(settings)
    health = _serve_health("dispatcher", settings)

    async def main(stop: asyncio.Event) -> None:
        if not await migrate_when_reachable(database_url, stop, health):
            return
        engine = create_async_engine(database_url, pool_size=4, pool_pre_ping=True)
        mail = Mail(host=settings.smtp_host, port=settings.smtp_port,
                    starttls=settings.smtp_starttls, username=settings.smtp_username,
                    password=_secret(settings.smtp_password),
                    sender=settings.smtp_sender)  # fmt: skip
        dispatcher = Dispatcher(
            engine, settings.console_url, mail=mail,
            backoff=Backoff(give_up_s=settings.delivery_give_up_s),
            pace=Pace(lease_s=settings.delivery_lease_s),
        )  # fmt: skip
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    enqueued, sent = await dispatcher.step()
                except (OperationalError, OSError) as exc:  # Postgres away: the next pass retries
                    health.record("postgres", False, error=str(exc)[:200])
                    log.warning("dispatcher: Postgres unavailable (%s); trying again", exc)
                else:
                    health.record("postgres", True, (time.monotonic() - started) * 1000)
                    if enqueued or sent:
                        log.info("dispatcher: %d enqueued, %d sent", enqueued, sent)
                    if dispatcher.backlog:
                        continue  # more is due: the next pass at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.dispatcher_poll_s)
        finally:
            await dispatcher.close()
            await engine.dispose()

    asyncio.run(_until_signalled(main))
