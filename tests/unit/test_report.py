"""The PDF report's counts and choices of rows, from fake sources (no Postgres)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pypdf import PdfReader

from notifier import report
from sinks.export import EXPORTS
from sinks.rows import DRIFT_COLUMNS
from sinks.tables import ALERT_FIELDS

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class _Rows:
    """What the report reads of an export source: its export and its rows, in the export's
    column order."""

    def __init__(self, kind: str, records: list[dict[str, Any]]) -> None:
        self.export = EXPORTS[kind]
        self.records = records

    def rows(self) -> Iterator[tuple[Any, ...]]:
        return (tuple(r.get(c) for c in self.export.columns) for r in self.records)


def _alert(i: int, level: str) -> dict[str, Any]:
    return {**dict.fromkeys(ALERT_FIELDS), "alert_id": f"a{i}", "payer_id": f"payer-{i}",
            "cpt_group": "radiology", "drift_type": "denial_rate", "status": "active",
            "severity_level": level, "occurrence_count": 1,
            "last_seen": T0 + timedelta(hours=i)}  # fmt: skip


def _event(i: int) -> dict[str, Any]:
    return {**dict.fromkeys(DRIFT_COLUMNS), "event_id": f"e{i}", "payer_id": f"payer-e{i}",
            "cpt_group": "lab", "drift_type": "decision_lag", "severity_level": "warning",
            "baseline_value": 4.0, "current_value": 9.5, "current_n": 40, "q_value": 0.001,
            "detected_at": T0 + timedelta(minutes=i)}  # fmt: skip


def _text(pdf: bytes) -> str:
    """The report's words, one space apart (the PDF breaks lines where it likes)."""
    pages = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return " ".join(pages.split()) + " "


def test_past_the_row_limit_the_most_severe_and_the_latest_are_shown_and_all_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counts cover every row; the table keeps the most severe alerts (then the latest seen)
    and the latest drift events, first."""
    monkeypatch.setattr(report, "REPORT_ROWS_MAX", 3)
    # Oldest first, as the export reads them: the two critical alerts come last.
    alerts = [_alert(i, "info") for i in range(5)] + [_alert(5, "critical"),
                                                     _alert(6, "critical")]  # fmt: skip
    events = [_event(i) for i in range(6)]
    pdf = report.pdf_report("acme", T0, (date(2026, 2, 23), date(2026, 3, 1)),
                            _Rows("alerts", alerts), _Rows("drift-events", events))  # type: ignore[arg-type]  # fmt: skip
    text = _text(pdf)
    assert "Open alerts: 7 (2 critical, 0 warning, 5 info)" in text
    assert "2026-02-23 to 2026-03-01 (event time" in text
    assert "latest drift event): 6." in text
    shown = [f"payer-{i}" for i in range(7) if f"payer-{i} " in text]
    assert shown == ["payer-4", "payer-5", "payer-6"]  # both critical, then the latest info
    assert text.index("payer-6") < text.index("payer-5") < text.index("payer-4")
    assert [e for e in ("payer-e5", "payer-e4", "payer-e3", "payer-e2") if e in text] == [
        "payer-e5", "payer-e4", "payer-e3"
    ]  # fmt: skip
    assert text.index("payer-e5") < text.index("payer-e3")
    assert text.count("Only the first 3 are shown.") == 2
    assert "9.5 d" in text


def test_text_the_core_font_cannot_write_and_empty_sections_do_not_fail() -> None:
    alerts = [{**_alert(1, "warning"), "payer_id": "Zahlungsträger ☃", "assignee": None}]
    pdf = report.pdf_report("acme", T0, (date(2026, 2, 23), date(2026, 3, 1)),
                            _Rows("alerts", alerts), _Rows("drift-events", []))  # type: ignore[arg-type]  # fmt: skip
    text = _text(pdf)
    assert "Zahlungsträger ?" in text
    assert "None." in text
