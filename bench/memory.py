"""Worker memory: RSS per active window key, and RSS over a sustained run.

1. Per key: one worker on a fresh broker (the embedded one, or Apache Kafka with ``--broker
   kafka``, as for every measurement here) reads ``--keys`` keys' claims
   (``--claims-per-key`` each, over as many days), and, on another fresh broker, the claims
   of ``--small-keys`` keys the same way. RSS once every claim is counted; the cost of a key
   is the difference over the difference in keys (the process's fixed size cancels out).
   A key's cost grows with the claims it remembers (a claim id and its contribution for each
   claim in the 90-bucket history), so both numbers are reported.
2. Soak (``--soak-minutes``, 0 to skip): one worker, claims produced at ``--soak-rate`` per
   second for that long over ``--soak-keys`` keys (event time advancing a day every
   ``soak-keys × 4 / rate`` seconds, so the history fills and then prunes); RSS sampled every
   15 s. Growth is the slope of RSS over the second half, when the history is full.

Prints one JSON document on stdout and a table on stderr.
``python -m bench.memory --help``; ``make bench-memory`` runs the defaults.
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
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.harness import BROKERS, rss_mib, start_broker
from bench.machine import machine
from bench.throughput import one_worker_on_a_fresh_broker
from streams.devtools.generator import GROUPS, KeyProfile, Scenario, generate
from streams.devtools.probes import COUNTED, ready_partitions, worker_totals
from streams.devtools.stack import free_port, spawn_service, stop_process
from streams.kafka.topics import create_topics
from streams.settings import Settings

START = date(2026, 1, 1)


def profiles(keys: int, per_day: int) -> tuple[KeyProfile, ...]:
    """``keys`` keys: six CPT groups × a payer per customer, as many customers as needed."""
    out = []
    for i in range(keys):
        group, _, billed = GROUPS[i % len(GROUPS)]
        customer, payer = divmod(i // len(GROUPS), 4)
        out.append(KeyProfile(f"cust-{customer:06d}", f"payer-{payer}", group, billed, per_day))
    return tuple(out)


def claims_of(keys: int, claims_per_key: int) -> list[dict[str, Any]]:
    """One claim a day for each key, ``claims_per_key`` days."""
    scenario = Scenario(name="steady", days=claims_per_key, profiles=profiles(keys, 1))
    return generate(scenario)


def per_key(args: argparse.Namespace) -> dict[str, Any]:
    """RSS at ``--small-keys`` and at ``--keys`` keys; the cost of one key."""
    measured = {}
    for label, keys in (("small", args.small_keys), ("large", args.keys)):
        claims = claims_of(keys, args.claims_per_key)
        print(f"{label}: {keys:,} keys, {len(claims):,} claims...", file=sys.stderr)
        run = one_worker_on_a_fresh_broker(args.broker, claims, f"memory-{label}", args.timeout)
        measured[label] = {"keys": keys, "claims": len(claims), "active_keys": run.active_keys,
                           "rss_mib": round(run.rss_mib[0], 1)}  # fmt: skip
        print(f"  {run.active_keys:,.0f} active keys, RSS {run.rss_mib[0]:,.1f} MiB",
              file=sys.stderr)  # fmt: skip
    small, large = measured["small"], measured["large"]
    extra_keys = large["active_keys"] - small["active_keys"]
    extra_bytes = (large["rss_mib"] - small["rss_mib"]) * 1024 * 1024
    return {
        **measured,
        "claims_per_key": args.claims_per_key,
        "bytes_per_key": round(extra_bytes / extra_keys) if extra_keys > 0 else None,
    }


def _start_worker(bootstrap: str, log_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """A worker on ``bootstrap`` with its metrics on ``port``, once its partitions are ready."""
    env = {
        **os.environ,
        "UPSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "UPSTREAM_APP_ID": "memory-soak",
        "UPSTREAM_METRICS_PORT": str(port),
        "UPSTREAM_LOG_FORMAT": "text",
        "UPSTREAM_WORKER_DATA_DIR": str(log_dir / "d"),
    }
    proc = spawn_service("worker", env, log_dir / "worker.log")
    while not ready_partitions(port):
        if proc.poll() is not None:
            raise RuntimeError((log_dir / "worker.log").read_text()[-3000:])
        time.sleep(0.5)
    return proc


def _growth_per_minute(samples: list[dict[str, float]], duration_s: float) -> float | None:
    """RSS growth in MiB per minute over the second half of the soak (a linear fit)."""
    second_half = [s for s in samples if s["s"] >= duration_s / 2]
    if len(second_half) < 2:
        return None
    return statistics.linear_regression(
        [s["s"] / 60 for s in second_half], [s["rss_mib"] for s in second_half]
    ).slope


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """RSS of one worker while claims stream at a steady rate for ``--soak-minutes``."""
    broker = start_broker(args.broker)
    log_dir = Path(tempfile.mkdtemp(prefix="upstream-soak-"))
    port = free_port()
    topic = "claims.decided"
    proc = None
    try:
        asyncio.run(create_topics(Settings(), broker.bootstrap))
        proc = _start_worker(broker.bootstrap, log_dir, port)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
        keys = profiles(args.soak_keys, 4)
        started = time.perf_counter()
        duration = args.soak_minutes * 60
        samples: list[dict[str, float]] = []
        sent, day, next_sample = 0, 0, 0.0
        while (elapsed := time.perf_counter() - started) < duration:
            day_claims = generate(Scenario(name="steady", days=1, seed=day, profiles=keys,
                                           start=START + timedelta(days=day)))  # fmt: skip
            for claim in day_claims:
                claim["claim_id"] += f"-{day}"  # each day's scenario numbers its days from 0
                while sent > (time.perf_counter() - started) * args.soak_rate:
                    time.sleep(0.01)
                    producer.poll(0)
                producer.produce(topic, json.dumps(claim).encode(), claim["claim_id"].encode())
                sent += 1
            day += 1
            elapsed = time.perf_counter() - started
            if elapsed >= next_sample:
                done = sum(worker_totals(port).get(name, 0.0) for name in COUNTED)
                samples.append({"s": round(elapsed, 1), "rss_mib": round(rss_mib(proc.pid), 1),
                                "sent": sent, "counted": done, "days": day})  # fmt: skip
                print(f"  {elapsed:5.0f} s: RSS {samples[-1]['rss_mib']:,.1f} MiB, "
                      f"{done:,.0f} of {sent:,} counted, day {day}", file=sys.stderr)  # fmt: skip
                next_sample += 15
        producer.flush(30)
        slope = _growth_per_minute(samples, duration)
        return {
            "broker": args.broker,
            "minutes": args.soak_minutes,
            "rate": args.soak_rate,
            "keys": args.soak_keys,
            "samples": samples,
            "rss_growth_mib_per_min_second_half": None if slope is None else round(slope, 2),
            "behind_at_end": samples[-1]["sent"] - samples[-1]["counted"] if samples else None,
        }
    finally:  # fmt: skip
        if proc is not None:
            stop_process(proc, timeout_s=30)
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the memory bench and print its JSON report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--keys", type=int, default=100_000, help="keys, large run (100000)")
    parser.add_argument("--small-keys", type=int, default=1_000, help="keys, small run (1000)")
    parser.add_argument("--claims-per-key", type=int, default=3, help="claims per key (3)")
    parser.add_argument("--soak-minutes", type=float, default=10, help="0 skips the soak (10)")
    parser.add_argument("--soak-rate", type=int, default=2_000, help="claims/s in the soak")
    parser.add_argument("--soak-keys", type=int, default=600, help="keys in the soak (600)")
    parser.add_argument("--broker", choices=BROKERS, default="embedded",
                        help="embedded (Tansu, memory only) or kafka (Apache Kafka 4)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    args = parser.parse_args(argv)
    document: dict[str, Any] = {"benchmark": "memory", "broker": args.broker,
                                "per_key": per_key(args)}  # fmt: skip
    if args.soak_minutes > 0:
        document["soak"] = soak(args)
    document["machine"] = machine()
    print(json.dumps(document, indent=2))
    p = document["per_key"]
    print(f"\nRSS {p['small']['rss_mib']} MiB at {p['small']['active_keys']:,.0f} keys, "
          f"{p['large']['rss_mib']} MiB at {p['large']['active_keys']:,.0f}: "
          f"{p['bytes_per_key']} bytes per key ({args.claims_per_key} claims each)",
          file=sys.stderr)  # fmt: skip
    if "soak" in document:
        print(f"soak: RSS growth over the second half "
              f"{document['soak']['rss_growth_mib_per_min_second_half']} MiB/min",
              file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
