"""Messages of the worker's internal topics, and dead-letter headers.

``<app>-claims-by-key`` carries ``{"source", "sources", "claim"}`` (a claim and the claims
partition it came from) or ``{"source", "sources", "max_event_ms"}`` (that partition's
progress). ``<app>-alert-input`` carries ``{"kind": "evaluation", ...}`` or
``{"kind": "command", "command": {...}}``, keyed by ``customer_id``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.domain.alerts import AlertCommand
from streams.domain.claims import parse_claim
from streams.domain.events import KeyEvaluated
from streams.domain.processor import Arrival, ClaimFromSource, SourceProgressed
from streams.records import to_epoch_ms


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def arrival(envelope: Mapping[str, Any]) -> Arrival:
    """Decode a message of the by-key topic (raises InvalidClaim, KeyError, ValueError)."""
    source, sources = int(envelope["source"]), int(envelope["sources"])
    if "claim" in envelope:
        return ClaimFromSource(source, sources, parse_claim(envelope["claim"]))
    return SourceProgressed(source, sources, int(envelope["max_event_ms"]))


def evaluation_message(evaluation: KeyEvaluated) -> bytes:
    """An alert-input message carrying a key evaluation."""
    return dumps({"kind": "evaluation", **evaluation.to_dict()})


def command_message(record: Mapping[str, Any]) -> bytes:
    """An alert-input message carrying an AlertCommand record.

    ``issued_at`` goes as epoch milliseconds: an Avro record carries a datetime, which JSON
    would turn into a string the alerts agent cannot read back.
    """
    command = {**record, "issued_at": to_epoch_ms(record.get("issued_at") or 0)}
    return dumps({"kind": "command", "command": command})


def alert_input(envelope: Mapping[str, Any]) -> KeyEvaluated | AlertCommand:
    """Decode an alert-input message."""
    if envelope.get("kind") == "command":
        return command_from_record(envelope["command"])
    return KeyEvaluated.from_dict(dict(envelope))


def command_from_record(record: Mapping[str, Any]) -> AlertCommand:
    """An AlertCommand from its record (raises KeyError / ValueError / TypeError)."""
    verdict, note = record.get("verdict"), record.get("note")
    return AlertCommand(
        command_id=str(record["command_id"]),
        customer_id=str(record["customer_id"]),
        alert_id=str(record["alert_id"]),
        command=str(record["command"]),
        operator=str(record["operator"]),
        verdict=None if verdict is None else str(verdict),
        note=None if note is None else str(note),
        issued_at_ms=to_epoch_ms(record.get("issued_at") or 0),
    )


def dlq_headers(message: Any, stage: str, reason: str, detail: str) -> dict[str, bytes]:
    """The dead-letter headers of DESIGN.md for a Kafka ``message``."""
    return {
        "error.stage": stage.encode(),
        "error.reason": reason.encode(),
        "error.message": detail.encode("utf-8", "replace")[:1000],
        "source.topic": str(message.topic).encode(),
        "source.partition": str(message.partition).encode(),
        "source.offset": str(message.offset).encode(),
    }
