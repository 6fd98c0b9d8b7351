"""``upstream dev``: the whole stack on the embedded broker and Postgres, in one command.

Starts (or uses, when ``UPSTREAM_KAFKA_BOOTSTRAP`` / ``UPSTREAM_DATABASE_URL`` are set) the
broker and Postgres, creates topics, migrates, runs worker, sink and notifier as child
processes, streams the ``denial-spike`` scenario for customer ``demo`` (its days ending today),
and prints the console URL with an operator token. Ctrl-C or SIGTERM stops every child and
embedded server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from notifier.tokens import mint_token
from streams.app.cli_parser import SERVICES
from streams.app.services import migrate_database
from streams.devtools.generator import Scenario, produce
from streams.devtools.stack import (
    EmbeddedKafka,
    EmbeddedPostgres,
    free_port,
    spawn_service,
    stop_process,
    wait_for_port,
)
from streams.kafka.topics import create_topics
from streams.settings import Settings


@dataclass
class Stack:
    """Running infrastructure and service processes; :meth:`close` stops them all."""

    bootstrap: str
    database_url: str
    secret: str
    notifier_port: int
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    exit_stack: ExitStack = field(default_factory=ExitStack)

    @property
    def env(self) -> dict[str, str]:
        """Environment for child processes."""
        return {
            **os.environ,
            "UPSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "UPSTREAM_DATABASE_URL": self.database_url,
            "UPSTREAM_NOTIFIER_SECRET": self.secret,
            "UPSTREAM_NOTIFIER_PORT": str(self.notifier_port),
            "UPSTREAM_NOTIFIER_HOST": "127.0.0.1",
            "UPSTREAM_CONSOLE_URL": f"http://127.0.0.1:{self.notifier_port}",
        }

    def start_service(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``upstream <name>`` as a child in its own process group, logging to a file."""
        proc = spawn_service(name, self.env, self.log_dir / f"{name}.log")
        self.procs[name] = proc
        return proc

    def close(self) -> None:
        """Stop services (SIGTERM, then SIGKILL) and the embedded servers."""
        for proc in self.procs.values():
            stop_process(proc, timeout_s=15)
        self.exit_stack.close()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_stack(settings: Settings, log_dir: Path, say: Callable[[str], None]) -> Stack:
    """Bring up broker, Postgres, topics, schema and the services (:data:`SERVICES`)."""
    exit_stack = ExitStack()
    stack: Stack | None = None
    try:
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            kafka = EmbeddedKafka().start()
            exit_stack.callback(kafka.stop)
            bootstrap = kafka.bootstrap
            say(f"embedded Kafka (Tansu) on {bootstrap}")
        database_url = settings.database_url
        if not database_url:
            postgres = EmbeddedPostgres().start()
            exit_stack.callback(postgres.stop)
            database_url = postgres.url
            say(f"embedded PostgreSQL on 127.0.0.1:{postgres.port}")
        asyncio.run(create_topics(settings, bootstrap))
        migrate_database(database_url)
        secret = settings.notifier_secret.get_secret_value() or secrets.token_urlsafe(32)
        port = settings.notifier_port if _port_free(settings.notifier_port) else free_port()
        if port != settings.notifier_port:
            say(f"port {settings.notifier_port} is busy; the notifier uses {port}")
        stack = Stack(bootstrap, database_url, secret, port, log_dir, exit_stack=exit_stack)
        for name in SERVICES:
            stack.start_service(name)
        # The console URL is printed next: it must answer when a user (or a test) opens it.
        wait_for_port(port, 60, stack.procs["notifier"], log_dir / "notifier.log")
        return stack
    except BaseException:
        if stack is not None:
            stack.close()  # the services, then the embedded servers
        else:
            exit_stack.close()
        raise


def ending_today(scenario: Scenario, today: date | None = None) -> Scenario:
    """``scenario`` moved so that its last day is today (UTC): the demo's alerts are recent,
    their age reads as an operator expects, and retention (by the wall clock) keeps them."""
    last = today or datetime.now(UTC).date()
    return replace(scenario, start=last - timedelta(days=scenario.days - 1))


def run_dev(settings: Settings, scenario: Scenario, duration_s: float) -> int:
    """The ``upstream dev`` command; returns the exit code."""
    log_dir = Path(settings.worker_data_dir).parent / "dev-logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(f"[upstream dev] {text}", flush=True)

    stopping = False

    def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    # SIGINT too: left to asyncio.run, a Ctrl-C during the generator becomes a cancel of its
    # task, which aiokafka's producer swallows if it lands while it closes; the command then
    # waited for a Ctrl-C it had had. With a handler of ours asyncio.run installs none.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    stack = start_stack(settings, log_dir, say)
    try:
        token = mint_token(stack.secret, scenario.customer_id, "dev-operator")
        say(f"services started; logs in {log_dir}/")
        say(f"console: http://127.0.0.1:{stack.notifier_port}/?token={token}")
        say(f"websocket: ws://127.0.0.1:{stack.notifier_port}/ws (customer {scenario.customer_id})")
        say("operator token (also accepted by `upstream token`-minted peers):")
        print(token, flush=True)
        say(f"streaming scenario {scenario.name!r}: {scenario.days} days in ~{duration_s:.0f}s")

        def progress(sent: int, total: int) -> None:
            if sent == total or sent % max(1, total // 10) < max(1, total // 100):
                say(f"generator: {sent}/{total} claims")

        asyncio.run(
            produce(
                scenario,
                stack.bootstrap,
                settings.topic_claims,
                duration_s=duration_s,
                progress=progress,
            )
        )
        say(f"generator done after {time.monotonic() - started:.0f}s; Ctrl-C to stop")
        while not stopping:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    say(f"{name} exited with {proc.returncode}; see {log_dir}/{name}.log")
                    return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping…")
        stack.close()
        say("stopped")
