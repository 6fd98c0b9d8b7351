"""End-to-end latency: from producing the claim that closes a bucket to the alert on a WebSocket.

Starts an embedded broker (Apache Kafka with ``--broker kafka``) and PostgreSQL, then
``upstream worker``, ``upstream sink`` and ``upstream notifier`` as processes, and one
WebSocket client per customer (subscribed). Then produces the denial-spike scenario for
``--customers`` customers at a steady ``--rate`` claims per second (librdkafka, ``linger.ms``
1), noting when each claim was handed to the producer, its event time and its partition.

An alert transition of a detection (``triggered`` or ``updated``) carries ``last_seen``: the
end of the bucket whose close found the drift. That bucket closed when every claims partition
had seen a claim *of that customer* at least ``grace`` past its end (a customer's watermark is
the lowest over the partitions of its claims' max event time, minus the grace), so the claim
that closed it is, over the partitions, the last of each partition's first such claim.
Latency = arrival at the client − that claim's send time; one clock, since producer and
clients share this process. Transitions whose bucket no claim closed (the idle timer did) are
counted apart. Each latency is also split into hops at the
Kafka timestamps of the records it passed through (:data:`HOPS`, ``hops_ms``).

With ``--flood N``, a customer onboards in the middle of it: ``--flood-at`` seconds into
sending, its history of N claims (sorted by decision date) is produced at once, as fast as
the producer goes. The live customers' latencies are then reported apart for the claims sent
while the worker read that backlog (from the burst's start until the worker is back within a
second of the live rate), with how long that took: a live customer's alert should wait no
longer than the flood's backlog takes to read.

Prints one JSON document on stdout (p50 / p99 / max, samples, how far the worker fell behind)
and a table on stderr. ``python -m bench.latency --help``; ``make bench-latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import BROKERS, percentiles, start_broker
from bench.machine import machine
from bench.paced import SECRET, Clients, Flood, Sent, flood_claims, produce_paced
from bench.throughput import claims_for
from schemas.registry import ValueCodec
from streams.app.services import migrate_database
from streams.devtools.probes import (
    COUNTED,
    read_all,
    ready_partitions,
    routed_claims,
    worker_totals,
)
from streams.devtools.stack import (
    EmbeddedPostgres,
    free_port,
    spawn_service,
    stop_process,
    wait_for_port,
)
from streams.kafka.topics import create_topics
from streams.settings import Settings


async def _sample_backlog(
    port: int, sent: Sent, backlog: list[float], flood: Flood | None = None,
    at: list[float] | None = None,
) -> None:  # fmt: skip
    """Every second: claims handed to the producer that the worker has not counted yet."""
    while True:
        await asyncio.sleep(1)
        handed = sent.handed + (flood.handed if flood else 0)
        totals = await asyncio.to_thread(worker_totals, port)
        backlog.append(max(0.0, handed - sum(totals.get(name, 0.0) for name in COUNTED)))
        if at is not None:
            at.append(time.monotonic())


HOPS = {
    "route": "claim sent → the by-key message carrying it sent (worker: fetch, batch, route)",
    "windows": "by-key message → the drift event sent (worker: fetch, batch, windows, close)",
    "alerts": "drift event → the alert transition sent (worker: the alerts stage)",
    "delivery": "alert transition sent → at the client (sink, Postgres NOTIFY, notifier)",
}


async def _hops(
    bootstrap: str, settings: Settings, app_id: str, claims: list[dict[str, Any]], sent: Sent,
    samples: list[tuple[int, float, dict[str, Any]]],
) -> dict[str, Any]:  # fmt: skip
    """Each sample's latency split at the hops' Kafka timestamps (:data:`HOPS`).

    A record's timestamp is its producer's clock when it was sent; the bench runs on the same
    machine, so one wall clock, mapped onto the bench's monotonic one. Milliseconds.
    """
    wall_minus_monotonic = time.time() - time.monotonic()

    def monotonic(timestamp_ms: int) -> float:
        return timestamp_ms / 1000 - wall_minus_monotonic

    routed_at: dict[str, float] = {}
    for message in await read_all(bootstrap, f"{app_id}-claims-by-key"):
        for claim in routed_claims(message.value):
            routed_at.setdefault(claim["claim_id"], monotonic(message.timestamp))
    codec = ValueCodec(settings.schema_registry_url)
    drift_at = {
        codec.decode(m.value, "DriftEvent", m.topic)["event_id"]: monotonic(m.timestamp)
        for m in await read_all(bootstrap, settings.topic_drift)
    }
    alert_at: dict[tuple[str, int], float] = {}
    for m in await read_all(bootstrap, settings.topic_alerts):
        record = codec.decode(m.value, "AlertEvent", m.topic)
        alert_at[(record["alert_id"], int(record["version"]))] = monotonic(m.timestamp)
    split: dict[str, list[float]] = {hop: [] for hop in HOPS}
    unmatched = 0
    for closing, arrived, alert in samples:
        stamps = [
            sent.at[closing],
            routed_at.get(claims[closing]["claim_id"]),
            drift_at.get(alert.get("drift_event_id", "")),
            alert_at.get((alert.get("alert_id", ""), int(alert.get("version", -1)))),
            arrived,
        ]
        if any(stamp is None for stamp in stamps):
            unmatched += 1
            continue
        for hop, start, end in zip(HOPS, stamps, stamps[1:], strict=False):
            split[hop].append((end - start) * 1000)  # type: ignore[operator]
    return {
        **{hop: percentiles(values) for hop, values in split.items()},
        "samples": len(samples) - unmatched, "unmatched": unmatched, "hops": HOPS,
    }  # fmt: skip


def _env(base: dict[str, str], **extra: str) -> dict[str, str]:
    return {**os.environ, **base, **{f"UPSTREAM_{k.upper()}": v for k, v in extra.items()}}


def _start_services(
    base: dict[str, str], log_dir: Path, worker_port: int, notifier_port: int
) -> dict[str, subprocess.Popen[bytes]]:
    """``upstream worker``, ``sink`` and ``notifier`` as processes, logging into ``log_dir``."""
    return {
        "worker": spawn_service("worker", _env(base, metrics_port=str(worker_port),
                                               worker_data_dir=str(log_dir / "w")),
                                log_dir / "worker.log"),
        "sink": spawn_service("sink", _env(base, metrics_port=str(free_port())),
                              log_dir / "sink.log"),
        "notifier": spawn_service("notifier", _env(base, notifier_port=str(notifier_port)),
                                  log_dir / "notifier.log"),
    }  # fmt: skip


async def _services_ready(
    procs: dict[str, subprocess.Popen[bytes]], log_dir: Path, worker_port: int, notifier_port: int
) -> None:
    """Until the notifier listens and the worker has partitions; raise if a service exits."""
    wait_for_port(notifier_port, 60, procs["notifier"], log_dir / "notifier.log")
    while not ready_partitions(worker_port):
        for name, proc in procs.items():
            if proc.poll() is not None:
                log = (log_dir / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"{name} exited:\n{log}")
        await asyncio.sleep(0.5)


def _alert_latencies(
    clients: Clients, sent: Sent, grace_ms: int
) -> tuple[list[float], list[tuple[int, float, dict[str, Any]]], int, int]:
    """Each detection's latency (ms) from the claim that closed its bucket, with its sample
    (closing claim, arrival, alert); the transitions the idle timer closed, and the others."""
    latencies, by_idle, other = [], 0, 0
    samples: list[tuple[int, float, dict[str, Any]]] = []
    for arrived, alert in clients.arrivals:
        if alert["transition"] not in ("triggered", "updated"):
            other += 1
            continue
        last_seen = datetime.fromisoformat(alert["last_seen"].replace("Z", "+00:00"))
        closing = sent.closed_by(alert["customer_id"], int(last_seen.timestamp() * 1000) + grace_ms)
        if closing is None:
            by_idle += 1
        else:
            latencies.append((arrived - sent.at[closing]) * 1000)
            samples.append((closing, arrived, alert))
    return latencies, samples, by_idle, other


async def _until_quiet(
    clients: Clients, settle_s: float, backlog: list[float] | None, rate: int
) -> None:
    """Until no alert has arrived for ``settle_s``; with a flood's ``backlog``, also until it
    is read (the backlog is sampled until then, for ``read_s``)."""
    quiet_since, seen = time.monotonic(), 0
    while time.monotonic() - quiet_since < settle_s:
        await asyncio.sleep(0.5)
        if len(clients.arrivals) != seen:
            seen, quiet_since = len(clients.arrivals), time.monotonic()
    if backlog is not None:
        while backlog and backlog[-1] >= rate and time.monotonic() - quiet_since < 600:  # noqa: ASYNC110 -- polling the sampler's list
            await asyncio.sleep(1)


async def _send(
    args: argparse.Namespace,
    bootstrap: str,
    topic: str,
    claims: list[dict[str, Any]],
    sent: Sent,
    flood: Flood | None,
    stop: threading.Event,
) -> float:
    """Send ``claims`` at ``args.rate`` (and the flood at ``args.flood_at``, alongside); the
    rate achieved."""
    flooding = None
    if flood is not None:
        flooding = asyncio.create_task(
            asyncio.to_thread(flood.send, bootstrap, topic, args.flood_at, stop)
        )
    achieved = await asyncio.to_thread(
        produce_paced, bootstrap, topic, claims, args.rate, sent, stop
    )
    if flooding is not None:
        await flooding
    return achieved


async def _run(args: argparse.Namespace, database_url: str, bootstrap: str) -> dict[str, Any]:
    settings = Settings()
    log_dir = Path(tempfile.mkdtemp(prefix="upstream-latency-"))
    base = {"UPSTREAM_DATABASE_URL": database_url, "UPSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "UPSTREAM_NOTIFIER_SECRET": SECRET, "UPSTREAM_LOG_FORMAT": "text",
            "UPSTREAM_APP_ID": "latency"}  # fmt: skip
    worker_port, notifier_port = free_port(), free_port()
    procs = _start_services(base, log_dir, worker_port, notifier_port)
    stop = threading.Event()
    try:
        await _services_ready(procs, log_dir, worker_port, notifier_port)
        claims = claims_for(args.days * args.customers * 6 * 20, args.customers)
        customers = sorted({c["customer_id"] for c in claims})
        clients = Clients()
        await clients.open(f"ws://127.0.0.1:{notifier_port}/ws", customers)
        listening = asyncio.create_task(clients.listen())
        sent = Sent(len(claims))
        print(f"sending {len(claims):,} claims at {args.rate:,}/s...", file=sys.stderr)
        backlog: list[float] = []  # claims sent but not yet counted by the worker, each second
        sampled_at: list[float] = []
        flood = Flood(flood_claims(args.flood)) if args.flood else None
        sampling = asyncio.create_task(_sample_backlog(worker_port, sent, backlog, flood,
                                                       sampled_at))  # fmt: skip
        achieved = await _send(args, bootstrap, settings.topic_claims, claims, sent, flood, stop)
        sent_in_all = len(claims) + (flood.handed if flood else 0)
        counted = worker_totals(worker_port)
        behind_at_end = sent_in_all - sum(counted.get(name, 0.0) for name in COUNTED)
        await _until_quiet(clients, args.settle_s, backlog if flood else None, args.rate)
        sampling.cancel()
        for ws in clients.connections:
            await ws.close()
        await listening
    finally:
        stop.set()
        for proc in procs.values():
            stop_process(proc, timeout_s=30)
    sent.index()
    latencies, samples, by_idle, other = _alert_latencies(clients, sent, settings.grace_ms)
    hops = await _hops(bootstrap, settings, base["UPSTREAM_APP_ID"], claims, sent, samples)
    flooded = _flood_report(flood, args.rate, backlog, sampled_at, samples, sent)
    return {
        "benchmark": "latency",
        "broker": args.broker,
        "rate_target": args.rate,
        "rate_achieved": round(achieved),
        "claims": len(claims),
        "customers": len(customers),
        "worker_behind_at_end_of_sending": behind_at_end,
        "worker_backlog_max": max(backlog, default=None),
        "worker_backlog_median": statistics.median(backlog) if backlog else None,
        "alerts_received": len(clients.arrivals),
        "samples": len(latencies),
        "closed_by_idle_timer": by_idle,
        "other_transitions": other,
        "latency_ms": percentiles(latencies),
        "hops_ms": hops,
        **({"flood": flooded} if flooded else {}),
        "machine": machine(),
    }  # fmt: skip


def _flood_report(
    flood: Flood | None, rate: int, backlog: list[float], sampled_at: list[float],
    samples: list[tuple[int, float, dict[str, Any]]], sent: Sent,
) -> dict[str, Any] | None:  # fmt: skip
    """How long the worker took to read the flood, and the live latencies meanwhile."""
    if flood is None or flood.started is None or flood.produced is None:
        return None
    after = [t for t, b in zip(sampled_at, backlog, strict=True)
             if t > flood.produced and b < rate]  # fmt: skip
    drained = after[0] if after else None
    until = drained if drained is not None else float("inf")
    during = [(arrived - sent.at[c]) * 1000 for c, arrived, _ in samples
              if flood.started <= sent.at[c] <= until]  # fmt: skip
    outside = [(arrived - sent.at[c]) * 1000 for c, arrived, _ in samples
               if not flood.started <= sent.at[c] <= until]  # fmt: skip
    return {
        "claims": len(flood.claims),
        "produce_s": round(flood.produced - flood.started, 1),
        "read_s": None if drained is None else round(drained - flood.started, 1),
        "live_samples_during": len(during),
        "live_latency_during_ms": percentiles(during),
        "live_latency_outside_ms": percentiles(outside),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the latency bench and print its JSON report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--rate", type=int, default=5_000, help="claims per second (5000)")
    parser.add_argument("--customers", type=int, default=20, help="customers, 6 keys each (20)")
    parser.add_argument("--days", type=int, default=120, help="days of claims, 20/key/day (120)")
    parser.add_argument("--settle-s", type=float, default=15, help="quiet seconds to end (15)")
    parser.add_argument("--broker", choices=BROKERS, default="embedded")
    parser.add_argument("--flood", type=int, default=0,
                        help="an onboarding history of this many claims (0: none)")  # fmt: skip
    parser.add_argument("--flood-at", type=float, default=20.0,
                        help="seconds into sending when the flood starts (20)")  # fmt: skip
    args = parser.parse_args(argv)
    server, kafka = EmbeddedPostgres().start(), start_broker(args.broker)
    try:
        migrate_database(server.url)
        asyncio.run(create_topics(Settings(), kafka.bootstrap))
        report = asyncio.run(_run(args, server.url, kafka.bootstrap))
    finally:
        kafka.stop()
        server.stop()
    print(json.dumps(report, indent=2))
    lat = report["latency_ms"]
    print("| claims/s (achieved) | samples | p50 ms | p99 ms | max ms | worker behind at end |",
          file=sys.stderr)  # fmt: skip
    print("|---|---|---|---|---|---|", file=sys.stderr)
    print(f"| {report['rate_target']:,} ({report['rate_achieved']:,}) | {report['samples']} | "
          f"{lat['p50']} | {lat['p99']} | {lat['max']} | "
          f"{report['worker_behind_at_end_of_sending']:,.0f} |", file=sys.stderr)  # fmt: skip
    hops = report["hops_ms"]
    print(f"\n| hop ({hops['samples']} samples) | p50 ms | p99 ms | what |", file=sys.stderr)
    print("|---|---|---|---|", file=sys.stderr)
    for hop, what in hops["hops"].items():
        print(f"| {hop} | {hops[hop]['p50']} | {hops[hop]['p99']} | {what} |", file=sys.stderr)
    if flood := report.get("flood"):
        during, outside = flood["live_latency_during_ms"], flood["live_latency_outside_ms"]
        print(f"\nflood of {flood['claims']:,} claims: read in {flood['read_s']} s; live alerts "
              f"meanwhile p50 {during['p50']} / max {during['max']} ms "
              f"({flood['live_samples_during']} samples), otherwise p50 {outside['p50']} / "
              f"max {outside['max']} ms", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
