"""CPU per claim of the worker's two stages, outside Kafka: where a throughput change starts.

The throughput bench measures the whole worker, whose time is half Faust's and aiokafka's
per-message plumbing and whose machine speed drifts by a third between minutes. This one
runs the worker's own code for each stage over the same generated JSON claims, in this
process, and reports the best of ``--repeats`` passes in CPU time (``time.process_time``):

1. **route**: decode the value, validate the claim, pick its windows partition (by
   customer), pack one by-key message per partition and batch: the worker's own
   :meth:`streams.stages.routing.Router.plan`, in batches of the worker's default size;
2. **windows**: read those messages back (``envelopes.arrivals``), apply them to each
   partition's windows (``PartitionWindows.apply``: per-customer event time, dedup, buckets,
   amendments, closes, drift evaluation), write the changed records through a real
   :class:`ChangelogTable` and build its record batches (delivered to nowhere);
3. **alerts**: the key evaluations those closes sent to the alert input, applied as the alerts
   stage applies them (its own ``apply_alert_input``: decode, :class:`AlertLifecycle` with the
   default rules over a real :class:`TableAlertStore`; each transition encoded as an
   AlertEvent), one flush per bucket close. Reported per evaluation (a close evaluates every
   key with enough history: the scenario needs ~35 days of it, about 85,000 claims at 20
   customers).

The default 300,000 claims at 20 customers span 125 days: the last 35 are past the 90-bucket
history, where every close also prunes what left it, as in any long-running worker (150,000,
the default before, never got there and left that cost out).

Prints one JSON document on stdout and a line per stage on stderr. ``python -m bench.hotpath
--help``. Profile a stage with ``py-spy record -- python -m bench.hotpath --stage windows``
after ``make pure`` (py-spy sees no lines inside the compiled domain).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from bench.machine import machine
from bench.throughput import claims_for
from schemas.registry import ValueCodec
from streams.domain.rules import RuleBook
from streams.kafka import envelopes
from streams.kafka.records import alert_record
from streams.runtime.state import ChangelogTable, TableAlertStore, WindowsState
from streams.runtime.worker import drift_config, tune_gc
from streams.settings import Settings
from streams.stages.alerts import apply_alert_input
from streams.stages.routing import Router

SOURCES = 4  # claims partitions, as the throughput bench
BATCH = 2_000  # claims per route batch (the worker's default batch_max)


class _Delivered:
    """aiokafka's batch API as ChangelogTable uses it: batches built, sent nowhere."""

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16_384, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:  # noqa: ARG002 - the producer method it stands in for
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


@dataclass(frozen=True, slots=True)
class _Message:
    """What the route stage reads of a Kafka message."""

    partition: int
    offset: int
    value: bytes
    tp: Any = None


def claims_messages(values: list[bytes]) -> list[_Message]:
    """``values`` as messages of ``claims.decided`` (source partition = index mod SOURCES)."""
    return [_Message(offset % SOURCES, offset, value) for offset, value in enumerate(values)]


def route(messages: list[_Message], settings: Settings) -> list[tuple[int, bytes]]:
    """The worker's route stage (:meth:`Router.plan`) over ``messages``, in batches of
    ``BATCH``: its by-key messages, as (windows partition, value)."""
    router = Router(ValueCodec(), "claims.decided", settings.partitions)
    out = []
    for start in range(0, len(messages), BATCH):
        out += router.plan(messages[start : start + BATCH], SOURCES).by_key
    return out


@dataclass
class WindowsOutput:
    """What the windows stage wrote and sent on: changelog records, and the alert input of
    each by-key message whose claims closed buckets (as (partition, message values))."""

    records: int = 0
    alert_input: list[tuple[int, list[bytes]]] = field(default_factory=list)


