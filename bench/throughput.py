"""Worker throughput against the client's ceiling, measured in the same run.

For each run: a fresh embedded broker (or Apache Kafka with ``--broker kafka``), ``--claims``
generated JSON claims produced to ``claims.decided`` (4 partitions) before anything reads them;
then

1. the ceiling: a raw aiokafka consumer reads every claim with ``getmany`` + ``json.loads``;
2. the worker: ``--workers`` worker processes start on an empty claims topic of their own and
   join their group; then the same claims are produced to it (librdkafka, faster than any
   worker, while the workers already count them), and the rate is taken, as the ceiling's, on
   a backlog: the claims left once producing is over, from the first poll of the workers'
   ``/metrics`` after it to the last claim counted (valid claims applied + duplicates +
   dead-lettered = claims produced). A small run with hardly any backlog left is timed whole,
   from the start of producing.

Prints one JSON document on stdout (every run, the medians, the machine) and a table on stderr.
``python -m bench.throughput --help`` lists the options; ``make bench`` runs the defaults.
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer

from bench.harness import BROKERS, cpu_seconds, rss_mib, start_broker
from bench.machine import machine
from streams.devtools.generator import Scenario, generate
from streams.devtools.probes import COUNTED, ready_partitions, worker_totals
from streams.devtools.stack import free_port, spawn_service, stop_process
from streams.kafka.topics import create_topics
from streams.observability.metrics import GAUGES_EVERY_S
from streams.settings import Settings


def claims_for(count: int, customers: int = 20) -> list[dict[str, Any]]:
    """``count`` claims of the denial-spike scenario for ``customers`` customers, interleaved.

    Each customer has the scenario's 6 keys at 20 claims a day, with 1 % resends; the days are
    as many as ``count`` needs.
    """
    per_day = customers * len(Scenario().key_profiles()) * Scenario().claims_per_key_per_day
    days = max(30, -(-count // per_day) + 1)
    streams = [
        generate(Scenario(customer_id=f"cust-{c:03d}", seed=c, days=days,
                          spike_day=days * 2 // 3, resend_fraction=0.01))
        for c in range(customers)
    ]  # fmt: skip
    claims = [claim for group in zip(*streams, strict=False) for claim in group]
    if len(claims) < count:
        raise ValueError(f"generated {len(claims)} claims, fewer than {count}")
    return claims[:count]


def produce_all(bootstrap: str, topic: str, claims: list[dict[str, Any]]) -> None:
    """Send every claim as JSON keyed by claim id (librdkafka: fast, so not what is measured)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for claim in claims:
        value = json.dumps(claim, separators=(",", ":")).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=claim["claim_id"].encode())
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("the producer could not deliver every claim")


async def ceiling(bootstrap: str, topic: str, count: int) -> float:
    """Claims/s of a raw aiokafka consumer: getmany + json.loads, group-less, from the start."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20,
    )  # fmt: skip
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batch:
                started = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    json.loads(message.value)
                seen += len(messages)
        assert started is not None
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()


# Between two reads of the workers' /metrics. Each read costs the worker CPU (the process
# collector reads /proc): at 50 ms it took ~5 % of a worker's samples in py-spy.
POLL_S = 0.2


@dataclass
class WorkerRun:
    """What one worker measurement found."""

    claims_per_s: float  # on the backlog left once the claims were produced
    seconds: float  # taken on that backlog
    timed_claims: int  # claims in that backlog (all of them in a small run)
    produce_s: float  # producing every claim (the workers counting meanwhile)
    cores: list[dict[str, float]]  # per worker, over the timed backlog (see run_workers)
    cpu_us_per_claim: float | None  # the workers' CPU time over the timed backlog, per claim timed
    startup_s: float
    rss_mib: list[float]
    active_keys: float
    progress: list[list[int]]  # counted per worker, each second from the end of producing
    logs: str  # the workers' logs (kept for a look after the run)


@dataclass
class _Backlog:
    """The claims counted once producing was over, and the workers' CPU meanwhile."""

    timed: int
    seconds: float
    cores: list[dict[str, float]]
    cpu_us_per_claim: float | None
    progress: list[list[int]]
    ended: float  # when the last claim was seen counted (perf_counter)


