"""The closed sets of values in records, state and commands, as types.

They are ``Literal`` string types: mypy checks every value the code writes, and the values stay
plain strings at run time (in records, Avro, JSON, Postgres and the compiled domain alike).
A value read from outside is checked by the parse function of its set.
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

# What the windows test on claims, per (customer, payer, CPT group) key:
MetricDriftType = Literal["denial_rate", "decision_lag", "allowed_amount"]
# What the feed watch tests on a customer's whole feed (payer and CPT group "*"):
FeedDriftType = Literal["feed_silence", "feed_volume", "dead_letters"]
DriftType = Literal[MetricDriftType, FeedDriftType]
Level = Literal["info", "warning", "critical"]  # in ascending order
Status = Literal["active", "acknowledged", "resolved"]
Transition = Literal[
    "triggered", "updated", "acknowledged", "resolved", "judged", "noted", "assigned"
]
CommandName = Literal["acknowledge", "resolve", "judge", "note", "assign"]
Verdict = Literal["true_positive", "false_positive", "needs_review"]
Outcome = Literal["PAID", "DENIED", "PARTIAL", "PENDED"]
_V = TypeVar("_V", bound=str)

METRIC_DRIFT_TYPES: tuple[MetricDriftType, ...] = get_args(MetricDriftType)
FEED_DRIFT_TYPES: tuple[FeedDriftType, ...] = get_args(FeedDriftType)
DRIFT_TYPES: tuple[DriftType, ...] = (*METRIC_DRIFT_TYPES, *FEED_DRIFT_TYPES)
LEVELS: tuple[Level, ...] = get_args(Level)
STATUSES: tuple[Status, ...] = get_args(Status)
TRANSITIONS: tuple[Transition, ...] = get_args(Transition)
COMMANDS: tuple[CommandName, ...] = get_args(CommandName)
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


def _member(value: object, members: tuple[_V, ...], what: str) -> _V:
    for known in members:
        if value == known:
            return known
    raise ValueError(f"unknown {what} {value!r}: one of {', '.join(map(str, members))}")


def as_drift_type(value: object) -> DriftType:
    """``value`` as a drift type; ValueError when it is not one."""
    return _member(value, DRIFT_TYPES, "drift type")


def as_level(value: object) -> Level:
    """``value`` as a severity level; ValueError when it is not one."""
    return _member(value, LEVELS, "severity level")


def as_status(value: object) -> Status:
    """``value`` as an alert status; ValueError when it is not one."""
    return _member(value, STATUSES, "alert status")


def as_command(value: object) -> CommandName:
    """``value`` as a command name; ValueError when it is not one."""
    return _member(value, COMMANDS, "command")


def as_verdict(value: object) -> Verdict:
    """``value`` as a verdict; ValueError when it is not one."""
    return _member(value, VERDICTS, "verdict")


def as_outcome(value: object) -> Outcome:
    """``value`` as a claim outcome; ValueError when it is not one."""
    return _member(value, OUTCOMES, "outcome")
