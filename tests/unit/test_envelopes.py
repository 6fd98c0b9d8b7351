"""Messages of the worker's internal topics survive the trip through JSON."""

import json

from schemas.codec import decode_single_object, encode_single_object
from streams.domain.alerts import AlertCommand
from streams.envelopes import alert_input, command_message


def test_an_avro_command_reaches_the_alerts_agent_intact():
    """A command read from Avro (issued_at a datetime) is forwarded as epoch milliseconds."""
    record = {"command_id": "c1", "customer_id": "demo", "alert_id": "a1", "command": "judge",
              "operator": "alice", "verdict": "true_positive", "note": None,
              "issued_at": 1_767_225_600_123}  # fmt: skip
    decoded = decode_single_object(encode_single_object("AlertCommand", record), "AlertCommand")
    item = alert_input(json.loads(command_message(decoded)))
    assert item == AlertCommand("c1", "demo", "a1", "judge", "alice", "true_positive", None,
                                1_767_225_600_123)  # fmt: skip