def _start_workers(
    bootstrap: str, topic: str, app_id: str, ports: list[int], log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """A worker process per metrics port, in one group, reading ``topic``."""
    procs = []
    for i, port in enumerate(ports):
        env = {
            **os.environ, "UPSTREAM_KAFKA_BOOTSTRAP": bootstrap, "UPSTREAM_APP_ID": app_id,
            "UPSTREAM_TOPIC_CLAIMS": topic, "UPSTREAM_METRICS_PORT": str(port),
            "UPSTREAM_LOG_FORMAT": "text", "UPSTREAM_WORKER_DATA_DIR": str(log_dir / f"d{i}"),
        }  # fmt: skip
        procs.append(spawn_service("worker", env, log_dir / f"worker-{i}.log"))
    return procs


def _alive_check(
    procs: list[subprocess.Popen[bytes]], log_dir: Path, deadline: float
) -> Callable[[], None]:
    """A check that raises once a worker has exited or the run is past ``deadline``."""

    def check_alive() -> None:
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                log = (log_dir / f"worker-{i}.log").read_text()[-3000:]
                raise RuntimeError(f"worker {i} exited with {proc.returncode}:\n{log}")
        if time.perf_counter() > deadline:
            raise RuntimeError("the workers did not finish in time")

    return check_alive


def _wait_for_group(ports: list[int], check_alive: Callable[[], None]) -> None:
    """Until every worker has partitions, the same for 3 s."""
    stable, last = 0, None
    while stable < 6:
        check_alive()
        assigned = [ready_partitions(p) for p in ports]
        stable = stable + 1 if all(assigned) and assigned == last else 0
        last = assigned
        time.sleep(0.5)


def _time_backlog(
    procs: list[subprocess.Popen[bytes]],
    ports: list[int],
    count: int,
    produced: float,
    check_alive: Callable[[], None],
) -> _Backlog:
    """Poll the workers' counts until all ``count`` claims are counted; time the backlog.

    The workers count while the claims are produced, but then share the CPU with the producer
    (and an embedded broker taking them in): some 60,000 of 300,000 claims counted in those
    ~2 s, at under half their speed. The rate is taken on the backlog left once producing is
    over, as the ceiling reads one: from the first poll after it to the last claim counted.
    (Dividing the whole count by the time after producing would leave the claims counted
    meanwhile untimed: a rate about a quarter high.)
    """
    start_done, started = -1, produced  # the first poll after producing sets both
    progress: list[list[int]] = []
    cpu_before: list[dict[str, float]] = []
    while True:
        check_alive()
        try:
            metrics = [worker_totals(p) for p in ports]
        except OSError:
            metrics = []
        per_worker = [int(sum(m.get(name, 0.0) for name in COUNTED)) for m in metrics]
        done = sum(per_worker)
        now = time.perf_counter()
        if start_done < 0 and per_worker:
            start_done, started = done, now
            cpu_before = [cpu_seconds(proc.pid) for proc in procs]
        if start_done >= 0 and now - started >= len(progress):
            progress.append(per_worker)
        if done >= count:
            break
        time.sleep(POLL_S)
    cpu_after = [cpu_seconds(proc.pid) for proc in procs]
    timed, seconds = count - start_done, now - started
    # Cores each worker kept busy over the timed backlog: its main thread (the event loop,
    # every stage) and its other threads (Faust's consumer thread, /metrics).
    cores = [{part: round((after[part] - before[part]) / seconds, 2) for part in after}
             for before, after in zip(cpu_before, cpu_after, strict=True)]  # fmt: skip
    cpu_s = sum(a["process"] - b["process"] for b, a in zip(cpu_before, cpu_after, strict=True))
    cpu_us_per_claim = round(cpu_s * 1e6 / timed, 1) if timed else None
    return _Backlog(timed, seconds, cores, cpu_us_per_claim, progress, now)


def _active_keys(ports: list[int]) -> float:
    """The workers' window keys once their gauge has settled.

    The gauge is refreshed every ``GAUGES_EVERY_S`` by each worker's health loop, so a read
    just after the last claim is counted can still hold the keys of some seconds before: the
    value is taken when it has stayed the same over a whole refresh (at most 20 s of waiting).
    """
    settled_s = GAUGES_EVERY_S + 0.5
    deadline = time.monotonic() + 20.0
    keys, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        now_keys = sum(worker_totals(p).get("upstream_active_window_keys", 0.0) for p in ports)
        if now_keys != keys:
            keys, since = now_keys, time.monotonic()
        elif keys and time.monotonic() - since >= settled_s:
            break
        time.sleep(0.1)
    return max(keys, 0.0)


def run_workers(
    bootstrap: str, claims: list[dict[str, Any]], workers: int, app_id: str, timeout_s: float
) -> WorkerRun:
    """Start ``workers`` processes, wait for their group, produce ``claims``; time them."""
    log_dir = Path(tempfile.mkdtemp(prefix="upstream-bench-"))
    ports = [free_port() for _ in range(workers)]
    topic = f"claims.{app_id}"
    procs: list[subprocess.Popen[bytes]] = []
    launched = time.perf_counter()
    count = len(claims)
    try:
        asyncio.run(create_topics(Settings(topic_claims=topic), bootstrap))
        procs = _start_workers(bootstrap, topic, app_id, ports, log_dir)
        check_alive = _alive_check(procs, log_dir, launched + timeout_s)
        _wait_for_group(ports, check_alive)
        joined = time.perf_counter()
        produce_all(bootstrap, topic, claims)
        produced = time.perf_counter()
        backlog = _time_backlog(procs, ports, count, produced, check_alive)
        timed, seconds = backlog.timed, backlog.seconds
        if timed < count // 10:  # (a small run) hardly any backlog left: the whole run, then
            timed, seconds = count, backlog.ended - joined
        return WorkerRun(
            claims_per_s=timed / seconds if seconds > 0 else float("inf"),
            seconds=seconds,
            timed_claims=timed,
            produce_s=produced - joined,
            cores=backlog.cores,
            cpu_us_per_claim=backlog.cpu_us_per_claim,
            startup_s=joined - launched,
            rss_mib=[rss_mib(p.pid) for p in procs],
            active_keys=_active_keys(ports),
            progress=backlog.progress,
            logs=str(log_dir),
        )
    finally:
        for proc in procs:
            stop_process(proc, timeout_s=30)


def one_worker_on_a_fresh_broker(
    broker: str, claims: list[dict[str, Any]], app_id: str, timeout_s: float
) -> WorkerRun:
    """:func:`run_workers` with one worker, on a broker of its own (stopped after)."""
    started = start_broker(broker)
    try:
        asyncio.run(create_topics(Settings(), started.bootstrap))
        return run_workers(started.bootstrap, claims, 1, app_id, timeout_s)
    finally:
        started.stop()


async def one_run(
    args: argparse.Namespace, run: int, claims: list[dict[str, Any]]
) -> dict[str, Any]:
    """A fresh broker, the claims produced, the ceiling, then each worker count."""
    broker = start_broker(args.broker)
    try:
        settings = Settings(kafka_bootstrap=broker.bootstrap)
        await create_topics(settings, broker.bootstrap)
        produce_all(broker.bootstrap, settings.topic_claims, claims)
        result: dict[str, Any] = {"run": run}
        result["ceiling_claims_per_s"] = await ceiling(
            broker.bootstrap, settings.topic_claims, len(claims)
        )
        for workers in args.workers:
            measured = await asyncio.to_thread(
                run_workers, broker.bootstrap, claims, workers, f"bench-{run}-{workers}",
                args.timeout,
            )  # fmt: skip
            result[f"workers_{workers}"] = measured.__dict__
            print(
                f"  run {run}: {workers} worker(s) {measured.claims_per_s:,.0f} claims/s "
                f"(ceiling {result['ceiling_claims_per_s']:,.0f})",
                file=sys.stderr,
            )
        return result
    finally:
        broker.stop()


def summarise(runs: list[dict[str, Any]], workers: list[int]) -> dict[str, Any]:
    """Medians over runs, the ratio to the ceiling and the scaling of 2 processes over 1."""
    median_ceiling = statistics.median(r["ceiling_claims_per_s"] for r in runs)
    summary: dict[str, Any] = {"ceiling_claims_per_s": round(median_ceiling)}
    for n in workers:
        rate = statistics.median(r[f"workers_{n}"]["claims_per_s"] for r in runs)
        ratios = [r[f"workers_{n}"]["claims_per_s"] / r["ceiling_claims_per_s"] for r in runs]
        summary[f"workers_{n}_claims_per_s"] = round(rate)
        summary[f"workers_{n}_ratio_to_ceiling"] = round(statistics.median(ratios), 3)
        measured = [r[f"workers_{n}"] for r in runs if r[f"workers_{n}"]["cpu_us_per_claim"]]
        if measured:  # CPU per claim, and the cores of a worker's main thread and other threads
            summary[f"workers_{n}_cpu_us_per_claim"] = round(
                statistics.median(m["cpu_us_per_claim"] for m in measured), 1
            )
            for part in ("main", "threads"):
                summary[f"workers_{n}_{part}_cores"] = round(statistics.median(
                    statistics.mean(c[part] for c in m["cores"]) for m in measured
                ), 2)  # fmt: skip
    if 1 in workers and 2 in workers:
        summary["scaling_2_over_1"] = round(
            summary["workers_2_claims_per_s"] / summary["workers_1_claims_per_s"], 2
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the throughput bench and print its JSON report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--claims", type=int, default=300_000, help="claims per run (300000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians reported (3)")
    parser.add_argument(
        "--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
        help="worker process counts to measure, comma-separated (1,2)",
    )  # fmt: skip
    parser.add_argument("--broker", choices=BROKERS, default="embedded")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    args = parser.parse_args(argv)
    print(f"generating {args.claims:,} claims...", file=sys.stderr)
    claims = claims_for(args.claims)
    runs = []
    for run in range(1, args.runs + 1):
        runs.append(asyncio.run(one_run(args, run, claims)))
    summary = summarise(runs, args.workers)
    document = {
        "benchmark": "throughput",
        "broker": args.broker,
        "claims": len(claims),
        "partitions": Settings().partitions,
        "summary": summary,
        "runs": runs,
        "machine": machine(),
    }  # fmt: skip
    print(json.dumps(document, indent=2))
    print(f"\n{'measure':<34}{'value':>14}", file=sys.stderr)
    for name, value in summary.items():
        print(f"{name:<34}{value:>14,}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
