"""Log lines: JSON with correlation ids for machines, text for people."""

import json
import logging

import pytest

from streams.observability.logs import JsonFormatter, TextFormatter, logging_config
from streams.settings import Settings


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("upstream.worker", logging.INFO, __file__, 1, "drift %s", ("x",),
                               None)  # fmt: skip
    record.__dict__.update(extra)
    return record


def test_json_line_has_the_fixed_fields_and_the_correlation_ids() -> None:
    """One object per line; ids given as ``extra`` are fields; other attributes are not."""
    line = json.loads(JsonFormatter("worker").format(_record(event_id="e1", claim_id="c9",
                                                               unrelated="no")))  # fmt: skip
    assert line["service"] == "worker"
    assert line["level"] == "info"
    assert line["logger"] == "upstream.worker"
    assert line["message"] == "drift x"
    assert (line["event_id"], line["claim_id"]) == ("e1", "c9")
    assert "unrelated" not in line
    assert line["ts"].endswith("+00:00")


def test_text_line_appends_the_ids() -> None:
    """People get the usual line with ``[key=value]`` at the end."""
    assert TextFormatter().format(_record(alert_id="a1")).endswith("drift x [alert_id=a1]")


@pytest.mark.parametrize(
    ("setting", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)]
)
def test_format_follows_upstream_log_format(
    monkeypatch: pytest.MonkeyPatch, setting: str, formatter: type[logging.Formatter]
) -> None:
    """UPSTREAM_LOG_FORMAT picks the formatter regardless of the terminal."""
    monkeypatch.setenv("UPSTREAM_LOG_FORMAT", setting)
    chosen = Settings().log_format
    assert logging_config("sink", "INFO", chosen)["formatters"]["upstream"]["()"] is formatter
