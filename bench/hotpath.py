"""CPU per claim of the worker's two stages, outside Kafka: where a throughput change starts.

The throughput bench measures the whole worker, whose time is half Faust's and aiokafka's
per-message plumbing and whose machine speed drifts by a third between minutes. This one
runs the worker's own code for each stage over the same generated JSON claims, in this
process, and reports the best of ``--repeats`` passes in CPU time (``time.process_time``):

1. **route**: decode the value, validate the claim, judge it against its source partition's
   clock, pick its windows partition, pack one by-key message per partition and batch
   (``streams.envelopes.routed_batch``);
2. **windows**: read those messages back (``envelopes.arrivals``), apply them to each
   partition's windows (``PartitionWindows.apply``: dedup, buckets, closes, drift
   evaluation), write the changed records through a real :class:`ChangelogTable` and build its
   record batches (delivered to nowhere).

Prints one JSON document on stdout and a line per stage on stderr. ``python -m bench.hotpath
--help``. Profile a stage with ``py-spy record -- python -m bench.hotpath --stage windows``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from bench.throughput import claims_for
from schemas.registry import ValueCodec
from streams import envelopes
from streams.domain.claims import parse_claim
from streams.domain.windows import SourceClock
from streams.settings import Settings
from streams.state import ChangelogTable, WindowsState, default_partition
from streams.worker import drift_config

SOURCES = 4  # claims partitions, as the throughput bench
BATCH = 2_000  # claims per route batch (the worker's default batch_max)


class _Delivered:
    """aiokafka's batch API as ChangelogTable uses it: batches built, sent nowhere."""

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16_384, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        batch._build()  # the bytes aiokafka's sender would send (it calls the same)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _memory_table() -> Any:
    """What ChangelogTable reads of a Faust table (its data and its changelog's name)."""
    topic = SimpleNamespace(get_topic_name=lambda: "bench-windows-changelog")
    recovery = SimpleNamespace(active_offsets={})
    return SimpleNamespace(
        data={},
        changelog_topic=topic,
        app=SimpleNamespace(tables=SimpleNamespace(recovery=recovery)),
    )


def route(values: list[bytes], settings: Settings) -> list[tuple[int, bytes]]:
    """The route stage over ``values`` (source partition = index mod SOURCES)."""
    codec, cfg = ValueCodec(), drift_config(settings)
    grace_ms = settings.grace_ms
    clocks = [SourceClock(grace_ms, cfg.bucket_ms) for _ in range(SOURCES)]
    partitions: dict[str, int] = {}
    out = []
    for start in range(0, len(values), BATCH):
        routed: dict[int, list[Any]] = defaultdict(list)
        for offset in range(start, min(start + BATCH, len(values))):
            source = offset % SOURCES
            claim = parse_claim(codec.decode(values[offset], "ClaimDecided", "claims.decided"))
            clock = clocks[source]
            if clock.is_late(claim.event_ms):
                continue  # the worker dead-letters it
            clock.observe(claim.event_ms)
            key = claim.window_key
            partition = partitions.get(key)
            if partition is None:
                partition = default_partition(key.encode(), settings.partitions)
                partitions[key] = partition
            routed[partition].append((source, offset, claim))
        progress = [(s, c.max_event_ms) for s, c in enumerate(clocks) if c.max_event_ms]
        for partition in range(settings.partitions):
            value = envelopes.routed_batch(SOURCES, routed.get(partition, []), progress)
            out.append((partition, value))
    return out


def windows(messages: list[tuple[int, bytes]], settings: Settings) -> int:
    """The windows stage over route's messages; the changelog records written."""
    table = ChangelogTable(_memory_table(), _Delivered)
    state = WindowsState(table, drift_config(settings), settings.grace_ms)
    records = 0

    async def run() -> None:
        nonlocal records
        for partition, value in messages:
            items = envelopes.arrivals(envelopes.loads(value), "claims.decided")
            pw = state.get(partition, SOURCES)
            result = pw.apply([arrival for arrival, _ in items], now_ms=0)
            state.save(pw, result.changed.values())
            records += table.pending
            await table.flush()

    asyncio.run(run())
    return records


def best_of(repeats: int, stage: Callable[[], Any]) -> tuple[float, Any]:
    """The lowest CPU seconds of ``repeats`` runs of ``stage``, and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.process_time()
        result = stage()
        best = min(best, time.process_time() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hotpath",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--claims", type=int, default=50_000, help="claims (50000)")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best counts (5)")
    parser.add_argument("--stage", choices=("route", "windows", "both"), default="both")
    args = parser.parse_args(argv)
    settings = Settings()
    print(f"generating {args.claims:,} claims...", file=sys.stderr)
    values = [json.dumps(c, separators=(",", ":")).encode() for c in claims_for(args.claims)]
    messages = route(values, settings)
    report: dict[str, Any] = {"benchmark": "hotpath", "claims": len(values)}
    if args.stage in ("route", "both"):
        seconds, _ = best_of(args.repeats, lambda: route(values, settings))
        report["route_us_per_claim"] = round(seconds / len(values) * 1e6, 2)
    if args.stage in ("windows", "both"):
        seconds, records = best_of(args.repeats, lambda: windows(messages, settings))
        report["windows_us_per_claim"] = round(seconds / len(values) * 1e6, 2)
        report["changelog_records_per_claim"] = round(records / len(values), 3)
    report["by_key_bytes_per_claim"] = round(sum(len(v) for _, v in messages) / len(values), 1)
    report["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform()}  # fmt: skip
    print(json.dumps(report, indent=2))
    for name in ("route_us_per_claim", "windows_us_per_claim"):
        if name in report:
            print(f"{name:<26}{report[name]:>10.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
