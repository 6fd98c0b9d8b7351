"""Feed health's pure parts: versions of a claim in a batch, their counts, the quality score,
and a saved layout that predates a widget."""

from __future__ import annotations

from datetime import date

import pytest

from notifier.answers import FeedDay
from notifier.dashboard import feed_health
from notifier.layouts import as_layout, with_every_widget
from notifier.messages import WIDGETS
from sinks.feed import batch_counts, claim_versions, rejection_row
from sinks.rows import claim_row
from tests.unit.claims import raw_claim


def test_versions_are_grouped_per_claim_oldest_position_first() -> None:
    rows = [
        claim_row(raw_claim(claim_id="a"), 0, 5),
        claim_row(raw_claim(claim_id="b"), 1, 1),
        claim_row(raw_claim(claim_id="a", outcome="DENIED", allowed_amount="0"), 0, 2),
        claim_row(raw_claim(claim_id="a"), 0, 9),
    ]
    grouped = claim_versions(rows)
    assert [[r[-1] for r in versions] for versions in grouped] == [[2, 5, 9], [1]]


def test_each_version_after_the_first_is_resent_or_amended_against_the_one_before() -> None:
    a = raw_claim(claim_id="a")
    denied = raw_claim(claim_id="a", outcome="DENIED", allowed_amount="0")
    rows = [claim_row(v, 0, i) for i, v in enumerate([a, a, denied, denied, a])]
    rows.append(claim_row(raw_claim(claim_id="z", customer_id="beta"), 0, 9))
    # a: new, resent, amended, resent, amended
    assert batch_counts(claim_versions(rows)) == [("acme", 5, 1, 2, 2), ("beta", 1, 1, 0, 0)]


def _day(n: int, received: int, resent: int = 0, amended: int = 0, invalid: int = 0) -> FeedDay:
    return FeedDay(day=date(2026, 12, n), received=received, new=received - resent - amended,
                   resent=resent, amended=amended, invalid=invalid)  # fmt: skip


def test_quality_score_follows_its_formula_over_the_last_seven_days() -> None:
    days = [_day(1, 1000, invalid=1000)] + [_day(n, 100, 10, 4, 5) for n in range(2, 9)]
    feed = feed_health(days, None)
    assert feed["received"] == 700  # the first day is past the seven
    assert feed["dead_letter_rate"] == 35 / 735
    assert feed["duplicate_rate"] == 70 / 700
    assert feed["amendment_rate"] == 28 / 700
    assert feed["quality_score"] == round(100 * (1 - 35 / 735 - 0.05 - 0.01), 1)
    assert "dead-letter rate" in feed["formula"]


def test_a_feed_of_rejects_only_scores_zero_and_nothing_scores_nothing() -> None:
    assert feed_health([_day(1, 0, invalid=3)], None)["quality_score"] == 0.0
    empty = feed_health([_day(1, 0)], None)
    assert empty["quality_score"] is None
    assert empty["dead_letter_rate"] is None


def test_a_saved_layout_gets_the_widgets_it_did_not_know_at_the_end() -> None:
    saved = {"order": ["activity", "open", "claims", "payers"], "hidden": ["payers"]}
    layout = as_layout(with_every_widget(saved))
    assert layout["order"] == ["activity", "open", "claims", "payers", "timeline", "feed"]
    assert layout["hidden"] == ["payers"]
    assert sorted(layout["order"]) == sorted(WIDGETS)
    assert with_every_widget("nonsense") == "nonsense"


def test_a_time_written_another_way_is_the_same_claim_resent() -> None:
    """The same instant as Z, as +00:00 and in another zone, or midnight given or left out:
    resent, not amended (the row holds the event time in one form)."""
    instant = ["2026-01-11T10:00:00Z", "2026-01-11T10:00:00+00:00", "2026-01-11T12:00:00+02:00"]
    midnight = [None, "2026-01-11T00:00:00Z"]
    rows = [claim_row(raw_claim(claim_id="a", decided_at=t), 0, i) for i, t in enumerate(instant)]
    rows += [claim_row(raw_claim(claim_id="m", decided_at=t), 0, 9 + i)
             for i, t in enumerate(midnight)]  # fmt: skip
    assert batch_counts(claim_versions(rows)) == [("acme", 5, 2, 3, 0)]


@pytest.mark.parametrize(
    ("customer_id", "kept"),
    [(" acme ", "acme"), (123, "123"), ("a|b", None), ("a\tb", None), (True, None), ("", None)],
)
def test_a_reject_counts_for_the_customer_the_claim_validation_would_read(
    customer_id: object, kept: str | None
) -> None:
    assert rejection_row(0, 1, {"customer_id": customer_id}, "bad_value", "x")[2] == kept
