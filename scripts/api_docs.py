#!/usr/bin/env python3
"""Write notifier/static/openapi.json and asyncapi.json from the definitions below.

The documents are data, kept here so that shared parts (the Alert schema, error answers) are
written once and the Avro payloads are the schema files themselves. After changing the API or
the protocol: ``python scripts/api_docs.py``; ``--check`` fails when the files are stale (a unit
test runs it).
"""

# ruff: noqa: E501 -- long literal descriptions read better on one line

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from notifier.messages import CLIENT_MESSAGES, SERVER_MESSAGES, Alert

ROOT = Path(__file__).resolve().parent.parent
REF = "#/components/schemas/{model}"


def schema_of(kind: object) -> dict:
    """The JSON Schema of a type of :mod:`notifier.messages` (an alert refers to the Alert
    component)."""
    schema = TypeAdapter(kind).json_schema(ref_template=REF)
    schema.pop("$defs", None)  # the one nested type, Alert, is a component of both documents
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


STATIC = ROOT / "notifier" / "static"
avro = {
    name: json.loads((ROOT / "schemas" / f"{name}.avsc").read_text(encoding="utf-8"))
    for name in ("ClaimDecided", "DriftEvent", "AlertEvent", "AlertCommand", "AlertRule")
}

ts = {"type": "string", "format": "date-time"}
level = {"type": "string", "enum": ["info", "warning", "critical"]}
drift_props = {
    "event_id": {"type": "string"},
    "customer_id": {"type": "string"},
    "payer_id": {"type": "string"},
    "cpt_group": {"type": "string"},
    "drift_type": {"type": "string", "enum": ["denial_rate", "decision_lag", "allowed_amount"]},
    "window_days": {"type": "number"},
    "baseline_start": ts,
    "baseline_end": ts,
    "current_start": ts,
    "current_end": ts,
    "baseline_value": {"type": "number"},
    "current_value": {"type": "number"},
    "delta_value": {"type": "number"},
    "baseline_n": {"type": "integer"},
    "current_n": {"type": "integer"},
    "p_value": {"type": "number"},
    "q_value": {"type": "number"},
    "severity": {"type": "number", "minimum": 0, "maximum": 1},
    "severity_level": level,
    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "detected_at": ts,
}


def obj(props, optional=None):
    """A JSON Schema object with ``props``, all required but ``optional``."""
    optional = optional or {}
    return {
        "type": "object",
        "properties": {**props, **optional},
        "required": list(props),
        "additionalProperties": False,
    }


err = {
    "description": "",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def errors(*codes):
    """OpenAPI responses for the error ``codes``."""
    text = {
        "400": "Bad parameter",
        "401": "Missing, forged or expired token",
        "403": "Token for another customer",
        "429": "Rate limited (see Retry-After)",
        "503": "Database unavailable; retry",
    }
    return {c: {**err, "description": text[c]} for c in codes}


common = errors("401", "403", "429", "503")
customer_param = {
    "name": "customer_id",
    "in": "query",
    "required": False,
    "description": "Optional; must be the token's customer.",
    "schema": {"type": "string"},
}
STR = {"type": "string"}
DATE = {"type": "string", "format": "date"}
NUM_OR_NULL = {"type": ["number", "null"]}
TS_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
DRIFT_TYPE = {"type": "string", "enum": ["denial_rate", "decision_lag", "allowed_amount"]}


def array_of(component):
    """A JSON Schema array of the named component."""
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{component}"}}


def param(name, schema, description=None, required=False):
    """An OpenAPI query parameter."""
    out = {"name": name, "in": "query"}
    if required:
        out["required"] = True
    if description:
        out["description"] = description
    return {**out, "schema": schema}


def ok(description, props):
    """An OpenAPI 200 response with a JSON object body."""
    return {"description": description, "content": {"application/json": {"schema": obj(props)}}}


def get(operation_id, summary, parameters, answer, more=None):
    """An OpenAPI GET operation with the bearer security and the usual errors."""
    responses = {"200": answer, **(more or {}), **common}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
        }
    }


