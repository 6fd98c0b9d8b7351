"""Create the public topics, the worker's and the ingest ledger (``upstream topics create``);
their partitions."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

log = logging.getLogger("upstream.topics")


class TopicMissingError(RuntimeError):
    """A topic was not there (or not listed with its partitions) in time."""


def public_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name → configs. ``alerts.rules`` is compacted (latest rule per key)."""
    return {
        settings.topic_claims: {},
        settings.topic_claims_dlq: {},
        settings.topic_drift: {},
        settings.topic_alerts: {},
        settings.topic_commands: {},
        settings.topic_commands_dlq: {},
        settings.topic_sink_dlq: {},
        settings.topic_reports: {},
        settings.topic_rules: {"cleanup.policy": "compact"},
    }


def worker_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The worker's internal topics (co-partitioned with the claims topic).

    Faust would create them as the worker starts, but on Apache Kafka a topic created while the
    group forms can miss the first assignment ("Ignoring missing topic"), and the worker then
    owns no partition of it until some later rebalance: it routes claims nobody windows.
    """
    return {f"{settings.app_id}-claims-by-key": {}, f"{settings.app_id}-alert-input": {}}


def ingest_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The ingest ledger (:mod:`streams.kafka.ledger`): compacted, and of one partition."""
    return {settings.topic_ingest_ledger: {"cleanup.policy": "compact"}}


async def create_topics(
    settings: Settings,
    bootstrap: str,
    *,
    public: bool = True,
    worker: bool = True,
    ingest: bool = True,
) -> list[str]:
    """Create missing topics with ``settings.partitions`` partitions (the ingest ledger one);
    return the new ones.

    Topics must exist before the worker starts: a broker that auto-creates topics on first use
    would pick its own partition count and break co-partitioning.
    """
    single = ingest_topics(settings) if ingest else {}
    topics = {**(public_topics(settings) if public else {}),
              **(worker_topics(settings) if worker else {}), **single}  # fmt: skip
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="upstream-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, 1 if name in single else settings.partitions, 1, topic_configs=configs)
            for name, configs in topics.items()
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        for name in topics:  # listed with their partitions before anyone is assigned them
            await topic_partitions(bootstrap, name)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def topic_partitions(
    bootstrap: str, topic: str, wait_s: float = 10.0
) -> list[TopicPartition]:
    """The partitions of ``topic``, from a metadata request for that topic (waits for it).

    A group-less consumer's own metadata only covers what it subscribes to (Apache Kafka
    answers for the topics asked about), so the partitions are asked for explicitly.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(max(1, int(wait_s / 0.2))):
            for found in await admin.describe_topics([topic]):
                if found["error_code"] == 0 and found["partitions"]:
                    numbers = sorted(p["partition"] for p in found["partitions"])
                    return [TopicPartition(topic, n) for n in numbers]
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise TopicMissingError(f"topic {topic!r} does not exist: run `upstream topics create`")
