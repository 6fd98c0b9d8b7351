"""The dead-letter commands' pieces: whose a dead letter is, which a filter takes, the table."""

import argparse
import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from schemas.codec import encode_single_object
from schemas.registry import ValueCodec
from streams.app.dlq import UNKNOWN, DeadLetter, Filter, _when, customer_of, table
from tests.unit.claims import raw_claim

T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)


def _letter(customer: str = "acme", reason: str = "beyond_history", at: int = T0) -> DeadLetter:
    return DeadLetter(0, 7, at, b"k", b"{}", reason, "window", customer)


@pytest.mark.parametrize(
    ("value", "customer"),
    [
        (json.dumps(raw_claim(customer_id="acme")).encode(), "acme"),
        (encode_single_object("ClaimDecided", raw_claim(customer_id="beta")), "beta"),
        (json.dumps({"customer_id": "gamma", "outcome": "MAYBE"}).encode(), "gamma"),  # invalid
        (json.dumps({"customer_id": {"a": 1}}).encode(), UNKNOWN),
        (b"\xff\x00 not json", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_the_customer_of_a_dead_letter_is_read_even_from_an_invalid_claim(
    value: bytes | None, customer: str
) -> None:
    assert customer_of(value, ValueCodec(), "claims.decided") == customer


def test_a_filter_takes_reasons_customers_and_a_time_range() -> None:
    hour = 3_600_000
    keep = Filter(frozenset({"beyond_history"}), frozenset({"acme"}),
                  _when("2026-03-01T00:00"), _when("2026-03-01T02:00:00+00:00"))  # fmt: skip
    assert keep(_letter())
    assert keep(_letter(at=T0 + hour))
    assert not keep(_letter(at=T0 + 2 * hour))  # until is exclusive
    assert not keep(_letter(at=T0 - 1))
    assert not keep(_letter(customer="beta"))
    assert not keep(_letter(reason="json"))
    assert Filter()(_letter(customer="anyone", reason="anything"))


def test_a_bad_time_is_a_clear_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO date"):
        _when("yesterday")


def test_the_table_counts_by_customer_and_reason_with_a_total() -> None:
    counts = Counter({("beta", "json"): 3, ("acme", "beyond_history"): 1200})
    lines = table(counts).splitlines()
    assert lines[0].split() == ["customer", "reason", "dead", "letters"]
    assert lines[1].split() == ["acme", "beyond_history", "1,200"]
    assert lines[2].split() == ["beta", "json", "3"]
    assert lines[-1].split() == ["total", "1,203"]
