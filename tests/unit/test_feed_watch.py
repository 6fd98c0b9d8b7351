"""The feed watch: silence beyond the feed's usual gap, a weekday's volume far below its usual,
dead-letter bursts; and their alerts' lifecycle through the alerts stage's rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from streams.domain.alerts import AlertLifecycle
from streams.domain.rules import default_rule
from streams.stages.feed_watch import FEED_KEY, FeedState, FeedWatch, evaluate, usual_gap_days
from tests.unit.test_alerts import DictStore

NOW = datetime(2026, 3, 11, 9, 30, tzinfo=UTC)  # a Wednesday
WATCH = FeedWatch()


def daily(days: int = 60, per_day: int = 100, today: int = 40, **kw: object) -> FeedState:
    """A feed that brought ``per_day`` claims every day up to yesterday, ``today`` so far."""
    received = {NOW.date() - timedelta(days=d): per_day for d in range(1, days)}
    received[NOW.date()] = today
    fields: dict[str, object] = {"customer_id": "acme", "received": received,
                                 "last_received_at": NOW - timedelta(hours=2),
                                 "rejected_last_hour": 0, "rejected_week_before": 0}  # fmt: skip
    return FeedState(**{**fields, **kw})  # type: ignore[arg-type]


def found(feed: FeedState, now: datetime = NOW) -> dict[str, tuple[float, str] | None]:
    """Each tested drift type: (severity, level) of its detection, or None when clean."""
    out: dict[str, tuple[float, str] | None] = {}
    for evaluation in evaluate(feed, WATCH, now):
        assert (evaluation.payer_id, evaluation.cpt_group) == (FEED_KEY, FEED_KEY)
        (kind,) = evaluation.drift_types
        hit = evaluation.detections[0] if evaluation.detections else None
        out[kind] = None if hit is None else (hit.severity, hit.severity_level)
    return out


def test_a_steady_feed_is_clean_on_every_test() -> None:
    assert found(daily()) == {"feed_silence": None, "feed_volume": None, "dead_letters": None}


def test_a_customer_with_little_history_is_not_watched_yet() -> None:
    assert evaluate(daily(days=5), WATCH, NOW) == []
    assert evaluate(daily(last_received_at=None), WATCH, NOW) == []


def test_silence_past_the_usual_gap_alerts_and_grows_critical() -> None:
    """A daily feed may go 48 h (its gap of a day, plus the day, and the floor); its volume is
    not tested meanwhile."""
    assert found(daily(last_received_at=NOW - timedelta(hours=47)))["feed_silence"] is None
    assert found(daily(last_received_at=NOW - timedelta(hours=72))) == {
        "feed_silence": (0.45, "warning"),  # 1.5 times the allowance
        "dead_letters": None,
    }
    assert found(daily(last_received_at=NOW - timedelta(hours=100)))["feed_silence"] == (
        0.625,  # 100 / 48 times the allowance
        "critical",
    )


def test_a_weekday_feed_is_not_silent_over_a_weekend() -> None:
    """Monday to Friday: gaps of 1 day and, each weekend, 3; Friday 18:00 to Monday 09:00 is
    63 h within its 96 h allowance; Tuesday 09:00 (87 h) too; Thursday (135 h) is not."""
    monday = datetime(2026, 3, 9, 9, tzinfo=UTC)
    days = [monday.date() - timedelta(days=k) for k in range(1, 60)]
    received = {d: 100 for d in days if d.weekday() < 5}
    last = datetime(2026, 3, 6, 18, tzinfo=UTC)
    feed = FeedState("acme", received, last, 0, 0)
    assert usual_gap_days(sorted(received)) == 3
    assert found(feed, monday)["feed_silence"] is None
    assert found(feed, monday + timedelta(days=1))["feed_silence"] is None
    thursday = found(feed, monday + timedelta(days=3))["feed_silence"]
    assert thursday == (round(0.3 + 0.3 * (135 / 96 - 1), 4), "warning")


def test_a_day_far_below_its_weekday_alerts_until_today_catches_up() -> None:
    feed = daily(today=10)
    yesterday = NOW.date() - timedelta(days=1)

    def with_days(base: FeedState, **days: int) -> FeedState:
        named = {"before": yesterday - timedelta(days=1), "yesterday": yesterday,
                 "today": NOW.date()}  # fmt: skip
        return replace(base, received={**base.received, **{named[k]: n for k, n in days.items()}})

    low = with_days(feed, yesterday=20)
    assert found(low)["feed_volume"] == (0.48, "warning")  # 80 % short: 1.6 times the threshold
    assert found(with_days(low, yesterday=5))["feed_volume"] == (0.57, "warning")
    # A daily feed that skipped one day: nothing is far below its usual.
    assert found(with_days(low, yesterday=0))["feed_volume"] == (0.6, "critical")
    # Nothing for two days is an outage: the silence test's (one alert, not two).
    assert found(with_days(low, yesterday=0, before=0))["feed_volume"] is None
    back = with_days(low, today=60)
    assert found(back)["feed_volume"] is None  # today already brought more than half its usual
    half = with_days(feed, yesterday=50)
    assert found(half)["feed_volume"] is None  # at the threshold: not below it


def test_a_weekday_the_feed_never_sends_is_not_a_low_volume() -> None:
    """Yesterday was a Tuesday: a feed silent every Tuesday has a usual of 0 there, no test."""
    received = {d: 0 if d.weekday() == 1 else 100 for k in range(0, 60)
                if (d := NOW.date() - timedelta(days=k))}  # fmt: skip
    feed = FeedState("acme", received, NOW - timedelta(hours=1), 0, 0)
    assert "feed_volume" not in found(feed)


def test_a_burst_of_dead_letters_alerts() -> None:
    assert found(daily(rejected_last_hour=19))["dead_letters"] is None  # under the floor
    assert found(daily(rejected_last_hour=30, rejected_week_before=168))["dead_letters"] == (
        0.45,
        "warning",
    )
    # A feed that rejects 20 an hour as a rule needs 60 in an hour.
    usual_20 = daily(rejected_last_hour=40, rejected_week_before=20 * 168)
    assert found(usual_20)["dead_letters"] is None


def test_a_feed_alert_opens_updates_and_resolves_once_the_feed_is_back() -> None:
    """Through the default rule: a silence opens a feed_silence alert of the whole feed; each
    period re-applies once; two clean periods after the claims return resolve it."""
    lifecycle, rules = AlertLifecycle(DictStore()), [default_rule("acme")]
    silent = daily(last_received_at=NOW - timedelta(hours=72))

    def apply(feed: FeedState, at: datetime) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        for evaluation in evaluate(feed, WATCH, at):
            out += [(t.drift_type, t.transition, t.status)
                    for t in lifecycle.apply_evaluation(evaluation, rules)]  # fmt: skip
        return out

    assert apply(silent, NOW) == [("feed_silence", "triggered", "active")]
    assert apply(silent, NOW + timedelta(minutes=5)) == []  # the same period again: applied once
    later = NOW + timedelta(minutes=15)
    assert apply(silent, later) == [("feed_silence", "updated", "active")]
    back = daily(last_received_at=later + timedelta(minutes=1))
    assert apply(back, later + timedelta(minutes=15)) == []  # one clean period
    assert apply(back, later + timedelta(minutes=30)) == [("feed_silence", "resolved", "resolved")]


def test_each_customer_is_watched_on_its_own_history() -> None:
    """Two customers' feeds, one silent: only its evaluations carry a detection."""
    quiet = daily(customer_id="quiet", last_received_at=NOW - timedelta(hours=80))
    busy = daily(customer_id="busy")
    for feed, expected in ((quiet, ("feed_silence",)), (busy, ())):
        evaluations = evaluate(feed, WATCH, NOW)
        assert {e.customer_id for e in evaluations} == {feed.customer_id}
        assert tuple(d.drift_type for e in evaluations for d in e.detections) == expected
