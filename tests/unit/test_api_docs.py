"""openapi.json and asyncapi.json are valid and agree with the code they describe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from notifier.api import HttpApi
from notifier.delivery_api import DeliveryApi
from notifier.messages import AlertEvent
from notifier.web import DOWNLOADS
from schemas.codec import SCHEMA_NAMES, load_schema_json
from sinks.tables import ALERT_FIELDS
from streams.domain.values import COMMANDS
from streams.kafka.topics import public_topics
from streams.settings import Settings
from tests.apidocs import check_ws_message, document


def test_openapi_is_a_valid_openapi_3_1_document() -> None:
    """The OpenAPI file passes openapi-spec-validator."""
    validate(document("openapi"))


def test_openapi_describes_exactly_the_api_routes() -> None:
    """Every /api/ route the notifier serves is described, and nothing more."""
    api = HttpApi(engine=None, secret="x" * 32, version=lambda: 0)  # type: ignore[arg-type]
    described = {p for p in document("openapi")["paths"] if p.startswith("/api/")}
    delivery = {route.path for route in DeliveryApi(api).routes()}
    assert described == set(api._routes) | set(DOWNLOADS.values()) | delivery


def test_openapi_states_each_method_of_the_routes_and_silences_api() -> None:
    """Each route and silence endpoint is described with the methods the notifier serves."""
    api = HttpApi(engine=None, secret="x" * 32, version=lambda: 0)  # type: ignore[arg-type]
    served = {(r.path, m.lower()) for r in DeliveryApi(api).routes() for m in r.methods or ()}
    paths = document("openapi")["paths"]
    described = {(p, m) for p, ops in paths.items() if p in {p for p, _ in served} for m in ops}
    assert described == {(p, m) for p, m in served if m != "head"}


def test_the_webhook_alert_is_the_alert_event_record() -> None:
    """The webhook's alert has exactly the fields of the AlertEvent Avro record."""
    fields = {f["name"] for f in load_schema_json("AlertEvent")["fields"]}
    assert set(ALERT_FIELDS) == fields
    assert set(AlertEvent.__annotations__) == fields


def test_asyncapi_topics_are_the_default_topic_names() -> None:
    """Each Kafka channel's address is a topic of Settings, and every topic has a channel."""
    topics = set(public_topics(Settings()))
    channels = document("asyncapi")["channels"].values()
    assert {c["address"] for c in channels if c["address"] != "/ws"} == topics


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_asyncapi_embeds_the_current_avro_schemas(name: str) -> None:
    """The Avro payload of each topic message is the schema file itself."""
    messages = [
        m for c in document("asyncapi")["channels"].values() for m in c["messages"].values()
    ]
    embedded = [m["payload"]["schema"] for m in messages if m["name"] == name]
    assert embedded == [load_schema_json(name)]


def test_asyncapi_lists_every_websocket_message_type() -> None:
    """Commands, subscribe/auth in; snapshot/alert/ack/error out: all described."""
    messages = document("asyncapi")["channels"]["operatorSocket"]["messages"]
    assert set(messages) == {
        "auth",
        "subscribe",
        *COMMANDS,
        "layout",
        "snapshot",
        "alert",
        "ack",
        "layout_saved",
        "error",
    }


@pytest.mark.parametrize(
    "message",
    [
        {"type": "subscribe", "hello": 1, "min_severity_level": "urgent"},
        {"type": "judge", "alert_id": "a1", "verdict": "maybe"},
        {"type": "ack", "command_id": "c1", "status": "done"},
    ],
)
def test_the_ws_schemas_refuse_wrong_messages(message: dict[str, Any]) -> None:
    """The AsyncAPI schemas are strict enough to catch a wrong enum value."""
    with pytest.raises(Exception, match="is not one of"):
        check_ws_message(message)


def test_the_documents_are_what_scripts_api_docs_writes() -> None:
    """The served files are current with their generator (run it after changing the API)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "api_docs.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_configuration_page_is_what_scripts_config_docs_writes() -> None:
    """docs/configuration.md is current with the settings class (every field described)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "config_docs.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_the_wire_types_carry_the_avro_records_fields() -> None:
    """The alert sent to operators is an AlertEvent record plus its drift event's two values
    and when it was first notified, and the API's drift event is a DriftEvent record: no field
    added or lost on one side."""
    from notifier.answers import DriftEvent
    from notifier.messages import Alert

    def avro_fields(name: str) -> set[str]:
        return {field["name"] for field in load_schema_json(name)["fields"]}

    assert set(Alert.__annotations__) == avro_fields("AlertEvent") | {
        "baseline_value", "current_value", "first_notified_at"
    }  # fmt: skip
    assert set(DriftEvent.__annotations__) == avro_fields("DriftEvent")
