"""Messages of the worker's internal topics survive the trip through JSON; dead letters."""

import json
from typing import NamedTuple

import pytest

from schemas.codec import decode_single_object, encode_single_object
from streams.domain.alerts import AlertCommand
from streams.kafka import envelopes
from streams.kafka.envelopes import alert_input, command_message


def test_an_avro_command_reaches_the_alerts_agent_intact() -> None:
    """A command read from Avro (issued_at a datetime) is forwarded as epoch milliseconds."""
    record = {"command_id": "c1", "customer_id": "demo", "alert_id": "a1", "command": "judge",
              "operator": "alice", "verdict": "true_positive", "note": None,
              "issued_at": 1_767_225_600_123}  # fmt: skip
    decoded = decode_single_object(encode_single_object("AlertCommand", record), "AlertCommand")
    item = alert_input(json.loads(command_message(decoded)))
    assert item == AlertCommand("c1", "demo", "a1", "judge", "alice", "true_positive", None,
                                1_767_225_600_123)  # fmt: skip


class _Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@pytest.mark.parametrize("key", [b"k", None, b"k" * 2000])
def test_a_dead_letter_copies_the_record_up_to_the_limit_then_refers_to_it(
    key: bytes | None,
) -> None:
    """Just under the limit: key and value copied. Just over: by reference, with the size."""
    room = envelopes.DLQ_COPY_MAX_BYTES - len(key or b"")
    under = envelopes.dead_letter(_Message("t", 2, 7, key, b"x" * room), "route", "format", "d")
    assert (under.key, under.value) == (key, b"x" * room)
    assert "error.by_reference" not in under.headers
    over = envelopes.dead_letter(_Message("t", 2, 7, key, b"x" * (room + 1)), "route", "f", "d")
    assert over.value is None
    assert over.key == (key if key is None or len(key) <= 1024 else None)
    assert over.headers["error.by_reference"] == b"true"
    assert over.headers["source.size"] == str(envelopes.DLQ_COPY_MAX_BYTES + 1).encode()
    assert (over.headers["source.partition"], over.headers["source.offset"]) == (b"2", b"7")
