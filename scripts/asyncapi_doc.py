"""The AsyncAPI document of the Kafka topics and the operator WebSocket (written by
``api_docs.py``)."""

# ruff: noqa: E501 -- long literal descriptions read better on one line

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from notifier.messages import CLIENT_MESSAGES, SERVER_MESSAGES, Alert

ROOT = Path(__file__).resolve().parent.parent
REF = "#/components/schemas/{model}"


COMPONENTS: dict[str, dict] = {}  # the types the messages nest (Alert, Layout), each once


def schema_of(kind: object) -> dict:
    """The JSON Schema of a type of :mod:`notifier.messages`; the types it nests become
    components it refers to."""
    schema = TypeAdapter(kind).json_schema(ref_template=REF)
    COMPONENTS.update(schema.pop("$defs", {}))
    return schema


def ws_message(name: str, kind: type) -> dict:
    """An AsyncAPI WebSocket message of ``type`` ``name``: its payload is ``kind``'s schema."""
    payload = schema_of(kind)
    return {
        "name": name,
        "title": name,
        "summary": " ".join(str(payload.pop("description", "")).split()),
        "contentType": "application/json",
        "payload": payload,
    }


avro = {
    name: json.loads((ROOT / "schemas" / f"{name}.avsc").read_text(encoding="utf-8"))
    for name in ("ClaimDecided", "DriftEvent", "AlertEvent", "AlertCommand", "AlertRule")
}
AVRO = "application/vnd.apache.avro+json;version=1.9.0"
alert_schema = schema_of(Alert)


def kafka_msg(name, summary):
    """An AsyncAPI message whose payload is the Avro schema ``name``."""
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "avro/binary",
        "description": "Avro single-object encoding (0xC3 0x01 + CRC-64-AVRO fingerprint), or the Confluent wire format with a schema registry; JSON accepted on input.",
        "payload": {"schemaFormat": AVRO, "schema": avro[name]},
    }


dlq_msg = {
    "name": "DeadLetter",
    "title": "Dead letter",
    "contentType": "application/octet-stream",
    "summary": "The original value and key, unchanged, with the reason in headers.",
    "headers": {
        "type": "object",
        "required": [
            "error.stage",
            "error.reason",
            "error.message",
            "source.topic",
            "source.partition",
            "source.offset",
        ],
        "properties": {
            k: {"type": "string"}
            for k in [
                "error.stage",
                "error.reason",
                "error.message",
                "source.topic",
                "source.partition",
                "source.offset",
            ]
        },
    },
    "payload": {"type": "string", "format": "binary"},
}


