"""The codec every service uses: Avro out, Avro or JSON in, schema registry when configured."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from schemas.codec import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    DecodeError,
    decode_json,
    decode_single_object,
    encode_single_object,
    load_schema_json,
)


class ValueCodec:
    """Encodes records to Avro and decodes any supported input format.

    With ``registry_url`` set, Avro is written in the Confluent wire format through
    confluent-kafka's serializers (schemas registered under ``<topic>-value``) and Confluent
    wire-format input is read through the registry. Without it, single-object encoding.
    """

    def __init__(self, registry_url: str = "") -> None:
        self.registry_url = registry_url
        self._client: Any = None
        self._serializers: dict[str, Any] = {}
        self._deserializers: dict[str, Any] = {}
        if registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            # new_client gives the in-memory mock for "mock://" URLs (used by unit tests).
            self._client = SchemaRegistryClient.new_client({"url": registry_url})

    def encode(self, schema_name: str, topic: str, record: Mapping[str, Any]) -> bytes:
        """Avro bytes of ``record`` for ``topic``."""
        if self._client is None:
            return encode_single_object(schema_name, record)
        from confluent_kafka.serialization import MessageField, SerializationContext

        serializer = self._serializers.get(schema_name)
        if serializer is None:
            import json

            from confluent_kafka.schema_registry.avro import AvroSerializer

            serializer = AvroSerializer(
                self._client,
                json.dumps(load_schema_json(schema_name)),
                conf={"auto.register.schemas": True},
            )
            self._serializers[schema_name] = serializer
        data: bytes = serializer(dict(record), SerializationContext(topic, MessageField.VALUE))
        return data

    def decode(self, value: bytes | None, schema_name: str, topic: str) -> dict[str, Any]:
        """Read a JSON, single-object or Confluent value; raise :class:`DecodeError`."""
        if not value:
            raise DecodeError("empty", "empty value (a tombstone is not a record)")
        head = value.lstrip()[:1]
        if head == b"{":
            return decode_json(value)
        if value[:2] == SINGLE_OBJECT_MAGIC:
            return decode_single_object(value, schema_name)
        if value[0] == CONFLUENT_MAGIC and len(value) >= 5:
            return self._decode_confluent(value, schema_name, topic)
        raise DecodeError("format", "value is neither JSON nor Avro (single-object or Confluent)")

    def _decode_confluent(self, value: bytes, schema_name: str, topic: str) -> dict[str, Any]:
        if self._client is None:
            (schema_id,) = struct.unpack(">I", value[1:5])
            raise DecodeError(
                "no_registry",
                f"Confluent wire format (schema id {schema_id}) needs UPSTREAM_SCHEMA_REGISTRY_URL",
            )
        import json

        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        deserializer = self._deserializers.get(schema_name)
        if deserializer is None:
            deserializer = AvroDeserializer(self._client, json.dumps(load_schema_json(schema_name)))
            self._deserializers[schema_name] = deserializer
        try:
            record = deserializer(value, SerializationContext(topic, MessageField.VALUE))
        except Exception as exc:  # the registry client raises many types
            raise DecodeError("avro", f"Confluent Avro value unreadable: {exc}"[:300]) from None
        if not isinstance(record, dict):
            raise DecodeError("avro", "Avro body is not a record")
        return record