def windows(messages: list[tuple[int, bytes]], settings: Settings) -> WindowsOutput:
    """The windows stage over route's messages."""
    table = ChangelogTable(_memory_table(), _Delivered)
    state = WindowsState(table, drift_config(settings), settings.grace_ms)
    out = WindowsOutput()

    async def run() -> None:
        for partition, value in messages:
            items = envelopes.arrivals(envelopes.loads(value))
            pw = state.get(partition, SOURCES)
            result = pw.apply(items, now_ms=0)
            state.save(pw, result)
            out.records += table.pending
            if result.evaluations:
                sent = [envelopes.evaluation_message(e) for e in result.evaluations]
                out.alert_input.append((partition, sent))
            await table.flush()

    asyncio.run(run())
    return out


def alerts(closes: list[tuple[int, list[bytes]]]) -> int:
    """The alerts stage's work (the worker's own :func:`apply_alert_input`, each transition
    encoded) over the alert input of each close, a flush per close; the transitions sent."""
    table = ChangelogTable(_memory_table(), _Delivered)
    codec, rules = ValueCodec(), RuleBook()
    transitions = 0

    async def run() -> None:
        nonlocal transitions
        for partition, values in closes:
            messages = [_Message(partition, offset, value) for offset, value in enumerate(values)]
            applied = apply_alert_input(messages, partial(TableAlertStore, table), rules)
            assert not applied.rejected, applied.rejected[:1]
            for transition in applied.transitions:
                codec.encode("AlertEvent", "alerts.events", alert_record(transition))
            transitions += len(applied.transitions)
            await table.flush()

    asyncio.run(run())
    return transitions


def best_of(repeats: int, stage: Callable[[], Any]) -> tuple[float, Any]:
    """The lowest CPU seconds of ``repeats`` runs of ``stage``, and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.process_time()
        result = stage()
        best = min(best, time.process_time() - started)
    return best, result


def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The report of the stages ``args`` name."""
    print(f"generating {args.claims:,} claims...", file=sys.stderr)
    values = [
        json.dumps(c, separators=(",", ":")).encode()
        for c in claims_for(args.claims, args.customers)
    ]
    claims = claims_messages(values)
    messages = route(claims, settings)
    report: dict[str, Any] = {"benchmark": "hotpath", "claims": len(values),
                              "gc_threshold": settings.gc_threshold}  # fmt: skip
    if args.stage in ("route", "all"):
        seconds, _ = best_of(args.repeats, lambda: route(claims, settings))
        report["route_us_per_claim"] = round(seconds / len(values) * 1e6, 2)
    if args.stage in ("windows", "all"):
        seconds, output = best_of(args.repeats, lambda: windows(messages, settings))
        report["windows_us_per_claim"] = round(seconds / len(values) * 1e6, 2)
        report["changelog_records_per_claim"] = round(output.records / len(values), 3)
    if args.stage in ("alerts", "all"):
        closes = windows(messages, settings).alert_input
        evaluations = sum(len(sent) for _, sent in closes)
        seconds, transitions = best_of(args.repeats, lambda: alerts(closes))
        report["evaluations"], report["alert_transitions"] = evaluations, transitions
        per_evaluation = seconds / evaluations * 1e6 if evaluations else None
        report["alerts_us_per_evaluation"] = per_evaluation and round(per_evaluation, 2)
    report["by_key_bytes_per_claim"] = round(sum(len(v) for _, v in messages) / len(values), 1)
    report["machine"] = machine()
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the hot-path bench and print its JSON report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.hotpath",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--claims", type=int, default=300_000, help="claims (300000)")
    parser.add_argument("--customers", type=int, default=20, help="customers, 6 keys each (20)")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best counts (5)")
    parser.add_argument(
        "--stage", choices=("route", "windows", "alerts", "all"), default="all",
        help="the stage to time (all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings()
    before = gc.get_threshold()
    tune_gc(settings)  # as the worker runs (UPSTREAM_GC_THRESHOLD)
    try:
        report = measure(args, settings)
    finally:
        gc.set_threshold(*before)
    print(json.dumps(report, indent=2))
    for name in ("route_us_per_claim", "windows_us_per_claim", "alerts_us_per_evaluation"):
        if report.get(name) is not None:
            print(f"{name:<26}{report[name]:>10.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
