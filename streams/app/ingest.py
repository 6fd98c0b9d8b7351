"""``upstream ingest``: claim exports in CSV (plain, gzip, or stdin) → ``claims.decided``.

Streams the file: one row at a time is read, validated with the worker's own rules
(:func:`streams.domain.claims.parse_claim`) and published keyed by ``claim_id``, so memory
stays flat for any file size. Rejected rows are never published; each goes to the report file
with its line number, reason and the row as read. A row that cannot be read — bytes that are
not text in the file's ``--encoding``, a field over the CSV field limit — is rejected the same
way, and reading goes on: only a file that cannot be opened, or has no usable header, stops
an ingest.

The file's layouts, decoding and reject report are in :mod:`streams.app.claim_files`; the
ledger that keeps a file from being published twice in :mod:`streams.kafka.ledger`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any

from schemas.registry import ValueCodec
from streams.app.claim_files import (
    IngestError,
    RejectReport,
    RowReader,
    Unreadable,
    open_text,
    rows,
    spool_stdin,
)
from streams.devtools.generator import encode_claim
from streams.domain.claims import InvalidClaim
from streams.kafka.ledger import Entry, Ledger, file_digest, ledger_key
from streams.reference import Reference

IN_FLIGHT = 2000  # sends awaited together; bounds memory and delivery-error latency


@dataclass
class Summary:
    """What one ingest did."""

    layout: str = ""
    rows: int = 0
    published: int = 0
    rejected: int = 0
    # Published, but older than their customer's history by the newer claims read before them
    # in this file alone: the worker will dead-letter them (beyond_history).
    beyond_history: int = 0
    # Valid rows an earlier, stopped ingest of the same file had published: not sent again.
    already_published: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    ignored_columns: tuple[str, ...] = ()
    # The ledger's entry for this file when it was found there (finished: nothing was read).
    earlier: Entry | None = None


class Progress:
    """A line on stderr at most twice a second, and a last one at the end."""

    def __init__(self, probe: Callable[[], tuple[int, int]], quiet: bool) -> None:
        self.probe, self.quiet = probe, quiet
        self.started = self._last = time.monotonic()

    def tick(self, summary: Summary, final: bool = False) -> None:
        """Show progress, at most twice a second (always when ``final``)."""
        now = time.monotonic()
        if self.quiet or (not final and now - self._last < 0.5):
            return
        self._last = now
        done, size = self.probe()
        share = f" ({done / size:.0%} of {size / 1e6:,.1f} MB)" if size else ""
        rate = summary.rows / max(now - self.started, 1e-9)
        end = "\n" if final else ""
        print(f"\r{summary.rows:,} rows{share}, {summary.published:,} published, "
              f"{summary.rejected:,} rejected, {rate:,.0f} rows/s", end=end, file=sys.stderr,
              flush=True)  # fmt: skip


@dataclass(frozen=True)
class Publisher:
    """Where valid rows go: ``send`` returns a future of the broker's acknowledgement.

    Valid rows up to line ``resume_after`` are counted as already published, not sent.
    ``checkpoint(line, published, finished)`` is awaited whenever every row up to ``line``
    has been acknowledged.
    """

    send: Callable[[dict[str, Any]], Awaitable[Any]]
    checkpoint: Callable[[int, int, bool], Awaitable[None]] | None = None
    resume_after: int = 0


async def ingest(
    text: IO[str],
    reader_for: Callable[[list[str]], RowReader],
    publisher: Publisher | None,
    report: RejectReport,
    progress: Progress,
    encoding: str = "utf-8",
    history_days: float | None = None,
) -> Summary:
    """Read every row; publish each valid one through ``publisher`` (None: validate only).

    With ``history_days`` (the worker's history plus its grace), the rows older than that
    before the newest claim of their customer read so far are counted as beyond history.
    """
    summary = Summary()
    resume_after = publisher.resume_after if publisher is not None else 0
    checkpoint = publisher.checkpoint if publisher is not None else None
    newest: dict[str, date] = {}  # customer → the latest decided_date read
    it = rows(text, encoding)
    first = _header(it)
    reader = reader_for(first[1])
    summary.layout, summary.ignored_columns = reader.layout, reader.ignored
    pending: list[Any] = []
    last = first[0]  # the last line read
    for line, values in it:
        last = line
        summary.rows += 1
        try:
            if isinstance(values, Unreadable):
                raise InvalidClaim(values.reason, values.message)
            record = reader.record(line, values)
        except InvalidClaim as exc:
            summary.rejected += 1
            summary.reasons[exc.reason] = summary.reasons.get(exc.reason, 0) + 1
            shown = values.values if isinstance(values, Unreadable) else values
            report.add(line, exc.reason, exc.message, shown)
            continue
        if line <= resume_after:
            summary.already_published += 1
        elif publisher is not None:
            pending.append(await publisher.send(record))
            summary.published += 1
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
                if checkpoint is not None:
                    await checkpoint(line, summary.published + summary.already_published, False)
        else:
            summary.published += 1
        if history_days is not None and _beyond_history(newest, record, history_days):
            summary.beyond_history += 1
        if summary.rows % 1000 == 0:
            progress.tick(summary)
    await asyncio.gather(*pending)
    if checkpoint is not None:
        await checkpoint(last, summary.published + summary.already_published, True)
    progress.tick(summary, final=True)
    return summary


def _header(it: Iterator[tuple[int, list[str] | Unreadable]]) -> tuple[int, list[str]]:
    """The file's first row (its line and values), or IngestError when it has none."""
    first = next(it, None)
    if first is None:
        raise IngestError("the file is empty (no header row)")
    line, values = first
    if isinstance(values, Unreadable):
        raise IngestError(f"line {line}: the header cannot be read: {values.message}")
    return line, values


def _beyond_history(newest: dict[str, date], record: dict[str, Any], history_days: float) -> bool:
    """Whether ``record`` is older than its customer's history by the newest claim of that
    customer read before it (``newest``, kept up to date here)."""
    customer = record["customer_id"]
    decided = date.fromisoformat(str(record["decided_date"]).strip()[:10])
    latest = newest.get(customer)
    if latest is None or decided > latest:
        newest[customer] = decided
        return False
    return (latest - decided).days > history_days


def default_report_path(path: str) -> Path:
    """``claims.csv.gz`` → ``claims.rejects.csv`` next to it; stdin → ``./ingest.rejects.csv``."""
    if path == "-":
        return Path("ingest.rejects.csv")
    name = Path(path).name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return Path(path).with_name(f"{name}.rejects.csv")


@dataclass(frozen=True)
class Job:
    """One ingest: the file (``-``: standard input), where its rows go, how they are read."""

    path: str
    topic: str
    reference: Reference
    report_path: Path
    codec: ValueCodec  # encodes each record in ``value_format``
    bootstrap: str | None = None  # None: validate only, publish nothing
    customer: str | None = None
    encoding: str = "utf-8"
    value_format: str = "json"  # json or avro
    # The worker's history plus its grace: rows older than that count as beyond history.
    history_days: float | None = None
    # With a ledger topic, a file the ledger has as finished is not read again (unless
    # ``again``), and one it has as stopped part-way resumes after its last acknowledged line.
    ledger_topic: str | None = None
    again: bool = False
    quiet: bool = False


async def run(job: Job) -> Summary:
    """Ingest ``job.path`` into ``job.topic``."""
    from aiokafka import AIOKafkaProducer

    stack = contextlib.ExitStack()
    name = "standard input" if job.path == "-" else job.path
    producer = None
    report: RejectReport | None = None
    try:
        path = spool_stdin(stack) if job.path == "-" else job.path
        text, probe = open_text(path, stack, job.encoding)
        publisher: Publisher | None = None
        earlier: Entry | None = None
        if job.bootstrap is not None:
            producer = AIOKafkaProducer(bootstrap_servers=job.bootstrap, acks="all",
                                        linger_ms=20, max_batch_size=256 * 1024)  # fmt: skip
            await producer.start()
            publisher, earlier = await _publisher(job, job.bootstrap, producer, Path(path), name)
            if earlier is not None and earlier.complete:
                return Summary(earlier=earlier)
        report = RejectReport(job.report_path)
        try:
            summary = await ingest(
                text,
                lambda header: RowReader(header, job.customer, job.reference),
                publisher,
                report,
                Progress(probe, job.quiet),
                job.encoding,
                job.history_days,
            )
        except (EOFError, OSError) as exc:  # a truncated .gz, a read error: not a row's fault
            raise IngestError(f"{name}: unreadable: {exc}") from None
        summary.earlier = earlier
        return summary
    finally:
        if report is not None:
            report.close()
        stack.close()
        if producer is not None:
            await producer.stop()


async def _publisher(
    job: Job, bootstrap: str, producer: Any, path: Path, name: str
) -> tuple[Publisher, Entry | None]:
    """Sends keyed by claim id through ``producer``, and the ledger's say on the file."""

    async def send(record: dict[str, Any]) -> Any:
        key = str(record["claim_id"]).encode()
        value = encode_claim(record, job.value_format, job.codec, job.topic)
        return await producer.send(job.topic, value=value, key=key)

    if job.ledger_topic is None:
        return Publisher(send), None
    ledger = Ledger(bootstrap, job.ledger_topic, producer)
    digest = await asyncio.to_thread(file_digest, path)
    reading = {"customer": job.customer or "", "encoding": job.encoding,
               "format": job.value_format, "mappings": job.reference.version}  # fmt: skip
    key = ledger_key(job.topic, digest, reading)
    earlier = None if job.again else await ledger.lookup(key)

    async def checkpoint(line: int, published: int, finished: bool) -> None:
        await ledger.write(key, name, line, published, finished)

    resume_after = earlier.through_line if earlier is not None else 0
    return Publisher(send, checkpoint, resume_after), earlier
