"""``upstream dlq stats|replay``: what was dead-lettered, by customer and reason; republish it.

A dead letter is the original claim (key and value) with ``error.*`` and ``source.*`` headers
(see docs/data.md, "Dead letters"). ``stats`` reads the dead-letter topic from its start and
counts by customer and reason; ``replay`` sends the dead letters a filter selects back to
``claims.decided``, with their original key and value. Replaying is safe to repeat: a claim
counted once already is a resend, and resends count once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams.kafka.topics import topic_partitions
from streams.settings import Settings

IDLE_MS = 2000  # the dead-letter topic is read until nothing more comes for this long
UNKNOWN = "(unreadable)"  # the customer of a dead letter whose value cannot be decoded


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``dlq`` and its actions on the top-level parser."""
    dlq = sub.add_parser("dlq", help="dead letters: counts by customer and reason, replay")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="count dead letters by customer and reason")
    replay = actions.add_parser(
        "replay", help="republish dead letters to the claims topic (safe to repeat)"
    )
    for action in (stats, replay):
        add = action.add_argument
        add("--reason", action="append", default=[],
            help="only this reason (repeatable), e.g. beyond_history")  # fmt: skip
        add("--customer", action="append", default=[], help="only this customer_id (repeatable)")
        add("--since", type=_when, default=None,
            help="only dead letters written at or after this ISO time (UTC)")  # fmt: skip
        add("--until", type=_when, default=None,
            help="only dead letters written before this ISO time (UTC)")  # fmt: skip
        action.add_argument("--quiet", action="store_true", help="no progress on stderr")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    replay.add_argument(
        "--dry-run", action="store_true", help="count what would be republished, send nothing"
    )


def _when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter topic, with what a filter and a replay need."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    reason: str
    stage: str
    customer_id: str


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters an action takes (empty: all)."""

    reasons: frozenset[str] = frozenset()
    customers: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes every filter."""
        when = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (not self.customers or letter.customer_id in self.customers)
            and (self.since is None or when >= self.since)
            and (self.until is None or when < self.until)
        )


def customer_of(value: bytes | None, codec: ValueCodec, topic: str) -> str:
    """The ``customer_id`` a dead letter's value names, or :data:`UNKNOWN`."""
    if not value:
        return UNKNOWN
    try:
        record: Any = codec.decode(value, "ClaimDecided", topic)
    except (DecodeError, ValueError, TypeError):
        try:
            record = json.loads(value)
        except ValueError:
            return UNKNOWN
    customer = record.get("customer_id") if isinstance(record, dict) else None
    return str(customer) if isinstance(customer, str | int) and str(customer) else UNKNOWN


async def dead_letters(
    bootstrap: str,
    topic: str,
    codec: ValueCodec,
    claims_topic: str,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[DeadLetter]:
    """Every dead letter in ``topic`` written before this call, from its start.

    A partition is read until a message written since (a replay's own dead letters, say, which
    must not be sent again) or until nothing more comes for a while."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    read = 0
    began_ms = int(time.time() * 1000)
    tps = await topic_partitions(bootstrap, topic)  # asked for: a consumer's metadata may lack it
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # Until nothing more comes for a while: a broker's end offsets are not always to be
        # trusted (the embedded one can answer too low once producers batch).
        while tps and (batch := await consumer.getmany(*tps, timeout_ms=IDLE_MS)):
            for tp, messages in sorted(batch.items()):
                for message in messages:
                    if message.timestamp >= began_ms:
                        tps.remove(tp)  # this partition is read up to when we began
                        break
                    headers = {k: v for k, v in message.headers or ()}
                    yield DeadLetter(
                        partition=tp.partition,
                        offset=message.offset,
                        timestamp_ms=message.timestamp,
                        key=message.key,
                        value=message.value,
                        reason=headers.get("error.reason", b"").decode("utf-8", "replace"),
                        stage=headers.get("error.stage", b"").decode("utf-8", "replace"),
                        customer_id=customer_of(message.value, codec, claims_topic),
                    )
                    read += 1
                    if progress is not None and read % 10_000 == 0:
                        progress(read)
    finally:
        await consumer.stop()
        if progress is not None and read:
            progress(read)


async def stats(
    settings: Settings, bootstrap: str, keep: Filter, progress: Callable[[int], None] | None
) -> Counter[tuple[str, str]]:
    """Dead letters by (customer, reason)."""
    codec = ValueCodec(settings.schema_registry_url)
    counts: Counter[tuple[str, str]] = Counter()
    async for letter in dead_letters(bootstrap, settings.topic_claims_dlq, codec,
                                     settings.topic_claims, progress):  # fmt: skip
        if keep(letter):
            counts[(letter.customer_id, letter.reason)] += 1
    return counts


async def replay(
    settings: Settings,
    bootstrap: str,
    keep: Filter,
    dry_run: bool,
    progress: Callable[[int], None] | None,
) -> Counter[tuple[str, str]]:
    """Republish the dead letters ``keep`` selects (or only count them, with ``dry_run``)."""
    codec = ValueCodec(settings.schema_registry_url)
    counts: Counter[tuple[str, str]] = Counter()
    producer = None
    if not dry_run:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
    try:
        pending = []
        async for letter in dead_letters(bootstrap, settings.topic_claims_dlq, codec,
                                         settings.topic_claims, progress):  # fmt: skip
            if not keep(letter) or letter.value is None:
                continue
            counts[(letter.customer_id, letter.reason)] += 1
            if producer is not None:
                origin = f"{settings.topic_claims_dlq}/{letter.partition}/{letter.offset}"
                pending.append(await producer.send(
                    settings.topic_claims, value=letter.value, key=letter.key,
                    headers=[("upstream.replayed-from", origin.encode())],
                ))  # fmt: skip
        await asyncio.gather(*pending)
    finally:
        if producer is not None:
            await producer.stop()
    return counts


def table(counts: Counter[tuple[str, str]]) -> str:
    """Counts as an aligned table, by customer then reason, with a total."""
    rows = [("customer", "reason", "dead letters")]
    rows += [(c, r, f"{n:,}") for (c, r), n in sorted(counts.items())]
    rows.append(("total", "", f"{sum(counts.values()):,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}" for row in rows
    )


def run(args: argparse.Namespace, settings: Settings, bootstrap: str) -> int:
    """Carry out ``upstream dlq ...``."""
    keep = Filter(frozenset(args.reason), frozenset(args.customer), args.since, args.until)

    def progress(read: int) -> None:
        if not args.quiet:
            print(f"\rread {read:,} dead letters", end="", file=sys.stderr, flush=True)

    if args.dlq_command == "stats":
        counts = asyncio.run(stats(settings, bootstrap, keep, progress))
        if not args.quiet:
            print(file=sys.stderr)
        if args.json:
            print(json.dumps([{"customer_id": c, "reason": r, "count": n}
                              for (c, r), n in sorted(counts.items())]))  # fmt: skip
        else:
            print(table(counts))
        return 0
    counts = asyncio.run(replay(settings, bootstrap, keep, args.dry_run, progress))
    if not args.quiet:
        print(file=sys.stderr)
    print(table(counts))
    verb = "would republish" if args.dry_run else "republished"
    print(f"{verb} {sum(counts.values()):,} dead letter(s) to {settings.topic_claims}",
          file=sys.stderr)  # fmt: skip
    return 0
