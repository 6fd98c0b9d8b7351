"""Run claims through the real worker process on an embedded broker and collect its outputs."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from schemas.registry import ValueCodec
from streams.app.services import migrate_database
from streams.devtools.generator import Scenario, produce
from streams.devtools.probes import (
    read_all,
    wait_processed,
)
from streams.devtools.stack import EmbeddedKafka, EmbeddedPostgres, spawn_service, stop_process
from streams.kafka.records import to_epoch_ms
from streams.kafka.topics import create_topics
from streams.settings import Settings

BROKERS = ("embedded", "kafka")


def start_broker(kind: str) -> Any:
    """A fresh broker: the embedded (Tansu) one, or Apache Kafka for ``kafka``."""
    if kind == "kafka":
        from streams.devtools.apache_kafka import (
            ApacheKafka,  # its jars come from Maven on first use
        )

        return ApacheKafka().start()
    return EmbeddedKafka().start()


def on_embedded_stack(
    run: Callable[[str, str], Coroutine[Any, Any, dict[str, Any]]],
) -> dict[str, Any]:
    """``run(database_url, bootstrap)`` on a fresh embedded PostgreSQL (migrated) and Tansu
    broker, both stopped after it; its report."""
    server, kafka = EmbeddedPostgres().start(), EmbeddedKafka().start()
    try:
        migrate_database(server.url)
        return asyncio.run(run(server.url, kafka.bootstrap))
    finally:
        kafka.stop()
        server.stop()


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of ``samples``, to 0.1; None each without samples.

    Inclusive percentiles: one never lies beyond the largest sample.
    """
    if not samples:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(samples)
    q = (
        ordered * 99
        if len(ordered) == 1
        else statistics.quantiles(ordered, n=100, method="inclusive")
    )
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(ordered[-1], 1)}


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) that ``pid`` has used: ``main`` (its main thread, where the
    event loop runs), ``threads`` (all the others: Faust's consumer thread, /metrics) and
    ``process`` (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    process = used(Path(f"/proc/{pid}/stat"))
    main = used(Path(f"/proc/{pid}/task/{pid}/stat"))
    return {"main": main, "threads": process - main, "process": process}


async def worker_run(
    claims: list[dict[str, Any]], settings: Settings, timeout_s: float = 1800
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Start a broker and a worker, stream ``claims``, wait until all is consumed; the drift
    events (decoded) and the dead letters (messages) out."""
    broker = EmbeddedKafka().start()
    log_dir = Path(tempfile.mkdtemp(prefix="upstream-bench-"))
    worker = None
    try:
        await create_topics(settings, broker.bootstrap)
        env = {**os.environ, "UPSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap}
        worker = spawn_service("worker", env, log_dir / "worker.log")
        await produce(Scenario(), broker.bootstrap, settings.topic_claims, claims=claims)
        running = worker
        await wait_processed(
            broker.bootstrap, settings, len(claims), timeout_s, lambda: running.poll() is None
        )
        codec = ValueCodec()
        records = []
        for message in await read_all(broker.bootstrap, settings.topic_drift):
            record = codec.decode(message.value, "DriftEvent", settings.topic_drift)
            record["detected_at_ms"] = to_epoch_ms(record["detected_at"])
            records.append(record)
        return records, await read_all(broker.bootstrap, settings.topic_claims_dlq)
    finally:
        if worker is not None:
            stop_process(worker, timeout_s=30)
        broker.stop()
