"""Detection quality: recall, false alarms per 1,000 key-days, detection delay.

Runs the workload of :mod:`bench.workloads` either through the real worker on the embedded
broker (``--engine worker``, what the README reports) or straight through the domain core with
the same partitioning (``--engine domain``, seconds, for tuning), and scores the drift events
against the known shifts. Prints one JSON document and a table.

    python -m bench.detection --engine worker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from bench.machine import machine
from bench.workloads import DAYS, ONSET_DAY, Group, detection_scenario
from streams.domain.claims import parse_claim
from streams.domain.processor import ClaimFromSource, PartitionWindows
from streams.generator import generate
from streams.settings import Settings
from streams.worker import drift_config

DAY_MS = 86_400_000
FOUND_WITHIN_DAYS = 30


@dataclass(frozen=True, slots=True)
class Detection:
    """The fields of a DriftEvent that scoring needs."""

    key: str
    drift_type: str
    day: int  # event day (since the scenario start) of the close that detected it


def run_domain(claims: list[dict[str, Any]], settings: Settings, start: date) -> list[Detection]:
    """The domain core with the worker's key partitioning (murmur2, like Kafka clients)."""
    from streams.state import default_partition

    cfg = drift_config(settings)
    grace_ms = settings.grace_ms
    parts = [PartitionWindows(p, cfg, grace_ms) for p in range(settings.partitions)]
    start_ms = _epoch_ms(start)
    out: list[Detection] = []
    for record in claims:
        claim = parse_claim(record)
        partition = default_partition(claim.window_key.encode(), settings.partitions)
        result = parts[partition].apply([ClaimFromSource(0, 1, claim)])
        out.extend(
            Detection(d.window_key, d.drift_type, (d.detected_at_ms - start_ms) // DAY_MS)
            for d in result.drifts
        )
    return out


def _epoch_ms(day: date) -> int:
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * DAY_MS


def score(detections: list[Detection], truth: dict[str, Group]) -> dict[str, Any]:
    """Recall, delay and false alarms per group of keys."""
    by_key: dict[str, list[Detection]] = defaultdict(list)
    for d in detections:
        by_key[d.key].append(d)
    report: dict[str, Any] = {}
    for name in dict.fromkeys(g.name for g in truth.values()):
        keys = [k for k, g in truth.items() if g.name == name]
        group = truth[keys[0]]
        false_days, key_days, delays, found = 0, 0, [], 0
        for key in keys:
            events = by_key.get(key, [])
            onset = group.shift.start_day if group.shift else DAYS
            kind = group.shift.kind if group.shift else None
            key_days += onset
            false_days += len({d.day for d in events if d.day <= onset})
            hits = sorted(
                d.day for d in events
                if d.drift_type == kind and onset < d.day <= onset + FOUND_WITHIN_DAYS
            )  # fmt: skip
            if hits:
                found += 1
                delays.append(hits[0] - onset)
        entry: dict[str, Any] = {
            "keys": len(keys),
            "false_alarms_per_1000_key_days": round(1000 * false_days / max(1, key_days), 2),
        }
        if group.shift:
            entry.update(
                drift_type=group.shift.kind,
                recall=round(found / len(keys), 3),
                median_delay_days=statistics.median(delays) if delays else None,
            )
        report[name] = entry
    return report


async def run_worker(claims: list[dict[str, Any]], settings: Settings) -> list[Detection]:
    """The real worker process on the embedded broker; reads drift.events when it is done."""
    from bench.harness import worker_run

    records = await worker_run(claims, settings)
    start_ms = _epoch_ms(date(2026, 1, 1))
    return [
        Detection(
            f"{r['customer_id']}|{r['payer_id']}|{r['cpt_group']}",
            r["drift_type"],
            (r["detected_at_ms"] - start_ms) // DAY_MS,
        )
        for r in records
    ]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["worker", "domain"], default="domain")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the key counts")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    settings = Settings()
    scenario, truth = detection_scenario(args.seed, args.scale)
    claims = generate(scenario)
    began = time.monotonic()
    if args.engine == "domain":
        detections = run_domain(claims, settings, scenario.start)
    else:
        detections = asyncio.run(run_worker(claims, settings))
    report = {
        "benchmark": "detection",
        "engine": args.engine,
        "claims": len(claims),
        "days": DAYS,
        "onset_day": ONSET_DAY,
        "fdr_q_max": settings.fdr_q_max,
        "seconds": round(time.monotonic() - began, 1),
        "machine": machine(),
        "groups": score(detections, truth),
    }
    print(json.dumps(report, indent=2))
    print(_table(report["groups"]), file=sys.stderr)
    return 0


def _table(groups: dict[str, Any]) -> str:
    lines = [
        "| keys | n | drift type | recall | median delay (days) | false alarms / 1000 key-days |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in groups.items():
        lines.append(
            f"| {name} | {g['keys']} | {g.get('drift_type', '—')} | {g.get('recall', '—')} | "
            f"{g.get('median_delay_days', '—')} | {g['false_alarms_per_1000_key_days']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
