"""``upstream export``: drift events, alerts or claims of one customer as CSV, JSON lines or XLSX.

Rows stream from a server-side cursor, so a large export holds one batch in memory. The XLSX
workbook (roadmap F-2) has a Summary sheet (one statement's aggregate), a bar chart of it, and
a Details sheet with every row.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from sinks.rows import CLAIM_COLUMNS, DRIFT_COLUMNS
from sinks.tables import ALERT_FIELDS
from streams.domain.values import LEVELS

FORMATS = ("csv", "jsonl", "xlsx")


# Query parameter → the column it filters on, for the exports that have that column.
FILTERS = {"payer_id": "payer_id", "drift_type": "drift_type", "level": "severity_level",
           "status": "status"}  # fmt: skip


@dataclass(frozen=True)
class Export:
    """One kind of export: its columns, its rows' query and its summary's."""

    table: str
    columns: tuple[str, ...]
    time_column: str  # what --since / --until filter on
    order: tuple[str, ...]
    summary_title: str
    summary_columns: tuple[str, ...]
    # The summary's statement for a WHERE clause (parameters as :func:`where`'s); first column:
    # the category.
    summary_sql: Callable[[sql.Composable], sql.Composed]

    def filters(self) -> tuple[str, ...]:
        """The filters (keys of :data:`FILTERS`) this export's rows can be filtered by."""
        return tuple(name for name, column in FILTERS.items() if column in self.columns)

    def where(self, filters: Mapping[str, Sequence[str]]) -> sql.Composed:
        """Its WHERE clause: the customer, the time range, and each filter given (any of its
        values). Parameters: ``customer``, ``since``, ``until``, and ``f_<name>`` per filter."""
        return _where(self.time_column, filters)

    def rows_sql(self, filters: Mapping[str, Sequence[str]] | None = None) -> sql.Composed:
        """Every row in the time range (and the filters), in a stable order."""
        return sql.SQL("SELECT {cols} FROM {t} {where} ORDER BY {order}").format(
            cols=sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            t=sql.Identifier(self.table),
            where=self.where(filters or {}),
            order=sql.SQL(", ").join(map(sql.Identifier, self.order)),
        )


def _where(time_column: str, filters: Iterable[str] = ()) -> sql.Composed:
    """The customer, the time range, and each filter named (a key of :data:`FILTERS`)."""
    conditions = [sql.SQL("customer_id = %(customer)s"),
                  sql.SQL("{t} >= %(since)s AND {t} < %(until)s").format(
                      t=sql.Identifier(time_column))]  # fmt: skip
    conditions += [
        sql.SQL("{c} = ANY({p})").format(
            c=sql.Identifier(FILTERS[name]), p=sql.Placeholder(f"f_{name}")
        )
        for name in filters
    ]
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions)


def _counts(
    category: str, table: str, column: str, values: Sequence[str]
) -> Callable[[sql.Composable], sql.Composed]:
    """Rows per ``category`` and value of ``column``: one statement, values bound."""
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {c} = {v})").format(
            c=sql.Identifier(column), v=sql.Literal(v)
        )
        for v in values
    )
    return lambda where: sql.SQL(
        "SELECT {cat}, {counts} FROM {t} {where} GROUP BY 1 ORDER BY 1"
    ).format(cat=sql.Identifier(category), counts=counts, t=sql.Identifier(table), where=where)


def _claims_by_month(where: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "SELECT to_char(date_trunc('month', decided_date), 'YYYY-MM'), count(*), "
        "count(*) FILTER (WHERE outcome = 'DENIED'), "
        "round(count(*) FILTER (WHERE outcome = 'DENIED')::numeric / count(*), 4) "
        "FROM claim_records {where} GROUP BY 1 ORDER BY 1"
    ).format(where=where)


_STATUSES = ("active", "acknowledged", "resolved")
EXPORTS = {
    "drift-events": Export(
        "drift_events", DRIFT_COLUMNS, "detected_at", ("detected_at", "event_id"),
        "Drift events by payer and severity", ("payer_id", *LEVELS),
        _counts("payer_id", "drift_events", "severity_level", LEVELS),
    ),
    "alerts": Export(
        "alert_events", ALERT_FIELDS, "last_seen", ("last_seen", "alert_id"),
        "Alerts by payer and status", ("payer_id", *_STATUSES),
        _counts("payer_id", "alert_events", "status", _STATUSES),
    ),
    "claims": Export(
        "claim_records", CLAIM_COLUMNS, "decided_date", ("decided_date", "claim_id"),
        "Claims by month", ("month", "claims", "denied", "denial_rate"), _claims_by_month,
    ),
}  # fmt: skip


