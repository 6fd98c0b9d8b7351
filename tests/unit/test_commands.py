"""Operator commands as the notifier builds and reads them."""

import json
from typing import Any

import pytest

from notifier.commands import CommandError, build_command, rejected_command_id
from notifier.throttle import Throttle
from notifier.tokens import Operator
from schemas.codec import encode_single_object
from schemas.registry import ValueCodec

ALICE = Operator("alice", "demo", frozenset({"read", "act"}))


@pytest.mark.parametrize(
    ("operator", "message", "error"),
    [
        (Operator("vic", "demo", frozenset({"read"})), {"type": "resolve", "alert_id": "a"},
         "read scope only"),
        (ALICE, {"type": "delete", "alert_id": "a"}, "unknown command 'delete'"),
        (ALICE, {"type": "resolve"}, "alert_id must be"),
        (ALICE, {"type": "resolve", "alert_id": "x" * 65}, "alert_id must be"),
        (ALICE, {"type": "judge", "alert_id": "a"}, "judge needs a verdict"),
        (ALICE, {"type": "resolve", "alert_id": "a", "verdict": "true_positive"},
         "only judge takes a verdict"),
        (ALICE, {"type": "resolve", "alert_id": "a", "note": 5}, "note must be"),
        (ALICE, {"type": "resolve", "alert_id": "a", "command_id": ["x"]}, "command_id must be"),
        (ALICE, {"type": "note", "alert_id": "a"}, "note needs a note"),
        (ALICE, {"type": "note", "alert_id": "a", "note": "  "}, "note needs a note"),
        (ALICE, {"type": "assign", "alert_id": "a"}, "assign needs an assignee"),
        (ALICE, {"type": "assign", "alert_id": "a", "assignee": "x" * 65},
         "assign needs an assignee"),
        (ALICE, {"type": "resolve", "alert_id": "a", "assignee": "bob"},
         "only assign takes an assignee"),
    ],
)  # fmt: skip
def test_refusals_name_the_problem(operator: Operator, message: dict[str, Any], error: str) -> None:
    """Every invalid command is refused with a message the operator can act on."""
    with pytest.raises(CommandError, match=error):
        build_command(operator, message, 0)


def test_a_command_carries_the_tokens_customer_and_operator() -> None:
    """Customer and operator come from the token, never from the message."""
    record = build_command(
        ALICE, {"type": "judge", "alert_id": "a1", "verdict": "false_positive",
                "customer_id": "intruder", "operator": "mallory"}, 1234,
    )  # fmt: skip
    assert record["customer_id"] == "demo"
    assert record["operator"] == "alice"
    assert record["issued_at"] == 1234
    assert record["command_id"]


def test_note_and_assign_records_encode_as_alert_commands() -> None:
    """A note and an assignment go to alerts.commands as AlertCommand records like any other."""
    codec = ValueCodec()
    for message in ({"type": "note", "alert_id": "a1", "note": "called the payer"},
                    {"type": "assign", "alert_id": "a1", "assignee": "ravi"}):  # fmt: skip
        record = build_command(ALICE, message, 0)
        decoded = codec.decode(codec.encode("AlertCommand", "t", record), "AlertCommand", "t")
        assert {**decoded, "issued_at": 0} == record


def test_throttle_allows_a_burst_per_key_then_refuses_until_its_window_has_room() -> None:
    """A burst of ``burst`` passes at once; the next is refused, for that key only."""
    throttle = Throttle(per_second=0.01, burst=3)
    assert throttle.window_s == 300
    assert [throttle.allow("alice") for _ in range(5)] == [True, True, True, False, False]
    assert throttle.allow("bob")
    assert 290 <= throttle.retry_after_s("alice") <= 300
    with pytest.raises(ValueError, match="positive"):
        Throttle(per_second=0, burst=3)


def test_a_forgotten_key_is_gone_and_keys_do_not_share_a_window() -> None:
    """A closed connection's window is dropped (the storage does not grow with connections);
    "/" in a part does not make two keys one."""
    throttle = Throttle(per_second=0.01, burst=1)
    for serial in range(100):
        assert throttle.allow("connection", str(serial))
        throttle.forget("connection", str(serial))
    assert throttle.keys() == 0
    assert throttle.allow("a/b", "c")
    assert throttle.allow("a", "b/c")


def test_rejected_command_id_reads_both_dead_letter_shapes() -> None:
    """The DLQ holds the operator's Avro command or the worker's JSON envelope; garbage: None."""
    record = {"command_id": "c7", "customer_id": "demo", "alert_id": "a", "command": "resolve",
              "operator": "alice", "verdict": None, "note": None, "issued_at": 0}  # fmt: skip
    codec = ValueCodec()
    avro = encode_single_object("AlertCommand", record)
    envelope = json.dumps({"kind": "command", "command": record}).encode()
    assert rejected_command_id(avro, codec, "t") == "c7"
    assert rejected_command_id(envelope, codec, "t") == "c7"
    assert rejected_command_id(b"{not json", codec, "t") is None
    assert rejected_command_id(None, codec, "t") is None
