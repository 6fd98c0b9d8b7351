"""``upstream ingest``: claim exports in CSV (plain, gzip, or stdin) → ``claims.decided``.

Streams the file: one row at a time is read, validated with the worker's own rules
(:func:`streams.domain.claims.parse_claim`) and published keyed by ``claim_id``, so memory
stays flat for any file size. Rejected rows are never published; each goes to the report file
with its line number, reason and the row as read. A row that cannot be read — bytes that are
not text in the file's ``--encoding``, a field over the CSV field limit — is rejected the same
way, and reading goes on: only a file that cannot be opened, or has no usable header, stops
an ingest.

Two layouts are accepted, told apart by the header:

- the standard columns (``claim_id``, ``customer_id``, ``payer_id``, ``cpt_code``, …);
  ``denial_reason_codes`` as ``CO-97;CO-16`` or a JSON array;
- the legacy export ``payer,cpt,submitted_date,decided_date,outcome,allowed_amount``: payer
  names are normalised through the payer mapping, ``billed_amount`` is taken to be the allowed
  amount, and ``claim_id`` is derived from the customer, the line number and the row's content,
  so ingesting the same file again is a no-op downstream.

CPT groups come from the customer's mapping (:mod:`streams.reference`) unless a row has one.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

from streams.domain.claims import REQUIRED, InvalidClaim, parse_claim
from streams.kafka.ledger import Entry, Ledger, file_digest, ledger_key
from streams.reference import Reference

OPTIONAL = ("payer_name", "cpt_group", "decided_at", "paid_amount", "denial_reason_codes",
            "place_of_service")  # fmt: skip
COLUMNS = (*REQUIRED, *OPTIONAL)
LEGACY = ("payer", "cpt", "submitted_date", "decided_date", "outcome", "allowed_amount")
IN_FLIGHT = 2000  # sends awaited together; bounds memory and delivery-error latency
# Encodings billing systems export in, offered when a row is not text in the one given.
OTHER_ENCODINGS = ("cp1252", "latin-1")


class IngestError(Exception):
    """The file cannot be ingested at all (missing, unreadable, unknown header)."""


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


def open_text(
    path: str, stack: contextlib.ExitStack, encoding: str = "utf-8"
) -> tuple[IO[str], Callable[[], tuple[int, int]]]:
    """``path`` (``.gz`` decompressed) as text, and a (bytes read, size) probe.

    Bytes that are not ``encoding`` come through as lone surrogates, for :func:`rows` to
    refuse their row (a UTF-8 byte-order mark is skipped). Everything opened is closed by
    ``stack``.
    """
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise IngestError(f"unknown encoding {encoding!r}") from None
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    file = Path(path)
    if not file.is_file():
        raise IngestError(f"{path}: no such file")
    raw = stack.enter_context(file.open("rb"))
    size = file.stat().st_size
    binary: IO[bytes] = raw
    if path.endswith(".gz"):
        binary = cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw)))
    text = io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")
    stack.callback(text.detach)  # the binary streams are closed by their own entries
    return text, lambda: (raw.tell(), size)


def spool_stdin(stack: contextlib.ExitStack) -> str:
    """Standard input copied to a temporary file (removed by ``stack``), whose path is returned:
    the ledger needs the digest of the whole input before publishing any of it."""
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="upstream-ingest-"))
    spool = Path(folder) / "stdin.csv"
    with spool.open("wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return str(spool)


class RowReader:
    """Turns CSV rows into ClaimDecided records for one header layout."""

    def __init__(self, header: list[str], customer: str | None, reference: Reference) -> None:
        names = [h.strip().lower() for h in header]
        self.names = names
        if "claim_id" in names:
            self.layout = "full"
            needed = [c for c in REQUIRED if not (c == "customer_id" and customer)]
            expected = set(COLUMNS)
        elif set(LEGACY) <= set(names):
            self.layout = "legacy"
            if not customer:
                raise IngestError("a legacy export has no customer_id column: pass --customer")
            needed, expected = list(LEGACY), set(LEGACY)
        else:
            raise IngestError(
                "unknown header: expected the standard columns (claim_id, customer_id, "
                "payer_id, cpt_code, …) or the legacy ones ("
                + ",".join(LEGACY)
                + "), got "
                + ",".join(names)[:300]
            )
        missing = [c for c in needed if c not in names]
        if missing:
            raise IngestError(f"missing column(s): {', '.join(missing)}")
        self.ignored = tuple(n for n in names if n not in expected)
        self.customer = customer
        self.reference = reference

    def record(self, line: int, values: list[str]) -> dict[str, Any]:
        """The record of one row; :class:`InvalidClaim` when it is not a valid claim."""
        if len(values) != len(self.names):
            raise InvalidClaim(
                "bad_row", f"{len(values)} fields where the header has {len(self.names)}"
            )
        row = {n: v.strip() for n, v in zip(self.names, values, strict=True)}
        record = self._legacy(line, row) if self.layout == "legacy" else self._full(row)
        if not record.get("cpt_group"):
            record["cpt_group"] = self.reference.cpt.group_for(str(record.get("cpt_code") or ""))
        parse_claim(record)  # the worker's rules: a row it would dead-letter is not published
        return {k: v for k, v in record.items() if v is not None}

    def _full(self, row: dict[str, str]) -> dict[str, Any]:
        record: dict[str, Any] = {c: row.get(c) or None for c in COLUMNS}
        if self.customer:
            if record["customer_id"] and record["customer_id"] != self.customer:
                raise InvalidClaim(
                    "wrong_customer",
                    f"customer_id {record['customer_id'][:40]!r} is not --customer "
                    f"{self.customer!r}",
                )
            record["customer_id"] = self.customer
        record["denial_reason_codes"] = _codes(row.get("denial_reason_codes") or "")
        return record

    def _legacy(self, line: int, row: dict[str, str]) -> dict[str, Any]:
        assert self.customer is not None
        payer = self.reference.payers.resolve(row["payer"]) if row["payer"] else None
        content = "\x1f".join(row[c] for c in LEGACY)
        digest = hashlib.sha256(f"{self.customer}\x1e{line}\x1e{content}".encode()).hexdigest()
        return {
            "claim_id": f"legacy-{digest[:32]}",
            "customer_id": self.customer,
            "payer_id": payer.payer_id if payer else None,
            "payer_name": payer.payer_name if payer else None,
            "cpt_code": row["cpt"] or None,
            "submitted_date": row["submitted_date"] or None,
            "decided_date": row["decided_date"] or None,
            "outcome": row["outcome"].upper() or None,
            "billed_amount": row["allowed_amount"] or None,
            "allowed_amount": row["allowed_amount"] or None,
            "denial_reason_codes": [],
        }


def _codes(text: str) -> list[str]:
    if not text:
        return []
    if text.startswith("["):
        try:
            codes = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidClaim("bad_value", "denial_reason_codes is not a JSON array") from None
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise InvalidClaim("bad_value", "denial_reason_codes must be an array of strings")
        return codes
    return [c.strip() for c in text.split(";") if c.strip()]


class RejectReport:
    """The rejected rows as CSV (line, reason, message, row), created on the first one.

    An earlier run's report at the same path is removed, so the file exists exactly when this
    run rejected rows.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)  # a report left by an earlier run would mislead
        self._file: IO[str] | None = None
        self._writer: Any = None

    def add(self, line: int, reason: str, message: str, values: list[str]) -> None:
        """Report one rejected row."""
        if self._writer is None:
            self._file = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["line", "reason", "message", "row"])
        raw = io.StringIO()
        csv.writer(raw).writerow(values)
        self._writer.writerow([line, reason, message, raw.getvalue().rstrip("\r\n")])

    def close(self) -> None:
        """Close the report file, if one was written."""
        if self._file is not None:
            self._file.close()


