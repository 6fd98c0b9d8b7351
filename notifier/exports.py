"""Downloads over HTTP, with the API's tokens, tenant check and rate limit, each one audited.

``/api/export/{kind}.{format}``: a customer's drift events, alerts or claims (``kind``) as CSV,
JSON lines or XLSX, in a date range and by payer, drift type, level and status. CSV and JSON
lines stream from a server-side cursor as they are read, so a claim export of any size holds one
chunk in memory; an XLSX workbook (a Summary sheet with its chart, a Details sheet) is written
to a temporary file row by row and sent from there. ``/api/report.pdf``: the open alerts and the
week's drift events (the seven days of event time up to the customer's latest drift event:
feeds are late, so the wall clock's week may hold none) as a PDF report.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import psycopg
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from notifier.api import ApiError, HttpApi, error_response, unavailable
from notifier.hub import psycopg_conninfo
from notifier.params import ExportParams
from notifier.report import pdf_report
from sinks.audit import record_audit
from sinks.export import EXPORTS, FILTERS, Export, Source, _connected, _csv, _plain, write_xlsx

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
PDF = "application/pdf"
CHUNK_BYTES = 64 * 1024
EARLIEST, LATEST = date(1970, 1, 1), date(9999, 12, 31)
REPORT_DAYS = 7  # the report's drift events: a week of event time
DOWNLOADS_AT_ONCE = 4  # per notifier; a fifth is answered 429
_LATEST_DRIFT = "SELECT max(detected_at) FROM drift_events WHERE customer_id = %s"


@dataclass(frozen=True)
class ExportAsked:
    """One export as asked for: what, how, whose, when and which rows."""

    kind: str
    fmt: str
    customer: str
    since: date
    until: date  # the day after the last
    filters: Mapping[str, Sequence[str]]

    @property
    def export(self) -> Export:
        """What is exported."""
        return EXPORTS[self.kind]

    @property
    def filename(self) -> str:
        """The download's name."""
        until = "" if self.until == LATEST else f"_to_{self.until}"
        since = "" if self.since == EARLIEST else f"_from_{self.since}"
        return f"{self.customer}_{self.kind}{since}{until}.{self.fmt}"


def parse_export(
    kind: str, fmt: str, customer: str, query: Mapping[str, Sequence[str]]
) -> ExportAsked:
    """The export of ``kind`` in format ``fmt`` asked for, with its query; ApiError 400/404."""
    name = f"{kind}.{fmt}"
    if kind not in EXPORTS or fmt not in FORMATS:
        kinds, formats = ", ".join(EXPORTS), ", ".join(FORMATS)
        raise ApiError(HTTPStatus.NOT_FOUND, f"no export {name}: kinds {kinds}; formats {formats}")
    params = HttpApi.params(ExportParams, query)
    since, until = params.since or EARLIEST, params.until or LATEST
    if since >= until:
        raise ApiError(HTTPStatus.BAD_REQUEST, "since must be before until")
    filters: dict[str, list[str]] = {}
    for param in FILTERS:
        values: list[str] = getattr(params, param)
        if not values:
            continue
        if param not in EXPORTS[kind].filters():
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{kind} cannot be filtered by {param}")
        filters[param] = values
    return ExportAsked(kind, fmt, customer, since, until, filters)


def _chunks(asked: ExportAsked, rows: Iterator[tuple[Any, ...]]) -> Generator[bytes, None, None]:
    """The CSV or JSON lines of ``rows``, in chunks of about :data:`CHUNK_BYTES`."""
    columns = asked.export.columns
    out = io.StringIO()
    writer = csv.writer(out)
    if asked.fmt == "csv":
        writer.writerow(columns)
    for row in rows:
        if asked.fmt == "csv":
            writer.writerow([_csv(v) for v in row])
        else:
            out.write(json.dumps(dict(zip(columns, map(_plain, row), strict=True))) + "\n")
        if out.tell() >= CHUNK_BYTES:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def _xlsx(source: Source, title: str) -> Path:
    """The workbook, written to a temporary file (the caller removes it)."""
    handle, name = tempfile.mkstemp(prefix="upstream-export-", suffix=".xlsx")
    os.close(handle)
    try:
        write_xlsx(Path(name), source, title, lambda: None)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


