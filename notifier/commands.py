"""Operator commands over the WebSocket: validated, rate-limited, audited, sent to Kafka.

A client sends ``{"type": "acknowledge" | "resolve" | "judge" | "note" | "assign", "alert_id":
…, "command_id"?, "verdict"? (judge), "assignee"? (assign), "note"? (required by note)}``. The
notifier checks the token's ``act`` scope and the fields, writes an ``audit_log`` row (who,
what, when, from where), publishes an AlertCommand keyed by customer to ``alerts.commands`` and
answers ``{"type": "ack", "command_id", "status":
"accepted"}``. The worker applies the command exactly once (by ``command_id``, so a client may
resend after a reconnect); the resulting transition reaches every operator of the customer as
an ``alert`` message. If the worker rejects it (an unknown alert, say), a second ``ack`` with
status ``rejected`` and the reason follows (:class:`Rejections`). A refusal is ``{"type":
"ack", "status": "refused", "error": …}`` and nothing is published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import psycopg
from aiokafka import AIOKafkaConsumer

from notifier.tokens import Operator
from sinks.audit import record_audit
from streams.domain.values import as_command, as_verdict
from streams.kafka.topics import TopicMissingError, topic_partitions

log = logging.getLogger("upstream.notifier")
MAX_ID_CHARS = 64
MAX_NOTE_CHARS = 2000


class CommandError(ValueError):
    """A command the notifier will not publish; the message goes back to the client."""


def build_command(operator: Operator, message: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The AlertCommand record for a client ``message``, or :class:`CommandError`."""
    try:
        command = as_command(message.get("type"))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if not operator.can("act"):
        raise CommandError("this token has the read scope only; commands need act")
    alert_id = message.get("alert_id")
    if not isinstance(alert_id, str) or not 0 < len(alert_id) <= MAX_ID_CHARS:
        raise CommandError(f"alert_id must be a string of 1 to {MAX_ID_CHARS} characters")
    command_id = message.get("command_id") or str(uuid.uuid4())
    if not isinstance(command_id, str) or len(command_id) > MAX_ID_CHARS:
        raise CommandError(f"command_id must be a string of up to {MAX_ID_CHARS} characters")
    verdict = message.get("verdict")
    if command == "judge":
        try:
            verdict = as_verdict(verdict)
        except ValueError as exc:
            raise CommandError(f"judge needs a verdict: {exc}") from None
    elif verdict is not None:
        raise CommandError("only judge takes a verdict")
    note = message.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
        raise CommandError(f"note must be a string of up to {MAX_NOTE_CHARS} characters")
    if command == "note" and not (note or "").strip():
        raise CommandError("note needs a note")
    assignee = message.get("assignee")
    if command == "assign":
        if not isinstance(assignee, str) or len(assignee) > MAX_ID_CHARS:
            raise CommandError(f"assign needs an assignee of up to {MAX_ID_CHARS} characters "
                               "(empty to unassign)")  # fmt: skip
    elif assignee is not None:
        raise CommandError("only assign takes an assignee")
    return {
        "command_id": command_id,
        "customer_id": operator.customer_id,
        "alert_id": alert_id,
        "command": command,
        "operator": operator.operator,
        "verdict": verdict,
        "note": note,
        "issued_at": now_ms,
        "assignee": assignee,
    }


class CommandPort(Protocol):
    """Where accepted commands go: audited, then published."""

    async def submit(self, record: dict[str, Any], origin: str) -> None:
        """Record and publish ``record``; raise on failure (the client is told)."""


class KafkaCommands:
    """The notifier's :class:`CommandPort`: an ``audit_log`` row, then ``alerts.commands``."""

    def __init__(self, producer: Any, codec: Any, topic: str, conninfo: str) -> None:
        self.producer = producer
        self.codec = codec
        self.topic = topic
        self.conninfo = conninfo
        self._audit: psycopg.AsyncConnection[Any] | None = None

    async def submit(self, record: dict[str, Any], origin: str) -> None:
        """Audit first: a command that reached Kafka is always in the audit trail."""
        await self._write_audit(record, origin)
        value = self.codec.encode("AlertCommand", self.topic, record)
        await self.producer.send_and_wait(
            self.topic, key=record["customer_id"].encode(), value=value
        )

    async def _write_audit(self, record: dict[str, Any], origin: str) -> None:
        if self._audit is None or self._audit.closed:
            self._audit = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        detail = {k: record[k] for k in ("command_id", "verdict", "note", "assignee") if record[k]}
        try:
            await record_audit(
                self._audit, customer_id=record["customer_id"], actor=record["operator"],
                action=f"alert.{record['command']}", subject=record["alert_id"], origin=origin,
                detail=detail,
            )  # fmt: skip
        except psycopg.OperationalError:
            await self._audit.close()  # reconnect on the next command
            raise

    async def kafka_ready(self) -> bool:
        """Whether the brokers answer a metadata request (for ``/readyz``)."""
        await self.producer.client.fetch_all_metadata()
        return True

    async def close(self) -> None:
        """Close the audit connection."""
        if self._audit is not None:
            await self._audit.close()


def rejected_command_id(value: bytes | None, codec: Any, topic: str) -> str | None:
    """The ``command_id`` of a dead-lettered command, or None if it cannot be read.

    The commands DLQ holds either the operator's AlertCommand as sent (refused by the
    ``commands`` stage) or the worker's internal alert-input envelope ``{"kind": "command",
    "command": {...}}`` (refused by the ``alerts`` stage, e.g. an unknown alert).
    """
    if not value:
        return None
    try:
        envelope = json.loads(value)
        if isinstance(envelope, dict) and envelope.get("kind") == "command":
            return str(envelope["command"]["command_id"])
    except (ValueError, KeyError, TypeError):
        pass
    try:
        return str(codec.decode(value, "AlertCommand", topic)["command_id"])
    except (ValueError, KeyError, TypeError):  # DecodeError is a ValueError
        return None


def _raise_if_cancelled() -> None:
    """Honour a cancel that aiokafka swallowed: ``AIOKafkaClient.close()`` (which
    :func:`topic_partitions` calls) suppresses a CancelledError meant for its caller."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Rejections:
    """Follows ``alerts.commands.dlq`` from its end and reports each rejected command.

    Group-less, every partition, so each notifier instance hears of every rejection and the
    one holding the operator's connection tells them.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        codec: Any,
        on_rejected: Callable[[str, str, str], Awaitable[None]],
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.codec = codec
        self.on_rejected = on_rejected

    async def run(self) -> None:
        """Consume until cancelled."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
        )
        try:
            await consumer.start()  # inside: a consumer cancelled while starting is stopped
            while True:
                _raise_if_cancelled()
                try:
                    partitions = await topic_partitions(self.bootstrap, self.topic)
                    break
                except TopicMissingError as exc:  # not yet created: serve, look again
                    log.warning("%s; rejected commands are not reported until it exists", exc)
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            while True:
                _raise_if_cancelled()
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for message in messages:
                        await self._report(message)
        finally:
            await consumer.stop()

    async def _report(self, message: Any) -> None:
        command_id = rejected_command_id(message.value, self.codec, self.topic)
        if command_id is None:
            return
        headers = {k: v.decode("utf-8", "replace") for k, v in message.headers or ()}
        await self.on_rejected(
            command_id, headers.get("error.reason", "rejected"), headers.get("error.message", "")
        )