OPENAPI = {
    "openapi": "3.1.0",
    "info": {
        "title": "Upstream notifier HTTP API",
        "version": "1.0.0",
        "description": "Read-side API of the Upstream notifier, on the same port as the WebSocket (/ws). "
        "Authenticate with the operator token (`upstream token`) as `Authorization: Bearer <token>`; "
        "a token reads its own customer's data only. Responses are cached for up to 2 s and dropped at "
        "once when a new alert transition arrives; gzip when `Accept-Encoding: gzip`; 20 requests/s per "
        "operator (bursts of 40).",
    },
    "servers": [{"url": "http://127.0.0.1:8765"}],
    "security": [{"operatorToken": []}],
    "paths": {
        "/api/alerts": get(
            "listActiveAlerts",
            "The customer's open alerts (active or acknowledged), most recently seen first.",
            [customer_param],
            ok("Open alerts", {"customer_id": STR, "alerts": array_of("Alert")}),
        ),
        "/api/drift-events": get(
            "listDriftEvents",
            "Drift events, newest first, filtered and paginated by cursor.",
            [
                customer_param,
                param("min_severity_level", {**level, "default": "info"}),
                param("payer_id", STR),
                param("drift_type", DRIFT_TYPE),
                param("since", STR, "detected_at >= since (ISO 8601; UTC when no offset)"),
                param("until", STR, "detected_at < until"),
                param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}),
                param("cursor", STR, "next_cursor of the previous page"),
            ],
            ok(
                "One page",
                {
                    "customer_id": STR,
                    "drift_events": array_of("DriftEvent"),
                    "next_cursor": {
                        "type": ["string", "null"],
                        "description": "null on the last page",
                    },
                },
            ),
            errors("400"),
        ),
        "/api/trends/denials": get(
            "monthlyDenialTrend",
            "Decided and denied claims and the denial rate per month and payer (QW-1).",
            [
                customer_param,
                param(
                    "since",
                    DATE,
                    "first day (ISO date); default: the first of the month 12 months before until",
                ),
                param("until", DATE, "day after the last (ISO date); default: tomorrow (UTC)"),
            ],
            ok(
                "Months in order, payers by id",
                {
                    "customer_id": STR,
                    "since": DATE,
                    "until": DATE,
                    "months": array_of("DenialMonth"),
                },
            ),
            errors("400"),
        ),
        "/api/alert-series": get(
            "alertSeries",
            "One alert's key, day by day, against the drift event's baseline and current values (the console's chart).",
            [
                customer_param,
                param("alert_id", STR, required=True),
                param(
                    "days",
                    {"type": "integer", "minimum": 1, "maximum": 400, "default": 120},
                    "days up to the alert's last_seen",
                ),
            ],
            ok(
                "The daily values: denial rate, mean decision lag (days) or geometric-mean allowed amount ($), by the alert's drift type",
                {
                    "alert_id": STR,
                    "drift_type": DRIFT_TYPE,
                    "baseline_value": NUM_OR_NULL,
                    "current_value": NUM_OR_NULL,
                    **{
                        name: TS_OR_NULL
                        for name in (
                            "baseline_start",
                            "baseline_end",
                            "current_start",
                            "current_end",
                        )
                    },
                    "days": {
                        "type": "array",
                        "items": obj(
                            {
                                "day": DATE,
                                "value": NUM_OR_NULL,
                                "claims": {
                                    "type": "integer",
                                    "description": "decided claims that day",
                                },
                            }
                        ),
                    },
                },
            ),
            {**errors("400"), "404": {**err, "description": "No such alert for this customer"}},
        ),
        "/healthz": {
            "get": {
                "operationId": "liveness",
                "security": [],
                "summary": "The process is up.",
                "responses": {
                    "200": {
                        "description": "Up",
                        "content": {
                            "application/json": {"schema": obj({"status": {"const": "ok"}})}
                        },
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "security": [],
                "summary": "Postgres followed and Kafka answering; 503 otherwise.",
                "responses": {
                    "200": {
                        "description": "Ready",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}
                        },
                    },
                    "503": {
                        "description": "Not ready",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}
                        },
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "security": [],
                "summary": "Prometheus metrics (text exposition format).",
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "operatorToken": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT (HS256: sub, customer_id, scope, exp)",
            }
        },
        "schemas": {
            "Alert": schema_of(Alert),
            "DriftEvent": obj(drift_props),
            "DenialMonth": obj(
                {
                    "month": {"type": "string", "format": "date"},
                    "payer_id": {"type": "string"},
                    "decided": {"type": "integer"},
                    "denied": {"type": "integer"},
                    "denial_rate": {"type": ["number", "null"]},
                }
            ),
            "Ready": obj(
                {
                    "status": {"type": "string", "enum": ["ok", "unavailable"]},
                    "checks": {
                        "type": "object",
                        "description": "postgres (the hub follows it) and kafka (metadata answered)",
                        "additionalProperties": obj(
                            {"ok": {"type": "boolean"}}, {"latency_ms": {"type": "number"}}
                        ),
                    },
                }
            ),
            "Error": obj({"error": {"type": "string"}}),
        },
    },
}


AVRO = "application/vnd.apache.avro+json;version=1.9.0"
alert_schema = OPENAPI["components"]["schemas"]["Alert"]


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
    "components": {"schemas": {"Alert": alert_schema}},
}


def main(argv: list[str]) -> int:
    """Write the documents, or with ``--check`` report whether they are current."""
    stale = []
    for name, doc in (("openapi", OPENAPI), ("asyncapi", ASYNCAPI)):
        path = STATIC / f"{name}.json"
        text = json.dumps(doc, indent=2) + "\n"
        if path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(text, encoding="utf-8")
    if stale and "--check" in argv:
        print(f"stale: {', '.join(stale)}; run python scripts/api_docs.py", file=sys.stderr)
        return 1
    print(
        f"{'updated' if stale else 'current'}: {', '.join(stale) or 'openapi.json, asyncapi.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
