"""The notifier's OpenAPI and AsyncAPI documents as validators of real responses and messages."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator


@cache
def document(name: str) -> dict[str, Any]:
    """``notifier/static/<name>.json``."""
    text = resources.files("notifier").joinpath(f"static/{name}.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _validator(schema: dict[str, Any], root: dict[str, Any]) -> Draft202012Validator:
    # Local $refs ("#/components/…") resolve against the schema's root: give it the components.
    return Draft202012Validator({**schema, "components": root["components"]})


def check_response(path: str, status: int, body: Any, method: str = "get") -> None:
    """Raise if ``body`` is not what openapi.json promises for ``method`` ``path`` with
    ``status``."""
    doc = document("openapi")
    answer = doc["paths"][path][method]["responses"][str(status)]
    schema = answer["content"]["application/json"]["schema"]
    _validator(schema, doc).validate(body)


def check_webhook(name: str, body: Any) -> None:
    """Raise if ``body`` is not what openapi.json's webhook ``name`` says a receiver gets."""
    doc = document("openapi")
    content = doc["webhooks"][name]["post"]["requestBody"]["content"]
    _validator(content["application/json"]["schema"], doc).validate(body)


def check_ws_message(message: dict[str, Any]) -> None:
    """Raise if ``message`` is not one of the WebSocket messages asyncapi.json describes."""
    doc = document("asyncapi")
    messages = doc["channels"]["operatorSocket"]["messages"]
    kind = message.get("type")
    if kind not in messages:
        raise AssertionError(f"message type {kind!r} is not in asyncapi.json")
    _validator(messages[kind]["payload"], doc).validate(message)
