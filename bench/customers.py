"""Per-customer cost: one worker with many small customers against one big customer.

Event time, watermarks and the multiple-testing family are kept per customer, so each
customer costs some state of its own (a watermark per claims partition, its changelog record)
and its own bucket closes. Both runs here have the same keys and claims; only how the keys
are spread over customers differs:

- ``many``: ``--customers`` customers (1,000) of ``--keys-per-customer`` keys (10) each;
- ``one``: one customer with all those keys.

Each run: a fresh broker (embedded, or Apache Kafka with ``--broker kafka``), one worker, one
claim per key and day for ``--days`` days (60), produced before the worker reads them
(:func:`bench.throughput.run_workers`); reports the worker's RSS once every claim is counted,
its rate and CPU per claim on the backlog, and the differences per customer.

Prints one JSON document on stdout and a table on stderr. ``python -m bench.customers
--help``; ``make bench-customers`` runs the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench.harness import BROKERS
from bench.machine import machine
from bench.throughput import one_worker_on_a_fresh_broker
from streams.devtools.generator import GROUPS, KeyProfile, Scenario, generate


def profiles(customers: int, keys_per_customer: int) -> tuple[KeyProfile, ...]:
    """``keys_per_customer`` keys (payers × the generator's CPT groups) for each customer."""
    out = []
    for c in range(customers):
        for k in range(keys_per_customer):
            group, _, billed = GROUPS[k % len(GROUPS)]
            payer = f"payer-{k // len(GROUPS):03d}"
            out.append(KeyProfile(f"cust-{c:05d}", payer, group, billed, per_day=1))
    return tuple(out)


def claims_of(customers: int, keys_per_customer: int, days: int) -> list[dict[str, Any]]:
    """One claim a day for each key, ``days`` days, in decision order."""
    keys = profiles(customers, keys_per_customer)
    return generate(Scenario(name="steady", days=days, profiles=keys))


def measure(args: argparse.Namespace, label: str, customers: int, keys: int) -> dict[str, Any]:
    """One worker over ``customers`` × ``keys`` keys' claims."""
    claims = claims_of(customers, keys, args.days)
    print(f"{label}: {customers:,} customer(s) × {keys:,} keys, {len(claims):,} claims...",
          file=sys.stderr)  # fmt: skip
    run = one_worker_on_a_fresh_broker(args.broker, claims, f"customers-{label}", args.timeout)
    result = {
        "customers": customers,
        "keys": customers * keys,
        "claims": len(claims),
        "active_keys": run.active_keys,
        "rss_mib": round(run.rss_mib[0], 1),
        "claims_per_s": round(run.claims_per_s),
        "cpu_us_per_claim": run.cpu_us_per_claim,
        "cores": run.cores[0],
    }
    print(f"  RSS {result['rss_mib']:,} MiB, {result['claims_per_s']:,} claims/s, "
          f"{result['cpu_us_per_claim']} µs CPU per claim", file=sys.stderr)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--keys-per-customer", type=int, default=10)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--broker", choices=BROKERS, default="embedded")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = parser.parse_args(argv)
    keys = args.keys_per_customer
    many = measure(args, "many", args.customers, keys)
    one = measure(args, "one", 1, args.customers * keys)
    extra = args.customers - 1
    report = {
        "benchmark": "customers",
        "broker": args.broker,
        "days": args.days,
        "machine": machine(),
        "many": many,
        "one": one,
        "rss_bytes_per_customer": round((many["rss_mib"] - one["rss_mib"]) * 1024 * 1024 / extra),
        "cpu_us_per_claim_ratio": (
            round(many["cpu_us_per_claim"] / one["cpu_us_per_claim"], 2)
            if many["cpu_us_per_claim"] and one["cpu_us_per_claim"] else None
        ),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    print(
        "| run | customers | keys | claims | RSS MiB | claims/s | µs CPU/claim |\n"
        "|---|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {name} | {r['customers']:,} | {r['keys']:,} | {r['claims']:,} | {r['rss_mib']} | "
            f"{r['claims_per_s']:,} | {r['cpu_us_per_claim']} |"
            for name, r in (("many", many), ("one", one))
        ),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
