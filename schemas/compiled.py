"""Avro readers compiled from a record schema: the sink's hot path, ~3x fastavro's.

fastavro's reader walks the schema for every value; for the flat records of ``schemas/`` that
walk costs more than the bytes (about 13 µs per drift event, more than Postgres' share of
a binary ``COPY`` of the row). :func:`compile_reader` turns a record schema into one Python
function, field by field, once (drift event ~4.5 µs, alert transition ~4.3 µs; fastavro ~16 and
~15, on the sink bench's records). Types it reads: ``string``, ``long``, ``int``, ``double``,
``float``, ``boolean``, ``timestamp-millis``, arrays of strings, and unions of ``null`` with
one of those. For any other schema it returns ``None`` and callers use fastavro.

The result equals fastavro's (``tests/unit/test_compiled_reader.py`` checks it on generated
records) with one deliberate difference: a body with bytes left over after the record is
refused, where fastavro ignores them.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable
from typing import Any

Reader = Callable[[bytes], Any]  # a dict, or a tuple of the fields in schema order
UTC = datetime.UTC
_MAX_VARINT_BYTES = 10
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_EXACT_FLOAT_MS = 2**33 * 1000


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos``: (value, position after it)."""
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            if n >> 64:
                raise ValueError("varint beyond 64 bits")
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift >= 7 * _MAX_VARINT_BYTES:
            raise ValueError("varint longer than 10 bytes")


def _from_millis(ms: int) -> datetime.datetime:
    """``ms`` since the epoch as an aware UTC datetime."""
    # fromtimestamp is ~4x cheaper than epoch + timedelta, and exact while a float holds the
    # seconds to better than half a microsecond: |seconds| < 2**33, the years 1698 to 2242.
    if -_EXACT_FLOAT_MS < ms < _EXACT_FLOAT_MS:
        return datetime.datetime.fromtimestamp(ms / 1000, UTC)
    return _EPOCH + datetime.timedelta(milliseconds=ms)


# Timestamps repeat: a drift event's five are bucket boundaries, shared by every event of the
# bucket's close and by its alerts. A timestamp of today is a 6-byte varint, so the reader
# looks its 6 raw bytes up first (a varint is self-delimiting: bytes that were once a whole
# 6-byte varint are one wherever they stand) and converts only on a miss.
_TIMESTAMP_BYTES = 6
_TIMESTAMP_CACHE_SIZE = 8192  # ~1 MB when full; 22 years of daily bucket boundaries
_timestamps: dict[bytes, datetime.datetime] = {}


def read_timestamp(buf: bytes, pos: int) -> tuple[datetime.datetime, int]:
    """The timestamp-millis at ``pos`` (not found in the cache): (value, position after it)."""
    ms, end = read_long(buf, pos)
    value = _from_millis(ms)
    if end - pos == _TIMESTAMP_BYTES:
        if len(_timestamps) >= _TIMESTAMP_CACHE_SIZE:
            _timestamps.clear()
        _timestamps[buf[pos:end]] = value
    return value, end


# The length of a string shorter than 64 bytes is one even varint byte: its half. Any other
# first byte maps to -1, and the reader takes the long way (read_string).
_SHORT_LENGTH = tuple(b >> 1 if b < 128 and not b & 1 else -1 for b in range(256))


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    """The string at ``pos``, its length checked: (value, position after it)."""
    n, pos = read_long(buf, pos)
    end = pos + n
    if n < 0 or end > len(buf):
        raise ValueError("string runs past the end of the value")
    return buf[pos:end].decode(), end


