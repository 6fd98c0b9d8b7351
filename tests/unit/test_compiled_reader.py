"""The compiled Avro readers read exactly what fastavro reads, and refuse what is corrupt."""

import datetime
import io
from typing import Any, cast

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import compiled
from schemas.codec import (
    SCHEMA_NAMES,
    DecodeError,
    compiled_reader,
    decode_single_object,
    encode_single_object,
    load_schema_json,
    parsed_schema,
)
from schemas.compiled import Reader, compile_reader

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# datetime's own range, in milliseconds since the epoch; and values that repeat, so the
# reader's cache of 6-byte timestamps is hit, with the edges of that varint length.
DAY_MS = 86_400_000
SIX_BYTE_EDGES = [ms for b in (2**34, 2**41) for ms in (b - 1, b, -b, -b - 1)]
REPEATED = [1_767_225_600_000 + d * DAY_MS for d in range(5)] + SIX_BYTE_EDGES
MILLIS = st.one_of(
    st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999),
    st.sampled_from(REPEATED),
)


def _values(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, list):
        return st.one_of(*(_values(branch) for branch in kind))
    if isinstance(kind, dict):
        if kind.get("logicalType") == "timestamp-millis":
            return MILLIS
        return st.lists(_values(kind["items"]), max_size=5)
    strategies = {
        "null": st.none(),
        "string": st.text(max_size=40),
        "long": LONG,
        "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "double": st.floats(allow_nan=False),
        "float": st.floats(width=32, allow_nan=False),
        "boolean": st.booleans(),
    }
    return strategies[kind]


def _records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = load_schema_json(name)["fields"]
    return st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in fields})


def _body(name: str, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema(name), record)
    return buffer.getvalue()


def test_every_schema_compiles() -> None:
    """Each of our schemas gets a compiled reader (none falls back to fastavro's)."""
    assert all(compiled_reader(name) is not None for name in SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_reads_what_fastavro_reads(name: str, data: st.DataObject) -> None:
    """Any record of the schema decodes to fastavro's dict, values and types alike."""
    body = _body(name, data.draw(_records(name)))
    expected = cast(
        dict[str, Any], fastavro.schemaless_reader(io.BytesIO(body), parsed_schema(name), None)
    )
    got = cast(Reader, compiled_reader(name))(body)  # every schema compiles (see above)
    assert got == expected
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_truncation_and_any_trailing_byte_is_refused(name: str, data: st.DataObject) -> None:
    """A body cut short anywhere, or with bytes after the record, is a DecodeError."""
    value = encode_single_object(name, data.draw(_records(name)))
    for end in range(10, len(value)):
        with pytest.raises(DecodeError):
            decode_single_object(value[:end], name)
    with pytest.raises(DecodeError, match="after the record"):
        decode_single_object(value + b"\x00", name)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x03", "past the end"),  # a string of length -2
        (b"\x02\xff", "invalid start byte"),  # not UTF-8
        (b"\xff" * 11, "longer than 10 bytes"),
    ],
)
def test_corrupt_strings_and_varints(body: bytes, message: str) -> None:
    """Negative lengths, invalid UTF-8 and endless varints raise, naming the problem."""
    read = cast(
        Reader,
        compile_reader(
            {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
        ),
    )
    with pytest.raises(ValueError, match=message):
        read(body)


def test_union_branch_and_boolean_out_of_range() -> None:
    """A union branch or a boolean byte the schema does not have is refused."""
    read = cast(
        Reader,
        compile_reader(
            {
                "type": "record",
                "name": "R",
                "fields": [
                    {"name": "n", "type": ["null", "string"]},
                    {"name": "b", "type": "boolean"},
                ],
            }
        ),
    )
    assert read(b"\x00\x01") == {"n": None, "b": True}
    with pytest.raises(ValueError, match="union branch"):
        read(b"\x04\x01")
    with pytest.raises(ValueError, match="neither 0 nor 1"):
        read(b"\x00\x02")


def test_timestamps_at_the_edges_of_float_precision() -> None:
    """Milliseconds far from 1970, where a float loses microseconds, are still exact."""
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    read = cast(Reader, compile_reader(schema))
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    for ms in (0, -1, 1, 2**33 * 1000 - 1, 2**33 * 1000, 253_402_300_799_999, -62_135_596_800_000):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), {"t": ms})
        assert read(buffer.getvalue()) == {"t": epoch + datetime.timedelta(milliseconds=ms)}


def test_the_timestamp_cache_is_bounded_and_keyed_by_whole_varints() -> None:
    """Only whole 6-byte varints are remembered, and never more than the cache's size."""
    start = 1_767_225_600_000
    for ms in range(start, start + compiled._TIMESTAMP_CACHE_SIZE + 10):
        body = _zigzag(ms)
        assert compiled.read_timestamp(body + b"\x07", 0) == (
            compiled._from_millis(ms),
            compiled._TIMESTAMP_BYTES,
        )
    assert 0 < len(compiled._timestamps) <= compiled._TIMESTAMP_CACHE_SIZE
    compiled.read_timestamp(_zigzag(2**34 - 1) + b"\x00", 0)  # 5 bytes: not cached
    assert _zigzag(2**34 - 1) + b"\x00" not in compiled._timestamps


def _zigzag(n: int) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, "long", n)
    return buffer.getvalue()


def test_schemas_it_cannot_compile_fall_back() -> None:
    """A map, a fixed or a nested record gives None, so the caller uses fastavro."""
    for kind in ({"type": "map", "values": "long"}, {"type": "fixed", "name": "F", "size": 4}):
        schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": kind}]}
        assert compile_reader(schema) is None
