"""Messages of the worker's internal topics, and dead-letter headers.

``<app>-claims-by-key`` carries, per route batch and windows partition,
``{"sources": N, "claims": [[source, offset, claim], ...]}``: the batch's claims for that
partition in their order, each with the claims partition and offset it was read at (which
the windows use to skip a redelivery, and a dead letter to find the original) and the
validated claim packed by :meth:`Claim.to_compact`. ``<app>-alert-input`` carries
``{"kind": "evaluation", ...}`` or ``{"kind": "command", "command": {...}}``, keyed by
``customer_id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from streams.domain.alerts import AlertCommand
from streams.domain.claims import Claim
from streams.domain.events import KeyEvaluated
from streams.domain.processor import ClaimFromSource
from streams.kafka.records import to_epoch_ms


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


class Origin(NamedTuple):
    """Where a routed claim was read: a dead letter of it carries that message.

    A named tuple: one is built per claim the windows read (a frozen dataclass costs more).
    """

    topic: str
    partition: int
    offset: int


def routed_batch(sources: int, claims: Iterable[tuple[int, int, Claim]]) -> bytes:
    """A by-key message of ``(source, offset, claim)`` items.

    Written by orjson (~5x the standard library's speed; one message carries up to a thousand
    claims), or by the standard library for what orjson refuses (an integer beyond 64 bits).
    """
    envelope = {
        "sources": sources,
        "claims": [[source, offset, claim.to_compact()] for source, offset, claim in claims],
    }
    try:
        return orjson.dumps(envelope)
    except TypeError:
        return dumps(envelope)


def loads(value: bytes) -> Any:
    """A JSON value of an internal topic (raises ValueError)."""
    return orjson.loads(value)


def arrivals(envelope: Mapping[str, Any]) -> list[ClaimFromSource]:
    """Decode a message of the by-key topic (raises InvalidClaim, KeyError, ValueError, ...)."""
    sources = int(envelope["sources"])
    return [
        ClaimFromSource(int(source), sources, int(offset), Claim.from_compact(packed))
        for source, offset, packed in envelope["claims"]
    ]


def evaluation_message(evaluation: KeyEvaluated) -> bytes:
    """An alert-input message carrying a key evaluation."""
    return dumps({"kind": "evaluation", **evaluation.to_dict()})


def command_message(record: Mapping[str, Any]) -> bytes:
    """An alert-input message carrying an AlertCommand record.

    ``issued_at`` goes as epoch milliseconds: an Avro record carries a datetime, which JSON
    would turn into a string the alerts stage cannot read back.
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
    verdict, note, assignee = record.get("verdict"), record.get("note"), record.get("assignee")
    return AlertCommand(
        command_id=str(record["command_id"]),
        customer_id=str(record["customer_id"]),
        alert_id=str(record["alert_id"]),
        command=str(record["command"]),
        operator=str(record["operator"]),
        verdict=None if verdict is None else str(verdict),
        note=None if note is None else str(note),
        issued_at_ms=to_epoch_ms(record.get("issued_at") or 0),
        assignee=None if assignee is None else str(assignee),
    )


# The most key and value bytes a dead letter copies. Producers refuse a record over 1,000,000
# bytes (headers and framing included), and a consumer can read one up to the broker's limit
# (1 MiB): a record between the two, or any larger one a broker was set to take, is
# dead-lettered by reference instead (see :func:`dead_letter`).
DLQ_COPY_MAX_BYTES = 990_000
DLQ_KEY_BY_REFERENCE_BYTES = 1024  # a record dead-lettered by reference keeps a key this short


class DeadLetter(NamedTuple):
    """What goes to a dead-letter topic for one record: its key, value and headers."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def dead_letter(message: Any, stage: str, reason: str, detail: str) -> DeadLetter:
    """The dead letter of a Kafka ``message``: a copy of its key and value with the headers of
    :func:`dlq_headers`; by reference if the copy would be too large to send.

    By reference: no value (and no key, if the key alone is long), ``source.size`` and
    ``error.by_reference: true``; ``source.topic``, ``source.partition`` and ``source.offset``
    say where the record is, for as long as that topic keeps it.
    """
    key, value = message.key, message.value
    headers = dlq_headers(message, stage, reason, detail)
    size = len(key or b"") + len(value or b"")
    if size <= DLQ_COPY_MAX_BYTES:
        return DeadLetter(key, value, headers)
    headers["source.size"] = str(size).encode()
    headers["error.by_reference"] = b"true"
    if key is not None and len(key) > DLQ_KEY_BY_REFERENCE_BYTES:
        key = None
    return DeadLetter(key, None, headers)


def dlq_headers(message: Any, stage: str, reason: str, detail: str) -> dict[str, bytes]:
    """The dead-letter headers for a Kafka ``message`` (docs/semantics.md, "Dead letters")."""
    return {
        "error.stage": stage.encode(),
        "error.reason": reason.encode(),
        "error.message": detail.encode("utf-8", "replace")[:1000],
        "source.topic": str(message.topic).encode(),
        "source.partition": str(message.partition).encode(),
        "source.offset": str(message.offset).encode(),
    }