class _Source:
    """Lines of the function being generated."""

    def __init__(self) -> None:
        self.lines = ["def read(buf):", "    pos = 0", "    size = len(buf)"]

    def long(self, target: str, indent: str) -> None:
        # One-byte values (lengths, union branches, small counts) skip the call.
        self.lines += [
            f"{indent}b = buf[pos]",
            f"{indent}if b < 128:",
            f"{indent}    {target} = (b >> 1) ^ -(b & 1)",
            f"{indent}    pos += 1",
            f"{indent}else:",
            f"{indent}    {target}, pos = read_long(buf, pos)",
        ]

    def string(self, target: str, indent: str) -> None:
        # A short string cut off by the end of the value is caught by the next read or by
        # the final check (``pos`` beyond ``size``).
        self.lines += [
            f"{indent}n = short_length[buf[pos]]",
            f"{indent}if n >= 0:",
            f"{indent}    end = pos + 1 + n",
            f"{indent}    {target} = buf[pos + 1:end].decode()",
            f"{indent}    pos = end",
            f"{indent}else:",
            f"{indent}    {target}, pos = read_string(buf, pos)",
        ]

    def value(self, kind: Any, target: str, indent: str) -> None:
        if kind == "string":
            self.string(target, indent)
        elif kind in ("long", "int"):
            self.long(target, indent)
        elif kind in ("double", "float"):
            code, size = ("d", 8) if kind == "double" else ("f", 4)
            self.lines += [
                f"{indent}{target}, = unpack_from('<{code}', buf, pos)",
                f"{indent}pos += {size}",
            ]
        elif kind == "boolean":
            self.lines += [
                f"{indent}b = buf[pos]",
                f"{indent}pos += 1",
                f"{indent}if b > 1:",
                f"{indent}    raise ValueError('boolean byte is neither 0 nor 1')",
                f"{indent}{target} = b == 1",
            ]
        elif isinstance(kind, dict) and kind.get("logicalType") == "timestamp-millis":
            self.lines += [
                f"{indent}{target} = timestamps.get(buf[pos:pos + {_TIMESTAMP_BYTES}])",
                f"{indent}if {target} is None:",
                f"{indent}    {target}, pos = read_timestamp(buf, pos)",
                f"{indent}else:",
                f"{indent}    pos += {_TIMESTAMP_BYTES}",
            ]
        elif isinstance(kind, dict) and kind.get("type") == "array" and kind["items"] == "string":
            self.string_array(target, indent)
        elif isinstance(kind, list) and len(kind) == 2 and "null" in kind:
            self.nullable(kind, target, indent)
        else:
            raise NotImplementedError(kind)

    def nullable(self, branches: list[Any], target: str, indent: str) -> None:
        null = branches.index("null")
        self.long("branch", indent)
        self.lines += [f"{indent}if branch == {null}:", f"{indent}    {target} = None"]
        self.lines.append(f"{indent}elif branch == {1 - null}:")
        self.value(branches[1 - null], target, indent + "    ")
        self.lines += [f"{indent}else:", f"{indent}    raise ValueError('no such union branch')"]

    def string_array(self, target: str, indent: str) -> None:
        self.lines.append(f"{indent}{target} = []")
        self.long("count", indent)
        self.lines += [
            f"{indent}while count:",
            f"{indent}    if count < 0:",  # a negative count is followed by the block's size
            f"{indent}        count = -count",
            f"{indent}        _, pos = read_long(buf, pos)",
            f"{indent}    for _ in range(count):",
        ]
        self.string("item", indent + "        ")
        self.lines.append(f"{indent}        {target}.append(item)")
        self.long("count", indent + "    ")


def compile_reader(schema: dict[str, Any], *, as_tuple: bool = False) -> Reader | None:
    """A function reading one Avro body of record ``schema`` into a dict, or ``None``.

    With ``as_tuple`` the function returns the values as a tuple in the schema's field order
    (a row for a table whose columns are the fields), skipping the dict.

    The function raises ``ValueError`` (a ``UnicodeDecodeError`` is one), ``IndexError``,
    ``OverflowError`` (a timestamp beyond datetime's years) or ``struct.error`` on a corrupt
    body.
    """
    if schema.get("type") != "record":
        return None
    source = _Source()
    names = []
    try:
        for i, field in enumerate(schema["fields"]):
            source.value(field["type"], f"v{i}", "    ")
            names.append(field["name"])
    except NotImplementedError:
        return None
    source.lines += [
        "    if pos > size:",
        "        raise ValueError('a string runs past the end of the value')",
        "    if pos < size:",
        "        raise ValueError(f'{size - pos} bytes after the record')",
    ]
    if as_tuple:
        source.lines.append("    return (" + "".join(f"v{i}, " for i in range(len(names))) + ")")
    else:
        pairs = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
        source.lines.append("    return {" + pairs + "}")
    namespace: dict[str, Any] = {
        "unpack_from": struct.unpack_from,
        "read_long": read_long,
        "read_timestamp": read_timestamp,
        "read_string": read_string,
        "short_length": _SHORT_LENGTH,
        "timestamps": _timestamps,
    }
    # The source is generated from our own schema files only, never from input.
    code = compile("\n".join(source.lines), f"<avro reader {schema['name']}>", "exec")
    exec(code, namespace)  # nosec B102  # noqa: S102
    reader: Reader = namespace["read"]
    return reader
