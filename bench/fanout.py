"""Notifier fan-out: delivery latency to many WebSocket clients, and the notifier's CPU.

Starts an embedded Tansu broker and PostgreSQL and one ``upstream notifier`` process; opens
``--clients`` WebSocket clients spread over ``--customers`` customers (every client
subscribes); then for ``--duration-s`` writes ``--rate`` alert transitions a second through the
sink's own writer (commit + NOTIFY, 10 batches a second), spread over the customers. Each
client times every alert from the start of its batch's write (commit included) to its arrival
(one clock: clients and writer share this process). Prints JSON on stdout (p50 / p99 / max
latency, messages delivered and expected, notifier CPU as a share of one core), progress and a
table on stderr; exits 1 if a message was lost.

    python -m bench.fanout --clients 2000 --rate 100 --duration-s 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from bench.harness import on_embedded_stack, percentiles
from bench.machine import machine
from notifier.tokens import mint_token
from sinks.rows import alert_row
from sinks.writer import PostgresWriter
from streams.devtools.generator import alert_transition
from streams.devtools.stack import (
    free_port,
    spawn_service,
    stop_process,
    wait_for_port,
)

SECRET = "fanout-bench-secret-of-at-least-32-bytes"  # noqa: S105 -- a throwaway local stack
BATCHES_PER_S = 10


class Clients:
    """The WebSocket clients and what they measured."""

    def __init__(self) -> None:
        self.written_at: dict[str, float] = {}  # message (the transition's number) -> write time
        self.latencies_s: list[float] = []
        self.connections: list[ClientConnection] = []

    async def open(self, url: str, count: int, customers: list[str]) -> None:
        """Connect and subscribe ``count`` clients, round-robin over ``customers``."""
        for i in range(count):
            customer = customers[i % len(customers)]
            token = mint_token(SECRET, customer, f"op-{i}")
            ws = await connect(f"{url}?token={token}", max_size=None, open_timeout=60)
            await ws.send(json.dumps({"type": "subscribe"}))
            snapshot = json.loads(await ws.recv())
            assert snapshot["type"] == "snapshot", snapshot
            self.connections.append(ws)
            if (i + 1) % 500 == 0:
                print(f"  {i + 1} clients connected", file=sys.stderr)

    async def wait_for(self, messages: int, timeout_s: float) -> None:
        """Until ``messages`` alerts have arrived in all, or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while len(self.latencies_s) < messages and time.monotonic() < deadline:  # noqa: ASYNC110 -- polling a counter the listeners bump
            await asyncio.sleep(0.1)

    async def listen(self) -> None:
        """Time every alert at every client until the connections close."""
        await asyncio.gather(*(self._listen(ws) for ws in self.connections))

    async def _listen(self, ws: ClientConnection) -> None:
        async for raw in ws:
            arrived = time.monotonic()
            message = json.loads(raw)
            if message["type"] == "alert":
                self.latencies_s.append(arrived - self.written_at[message["alert"]["message"]])


async def _write(
    database_url: str, rate: int, duration_s: float, customers: list[str], clients: Clients
) -> int:
    """Write ``rate`` transitions a second for ``duration_s``; return how many."""
    engine = create_async_engine(database_url, pool_size=2)
    writer = PostgresWriter(engine)
    per_batch = max(1, rate // BATCHES_PER_S)
    written, started = 0, time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            numbers = range(written, written + per_batch)
            rows = [alert_row(alert_transition(n, customers[n % len(customers)])) for n in numbers]
            # Timed from before the write: a client may hear of the commit before write()
            # returns, so latencies include the commit itself (a few ms).
            clients.written_at.update({str(n): time.monotonic() for n in numbers})
            await writer.write([], rows)
            written += per_batch
            if written % (rate * 10) < per_batch:
                print(f"  {elapsed:4.0f}s: {written} transitions", file=sys.stderr)
            await asyncio.sleep(max(0.0, started + written / rate - time.monotonic()))
    finally:
        await engine.dispose()
    return written


async def _run(args: argparse.Namespace, database_url: str, bootstrap: str) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "UPSTREAM_DATABASE_URL": database_url,
           "UPSTREAM_KAFKA_BOOTSTRAP": bootstrap, "UPSTREAM_NOTIFIER_SECRET": SECRET,
           "UPSTREAM_NOTIFIER_PORT": str(port),
           "UPSTREAM_NOTIFIER_CONNECTIONS_PER_ADDRESS": str(args.clients + 10)}  # fmt: skip
    log = Path(tempfile.mkstemp(suffix="-notifier.log")[1])
    notifier = spawn_service("notifier", env, log)
    try:
        wait_for_port(port, 60, notifier, log)
        customers = [f"customer-{c:03d}" for c in range(args.customers)]
        clients = Clients()
        print(f"connecting {args.clients} clients…", file=sys.stderr)
        await clients.open(f"ws://127.0.0.1:{port}/ws", args.clients, customers)
        listening = asyncio.create_task(clients.listen())
        process = psutil.Process(notifier.pid)
        cpu_before, wall_before = process.cpu_times(), time.monotonic()
        written = await _write(database_url, args.rate, args.duration_s, customers, clients)
        expected = written * args.clients // args.customers
        await clients.wait_for(expected, timeout_s=10)
        cpu_after, wall = process.cpu_times(), time.monotonic() - wall_before
        cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        for ws in clients.connections:
            await ws.close()
        await listening
    finally:
        stop_process(notifier)
    latencies_ms = [x * 1000 for x in clients.latencies_s]
    return {
        "benchmark": "fanout",
        "clients": args.clients,
        "customers": args.customers,
        "alerts_per_s": args.rate,
        "duration_s": args.duration_s,
        "transitions_written": written,
        "messages_expected": expected,
        "messages_delivered": len(latencies_ms),
        "latency_ms": percentiles(latencies_ms),
        "notifier_cpu_share_of_one_core": round(cpu_s / wall, 3),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000, help="WebSocket clients")
    parser.add_argument("--customers", type=int, default=100, help="clients are spread over these")
    parser.add_argument("--rate", type=int, default=100, help="alert transitions per second")
    parser.add_argument("--duration-s", type=float, default=60.0, help="how long to write")
    args = parser.parse_args(argv)
    if args.clients < args.customers:
        parser.error("--clients must be at least --customers (every customer has a client)")
    report = on_embedded_stack(lambda database_url, bootstrap: _run(args, database_url, bootstrap))
    print(json.dumps(report, indent=2))
    lat = report["latency_ms"]
    print("| clients | alerts/s | delivered / expected | p50 ms | p99 ms | max ms | notifier CPU |",
          file=sys.stderr)  # fmt: skip
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    print(f"| {report['clients']} | {report['alerts_per_s']} | {report['messages_delivered']:,} / "
          f"{report['messages_expected']:,} | {lat['p50']} | {lat['p99']} | {lat['max']} | "
          f"{report['notifier_cpu_share_of_one_core']:.0%} |", file=sys.stderr)  # fmt: skip
    return 0 if report["messages_delivered"] == report["messages_expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
