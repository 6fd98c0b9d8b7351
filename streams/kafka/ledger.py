"""The ingest ledger: which files ``upstream ingest`` has published, and how far it got.

One compacted topic of one partition (``UPSTREAM_TOPIC_INGEST_LEDGER``, ``ingest.ledger``)
holds an entry per file and way of reading it (:func:`ledger_key`: the claims topic, the
SHA-256 of the file's bytes, the customer, encoding, value format and mapping versions): the
last line up to which every row was acknowledged by the broker, how many rows were published,
and whether the file was finished. Ingest writes an entry each time it has awaited the
acknowledgements of its rows in flight, and a last one at the end. So a file ingested again
publishes nothing, and an ingest stopped part-way (a kill, a lost broker) resumes after the
last acknowledged line: only the rows that were in flight when it stopped (at most
``IN_FLIGHT`` of ingest) go out again, and the worker counts each claim id once.

To read its topic up to now on any broker, a lookup first writes a probe (a tombstone under a
key of its own) and reads from the start up to the probe's offset: no end offset or idle
timeout to trust.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

PARTITION = 0
_CHUNK = 1 << 20


class LedgerUnavailableError(Exception):
    """The ledger topic did not answer: nothing is published without knowing the file's state."""


@dataclass(frozen=True)
class Entry:
    """How far one file was published."""

    file: str  # the name it was ingested under, for people
    through_line: int  # every row up to this line was published (or rejected)
    published: int
    complete: bool
    at: str  # when this entry was written, ISO 8601 UTC

    def describe(self) -> str:
        """The entry in words, for the ingest summary."""
        state = "ingested" if self.complete else f"published through line {self.through_line:,}"
        return f"{self.file} was {state} at {self.at} ({self.published:,} rows published)"


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (as stored: a ``.gz`` is digested compressed)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ledger_key(claims_topic: str, digest: str, reading: Mapping[str, str]) -> bytes:
    """The entry's key: the file's bytes, where they go, and how they are read (``reading``:
    the customer, encoding, value format and mapping versions). Read another way — another
    ``--encoding`` after rows were rejected as not text, new mappings — a file is another
    ingest: its rows are validated and published anew, and count once downstream."""
    return json.dumps([claims_topic, digest, dict(sorted(reading.items()))]).encode()


class Ledger:
    """Entries of the ledger topic, read and written through ``producer``."""

    def __init__(
        self, bootstrap: str, topic: str, producer: AIOKafkaProducer, timeout_s: float = 60.0
    ) -> None:
        self.bootstrap, self.topic, self.producer = bootstrap, topic, producer
        self.timeout_s = timeout_s

    async def lookup(self, key: bytes) -> Entry | None:
        """The latest entry under ``key``, or None if the file was never ingested;
        :class:`LedgerUnavailableError` if the topic cannot be read up to now in ``timeout_s``."""
        try:
            return await asyncio.wait_for(self._lookup(key), self.timeout_s)
        except TimeoutError:
            raise LedgerUnavailableError(
                f"the ingest ledger {self.topic} could not be read within {self.timeout_s:.0f} s"
            ) from None

    async def _lookup(self, key: bytes) -> Entry | None:
        probe = await self.producer.send_and_wait(
            self.topic, key=b"probe|" + uuid.uuid4().hex.encode(), value=None,
            partition=PARTITION,
        )  # fmt: skip
        tp = TopicPartition(self.topic, PARTITION)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        found: bytes | None = None
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            done = False
            while not done:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for message in batch.get(tp, ()):
                    if message.key == key:
                        found = message.value
                    if message.offset >= probe.offset:
                        done = True
                        break
        finally:
            await consumer.stop()
        if found is None:
            return None
        try:
            return Entry(**json.loads(found))
        except (TypeError, ValueError):
            raise ValueError(
                f"the {self.topic} entry of this file cannot be read; --again publishes the "
                "file without it"
            ) from None

    async def write(
        self, key: bytes, file: str, through_line: int, published: int, complete: bool
    ) -> None:
        """Record (and await the broker's acknowledgement of) how far ``key``'s file got."""
        at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        entry = Entry(file, through_line, published, complete, at)
        value = json.dumps(asdict(entry)).encode()
        await self.producer.send_and_wait(self.topic, key=key, value=value, partition=PARTITION)
