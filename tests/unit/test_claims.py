"""ClaimDecided validation: valid claims parse, invalid ones name a reason."""

import pytest

from streams.domain.claims import InvalidClaim, parse_claim
from streams.domain.cpt import cpt_group_for
from tests.unit.claims import raw_claim


def test_valid_claim_parses_with_derived_group_and_event_time():
    """cpt_group comes from the CPT mapping; event time is decided_date midnight UTC."""
    claim = parse_claim(raw_claim())
    assert claim.cpt_group == "radiology"
    assert claim.allowed_cents == 7000
    assert claim.event_ms == 1_768_089_600_000  # 2026-01-11T00:00:00Z
    assert claim.window_key == "acme|payer-a|radiology"
    assert claim.decision_lag_days == 10


def test_decided_at_is_event_time_when_present():
    """decided_at (RFC 3339) wins over decided_date."""
    claim = parse_claim(raw_claim(decided_at="2026-01-11T06:30:00+00:00"))
    assert claim.event_ms == 1_768_089_600_000 + int(6.5 * 3_600_000)


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
        ({"submitted_date": "1850-01-01"}, "bad_value"),
    ],
)
def test_invalid_claims_name_their_reason(overrides, reason):
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
def test_cpt_groups(code, group):
    """CPT ranges and HCPCS letters map to procedure groups."""
    assert cpt_group_for(code) == group
