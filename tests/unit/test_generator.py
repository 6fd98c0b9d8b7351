"""The generator's feeds: the same claims, sent when each feed would send them."""

from collections import Counter
from datetime import date
from typing import Any

import pytest

from streams.devtools.generator import Scenario, generate, generate_mix

BASE = Scenario("denial-spike", "acme", days=60, spike_day=40, claims_per_key_per_day=3)


def _decided_day(claim: dict[str, Any]) -> int:
    return (date.fromisoformat(claim["decided_date"]) - BASE.start).days


def test_every_feed_sends_the_same_claims() -> None:
    on_time = generate(BASE)
    for feed in ("remittance", "onboarding"):
        fed = generate(Scenario(**{**_fields(BASE), "feed": feed}))
        assert sorted(map(repr, fed)) == sorted(map(repr, on_time)), feed
    assert [_decided_day(c) for c in on_time] == sorted(_decided_day(c) for c in on_time)


def test_remittances_arrive_five_to_twenty_days_after_the_decision() -> None:
    fed = generate(Scenario(**{**_fields(BASE), "feed": "remittance"}))
    days = [_decided_day(c) for c in fed]
    # Sent in order of arrival: a claim may follow one decided up to 15 days after it.
    behind = [max(days[: i + 1]) - day for i, day in enumerate(days)]
    assert max(behind) > 10
    assert max(behind) <= 15
    assert sum(1 for b in behind if b > 3) > len(fed) // 4  # most are beyond the grace


def test_onboarding_sends_the_history_in_one_burst_sorted_then_daily() -> None:
    fed = generate(Scenario(**{**_fields(BASE), "feed": "onboarding", "onboard_day": 30}))
    days = [_decided_day(c) for c in fed]
    burst = [d for d in days if d < 30]
    assert days[: len(burst)] == burst == sorted(burst)
    assert days[len(burst) :] == sorted(days[len(burst) :])


def test_a_mix_keeps_each_customer_s_order() -> None:
    scenarios = [Scenario(**{**_fields(BASE), "customer_id": c, "feed": f, "seed": n})
                 for n, (c, f) in enumerate((("l", "on-time"), ("r", "remittance")))]  # fmt: skip
    mixed = generate_mix(scenarios)
    assert Counter(c["customer_id"] for c in mixed) == {"l": len(mixed) // 2, "r": len(mixed) // 2}
    for scenario in scenarios:
        alone = generate(scenario)
        assert [c for c in mixed if c["customer_id"] == scenario.customer_id] == alone
    with pytest.raises(ValueError, match="its own customer_id"):
        generate_mix([BASE, BASE])


def test_bad_feeds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown feed"):
        Scenario(feed="carrier-pigeon")
    with pytest.raises(ValueError, match="onboarding day"):
        Scenario(days=10, feed="onboarding", onboard_day=10)


def _fields(s: Scenario) -> dict[str, Any]:
    return {f: getattr(s, f) for f in s.__dataclass_fields__}


def test_the_dev_scenario_ends_today() -> None:
    """``upstream dev`` streams a scenario whose last decision day is today."""
    from datetime import date

    from streams.app.dev import ending_today

    scenario = ending_today(Scenario(days=30, spike_day=20, claims_per_key_per_day=1),
                            today=date(2026, 12, 6))  # fmt: skip
    days = {c["decided_date"] for c in generate(scenario)}
    assert (min(days), max(days)) == ("2026-11-07", "2026-12-06")