str_list = {"type": "array", "items": {"type": "string"}}
channels = {
    "claimsDecided": {
        "address": "claims.decided",
        "title": "Claim decisions in",
        "messages": {
            "ClaimDecided": kafka_msg(
                "ClaimDecided", "A payer's decision on one claim; key: claim_id."
            )
        },
    },
    "driftEvents": {
        "address": "drift.events",
        "messages": {
            "DriftEvent": kafka_msg(
                "DriftEvent",
                "A key's current window differs from its baseline; key: customer_id|payer_id|cpt_group|drift_type.",
            )
        },
    },
    "alertsEvents": {
        "address": "alerts.events",
        "messages": {
            "AlertEvent": kafka_msg(
                "AlertEvent", "One alert transition (deduplicated); key: customer_id."
            )
        },
    },
    "alertsCommands": {
        "address": "alerts.commands",
        "messages": {
            "AlertCommand": kafka_msg(
                "AlertCommand", "An operator command, applied once by command_id; key: customer_id."
            )
        },
    },
    "alertsRules": {
        "address": "alerts.rules",
        "messages": {
            "AlertRule": kafka_msg(
                "AlertRule",
                "A customer's alert rule (compacted; a tombstone deletes); key: customer_id|rule_id.",
            )
        },
    },
    "claimsDlq": {"address": "claims.decided.dlq", "messages": {"DeadLetter": dlq_msg}},
    "commandsDlq": {"address": "alerts.commands.dlq", "messages": {"DeadLetter": dlq_msg}},
    "sinkDlq": {"address": "sink.dlq", "messages": {"DeadLetter": dlq_msg}},
    "reportsWeekly": {
        "address": "reports.weekly",
        "title": "Weekly drift summaries",
        "messages": {
            "WeeklyReport": {
                "name": "WeeklyReport",
                "title": "WeeklyReport",
                "contentType": "application/json",
                "summary": "One customer's last full ISO week (JSON); key: customer_id. Also in the weekly_reports table.",
                "payload": {
                    "type": "object",
                    "required": [
                        "week_start",
                        "customer_id",
                        "drift_events",
                        "by_type_level",
                        "top_payers",
                        "alert_transitions",
                    ],
                    "properties": {
                        "week_start": {"type": "string", "format": "date"},
                        "customer_id": {"type": "string"},
                        "drift_events": {"type": "integer"},
                        "by_type_level": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                            "description": "'drift_type:severity_level' -> count",
                        },
                        "top_payers": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "payer_id": {"type": "string"},
                                    "drift_events": {"type": "integer"},
                                },
                            },
                        },
                        "alert_transitions": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                            "description": "transition -> count",
                        },
                    },
                },
            }
        },
    },
    "operatorSocket": {
        "address": "/ws",
        "title": "Operator WebSocket",
        "servers": [{"$ref": "#/servers/notifier"}],
        "description": "Authenticate with ?token= or a first auth message (a first message that is not a JSON object closes 4400, any other 4401); missing/forged/expired tokens close 4401, and so does the token's expiry on an open connection; a foreign customer 4403, too many connections 4429, a message over 64 KiB 1009, a client that stops reading 4008. A message that is not a JSON object nested at most 32 deep with finite numbers is answered with an error message.",
        "messages": {
            **{name: ws_message(name, kind) for name, kind in CLIENT_MESSAGES.items()},
            **{name: ws_message(name, kind) for name, kind in SERVER_MESSAGES.items()},
        },
    },
}


def op(action, channel, summary, msgs):
    """An AsyncAPI operation on ``channel``."""
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in msgs],
    }


operations = {
    "publishClaims": op(
        "receive",
        "claimsDecided",
        "Upstream systems publish claim decisions; the worker consumes them.",
        ["ClaimDecided"],
    ),
    "emitDrift": op("send", "driftEvents", "The worker emits drift events.", ["DriftEvent"]),
    "emitAlerts": op("send", "alertsEvents", "The worker emits alert transitions.", ["AlertEvent"]),
    "receiveCommands": op(
        "receive",
        "alertsCommands",
        "The worker applies operator commands (the notifier publishes them).",
        ["AlertCommand"],
    ),
    "receiveRules": op(
        "receive",
        "alertsRules",
        "The worker follows alert rules (`upstream rules set`).",
        ["AlertRule"],
    ),
    "deadLetterClaims": op(
        "send", "claimsDlq", "Invalid or late claims, with the reason.", ["DeadLetter"]
    ),
    "deadLetterCommands": op(
        "send", "commandsDlq", "Rejected commands, with the reason.", ["DeadLetter"]
    ),
    "deadLetterRows": op(
        "send", "sinkDlq", "Rows Postgres rejected, with the reason.", ["DeadLetter"]
    ),
    "weeklyReports": op(
        "send",
        "reportsWeekly",
        "The worker's leader publishes the weekly summaries.",
        ["WeeklyReport"],
    ),
    "clientMessages": op(
        "receive",
        "operatorSocket",
        "What an operator client sends.",
        ["auth", "subscribe", "acknowledge", "resolve", "judge"],
    ),
    "serverMessages": op(
        "send", "operatorSocket", "What the notifier sends.", ["snapshot", "alert", "ack", "error"]
    ),
}
ASYNCAPI = {
    "asyncapi": "3.0.0",
    "info": {
        "title": "Upstream topics and operator WebSocket",
        "version": "1.0.0",
        "description": "Kafka topics of Upstream (names are the defaults; UPSTREAM_TOPIC_* rename them) and the notifier's WebSocket protocol.",
    },
    "defaultContentType": "application/json",
    "servers": {
        "kafka": {"host": "localhost:9092", "protocol": "kafka"},
        "notifier": {"host": "127.0.0.1:8765", "protocol": "ws"},
    },
    "channels": channels,
    "operations": operations,
    "components": {"schemas": {"Alert": alert_schema, **COMPONENTS}},
}
