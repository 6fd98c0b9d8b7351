"""Alert delivery: alert transitions at a steady rate fanned out to many webhook receivers.

Starts an embedded PostgreSQL (migrated), ``--receivers`` webhook receivers (aiohttp, each on
its own port of 127.0.0.1, in this process) and ``--dispatchers`` ``upstream dispatcher``
processes (one by default; ``UPSTREAM_DISPATCHER_POLL_S`` 1 s, the default). One customer's
route sends every transition to all the receivers. For ``--seconds`` the bench stores
``--rate`` alert transitions a second through the sink's writer (``PostgresWriter.write``, as
the sink stores them), in ten batches a second: alerts opened, then resolved, half and half,
every one of which notifies. Then it waits until every notification is delivered (or
``--timeout``).

Reported: notifications delivered per second from the first transition to the last delivery;
the delay from enqueue to delivery (``notifications.created_at`` → ``delivered_at``, the
dispatcher's own clock and Postgres') and from a transition stored to a receiver taking it
(``alert_transitions.stored_at`` → the receiver's clock), p50 / p99 / max; the dispatchers' CPU
(cores kept busy, CPU µs per notification) and RSS, together; and whether every notification
came once (by Idempotency-Key and receiver). Prints JSON on stdout, a table on stderr.

    python -m bench.delivery --rate 1000 --receivers 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

from bench.harness import cpu_seconds, percentiles, rss_mib
from bench.machine import machine
from notifier.delivery.routes import Receiver, Route, route_spec
from sinks.delivery import save_route
from sinks.rows import alert_row
from sinks.writer import PostgresWriter
from streams.app.services import migrate_database
from streams.devtools.stack import EmbeddedPostgres, free_port, spawn_service, stop_process

BATCHES_PER_S = 10
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def transition(i: int) -> dict[str, Any]:
    """The ``i``-th transition: alert ``i // 2`` opened (even ``i``) or resolved (odd)."""
    opened = i % 2 == 0
    seen = T0 + timedelta(minutes=i // 2)
    return {
        "alert_id": f"bench-a{i // 2}", "version": 1 if opened else 2,
        "dedup_key": f"bench|default|p{i // 2 % 97}|radiology|denial_rate",
        "customer_id": "bench", "rule_id": "default", "drift_event_id": f"bench-e{i // 2}",
        "payer_id": f"p{i // 2 % 97}", "cpt_group": "radiology", "drift_type": "denial_rate",
        "status": "active" if opened else "resolved",
        "transition": "triggered" if opened else "resolved", "severity": 0.7,
        "severity_level": "critical", "occurrence_count": 1, "first_seen": seen,
        "last_seen": seen, "acknowledged_by": None, "resolved_by": None,
        "resolution": None if opened else "auto", "verdict": None,
        "message": "Denial rate of payer p for radiology rose from 10.0% to 30.0%",
        "notify": True, "assignee": None, "actor": None, "note": None,
    }  # fmt: skip


class Receivers:
    """``count`` webhook receivers; each request's arrival time by (receiver, key)."""

    def __init__(self, count: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.arrivals: dict[tuple[int, str], float] = {}
        self.requests = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Serve every port from one aiohttp application."""
        app = web.Application()
        app.router.add_post("/hook/{port}", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for port in self.ports:
            await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        self.arrivals[(int(request.match_info["port"]), request.headers["Idempotency-Key"])] = (
            time.time()
        )
        return web.Response(status=204)


async def _produce(url: str, rate: int, seconds: float) -> tuple[int, float]:
    """Store ``rate`` transitions a second for ``seconds``; (transitions, seconds taken)."""
    writer = PostgresWriter(create_async_engine(url, pool_size=2))
    per_batch = max(1, rate // BATCHES_PER_S)
    total = int(rate * seconds)
    start = time.perf_counter()
    try:
        for first in range(0, total, per_batch):
            due = start + first / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            rows = [alert_row(transition(i)) for i in range(first, min(total, first + per_batch))]
            await writer.write((), rows)
    finally:
        await writer.engine.dispose()
    return total, time.perf_counter() - start


def _delivered(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'delivered'), count(*) FROM notifications"
        ).fetchone()
    assert row is not None  # an aggregate always has a row
    return int(row[0]), int(row[1])


def _delays(url: str, receivers: Receivers) -> tuple[list[float], list[float]]:
    """(enqueue → delivery, stored → received) in ms, per notification."""
    with psycopg.connect(url) as conn:
        logged = conn.execute(
            "SELECT n.receiver, n.alert_id, n.version,"
            " extract(epoch FROM n.delivered_at - n.created_at),"
            " extract(epoch FROM t.stored_at) FROM notifications n"
            " JOIN alert_transitions t ON t.seq = n.seq WHERE n.status = 'delivered'"
        ).fetchall()
    enqueued, end_to_end = [], []
    for receiver, alert_id, version, delay, stored in logged:
        enqueued.append(float(delay) * 1000)
        port = int(receiver.rsplit("/", 1)[1])
        arrived = receivers.arrivals.get((port, f"{alert_id}:{version}"))
        if arrived is not None:
            end_to_end.append((arrived - float(stored)) * 1000)
    return enqueued, end_to_end


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The bench on a migrated database ``url`` (module docstring)."""
    receivers = Receivers(args.receivers)
    await receivers.start()
    targets = tuple(Receiver("webhook", f"http://127.0.0.1:{p}/hook/{p}") for p in receivers.ports)
    route = Route("bench", "all", targets, min_level="info")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await save_route(conn, "bench", "all", route_spec(route), "bench")
    await engine.dispose()
    logs = Path(tempfile.mkdtemp(prefix="upstream-bench-delivery-"))
    env = {"UPSTREAM_DATABASE_URL": url, "UPSTREAM_CONSOLE_URL": "http://console.invalid"}
    procs = [spawn_service("dispatcher", {**os.environ, **env}, logs / f"dispatcher-{i}.log")
             for i in range(args.dispatchers)]  # fmt: skip
    plain = url.replace("+psycopg", "")
    try:
        cpu_before, began = _cpu(procs), time.perf_counter()
        transitions, produce_s = await _produce(url, args.rate, args.seconds)
        expected = transitions * args.receivers
        print(f"{transitions:,} transitions stored in {produce_s:.1f} s; "
              f"{expected:,} notifications to deliver...", file=sys.stderr)  # fmt: skip
        delivered, deadline, rss = 0, time.monotonic() + args.timeout, 0.0
        while delivered < expected and time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in procs):
                raise RuntimeError(f"a dispatcher exited; see the logs in {logs}")
            await asyncio.sleep(0.5)
            rss = max(rss, sum(rss_mib(proc.pid) for proc in procs))
            delivered, _ = await asyncio.to_thread(_delivered, plain)
        elapsed = time.perf_counter() - began
        cpu_after = _cpu(procs)
    finally:
        for proc in procs:
            stop_process(proc, timeout_s=30)
        await receivers.stop()
    enqueued, end_to_end = _delays(plain, receivers)
    per_key = Counter(receivers.arrivals)
    cpu_s = cpu_after - cpu_before
    return {
        "rate": args.rate, "receivers": args.receivers, "seconds": args.seconds,
        "dispatchers": args.dispatchers,
        "transitions": transitions, "notifications": expected, "delivered": delivered,
        "requests": receivers.requests, "repeats": receivers.requests - len(per_key),
        "all_delivered": delivered == expected,
        "delivered_per_s": round(delivered / elapsed, 1),
        "drain_s": round(elapsed, 1),
        "enqueue_to_delivery_ms": percentiles(enqueued),
        "stored_to_received_ms": percentiles(end_to_end),
        "dispatcher_cores": round(cpu_s / elapsed, 2),
        "dispatcher_cpu_us_per_notification": round(cpu_s * 1e6 / max(1, delivered), 1),
        "dispatcher_rss_mib": round(rss, 1),
    }  # fmt: skip


def _cpu(procs: list[Any]) -> float:
    """CPU seconds the processes have used, together."""
    return sum(cpu_seconds(proc.pid)["process"] for proc in procs)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="alert transitions/s (1,000)")
    parser.add_argument("--receivers", type=int, default=50, help="webhook receivers (50)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of transitions (5)")
    parser.add_argument("--dispatchers", type=int, default=1, help="dispatcher processes (1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (900 s)")
    args = parser.parse_args(argv)
    server = EmbeddedPostgres().start()
    try:
        migrate_database(server.url)
        report = asyncio.run(run(server.url, args))
    finally:
        server.stop()
    report["machine"] = machine()
    json.dump(report, sys.stdout, indent=2)
    print(file=sys.stdout)
    e, s = report["enqueue_to_delivery_ms"], report["stored_to_received_ms"]
    print(f"\n| offered | receivers | delivered/s | enqueue→delivery p50/p99 ms | "
          f"stored→received p99 ms | cores | µs/notification |\n|---|---|---|---|---|---|---|\n"
          f"| {args.rate:,}/s × {args.seconds:g} s | {args.receivers} | "
          f"{report['delivered_per_s']:,} | {e['p50']} / {e['p99']} | {s['p99']} | "
          f"{report['dispatcher_cores']} | {report['dispatcher_cpu_us_per_notification']} |",
          file=sys.stderr)  # fmt: skip
    return 0 if report["all_delivered"] and report["repeats"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
