"""The alerts stage's work on a batch: evaluations and operator commands applied, in order, to
the alerts they concern; what to send and what to refuse comes back as data."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.domain.alerts import AlertCommand, AlertLifecycle, AlertStore
from streams.domain.events import AlertTransitioned
from streams.domain.rules import RuleBook
from streams.kafka import envelopes


@dataclass
class AlertInputApplied:
    """What a batch of alert input did: the transitions, in order; the messages refused, with
    a reason and a detail; the outcome (``applied`` or ``duplicate``) of each command taken."""

    transitions: list[AlertTransitioned] = field(default_factory=list)
    rejected: list[tuple[Any, str, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def apply_alert_input(
    messages: Iterable[Any], store_for: Callable[[int], AlertStore], rules: RuleBook
) -> AlertInputApplied:
    """Apply alert-input ``messages`` (anything with ``partition`` and ``value``; evaluations
    with the customer's rules, and commands) in order to the alerts of each message's
    partition (``store_for(partition)``). No I/O: the alerts stage sends what it returns, and
    ``bench.hotpath`` times it."""
    out = AlertInputApplied()
    for message in messages:
        try:
            item = envelopes.alert_input(json.loads(message.value))
        except (KeyError, ValueError, TypeError) as exc:  # never crash the stage
            out.rejected.append((message, "invalid_alert_input", str(exc)))
            continue
        lifecycle = AlertLifecycle(store_for(message.partition))
        if isinstance(item, AlertCommand):
            outcome = lifecycle.apply_command(item)
            if outcome.rejected:
                out.rejected.append((message, outcome.rejected, outcome.detail))
                continue
            out.commands.append("duplicate" if outcome.duplicate else "applied")
            out.transitions += outcome.transitions
        else:
            rules_of = rules.for_customer(item.customer_id)
            out.transitions += lifecycle.apply_evaluation(item, rules_of)
    return out
