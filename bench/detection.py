"""Detection quality per feed: recall, false alarms per 1,000 key-days, delay, dead letters.

The workload of :mod:`bench.workloads` (groups of keys with known shifts, each group its own
customer) is sent three times in one stream, once per feed of :mod:`streams.devtools.generator`:
``on-time``, ``remittance`` (5–20 days late) and ``onboarding`` (history in one burst on
day 110, ten days after the onsets). Each copy's customers are named ``<feed>.<group>``. The
stream runs through the real worker on the embedded broker (``--engine worker``, what
bench/README.md reports) or straight through the domain core with the worker's partitioning
(``--engine domain``, minutes, for tuning); the drift events are scored per feed and group
against the known shifts. ``--alone`` also runs each customer without the others and checks
that its drift events are the same as in the mixed run. Prints one JSON
document and a table.

    python -m bench.detection --engine worker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from bench.machine import machine
from bench.workloads import DAYS, ONSET_DAY, Group, detection_scenario
from streams.devtools.generator import FEEDS, REMITTANCE_LAG_DAYS, Scenario, generate_mix
from streams.domain.claims import parse_claim
from streams.domain.partition import PartitionWindows
from streams.domain.processor import ClaimFromSource
from streams.kafka.partitioner import default_partition
from streams.runtime.worker import drift_config
from streams.settings import Settings

DAY_MS = 86_400_000
FOUND_WITHIN_DAYS = 30
ONBOARD_DAY = ONSET_DAY + 10  # the onboarding burst carries the shifts' first days
# How much later than on time a feed may find a shift and still count (its lag).
FEED_LAG_DAYS = {"on-time": 0, "remittance": REMITTANCE_LAG_DAYS[1], "onboarding": 0}


@dataclass(frozen=True, slots=True)
class Detection:
    """The fields of a DriftEvent that scoring needs."""

    key: str
    drift_type: str
    day: int  # event day (since the scenario start) of the close that detected it


@dataclass
class Outcome:
    """What a run produced: each customer's drift events (as comparable tuples, in order) and
    the claims dead-lettered per customer."""

    drifts: dict[str, list[tuple[Any, ...]]]
    dead_letters: Counter[str]

    def detections(self, start: date) -> list[Detection]:
        """Every drift event as a detection: its key, drift type and event day since ``start``."""
        start_ms = _epoch_ms(start)
        return [
            Detection(f"{d[0]}|{d[1]}|{d[2]}", d[3], (d[4] - start_ms) // DAY_MS)
            for events in self.drifts.values()
            for d in events
        ]


def feed_scenarios(scenario: Scenario, feeds: list[str]) -> list[Scenario]:
    """One copy of ``scenario`` per feed, its customers named ``<feed>.<customer>``."""
    out = []
    for feed in feeds:
        profiles = tuple(replace(p, customer_id=f"{feed}.{p.customer_id}")
                         for p in scenario.key_profiles())  # fmt: skip
        out.append(replace(scenario, profiles=profiles, feed=feed, onboard_day=ONBOARD_DAY,
                           customer_id=feed))  # fmt: skip
    return out


def run_domain(claims: list[dict[str, Any]], settings: Settings, sources: int = 4) -> Outcome:
    """The domain core as the worker runs it: claims keyed by claim id over ``sources`` claims
    partitions, windows partitioned by customer (murmur2, like Kafka clients)."""
    cfg = drift_config(settings)
    parts = [PartitionWindows(p, cfg, settings.grace_ms) for p in range(settings.partitions)]
    offsets = [0] * sources
    outcome = Outcome(defaultdict(list), Counter())
    for record in claims:
        claim = parse_claim(record)
        source = default_partition(claim.claim_id.encode(), sources)
        partition = default_partition(claim.customer_id.encode(), settings.partitions)
        arrival = ClaimFromSource(source, sources, offsets[source], claim)
        offsets[source] += 1
        result = parts[partition].apply([arrival])
        for d in result.drifts:
            outcome.drifts[d.customer_id].append(
                (d.customer_id, d.payer_id, d.cpt_group, d.drift_type, d.detected_at_ms,
                 d.event_id, d.baseline_n, d.current_n, round(d.current_value, 9))
            )  # fmt: skip
        for dead in result.beyond_history:
            outcome.dead_letters[dead.claim.customer_id] += 1
    return outcome


async def run_worker(claims: list[dict[str, Any]], settings: Settings) -> Outcome:
    """The real worker process on the embedded broker; reads its outputs when it is done."""
    from bench.harness import worker_run
    from schemas.registry import ValueCodec
    from streams.app.dlq import customer_of

    records, letters = await worker_run(claims, settings)
    outcome = Outcome(defaultdict(list), Counter())
    for r in records:  # one partition per customer's drift keys: each customer's order kept
        outcome.drifts[r["customer_id"]].append(
            (r["customer_id"], r["payer_id"], r["cpt_group"], r["drift_type"],
             r["detected_at_ms"], r["event_id"], r["baseline_n"], r["current_n"],
             round(r["current_value"], 9))
        )  # fmt: skip
    for events in outcome.drifts.values():
        events.sort(key=lambda d: (d[4], d[1], d[2], d[3]))
    codec = ValueCodec()
    for letter in letters:
        outcome.dead_letters[customer_of(letter.value, codec, settings.topic_claims)] += 1
    return outcome


def _epoch_ms(day: date) -> int:
    return (day.toordinal() - date(1970, 1, 1).toordinal()) * DAY_MS


def score(
    detections: list[Detection], truth: dict[str, Group], lag_days: int = 0
) -> dict[str, Any]:
    """Recall, delay and false alarms per group of keys; a shift found up to ``lag_days``
    past the usual 30 days still counts (a late feed)."""
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
            within = onset + FOUND_WITHIN_DAYS + lag_days
            hits = sorted(d.day for d in events if d.drift_type == kind and onset < d.day <= within)
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


def score_feeds(
    outcome: Outcome, truth: dict[str, Group], feeds: list[str], start: date
) -> dict[str, Any]:
    """:func:`score` per feed, with the claims each feed had dead-lettered."""
    detections = outcome.detections(start)
    report: dict[str, Any] = {}
    for feed in feeds:
        mine = {f"{feed}.{key}": group for key, group in truth.items()}
        found = [d for d in detections if d.key in mine]
        dead = sum(n for c, n in outcome.dead_letters.items() if c.startswith(f"{feed}."))
        report[feed] = {
            "claims_dead_lettered": dead,
            "groups": score(found, mine, FEED_LAG_DAYS[feed]),
        }
    return report


def alone_equals_mixed(mixed: Outcome, claims: list[dict[str, Any]], run: Any) -> dict[str, Any]:
    """Run each customer alone; which customers' drift events differ from the mix."""
    customers = sorted({c["customer_id"] for c in claims})
    differing = []
    for customer in customers:
        alone = run([c for c in claims if c["customer_id"] == customer])
        if alone.drifts.get(customer, []) != mixed.drifts.get(customer, []):
            differing.append(customer)
    return {"customers_checked": len(customers), "customers_differing": differing}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["worker", "domain"], default="domain")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the key counts")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--feeds", default=",".join(FEEDS), help=f"comma-separated, of {', '.join(FEEDS)}"
    )
    parser.add_argument(
        "--alone", action="store_true",
        help="also run each customer alone and compare its drift events with the mix",
    )  # fmt: skip
    args = parser.parse_args(argv)
    feeds = [f for f in args.feeds.split(",") if f]
    if unknown := set(feeds) - set(FEEDS):
        parser.error(f"unknown feed(s): {', '.join(sorted(unknown))}")
    settings = Settings()
    scenario, truth = detection_scenario(args.seed, args.scale)
    claims = generate_mix(feed_scenarios(scenario, feeds))
    began = time.monotonic()

    def run(some: list[dict[str, Any]]) -> Outcome:
        if args.engine == "domain":
            return run_domain(some, settings)
        return asyncio.run(run_worker(some, settings))

    print(f"{len(claims):,} claims through the {args.engine} engine ...", file=sys.stderr)
    outcome = run(claims)
    report: dict[str, Any] = {
        "benchmark": "detection",
        "engine": args.engine,
        "claims": len(claims),
        "days": DAYS,
        "onset_day": ONSET_DAY,
        "onboard_day": ONBOARD_DAY,
        "fdr_q_max": settings.fdr_q_max,
        "seconds": round(time.monotonic() - began, 1),
        "machine": machine(),
        "feeds": score_feeds(outcome, truth, feeds, scenario.start),
    }
    if args.alone:
        print("each customer alone ...", file=sys.stderr)
        report["alone_equals_mixed"] = alone_equals_mixed(outcome, claims, run)
    print(json.dumps(report, indent=2))
    print(_table(report["feeds"]), file=sys.stderr)
    return 0


def _table(feeds: dict[str, Any]) -> str:
    lines = [
        "| feed | keys | n | drift type | recall | median delay (days) | false alarms / 1000 "
        "key-days |",
        "|---|---|---|---|---|---|---|",
    ]
    for feed, found in feeds.items():
        for name, g in found["groups"].items():
            lines.append(
                f"| {feed} | {name} | {g['keys']} | {g.get('drift_type', '—')} | "
                f"{g.get('recall', '—')} | {g.get('median_delay_days', '—')} | "
                f"{g['false_alarms_per_1000_key_days']} |"
            )
        lines.append(f"| {feed} | claims dead-lettered: {found['claims_dead_lettered']} |||||")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