class Unreadable(NamedTuple):
    """A row that could not be read as text and CSV: why, and what of it could be."""

    reason: str  # "bad_encoding" or "bad_row"
    message: str
    values: list[str]


def rows(text: IO[str], encoding: str = "utf-8") -> Iterator[tuple[int, list[str] | Unreadable]]:
    """(line number, fields) of each non-empty row, or why it cannot be read; the header is
    the first row. Reading goes on past an unreadable row."""
    reader = csv.reader(text)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a field over the limit: the rest of its line is skipped
            yield reader.line_num, Unreadable("bad_row", str(exc), [])
            continue
        if not values or not any(v.strip() for v in values):
            continue
        if any(_SURROGATE.search(v) for v in values):
            shown = [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                     for v in values]  # fmt: skip
            others = " or ".join(e for e in OTHER_ENCODINGS if e != encoding)
            yield reader.line_num, Unreadable(
                "bad_encoding", f"bytes that are not {encoding} text (try --encoding {others})",
                shown,
            )  # fmt: skip
            continue
        yield reader.line_num, values


_SURROGATE = re.compile("[\udc80-\udcff]")  # a byte the encoding could not read


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
    first = next(it, None)
    if first is None:
        raise IngestError("the file is empty (no header row)")
    if isinstance(first[1], Unreadable):
        raise IngestError(f"line {first[0]}: the header cannot be read: {first[1].message}")
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
        if history_days is not None:
            customer = record["customer_id"]
            decided = date.fromisoformat(str(record["decided_date"]).strip()[:10])
            latest = newest.get(customer)
            if latest is None or decided > latest:
                newest[customer] = decided
            elif (latest - decided).days > history_days:
                summary.beyond_history += 1
        if summary.rows % 1000 == 0:
            progress.tick(summary)
    await asyncio.gather(*pending)
    if checkpoint is not None:
        await checkpoint(last, summary.published + summary.already_published, True)
    progress.tick(summary, final=True)
    return summary


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
    encode: Callable[[dict[str, Any]], bytes]
    bootstrap: str | None = None  # None: validate only, publish nothing
    customer: str | None = None
    encoding: str = "utf-8"
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
        return await producer.send(job.topic, value=job.encode(record), key=key)

    if job.ledger_topic is None:
        return Publisher(send), None
    ledger = Ledger(bootstrap, job.ledger_topic, producer)
    key = ledger_key(job.topic, job.customer, file_digest(path))
    earlier = None if job.again else await ledger.lookup(key)

    async def checkpoint(line: int, published: int, finished: bool) -> None:
        await ledger.write(key, name, line, published, finished)

    resume_after = earlier.through_line if earlier is not None else 0
    return Publisher(send, checkpoint, resume_after), earlier


def write_csv(path: str, records: Iterable[dict[str, Any]]) -> int:
    """Write ClaimDecided records as an ingestible CSV (``.gz`` compressed, ``-`` stdout)."""
    with contextlib.ExitStack() as stack:
        if path == "-":
            binary: IO[bytes] = sys.stdout.buffer
        elif path.endswith(".gz"):
            binary = cast(IO[bytes], stack.enter_context(gzip.open(path, "wb")))
        else:
            binary = stack.enter_context(Path(path).open("wb"))
        out = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        count = 0
        for record in records:
            codes = ";".join(record.get("denial_reason_codes") or ())
            row = {**record, "denial_reason_codes": codes}
            writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])
            count += 1
        out.flush()
        out.detach()  # leave the binary stream to its owner
    return count
