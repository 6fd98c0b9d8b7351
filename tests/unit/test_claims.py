"""ClaimDecided validation: valid claims parse, invalid ones name a reason."""

import contextlib
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.claims import ClaimExtras, InvalidClaim, parse_claim, parse_claim_record
from streams.domain.cpt import cpt_group_for
from tests.unit.claims import raw_claim


def test_valid_claim_parses_with_derived_group_and_event_time() -> None:
    """cpt_group comes from the CPT mapping; event time is decided_date midnight UTC."""
    claim = parse_claim(raw_claim())
    assert claim.cpt_group == "radiology"
    assert claim.allowed_cents == 7000
    assert claim.event_ms == 1_768_089_600_000  # 2026-01-11T00:00:00Z
    assert claim.window_key == "acme|payer-a|radiology"
    assert claim.decision_lag_days == 10


def test_decided_at_is_event_time_when_present() -> None:
    """decided_at (RFC 3339) wins over decided_date."""
    claim = parse_claim(raw_claim(decided_at="2026-01-11T06:30:00+00:00"))
    assert claim.event_ms == 1_768_089_600_000 + int(6.5 * 3_600_000)


def test_the_fields_only_stored_are_validated_and_returned() -> None:
    """paid_amount, denial_reason_codes and place_of_service: parsed with the claim."""
    claim, extras = parse_claim_record(
        raw_claim(
            paid_amount="61.5",
            denial_reason_codes=[" CO-97 ", "PR-1"],
            place_of_service="11",
            payer_name="Société Générale",
        )
    )
    assert extras == ClaimExtras(6150, ("CO-97", "PR-1"), "11")
    assert claim.payer_name == "Société Générale"
    assert parse_claim_record(raw_claim())[1] == ClaimExtras(None, (), None)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"claim_id": None}, "missing_field"),
        ({"outcome": "MAYBE"}, "bad_value"),
        ({"decided_date": "2025-12-01"}, "bad_value"),  # before submitted
        ({"billed_amount": "-5"}, "bad_value"),
        ({"allowed_amount": "abc"}, "bad_value"),
        ({"allowed_amount": float("nan")}, "bad_value"),
        ({"allowed_amount": True}, "wrong_type"),
        ({"submitted_date": 20260101}, "wrong_type"),
        ({"decided_date": "not-a-date"}, "bad_value"),
        ({"cpt_code": "ZZZ"}, "bad_value"),
        ({"payer_id": "a|b"}, "bad_value"),
        ({"customer_id": "x" * 200}, "bad_value"),
        ({"decided_at": "2026-01-11T06:30:00"}, "bad_value"),  # no offset
        ({"decided_date": "9999-12-31"}, "bad_value"),  # would carry the watermark past all
        ({"decided_at": "2150-01-01T00:00:00Z"}, "bad_value"),  # the same through event time
        ({"decided_at": "9999-12-31T23:59:59-01:00"}, "bad_value"),  # past datetime's range in UTC
        ({"decided_at": "0001-01-01T00:00:00+01:00"}, "bad_value"),  # before it
        ({"decided_at": {"t": 1}}, "wrong_type"),
        ({"submitted_date": "1850-01-01"}, "bad_value"),
        ({"payer_name": {"a": 1}}, "wrong_type"),
        ({"cpt_group": {"a": 1}}, "wrong_type"),
        ({"payer_name": "Acme\x00Health"}, "bad_value"),  # a NUL Postgres cannot store
        ({"claim_id": "c\n1"}, "bad_value"),
        ({"cpt_code": "71046" + "0" * 12}, "bad_value"),  # over claim_records' 16
        ({"paid_amount": "ten"}, "bad_value"),
        ({"paid_amount": "-1"}, "bad_value"),
        ({"paid_amount": [1]}, "wrong_type"),
        ({"denial_reason_codes": "CO-97"}, "wrong_type"),
        ({"denial_reason_codes": ["CO-97", 4]}, "wrong_type"),
        ({"denial_reason_codes": [""]}, "bad_value"),
        ({"denial_reason_codes": ["x"] * 65}, "bad_value"),
        ({"place_of_service": "x" * 33}, "bad_value"),
        ({"place_of_service": {"a": 1}}, "wrong_type"),
    ],
)
def test_invalid_claims_name_their_reason(overrides: dict[str, Any], reason: str) -> None:
    """Each kind of bad input raises InvalidClaim with a machine-readable reason."""
    with pytest.raises(InvalidClaim) as info:
        parse_claim(raw_claim(**overrides))
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("99213", "evaluation_management"),
        ("71046", "radiology"),
        ("80053", "pathology_lab"),
        ("29881", "surgery"),
        ("00142", "anesthesia"),
        ("90471", "medicine"),
        ("J1100", "hcpcs_j"),
        ("0001U", "pla"),
        ("1234", None),
        ("99999", None),
    ],
)
def test_cpt_groups(code: str, group: str | None) -> None:
    """CPT ranges and HCPCS letters map to procedure groups."""
    assert cpt_group_for(code) == group


def _general_event_ms(text: str) -> int | None:
    """decided_at through the general parse alone (datetime.fromisoformat), or None if refused."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None or not 1900 <= moment.astimezone(UTC).year < 2100:
        return None
    return int(moment.timestamp() * 1000)


@settings(max_examples=400)
@given(
    day=st.dates(min_value=date(1900, 1, 2), max_value=date(2099, 12, 30)),
    clock=st.tuples(*[st.sampled_from([0, 9, 10, 23, 24, 59, 60, 99])] * 3),
    noise=st.one_of(st.just(""), st.sampled_from(["x", " ", "1", "²", "-", ":", "+"])),
    at=st.integers(min_value=0, max_value=19),
)
def test_the_utc_fast_path_agrees_with_the_general_parse(
    day: date, clock: tuple[int, int, int], noise: str, at: int
) -> None:
    """decided_at of the common Z shape (or one character off it, or out of range) parses as
    the general parse does, whether or not its day was seen before."""
    text = f"{day.isoformat()}T{clock[0]:02d}:{clock[1]:02d}:{clock[2]:02d}Z"
    if noise:
        text = text[:at] + noise + text[at + 1 :]
    expected = _general_event_ms(text)
    raw = raw_claim(submitted_date="1900-01-01", decided_date="1900-01-01", decided_at=text)
    for warm in (False, True):  # the second time, the day is in the parser's caches
        if warm:
            with contextlib.suppress(InvalidClaim):
                parse_claim(raw_claim(submitted_date="1900-01-01", decided_date=text[:10]))
        try:
            assert parse_claim(raw).event_ms == expected
        except InvalidClaim:
            assert expected is None


@given(
    value=st.one_of(
        st.text(max_size=12),
        st.from_regex(r"\s?\d{1,9}(\.\d{0,3})?\s?", fullmatch=True),
        st.integers(min_value=-5, max_value=10**9),
    )
)
def test_amounts_parse_as_decimal_does(value: str | int) -> None:
    """An amount is refused, or is its Decimal value in cents, however it is written."""
    from decimal import Decimal, InvalidOperation

    try:
        cents = parse_claim(raw_claim(allowed_amount=value)).allowed_cents
    except InvalidClaim:
        cents = None
    try:
        amount = Decimal(str(value).strip())
        ok = amount.is_finite() and 0 <= amount <= 100_000_000 and str(value).strip() != ""
    except InvalidOperation:
        ok = False
    assert cents == (int((amount * 100).to_integral_value()) if ok else None)
