"""Value codecs: Avro single-object encoding, Confluent wire format, JSON.

Input accepts all three: a value starting with ``{`` is JSON, ``0xC3 0x01`` is Avro
single-object encoding (followed by the 8-byte little-endian CRC-64-AVRO fingerprint of the
writer schema), ``0x00`` is the Confluent wire format (needs a schema registry). Output is Avro:
Confluent wire format when a registry URL is configured, else single-object encoding.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import fastavro
import orjson

from schemas.compiled import Reader, compile_reader

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
SCHEMA_NAMES = ("ClaimDecided", "DriftEvent", "AlertEvent", "AlertCommand", "AlertRule")
_EMPTY = 0xC15D213AA4D7A795


class DecodeError(ValueError):
    """A value that no supported format can read; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Avro spec's 64-bit Rabin fingerprint (CRC-64-AVRO) of ``data``."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def load_schema_json(name: str) -> dict[str, Any]:
    """The ``schemas/<name>.avsc`` document as a dict."""
    text = resources.files("schemas").joinpath(f"{name}.avsc").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def parsed_schema(name: str) -> Any:
    """The fastavro-parsed current schema called ``name``."""
    return fastavro.parse_schema(load_schema_json(name))


@cache
def compiled_reader(name: str, *, as_tuple: bool = False) -> Reader | None:
    """The compiled reader of the current schema ``name`` (``None``: use fastavro)."""
    return compile_reader(load_schema_json(name), as_tuple=as_tuple)


@cache
def fingerprint(name: str) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form."""
    canonical = fastavro.schema.to_parsing_canonical_form(parsed_schema(name))
    return struct.pack("<Q", crc64_avro(canonical.encode("utf-8")))


@cache
def _schemas_by_fingerprint() -> dict[bytes, str]:
    return {fingerprint(name): name for name in SCHEMA_NAMES}


def encode_single_object(name: str, record: Mapping[str, Any]) -> bytes:
    """Avro single-object encoding of ``record`` with the current schema ``name``."""
    buffer = io.BytesIO()
    buffer.write(SINGLE_OBJECT_MAGIC)
    buffer.write(fingerprint(name))
    fastavro.schemaless_writer(buffer, parsed_schema(name), dict(record))
    return buffer.getvalue()


def decode_single_object(value: bytes, expected: str) -> dict[str, Any]:
    """Read a single-object-encoded value, resolving the writer schema by fingerprint."""
    if len(value) < 10:
        raise DecodeError("truncated", "Avro single-object value shorter than its header")
    writer = _schemas_by_fingerprint().get(value[2:10])
    if writer is None:
        raise DecodeError("unknown_schema", f"unknown schema fingerprint {value[2:10].hex()}")
    if writer != expected:
        raise DecodeError("wrong_schema", f"value is a {writer}, expected {expected}")
    read = compiled_reader(writer)  # writer is expected: no schema resolution needed
    try:
        if read is not None:
            record = read(value[10:])
        else:
            record = fastavro.schemaless_reader(io.BytesIO(value[10:]), parsed_schema(writer))
    except Exception as exc:  # fastavro raises many types on corrupt input
        raise DecodeError("avro", f"corrupt Avro body: {exc}"[:300]) from None
    if not isinstance(record, dict):
        raise DecodeError("avro", "Avro body is not a record")
    return record


def decode_row(value: bytes, expected: str) -> tuple[Any, ...] | None:
    """The fields of ``value``, in schema order, if it is single-object Avro written with the
    current schema ``expected``; ``None`` for anything else (JSON, Confluent, another writer
    schema: decode those with :class:`~schemas.registry.ValueCodec`).

    The sink's fast path: no dict, no schema resolution. Raises :class:`DecodeError` when the
    header is right but the body is corrupt.
    """
    if value[:2] != SINGLE_OBJECT_MAGIC or value[2:10] != fingerprint(expected):
        return None
    read = compiled_reader(expected, as_tuple=True)
    if read is None:
        return None
    try:
        row: tuple[Any, ...] = read(value[10:])
    except (ValueError, IndexError, OverflowError, struct.error) as exc:
        raise DecodeError("avro", f"corrupt Avro body: {exc}"[:300]) from None
    return row


def decode_json(value: bytes) -> dict[str, Any]:
    """Read a JSON object."""
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8, NaN, integers beyond 64 bits
        raise DecodeError("json", f"invalid JSON: {exc}"[:300]) from None
    if not isinstance(record, dict):
        raise DecodeError("json", "JSON value is not an object")
    return record