def _plain(value: Any) -> Any:
    """A value as CSV / JSON / Excel take it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | Decimal):
        return str(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return value


# Text a spreadsheet would read as a formula (OWASP, "CSV Injection"): a claim's payer name is
# whatever the upstream system sent, and an export is opened by people in Excel.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv(value: Any) -> Any:
    """A value for CSV: as :func:`_plain`, text that starts like a formula after a quote."""
    plain = _plain(value)
    if isinstance(value, str | list) and isinstance(plain, str) and plain.startswith(FORMULA_START):
        return "'" + plain
    return plain


def _excel(value: Any) -> Any:
    """Excel has no time zones: timestamps in UTC without one; amounts as numbers."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return value


class Source:
    """The rows and summary of one export, read from Postgres."""

    def __init__(
        self,
        url: str,
        export: Export,
        customer: str,
        since: Any,
        until: Any,
        filters: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://")
        self.export = export
        self.filters = dict(filters or {})
        self.params: dict[str, Any] = {"customer": customer, "since": since, "until": until}
        self.params |= {f"f_{name}": list(values) for name, values in self.filters.items()}

    def summary(self) -> list[tuple[Any, ...]]:
        """The rows of the workbook's Summary sheet."""
        statement = self.export.summary_sql(self.export.where(self.filters))
        with psycopg.connect(self.url) as conn:
            return list(conn.execute(statement, self.params).fetchall())

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """The detail rows, streamed from a server-side cursor."""
        with psycopg.connect(self.url) as conn, conn.cursor(name="upstream_export") as cur:
            cur.itersize = 5000
            cur.execute(self.export.rows_sql(self.filters), self.params)
            yield from cur


def _connected(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """``rows`` with its first row read already (so the query has run), same rows."""
    first = next(rows, None)
    return rows if first is None else itertools.chain([first], rows)


def write_csv(out: IO[str], columns: Sequence[str], rows: Iterator[tuple[Any, ...]],
              tick: Callable[[], None]) -> None:  # fmt: skip
    """Write ``rows`` as CSV, formula-like text neutralised."""
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv(v) for v in row])
        tick()


def write_jsonl(out: IO[str], columns: Sequence[str], rows: Iterator[tuple[Any, ...]],
                tick: Callable[[], None]) -> None:  # fmt: skip
    """Write ``rows`` as JSON lines."""
    for row in rows:
        out.write(json.dumps(dict(zip(columns, map(_plain, row), strict=True))) + "\n")
        tick()


def write_xlsx(path: Path, source: Source, title: str, tick: Callable[[], None]) -> None:
    """Write the Summary and Details sheets of ``source`` to ``path``."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.chart import BarChart
    from openpyxl.chart import Reference as Cells

    export = source.export
    summary = source.summary()
    book = Workbook(write_only=True)

    def text_as_text(value: Any) -> Any:  # openpyxl stores a string starting "=" as a formula
        value = _excel(value)
        if isinstance(value, str) and value.startswith("="):
            cell = WriteOnlyCell(details, value=value)
            cell.data_type = "s"
            return cell
        return value

    sheet = book.create_sheet("Summary")
    details = book.create_sheet("Details")
    sheet.append([title])
    sheet.append([export.summary_title])
    sheet.append(list(export.summary_columns))
    for row in summary:
        sheet.append([text_as_text(v) for v in row])
    if summary:
        chart = BarChart()
        chart.title = export.summary_title
        last_series = 2 if export.table == "claim_records" else len(export.summary_columns)
        chart.add_data(
            Cells(sheet, min_col=2, max_col=last_series, min_row=3, max_row=3 + len(summary)),
            titles_from_data=True,
        )
        chart.set_categories(Cells(sheet, min_col=1, min_row=4, max_row=3 + len(summary)))
        chart.width, chart.height = 24, 12
        sheet.add_chart(chart, "G3")
    details.append(list(export.columns))
    for row in source.rows():
        details.append([text_as_text(v) for v in row])
        tick()
    book.save(path)


def run(url: str, kind: str, customer: str, since: Any, until: Any, fmt: str, output: str,
        quiet: bool = False) -> int:  # fmt: skip
    """Write the export; returns the number of detail rows."""
    export = EXPORTS[kind]
    source = Source(url, export, customer, since, until)
    count = 0
    started = last = time.monotonic()

    def tick() -> None:
        nonlocal count, last
        count += 1
        now = time.monotonic()
        if not quiet and now - last >= 0.5:
            last = now
            rate = count / (now - started)
            print(f"\r{count:,} rows, {rate:,.0f} rows/s", end="", file=sys.stderr, flush=True)

    if fmt == "xlsx":
        if output == "-":
            raise ValueError("an XLSX workbook needs --output FILE")
        title = f"{kind} of {customer}, {since} to {until}"
        write_xlsx(Path(output), source, title, tick)
    else:
        write = write_csv if fmt == "csv" else write_jsonl
        rows = _connected(source.rows())  # a database error before anything is written
        if output == "-":
            out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
            write(out, export.columns, rows, tick)
            out.flush()
            out.detach()
        else:
            with Path(output).open("w", encoding="utf-8", newline="") as out_file:
                write(out_file, export.columns, rows, tick)
    if not quiet and count:
        print(file=sys.stderr)
    return count
