"""Probes of a running stack, for tests and benchmarks: read topics, scrape metrics, wait for
the worker to finish a feed."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import Settings


def routed_claims(value: bytes) -> list[dict[str, Any]]:
    """The claims a by-key message carries, as ``{"claim_id", "source", "offset"}``."""
    return [
        {"claim_id": packed[0], "source": source, "offset": offset}
        for source, offset, packed in json.loads(value)["claims"]
    ]


class TopicTail:
    """Tails topics from the start: real end offsets, message counts, claims accounted for.

    Tansu's ListOffsets answers a wrong (too low) latest offset once producers batch, so "the
    end" is the last offset actually read plus one. ``accounted`` holds the claims-topic
    positions ``(partition, offset)`` that a by-key message carried or a dead letter names:
    a set, because a restarted worker routes some claims twice (at-least-once).
    """

    def __init__(self, bootstrap: str, topics: list[str], claims_topic: str = "") -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.claims_topic = claims_topic
        self.ends: dict[TopicPartition, int] = {}
        self.counts: dict[str, int] = dict.fromkeys(topics, 0)
        self.accounted: set[tuple[int, int]] = set()
        self._consumer: AIOKafkaConsumer | None = None

    async def poll(self) -> None:
        """Read whatever arrived since the last poll."""
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                *self.topics, bootstrap_servers=self.bootstrap, group_id=None,
                auto_offset_reset="earliest",
            )  # fmt: skip
            await self._consumer.start()
        while batch := await self._consumer.getmany(timeout_ms=200, max_records=50_000):
            for tp, messages in batch.items():
                self.counts[tp.topic] += len(messages)
                self.ends[tp] = messages[-1].offset + 1
                if tp.topic.endswith("-claims-by-key"):
                    for m in messages:
                        self.accounted.update(
                            (c["source"], c["offset"]) for c in routed_claims(m.value)
                        )
                else:
                    for m in messages:
                        headers = dict(m.headers or ())
                        if headers.get("source.topic") == self.claims_topic.encode():
                            position = (headers["source.partition"], headers["source.offset"])
                            self.accounted.add((int(position[0]), int(position[1])))

    async def close(self) -> None:
        """Stop tailing."""
        if self._consumer is not None:
            await self._consumer.stop()


# Every claim read is, once, one of these (a pending claim moves to one of the first two when
# it takes effect, so a sum over them all never counts it twice).
COUNTED = (
    "upstream_claims_processed_total",
    "upstream_claims_duplicate_total",
    "upstream_claims_dlq_total",
    "upstream_claims_pending",
)


def worker_totals(port: int) -> dict[str, float]:
    """The counted series and the active-keys gauge of one worker, summed over labels."""
    totals: dict[str, float] = {}
    for name, value in scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=2).items():
        base = name.split("{", 1)[0]
        if base in COUNTED or base == "upstream_active_window_keys":
            totals[base] = totals.get(base, 0.0) + value
    return totals


def ready_partitions(port: int) -> int:
    """Partitions the worker on ``port`` reports assigned (0 when not answering yet)."""
    try:
        url = f"http://127.0.0.1:{port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as reply:  # nosec B310 -- http, fixed host
            body = json.loads(reply.read())
    except (OSError, ValueError):  # 503 until ready raises HTTPError, an OSError
        return 0
    return int(body["checks"].get("kafka", {}).get("partitions", 0))


async def committed_through(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> bool:
    """Whether ``group`` has committed every partition in ``ends`` up to that offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        for tp, end in ends.items():
            if (await consumer.committed(tp) or 0) < end:
                return False
        return True
    finally:
        await consumer.stop()


async def _unrouted(bootstrap: str, settings: Settings, accounted: set[tuple[int, int]]) -> str:
    """Where the claims not routed are: per claims partition, the first position missing, how
    many are, and what the worker's group committed (to tell a stalled partition from a gap)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_claims, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps)  # on Tansu possibly too low, see TopicTail
        report = []
        for tp in tps:
            missing = [o for o in range(ends[tp]) if (tp.partition, o) not in accounted]
            first = missing[0] if missing else None
            report.append(f"partition {tp.partition}: end {ends[tp]}, {len(missing)} missing "
                          f"from {first}, committed {await consumer.committed(tp)}")  # fmt: skip
        return "; ".join(report)
    finally:
        await consumer.stop()


async def wait_processed(
    bootstrap: str, settings: Settings, produced: int, timeout_s: float, alive: Any = None
) -> None:
    """Wait until the worker has routed every claim and drained its internal topics.

    Routed: the claims forwarded or dead-lettered, each counted once, reach ``produced``.
    Drained: the worker's group has committed the internal topics through their real ends.
    """
    internal = [f"{settings.app_id}-claims-by-key", f"{settings.app_id}-alert-input"]
    tail = TopicTail(bootstrap, [*internal, settings.topic_claims_dlq], settings.topic_claims)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            await tail.poll()
            routed = len(tail.accounted)
            internal_ends = {tp: e for tp, e in tail.ends.items() if tp.topic in internal}
            if routed >= produced and await committed_through(
                bootstrap, settings.app_id, internal_ends
            ):
                await tail.poll()  # anything the last commit let through
                if {tp: e for tp, e in tail.ends.items() if tp.topic in internal} == internal_ends:
                    return
            if (alive is not None and not alive()) or time.monotonic() > deadline:
                where = await _unrouted(bootstrap, settings, tail.accounted)
                raise RuntimeError(f"worker did not finish: routed {routed} of {produced}; {where}")
            await asyncio.sleep(1.0)
    finally:
        await tail.close()


def scrape(url: str, timeout_s: float = 10.0) -> dict[str, float]:
    """Prometheus text at ``url`` as {'name{labels}': value} (comments skipped)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url!r}")
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310  # nosec B310
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def read_all(bootstrap: str, topic: str, idle_s: float = 1.0) -> list[Any]:
    """Every message in ``topic`` (group-less, from the start, until idle)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        while batch := await consumer.getmany(timeout_ms=int(idle_s * 1000)):
            for messages in batch.values():
                out.extend(messages)
    finally:
        await consumer.stop()
    return out