class Exports:
    """Answers the export and report downloads for :class:`HttpApi`'s operators."""

    def __init__(self, api: HttpApi) -> None:
        self.api = api
        # The exports read with psycopg directly: a server-side cursor, no pool held meanwhile.
        self.conninfo = psycopg_conninfo(api.engine.url.render_as_string(hide_password=False))
        # Each download holds a Postgres connection and a thread while it runs: a few at once.
        self._running = 0

    async def export(self, request: Request) -> Response:
        """``/api/export/{kind}.{format}``: the rows as a download."""
        try:
            operator, query = self.api.authorize(request)
            kind, fmt = request.path_params["kind"], request.path_params["format"]
            asked = parse_export(kind, fmt, operator.customer_id, query)
            headers = _attachment(asked.filename)
            source = Source(self.conninfo, asked.export, asked.customer, asked.since,
                            asked.until, asked.filters)  # fmt: skip
            audit = (request, operator.operator, asked.customer, f"export.{asked.kind}",
                     asked.filename, _detail(asked))  # fmt: skip
            self._take_slot()
        except ApiError as exc:
            return error_response(exc)
        try:
            if asked.fmt == "xlsx":
                path = await asyncio.to_thread(_xlsx, source, _title(asked))
                try:
                    await self._audit(*audit)
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
                removed = BackgroundTask(_removed, path, self._release_slot)
                return FileResponse(
                    path, media_type=FORMATS["xlsx"], headers=headers, background=removed
                )
            # The query runs before the answer starts: a database error is a 503, not a cut file.
            chunks = _chunks(asked, await asyncio.to_thread(lambda: _connected(source.rows())))
            await self._audit(*audit)
        except (ApiError, psycopg.OperationalError) as exc:
            self._release_slot()
            return error_response(exc if isinstance(exc, ApiError) else unavailable())
        except BaseException:
            self._release_slot()
            raise
        body = _streamed(chunks, self._release_slot)
        return StreamingResponse(body, media_type=FORMATS[asked.fmt], headers=headers)

    async def report(self, request: Request) -> Response:
        """``/api/report.pdf``: the open alerts and the week's drift events."""
        try:
            operator, _ = self.api.authorize(request)
            now = datetime.now(UTC)
            filename = f"{operator.customer_id}_report_{now.date()}.pdf"
            self._take_slot()
            try:
                body = await asyncio.to_thread(self._report, operator.customer_id, now)
            finally:
                self._release_slot()
            await self._audit(request, operator.operator, operator.customer_id, "export.report",
                              filename, {})  # fmt: skip
        except ApiError as exc:
            return error_response(exc)
        except psycopg.OperationalError:
            return error_response(unavailable())
        return Response(body, media_type=PDF, headers=_attachment(filename))

    def _take_slot(self) -> None:
        """One of the :data:`DOWNLOADS_AT_ONCE` downloads, or a 429 when all are running."""
        if self._running >= DOWNLOADS_AT_ONCE:
            raise ApiError(HTTPStatus.TOO_MANY_REQUESTS, "too many downloads at once; retry",
                           {"Retry-After": "5"})  # fmt: skip
        self._running += 1

    def _release_slot(self) -> None:
        self._running -= 1

    def _report(self, customer: str, now: datetime) -> bytes:
        with psycopg.connect(self.conninfo) as conn:
            row = conn.execute(_LATEST_DRIFT, (customer,)).fetchone()
        latest = row[0].astimezone(UTC).date() if row and row[0] else now.date()
        week = (latest - timedelta(days=REPORT_DAYS - 1), latest)
        alerts = Source(self.conninfo, EXPORTS["alerts"], customer, EARLIEST, LATEST,
                        {"status": ["active", "acknowledged"]})  # fmt: skip
        drift = Source(self.conninfo, EXPORTS["drift-events"], customer, week[0],
                       week[1] + timedelta(days=1))  # fmt: skip
        return pdf_report(customer, now, week, alerts, drift)

    async def _audit(
        self, request: Request, actor: str, customer: str, action: str, subject: str,
        detail: Mapping[str, Any],
    ) -> None:  # fmt: skip
        origin = request.client.host if request.client else "unknown"
        try:
            async with await psycopg.AsyncConnection.connect(self.conninfo) as conn:
                await record_audit(conn, customer_id=customer, actor=actor, action=action,
                                   subject=subject, origin=origin, detail=detail)  # fmt: skip
        except psycopg.OperationalError:
            raise unavailable() from None


def _attachment(filename: str) -> dict[str, str]:
    """A download's headers. The name is made of the customer id (from a token) and fixed
    words: anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return {"Content-Disposition": f'attachment; filename="{safe}"', "Cache-Control": "no-store"}


def _title(asked: ExportAsked) -> str:
    """The workbook's title line: what, whose, which dates."""
    since = "" if asked.since == EARLIEST else f"from {asked.since}"
    until = "" if asked.until == LATEST else f"before {asked.until}"
    dates = " ".join(part for part in (since, until) if part) or "all dates"
    return f"{asked.kind} of {asked.customer}, {dates}"


async def _streamed(
    chunks: Generator[bytes, None, None], release: Callable[[], None]
) -> AsyncIterator[bytes]:
    """``chunks``, each read in a thread (a server-side cursor's fetches block); its cursor and
    connection closed, and the download's slot released, however the answer ends (a client
    that goes away included)."""
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        release()
        with contextlib.suppress(Exception):  # a read still running in its thread: left to GC
            await asyncio.to_thread(chunks.close)


def _removed(path: Path, release: Callable[[], None]) -> None:
    """After a workbook is sent: the file removed, the slot released."""
    release()
    path.unlink(missing_ok=True)


def _detail(asked: ExportAsked) -> dict[str, Any]:
    """What the audit log keeps of an export: its format, range and filters."""
    return {"format": asked.fmt, "since": asked.since, "until": asked.until, **asked.filters}
