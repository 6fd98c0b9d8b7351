"""Codecs: single-object Avro, Confluent wire format (mock registry), JSON, and bad input."""

import io
import json
import struct
from typing import Any, cast

import fastavro
import pytest

from schemas.codec import (
    SCHEMA_NAMES,
    DecodeError,
    crc64_avro,
    decode_single_object,
    encode_single_object,
    fingerprint,
    load_schema_json,
    parsed_schema,
)
from schemas.registry import ValueCodec
from tests.unit.claims import raw_claim

TOPIC = "claims.decided"


def test_crc64_avro_spec_vector() -> None:
    """The Avro spec's fingerprint of the schema "int" is 0x7275d51a3f395c8f."""
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F


def test_fingerprint_agrees_with_fastavro() -> None:
    """Our little-endian fingerprint is fastavro's CRC-64-AVRO hex."""
    canonical = fastavro.schema.to_parsing_canonical_form(parsed_schema("ClaimDecided"))
    assert fingerprint("ClaimDecided").hex() == fastavro.schema.fingerprint(
        canonical, "CRC-64-AVRO"
    )


def test_single_object_round_trip() -> None:
    """Encode then decode gives the record back, with defaults filled."""
    value = encode_single_object("ClaimDecided", raw_claim())
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == fingerprint("ClaimDecided")
    record = ValueCodec().decode(value, "ClaimDecided", TOPIC)
    assert record["claim_id"] == "c-1"
    assert record["denial_reason_codes"] == []


def test_json_input_is_accepted() -> None:
    """A value starting with '{' is JSON."""
    record = ValueCodec().decode(b'  {"claim_id": "x"}', "ClaimDecided", TOPIC)
    assert record == {"claim_id": "x"}


def test_confluent_wire_format_with_registry() -> None:
    """With a registry, output is magic 0 + schema id, and input reads it back."""
    codec = ValueCodec("mock://unit")
    value = codec.encode("ClaimDecided", TOPIC, raw_claim())
    assert value[0] == 0
    assert struct.unpack(">I", value[1:5])[0] >= 1
    assert codec.decode(value, "ClaimDecided", TOPIC)["claim_id"] == "c-1"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"{not json", "json"),
        (b"[1, 2]", "format"),
        (b'{"a": "\xff\xfe"}', "json"),
        (b"\xc3\x01short", "truncated"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_schema"),
        (b"\x00\x00\x00\x00\x07payload", "no_registry"),
        (b"\x07garbage", "format"),
    ],
)
def test_bad_values_raise_decode_error_with_reason(value: bytes, reason: str) -> None:
    """Every undecodable value raises DecodeError naming why."""
    with pytest.raises(DecodeError) as info:
        ValueCodec().decode(value, "ClaimDecided", TOPIC)
    assert info.value.reason == reason


def test_wrong_schema_is_refused() -> None:
    """A DriftEvent where a ClaimDecided is expected is refused, not misread."""
    value = encode_single_object("AlertRule", {"customer_id": "c", "rule_id": "r"})
    with pytest.raises(DecodeError) as info:
        decode_single_object(value, "ClaimDecided")
    assert info.value.reason == "wrong_schema"


def test_corrupt_avro_body_is_a_decode_error() -> None:
    """A right header with a truncated body is a DecodeError, not a crash."""
    value = encode_single_object("ClaimDecided", raw_claim())
    with pytest.raises(DecodeError):
        decode_single_object(value[:14], "ClaimDecided")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schemas_are_backward_compatible_with_minimal_writers(name: str) -> None:
    """Data written by a writer with only the required fields is readable by today's schema.

    Every field added after the first version must carry a default (BACKWARD compatibility).
    """
    current = load_schema_json(name)
    minimal = dict(current, fields=[f for f in current["fields"] if "default" not in f])
    record: dict[str, Any] = {}
    for field in minimal["fields"]:
        kind = field["type"]
        kind = kind["type"] if isinstance(kind, dict) else kind
        record[field["name"]] = {
            "string": "x",
            "double": 1.5,
            "long": 7,
            "int": 3,
            "boolean": True,
        }[kind]
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(minimal), record)
    buffer.seek(0)
    read = cast(
        dict[str, Any],
        fastavro.schemaless_reader(buffer, fastavro.parse_schema(minimal), parsed_schema(name)),
    )
    assert set(read) == {f["name"] for f in current["fields"]}
    json.dumps(read, default=str)
