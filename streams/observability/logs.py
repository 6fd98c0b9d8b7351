"""Log lines: one JSON object per line for machines, readable text on a terminal.

Every line has ``ts``, ``level``, ``service``, ``logger`` and ``message``; correlation ids
passed as ``extra`` (:data:`CORRELATION_FIELDS`) become fields of their own, so one claim can
be followed into its drift event and its alert across the worker, the sink and the notifier:
``claim_id`` → ``event_id`` → ``alert_id``. ``UPSTREAM_LOG_FORMAT`` = ``json`` | ``text`` |
``auto`` (default: text when stderr is a terminal).
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import Any

CORRELATION_FIELDS = (
    "claim_id", "event_id", "alert_id", "command_id", "customer_id", "payer_id", "cpt_group",
    "drift_type", "transition", "version", "seq", "clients",
)  # fmt: skip


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in CORRELATION_FIELDS if hasattr(record, k)}


class JsonFormatter(logging.Formatter):
    """A JSON object per record: the fixed fields, the correlation ids, any exception."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [key=value …]`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, with the correlation ids appended."""
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return text


def logging_config(service: str, level: str = "INFO", log_format: str = "auto") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict for ``service`` (also handed to Faust);
    ``log_format`` is ``json``, ``text`` or ``auto`` (text on a terminal, else JSON)."""
    as_json = log_format == "json" or (log_format != "text" and not sys.stderr.isatty())
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "service": service} if as_json else {"()": TextFormatter}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"upstream": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "upstream",
                "stream": "ext://sys.stderr",
            },
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # One line per Alembic plugin at every start says nothing an operator needs.
        "loggers": {"alembic.runtime.plugins": {"level": "WARNING"}},
    }


def configure(service: str, level: str = "INFO", log_format: str = "auto") -> None:
    """Send this process's logs to stderr in the chosen format."""
    logging.config.dictConfig(logging_config(service, level, log_format))
