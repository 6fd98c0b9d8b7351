"""An alert's change in words, and the codes that carry it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from notifier.explain import cpt_changes, explain, reason_changes


def _drift(drift_type: str, before: float, now: float, claims: int = 1204) -> dict[str, Any]:
    return {"drift_type": drift_type, "baseline_value": before, "current_value": now,
            "current_n": claims, "window_days": 30.0,
            "current_start": datetime(2025, 12, 20, tzinfo=UTC),
            "current_end": datetime(2026, 1, 19, tzinfo=UTC)}  # fmt: skip


@pytest.mark.parametrize(
    ("drift", "median", "words"),
    [
        (_drift("denial_rate", 0.138, 0.358), 187.5,
         "Denials rose from 13.8% to 35.8% of 1,204 claims decided 20 Dec 2025 – 18 Jan 2026 "
         "(the last 30 days); about 265 more denials than usual, ≈ $50k of allowed amount at "
         "stake."),
        (_drift("denial_rate", 0.2, 0.1, 300), 100.0,
         "Denials fell from 20.0% to 10.0% of 300 claims decided 20 Dec 2025 – 18 Jan 2026 (the "
         "last 30 days); about 30 fewer denials than usual."),
        (_drift("denial_rate", 0.1, 0.2, 300), None,
         "Denials rose from 10.0% to 20.0% of 300 claims decided 20 Dec 2025 – 18 Jan 2026 (the "
         "last 30 days); about 30 more denials than usual."),
        (_drift("decision_lag", 12.0, 19.5, 240), None,
         "Decisions slowed from 12.0 to 19.5 days on average of 240 claims decided 20 Dec 2025 – "
         "18 Jan 2026 (the last 30 days); about 1,800 claim-days more waiting than usual."),
        (_drift("allowed_amount", 120.0, 95.0, 240), None,
         "Typical allowed amounts fell from $120.00 to $95.00 a claim of 240 claims decided 20 Dec "
         "2025 – 18 Jan 2026 (the last 30 days); about $6.0k less allowed than usual."),
    ],
)  # fmt: skip
def test_the_change_in_words(drift: dict[str, Any], median: float | None, words: str) -> None:
    """Direction, both values in the metric's unit, the claims and dates of the window, and
    what the difference means over its claims (priced when the median allowed is known)."""
    assert explain(drift, median) == words


def test_a_window_within_a_year_names_the_year_once() -> None:
    march = {"current_start": datetime(2026, 3, 8, tzinfo=UTC),
             "current_end": datetime(2026, 4, 7, tzinfo=UTC)}  # fmt: skip
    drift = {**_drift("denial_rate", 0.1, 0.2, 10), **march}
    assert "decided 8 Mar – 6 Apr 2026 (" in explain(drift)


def test_reason_codes_by_extra_denials_against_the_baseline_rate() -> None:
    """Expected = baseline denials with the code × current claims / baseline claims."""
    reasons = [{"code": "CO-16", "baseline": 40, "current": 10},
               {"code": "CO-50", "baseline": 10, "current": 30},
               {"code": "CO-97", "baseline": 0, "current": 2}]  # fmt: skip
    assert reason_changes(reasons, 1000, 500) == [
        {"code": "CO-50", "baseline_denials": 10, "current_denials": 30, "extra_denials": 25.0},
        {"code": "CO-97", "baseline_denials": 0, "current_denials": 2, "extra_denials": 2.0},
        {"code": "CO-16", "baseline_denials": 40, "current_denials": 10, "extra_denials": -10.0},
    ]
    assert reason_changes(reasons, 1000, 500, top=1)[0]["code"] == "CO-50"
    assert reason_changes(reasons, 0, 500)[0]["extra_denials"] == 30.0  # no baseline: all extra


def test_cpt_codes_by_extra_denials_against_their_own_baseline_rate() -> None:
    """A code new in the current window is held to the key's baseline rate."""
    codes = [{"code": "71046", "baseline_claims": 100, "baseline": 10, "current_claims": 50,
              "current": 20},
             {"code": "71045", "baseline_claims": 100, "baseline": 30, "current_claims": 10,
              "current": 3},
             {"code": "71047", "baseline_claims": 0, "baseline": 0, "current_claims": 10,
              "current": 4}]  # fmt: skip
    assert [(c["code"], c["extra_denials"]) for c in cpt_changes(codes)] == [
        ("71046", 15.0), ("71047", 2.0), ("71045", 0.0)
    ]  # fmt: skip
