"""The PDF summary report of a customer: its open alerts and the week's drift events (fpdf2)."""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from fpdf import FPDF
from fpdf.fonts import FontFace

from sinks.export import Source
from streams.domain.values import LEVELS

REPORT_ROWS_MAX = 500  # rows per table; the report says how many more there are
_HEADING = FontFace(emphasis="BOLD", fill_color=(234, 238, 242))


def _text(value: Any) -> str:
    """``value`` as the PDF's core font can write it (Latin-1; anything else as "?")."""
    return str(value).encode("latin-1", "replace").decode("latin-1")


def _value(drift_type: str, value: Any) -> str:
    """A drift event's value as its type reads."""
    if value is None:
        return "-"
    number = float(value)
    if drift_type == "denial_rate":
        return f"{100 * number:.1f}%"
    if drift_type == "decision_lag":
        return f"{number:.1f} d"
    return f"${number:,.2f}"


def _day(value: Any) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else str(value)


def _records(source: Source) -> Iterator[dict[str, Any]]:
    """The source's rows, as column → value."""
    columns = source.export.columns
    return (dict(zip(columns, row, strict=True)) for row in source.rows())


def _most_severe(alerts: Source) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The :data:`REPORT_ROWS_MAX` most severe open alerts (then the latest seen), and how many
    of each level there are in all."""
    levels: Counter[str] = Counter()
    rank = {level: i for i, level in enumerate(reversed(LEVELS))}

    def counted() -> Iterator[dict[str, Any]]:
        for alert in _records(alerts):
            levels[alert["severity_level"]] += 1
            yield alert

    def order(alert: dict[str, Any]) -> tuple[int, float, str]:
        return (rank.get(alert["severity_level"], len(rank)),
                -alert["last_seen"].timestamp(), str(alert["alert_id"]))  # fmt: skip

    return heapq.nsmallest(REPORT_ROWS_MAX, counted(), key=order), levels


def _latest(drift: Source) -> tuple[list[dict[str, Any]], int]:
    """The :data:`REPORT_ROWS_MAX` latest drift events, latest first, and how many in all."""
    latest: deque[dict[str, Any]] = deque(maxlen=REPORT_ROWS_MAX)
    total = 0
    for event in _records(drift):  # in detected_at order
        latest.append(event)
        total += 1
    return list(reversed(latest)), total


ALERT_HEADER = ["level", "status", "payer", "CPT group", "drift", "occurrences",
                "claims decided through", "acknowledged by", "assignee"]  # fmt: skip
DRIFT_HEADER = ["closed on", "payer", "CPT group", "drift", "level", "baseline", "current",
                "claims (current)", "q value"]  # fmt: skip


def _alert_row(a: dict[str, Any]) -> list[str]:
    return [a["severity_level"], a["status"], a["payer_id"], a["cpt_group"], a["drift_type"],
            str(a["occurrence_count"]), _day(a["last_seen"]), a["acknowledged_by"] or "-",
            a["assignee"] or "-"]  # fmt: skip


def _drift_row(e: dict[str, Any]) -> list[str]:
    kind = e["drift_type"]
    return [_day(e["detected_at"]), e["payer_id"], e["cpt_group"], kind, e["severity_level"],
            _value(kind, e["baseline_value"]), _value(kind, e["current_value"]),
            str(e["current_n"]), f"{float(e['q_value']):.2g}"]  # fmt: skip


def _table(pdf: FPDF, title: str, header: list[str], rows: list[list[str]], *, more: bool) -> None:
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 10, _text(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=8)
    if not rows:
        pdf.cell(0, 6, "None.", new_x="LMARGIN", new_y="NEXT")
        return
    with pdf.table(headings_style=_HEADING, line_height=5, first_row_as_headings=True) as table:
        for cells in [header, *rows]:
            line = table.row()
            for cell in cells:
                line.cell(_text(cell))
    if more:
        pdf.cell(0, 6, f"Only the first {REPORT_ROWS_MAX} are shown.", new_x="LMARGIN",
                 new_y="NEXT")  # fmt: skip


def pdf_report(
    customer: str, now: datetime, week: tuple[date, date], alerts: Source, drift: Source
) -> bytes:
    """The report as of ``now``: open ``alerts`` (most severe first) and the ``drift`` events
    of ``week`` (its first and last day, in event time)."""
    shown_alerts, levels = _most_severe(alerts)
    shown_events, events = _latest(drift)
    open_alerts = sum(levels.values())
    pdf = FPDF(orientation="landscape")
    pdf.set_title(f"Upstream report: {customer}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _text(f"Upstream report: {customer}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    counts = ", ".join(f"{levels[level]} {level}" for level in reversed(LEVELS))
    summary = (f"Generated {now:%Y-%m-%d %H:%M} UTC. Open alerts: {open_alerts} ({counts}). "
               f"Drift events of {week[0]} to {week[1]} (event time: the claims' decision dates, "
               f"up to the latest drift event): {events}.")  # fmt: skip
    pdf.multi_cell(0, 6, _text(summary), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    _table(pdf, "Open alerts, most severe first", ALERT_HEADER,
           [_alert_row(a) for a in shown_alerts], more=open_alerts > REPORT_ROWS_MAX)  # fmt: skip
    pdf.ln(4)
    title = f"Drift events of {week[0]} to {week[1]}, latest first"
    _table(pdf, title, DRIFT_HEADER, [_drift_row(e) for e in shown_events],
           more=events > REPORT_ROWS_MAX)  # fmt: skip
    return bytes(pdf.output())
