"""Helpers to run Upstream services as real child processes against the session servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from notifier.tokens import mint_token
from schemas.registry import ValueCodec
from sinks.rows import alert_row, claim_row, drift_row
from sinks.writer import PostgresWriter
from streams.app.services import migrate_database
from streams.devtools.probes import read_all, wait_processed
from streams.devtools.stack import free_port, spawn_service, stop_process
from streams.kafka.topics import create_topics
from streams.settings import Settings

T = TypeVar("T")
SECRET = "integration-test-secret-of-at-least-32-bytes"


@dataclass
class ServiceStack:
    """Names and environment of one test's isolated stack."""

    bootstrap: str
    database_url: str
    suffix: str
    log_dir: Path
    notifier_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """UPSTREAM_* variables giving this test its own topics, groups and database."""
        s = self.suffix
        return {
            "UPSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "UPSTREAM_DATABASE_URL": self.database_url,
            "UPSTREAM_NOTIFIER_SECRET": SECRET,
            "UPSTREAM_NOTIFIER_PORT": str(self.notifier_port),
            "UPSTREAM_TOPIC_CLAIMS": f"claims.decided.{s}",
            "UPSTREAM_TOPIC_CLAIMS_DLQ": f"claims.decided.dlq.{s}",
            "UPSTREAM_TOPIC_DRIFT": f"drift.events.{s}",
            "UPSTREAM_TOPIC_ALERTS": f"alerts.events.{s}",
            "UPSTREAM_TOPIC_COMMANDS": f"alerts.commands.{s}",
            "UPSTREAM_TOPIC_RULES": f"alerts.rules.{s}",
            "UPSTREAM_TOPIC_COMMANDS_DLQ": f"alerts.commands.dlq.{s}",
            "UPSTREAM_TOPIC_SINK_DLQ": f"sink.dlq.{s}",
            "UPSTREAM_TOPIC_INGEST_LEDGER": f"ingest.ledger.{s}",
            "UPSTREAM_APP_ID": f"upstream-worker-{s}",
            "UPSTREAM_SINK_GROUP": f"upstream-sink-{s}",
            "UPSTREAM_PARTITIONS": "2",
            "UPSTREAM_WORKER_DATA_DIR": str(self.log_dir / "worker"),
            **self.extra_env,
        }

    def settings(self) -> Settings:
        """The settings the services of this stack read."""
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start(
        self, service: str, name: str = "", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``upstream <service>`` as a child process called ``name`` (default: service),
        with ``env`` added to the stack's environment.

        A second worker gets a data directory of its own.
        """
        name = name or service
        env = {**os.environ, **self.env, **(env or {})}
        if name != service:
            env["UPSTREAM_WORKER_DATA_DIR"] = str(self.log_dir / name)
        proc = spawn_service(service, env, self.log_dir / f"{name}.log")
        self.procs[name] = proc
        return proc

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every service; return the exit codes."""
        codes = {}
        for name, proc in self.procs.items():
            stop_process(proc, timeout_s=20)
            codes[name] = proc.returncode
        return codes

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``upstream <args>`` with this stack's environment; never raises on exit code."""
        return subprocess.run(
            [sys.executable, "-m", "streams.app.cli", *args],
            env={**os.environ, **self.env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def kill(self, name: str) -> None:
        """SIGKILL a service (no shutdown at all) and forget it."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def log(self, service: str) -> str:
        """The service's log so far."""
        return (self.log_dir / f"{service}.log").read_text(errors="replace")


TABLES = ("drift_events", "alert_events", "alert_transitions", "claim_records",
          "operator_judgments", "claim_rejections", "feed_days")  # fmt: skip
# feed_days by customer, summed over the days: which day the sink stored a claim on is the
# wall clock's, the counts are not.
_FEED_TOTALS = (
    "SELECT customer_id, sum(received), sum(new), sum(resent), sum(amended), sum(invalid)"
    " FROM feed_days GROUP BY customer_id"
)


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (without surrogate keys and the wall-clock times rows were stored,
    first notified at or rejected at; feed_days summed per customer), sorted."""
    out = {}
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        for table in TABLES:
            query = _FEED_TOTALS if table == "feed_days" else f"SELECT * FROM {table}"  # noqa: S608
            cursor = conn.execute(query)
            rows = cursor.fetchall()
            names = [d.name for d in cursor.description or ()]
            drop = {
                i
                for i, n in enumerate(names)
                if n in ("seq", "stored_at", "first_notified_at", "rejected_at")
            }
            out[table] = sorted(
                (tuple(v for i, v in enumerate(r) if i not in drop) for r in rows), key=repr
            )
    return out


async def store_rows(
    database_url: str, drift: list[Any], alerts: list[Any], claims: list[Any]
) -> None:
    """Write drift events, alert transitions and claims (records as on the topics) as the sink
    writes them; claims at offsets 0, 1, … of partition 0."""
    engine = create_async_engine(database_url)
    try:
        await PostgresWriter(engine).write(
            [drift_row(d) for d in drift],
            [alert_row(a) for a in alerts],
            [claim_row(c, 0, i) for i, c in enumerate(claims)],
        )
    finally:
        await engine.dispose()


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server; return its SQLAlchemy URL."""
    base = server_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, _ = server_url.rpartition("/")
    return f"{head}/{name}"


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """GET ``url``: (status, headers (names case-insensitive), raw body), for 4xx/5xx answers
    too."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 -- local servers
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 -- local servers
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET ``url``: (status, parsed JSON body), for 4xx/5xx answers too."""
    status, _, body = http_get(url, headers)
    return status, json.loads(body)


async def wait_until(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, interval_s: float = 0.25
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


def worker_stack(kafka_bootstrap: str, unique: str, tmp_path: Path, suffix: str) -> ServiceStack:
    """A stack without a database (for the worker alone), logging under ``tmp_path/suffix``."""
    return ServiceStack(kafka_bootstrap, "", f"{unique}{suffix}", tmp_path / suffix)


async def wait_consumed(stack: ServiceStack, produced: int) -> None:
    """Wait until the stack's worker has processed ``produced`` claims."""
    await wait_processed(stack.bootstrap, stack.settings(), produced, 240)


async def outputs(stack: ServiceStack) -> dict[str, Any]:
    """The stack's drift events by id, alert events by (id, version), and DLQ (key, reason)s."""
    s, codec = stack.settings(), ValueCodec()
    drifts = {}
    for m in await read_all(stack.bootstrap, s.topic_drift):
        record = codec.decode(m.value, "DriftEvent", s.topic_drift)
        drifts[record["event_id"]] = record
    alerts = {}
    for m in await read_all(stack.bootstrap, s.topic_alerts):
        record = codec.decode(m.value, "AlertEvent", s.topic_alerts)
        alerts[(record["alert_id"], record["version"])] = record
    # A set: a restart may dead-letter a claim the route refused twice (at-least-once).
    dlq = {
        (m.key, dict(m.headers)["error.reason"])
        for m in await read_all(stack.bootstrap, s.topic_claims_dlq)
    }
    return {"drifts": drifts, "alerts": alerts, "dlq": dlq}


async def notifier_ready(stack: ServiceStack) -> ClientConnection:
    """Poll until the notifier accepts a WebSocket; return that connection (operator alice)."""

    async def probe() -> ClientConnection | None:
        try:
            return await connect(ws_url(stack, mint_token(SECRET, "demo", "alice")))
        except OSError:
            return None

    return await wait_until(probe, 60, "the notifier to accept connections")


def ws_url(stack: ServiceStack, token: str, **params: str) -> str:
    """The notifier's WebSocket URL with ``token`` and extra query parameters."""
    query = "&".join([f"token={token}", *(f"{k}={v}" for k, v in params.items())])
    return f"ws://127.0.0.1:{stack.notifier_port}/ws?{query}"


async def subscribe(ws: ClientConnection) -> dict[str, Any]:
    """Subscribe without filters; return the snapshot."""
    await ws.send(json.dumps({"type": "subscribe"}))
    snapshot: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert snapshot["type"] == "snapshot"
    return snapshot


async def collect(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Append every message ``ws`` receives to ``into`` until it closes."""
    async for raw in ws:
        into.append(json.loads(raw))


async def send_then_receive(ws: ClientConnection, message: dict[str, Any]) -> Any:
    """Send ``message`` and wait (15 s at most) for the next message or the close."""
    await ws.send(json.dumps(message))
    return await asyncio.wait_for(ws.recv(), 15)


async def receive_until_closed(
    ws: ClientConnection, seen: Callable[[Any], None] | None = None, timeout_s: float = 30
) -> None:
    """Receive until the connection closes (raising ConnectionClosed), each message to
    ``seen``; TimeoutError if nothing comes for ``timeout_s``."""
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout_s)
        if seen is not None:
            seen(message)


async def sink_stack(
    kafka_bootstrap: str, postgres_url: str, name: str, unique: str, tmp_path: Path
) -> tuple[str, ServiceStack, Settings]:
    """A fresh database ``<name>_<unique>``, migrated; a service stack on it, and its topics."""
    database_url = create_database(postgres_url, f"{name}_{unique}")
    await asyncio.to_thread(migrate_database, database_url)
    stack = ServiceStack(kafka_bootstrap, database_url, unique, tmp_path)
    settings = stack.settings()
    await create_topics(settings, kafka_bootstrap)
    return database_url, stack, settings


@dataclass
class Received:
    """What a local HTTP receiver took: (path, headers, body) of each POST."""

    url: str
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies POSTed to ``path``."""
        return [json.loads(body) for p, _, body in self.requests if p == path]


@asynccontextmanager
async def http_receiver(delay_s: float = 0.0) -> AsyncIterator[Received]:
    """An aiohttp server on 127.0.0.1 taking POSTs on any path (204, ``delay_s`` after each
    request arrived, as a slow receiver answers), stopped on exit."""
    port = free_port()
    got = Received(f"http://127.0.0.1:{port}")

    async def take(request: web.Request) -> web.Response:
        got.requests.append((request.path, dict(request.headers), await request.read()))
        await asyncio.sleep(delay_s)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{path}", take)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield got
    finally:
        await runner.cleanup()
