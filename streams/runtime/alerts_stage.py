"""The commands and alerts stages at run time, under the commit protocol of
:class:`Checkpoint`.

``commands`` validates ``alerts.commands`` and forwards them to the alert input, so that
evaluations and commands of one customer are applied in one order; ``alerts`` applies
evaluations (with the rules from ``alerts.rules``) and commands to the alert lifecycle
(:func:`apply_alert_input`) and sends every transition to ``alerts.events``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from schemas.codec import DecodeError
from schemas.registry import ValueCodec
from streams.domain.rules import RuleBook
from streams.kafka import envelopes
from streams.kafka.records import alert_record
from streams.observability.metrics import ALERT_TRANSITIONS, COMMANDS
from streams.runtime.checkpoint import Checkpoint
from streams.runtime.state import ChangelogTable, TableAlertStore, send_keyed
from streams.stages.alerts import apply_alert_input

log = logging.getLogger("upstream.worker")


@dataclass
class AlertsStage:
    """The alert lifecycle of the partitions this worker owns, and where its outputs go."""

    table: ChangelogTable  # the alerts' state
    rules: RuleBook
    codec: ValueCodec
    kafka_producer: Callable[[], Any]  # the aiokafka producer, once Faust has started it
    commands_topic: str  # what operators send (the name the codec knows it by)
    alert_input_topic: str
    alerts_topic: str
    # Dead-letter a message to the commands DLQ: (key, value, headers) → the delivery future.
    send_rejected: Callable[..., Awaitable[Any]]

    async def commands(self, messages: list[Any], checkpoint: Checkpoint) -> None:
        """Validate operator commands and forward them next to the customer's evaluations."""
        forwarded = []
        for message in messages:
            try:
                record = self.codec.decode(message.value, "AlertCommand", self.commands_topic)
                command = envelopes.command_from_record(record)
            except (DecodeError, KeyError, ValueError, TypeError) as exc:
                checkpoint.deliver([await self._reject(message, "invalid_command", str(exc))])
                continue
            forwarded.append((command.customer_id.encode(), envelopes.command_message(record)))
        producer = self.kafka_producer()
        checkpoint.deliver(await send_keyed(producer, self.alert_input_topic, forwarded))

    async def alerts(self, messages: list[Any], checkpoint: Checkpoint) -> None:
        """Apply evaluations (with the customer's rules) and commands, in order
        (:func:`apply_alert_input`); send every transition, then save the state that produced
        them."""
        applied = apply_alert_input(messages, partial(TableAlertStore, self.table), self.rules)
        for message, reason, detail in applied.rejected:
            checkpoint.deliver([await self._reject(message, reason, detail)])
        for outcome in applied.commands:
            COMMANDS.labels(outcome=outcome).inc()
        records = []
        for transition in applied.transitions:
            ALERT_TRANSITIONS.labels(transition=transition.transition).inc()
            log.info(
                "alert %s", transition.transition,
                extra={"alert_id": transition.alert_id, "version": transition.version,
                       "event_id": transition.drift_event_id,
                       "customer_id": transition.customer_id,
                       "transition": transition.transition},
            )  # fmt: skip
            value = self.codec.encode("AlertEvent", self.alerts_topic, alert_record(transition))
            records.append((transition.customer_id.encode(), value))
        producer = self.kafka_producer()
        checkpoint.deliver(await send_keyed(producer, self.alerts_topic, records))
        await checkpoint.persist(self.table)  # the state that produced them

    async def _reject(self, message: Any, reason: str, detail: str) -> Any:
        """Dead-letter a command or alert-input ``message`` (a Kafka message) it cannot apply;
        the future of its delivery."""
        COMMANDS.labels(outcome=reason).inc()
        letter = envelopes.dead_letter(message, "alerts", reason, detail)
        return await self.send_rejected(key=letter.key, value=letter.value, headers=letter.headers)
