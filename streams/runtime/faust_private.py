"""Every private part of faust-streaming (and of the aiokafka consumer under it) that the
runtime relies on, named in one place.

The batch path (:mod:`streams.runtime.batches`, :mod:`streams.runtime.consumer`) replaces
Faust's drain loop and reads and writes the consumer's acknowledgement bookkeeping; the worker
and its tables override a few hooks. None of this is public API, so each part is listed here
with what depends on it, and ``tests/unit/test_faust_private.py`` fails when the installed
faust-streaming no longer has one of them, or is another version than the one the drain loop
was read against (:data:`CHECKED_VERSION`): an upgrade must re-read ``Consumer._drain_messages``
and ``Consumer.ack`` before this version is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CHECKED_VERSION = "0.15.3"  # faust-streaming


@dataclass(frozen=True)
class Private:
    """One private part: where it is defined, its name, and what relies on it."""

    owner: str  # "module:Class" where it is defined (or first set, for an attribute)
    name: str
    kind: Literal["method", "attribute"]  # overridden or called / read or written
    use: str


CONSUMER = "faust.transport.consumer:Consumer"
AIOKAFKA_DRIVER = "faust.transport.drivers.aiokafka"

PARTS: tuple[Private, ...] = (
    # BatchingConsumer: Faust's drain loop, replaced to hand whole batches to the stages.
    Private(CONSUMER, "_drain_messages", "method", "overridden: the batch drain loop"),
    Private(
        f"{AIOKAFKA_DRIVER}:Consumer",
        "_new_consumer_thread",
        "method",
        "overridden: the consumer thread with the app's fetch wait",
    ),
    Private(CONSUMER, "_wait_next_records", "method", "called by the drain loop"),
    Private(
        f"{AIOKAFKA_DRIVER}:Consumer",
        "_to_message",
        "method",
        "called by the drain loop: a record to a Faust message",
    ),
    Private(CONSUMER, "_add_gap", "method", "called by the drain loop: skipped offsets"),
    Private(CONSUMER, "_read_offset", "attribute", "read and written: offsets read per partition"),
    Private(CONSUMER, "_buffered_partitions", "attribute", "read: partitions Faust buffers"),
    Private(CONSUMER, "_commit_every", "attribute", "read: commit after so many acks"),
    Private(CONSUMER, "_n_acked", "attribute", "read and written: acks since the last commit"),
    # BatchSubscription: a batch acknowledged at once (Consumer.track_message and ack).
    Private(CONSUMER, "_unacked_messages", "attribute", "written: messages taken, not acked"),
    Private(CONSUMER, "_committed_offset", "attribute", "read: offsets committed"),
    Private(CONSUMER, "_acked", "attribute", "written: acked offsets per partition"),
    Private(CONSUMER, "_acked_index", "attribute", "written: the same, as sets"),
    Private(CONSUMER, "_waiting_for_ack", "attribute", "notified when a batch is acked"),
    Private(
        CONSUMER,
        "_on_partitions_revoked",
        "attribute",
        "passed to the consumer thread: the rebalance callbacks",
    ),
    Private(CONSUMER, "_on_partitions_assigned", "attribute", "the same"),
    Private(
        "mode.services:Service",
        "_stopped",
        "attribute",
        "read by the drain loop: the consumer or its fetcher stopping",
    ),
    Private(
        f"{AIOKAFKA_DRIVER}:AIOKafkaConsumerThread",
        "_create_worker_consumer",
        "method",
        "overridden: sets the fetch wait on the aiokafka consumer",
    ),
    Private(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        "_fetch_max_wait_ms",
        "attribute",
        "written: no public setter, read when the consumer starts",
    ),
    # The app, its topics, tables and producer.
    Private("faust.app.base:App", "_new_consumer", "method", "overridden: BatchingConsumer"),
    Private(
        "faust.topics:Topic",
        "_compile_decode",
        "method",
        "overridden: BatchTopic hands raw messages to the stages",
    ),
    Private(
        "faust.tables.base:Collection",
        "_serializer_from_type",
        "method",
        "overridden: StandardJsonTable's key and value codec",
    ),
    Private(
        f"{AIOKAFKA_DRIVER}:Producer",
        "_ensure_producer",
        "method",
        "called: the app's aiokafka producer, for keyed and atomic sends",
    ),
)
