"""Claim exports as CSV: opened (plain, gzip, or standard input spooled to a file), decoded
row by row with line numbers, read in either layout, and the report of the rows rejected.

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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

from streams.domain.claims import REQUIRED, InvalidClaim, parse_claim
from streams.reference import Reference

OPTIONAL = ("payer_name", "cpt_group", "decided_at", "paid_amount", "denial_reason_codes",
            "place_of_service")  # fmt: skip
COLUMNS = (*REQUIRED, *OPTIONAL)
LEGACY = ("payer", "cpt", "submitted_date", "decided_date", "outcome", "allowed_amount")
# Encodings billing systems export in, offered when a row is not text in the one given.
OTHER_ENCODINGS = ("cp1252", "latin-1")


class IngestError(Exception):
    """The file cannot be ingested at all (missing, unreadable, unknown header)."""


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
