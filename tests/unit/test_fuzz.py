"""Fuzzing what comes from outside: every input is a claim or a refusal with a reason, never a
crash. The worker's route agent, the sink and ``upstream ingest`` all read claims this way."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.commands import CommandError, build_command
from notifier.tokens import Operator
from schemas.codec import DecodeError, encode_single_object, fingerprint
from schemas.registry import ValueCodec
from streams.app.claim_files import RowReader
from streams.domain.claims import END_DAY, FIRST_DAY, OUTCOMES, Claim, InvalidClaim, parse_claim
from streams.reference import load_reference
from tests.unit.claims import raw_claim

CODEC = ValueCodec()
REFERENCE = load_reference()
FIELDS = [*raw_claim(), "decided_at"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6,
)  # fmt: skip
NASTY_TEXT = st.sampled_from([
    "", " ", "-1", "1e309", "NaN", "Infinity", "9" * 400, "0x10", "１２３", "2026-02-30",
    "9999-12-31", "0001-01-01", "2026-13-01", "\x00", "\ud800", "💥" * 10, "a" * 1_000_000,
    "DROP TABLE claim_records; --", "'; SELECT 1; --", "<script>", "2026-01-01T25:00:00Z",
    "9999-12-31T23:59:59Z", "1970-01-01T00:00:00+00:00", "2026-01-11T10:00:00", "+275760-09-13",
])  # fmt: skip


def _read(value: bytes) -> Claim | None:
    """What the worker's route agent does with a value; None means refused with a reason."""
    try:
        return parse_claim(CODEC.decode(value, "ClaimDecided", "claims.decided"))
    except (DecodeError, InvalidClaim) as exc:
        assert exc.reason
        assert exc.message
        return None


def _valid(claim: Claim) -> None:
    assert claim.outcome in OUTCOMES
    assert claim.decided_date >= claim.submitted_date
    assert claim.submitted_date >= FIRST_DAY
    assert claim.decided_date < END_DAY
    assert claim.cpt_group
    assert isinstance(claim.event_ms, int)
    assert claim.allowed_cents >= 0
    assert claim.billed_cents >= 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(value: bytes) -> None:
    """Arbitrary bytes, including ones that start like JSON or Avro."""
    claim = _read(value)
    if claim is not None:
        _valid(claim)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"{", b"\xc3\x01", b"\x00\x00\x00\x00\x01"]))
def test_bytes_behind_a_real_header(body: bytes, head: bytes) -> None:
    """A JSON brace, a single-object or a Confluent header followed by garbage."""
    if head == b"\xc3\x01":
        head += fingerprint("ClaimDecided")
    claim = _read(head + body)
    if claim is not None:
        _valid(claim)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | NASTY_TEXT, max_size=len(FIELDS)),
    st.sets(st.sampled_from(FIELDS)),
    st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3),
)
def test_mutated_json_claims(
    changes: dict[str, Any], dropped: set[str], extra: dict[str, Any]
) -> None:
    """A valid claim with fields replaced by wrong types or nasty text, dropped, or added."""
    record = {**raw_claim(), **changes, **extra}
    for name in dropped:
        record.pop(name, None)
    try:
        value = json.dumps(record).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        return  # not representable as JSON at all
    claim = _read(value)
    if claim is not None:
        _valid(claim)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELDS), NASTY_TEXT.filter(lambda t: t != "\ud800"), max_size=4)
)  # fmt: skip  (a lone surrogate cannot be written as Avro)
def test_avro_claims_with_nasty_text(changes: dict[str, str]) -> None:
    """Well-formed Avro whose string fields hold absurd amounts, impossible dates, 1 MB text."""
    value = encode_single_object("ClaimDecided", {**raw_claim(), **changes})
    claim = _read(value)
    if claim is not None:
        _valid(claim)


def test_invalid_utf8_and_wrong_fingerprint_are_refused_with_reasons() -> None:
    """Bytes that are not UTF-8 in JSON, and Avro under an unknown fingerprint."""
    assert _read(b'{"claim_id": "\xff\xfe"}') is None
    valid = encode_single_object("ClaimDecided", raw_claim())
    assert _read(valid[:2] + b"\x00" * 8 + valid[10:]) is None
    assert _read(valid) is not None


OPERATOR = Operator("alice", "demo", frozenset({"read", "act"}))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "alert_id", "command_id", "verdict", "note",
                                        "customer_id", "operator"]),
                       JSON_VALUES | NASTY_TEXT, max_size=6))  # fmt: skip
def test_operator_commands(message: dict[str, Any]) -> None:
    """Any JSON object as a command: a record for the token's customer, or a refusal."""
    try:
        record = build_command(OPERATOR, message, 0)
    except CommandError as exc:
        assert str(exc)
        return
    assert record["customer_id"] == "demo"
    assert record["operator"] == "alice"
    assert isinstance(record["alert_id"], str)
    assert 0 < len(record["alert_id"]) <= 64
    encode_single_object("AlertCommand", record)  # and it fits the schema


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12) | NASTY_TEXT.filter(lambda t: len(t) < 100),
                         max_size=12), max_size=6))  # fmt: skip
def test_csv_rows(rows: list[list[str]]) -> None:
    """Any CSV line under the standard header: a valid record or a reject with a reason."""
    reader = RowReader(FIELDS, None, REFERENCE)
    for line, values in enumerate(rows, start=2):
        try:
            record = reader.record(line, values)
        except InvalidClaim as exc:
            assert exc.reason
            assert exc.message
            continue
        _valid(parse_claim(record))
        assert _read(json.dumps(record).encode()) is not None  # the worker takes what ingest sends
