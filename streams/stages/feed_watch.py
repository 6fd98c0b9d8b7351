"""The feed watch's work for one customer: is its feed silent for longer than usual, did a day
bring far fewer claims than that weekday usually does, or did dead letters burst? Each answer is
a key evaluation of the whole feed (payer and CPT group ``*``) with its detections, which the
alerts stage applies like any other: an alert opens, updates, and resolves after the rule's
clean evaluations (``auto_resolve_after``) once the feed is back.

Times are the wall clock: a feed is about when claims *arrive*, not when payers decided them.
Each evaluation is stamped with the start of its period (:attr:`FeedWatch.every_ms`), so the
same period evaluated twice (a second worker, a restart) is applied once, and its drift events
have the same ids. What is usual is learned from the customer's own history (``feed_days``):
a customer new to Upstream, with fewer than :attr:`FeedWatch.min_active_days` days of claims,
is not watched yet. No I/O here: the leader's job (``streams.runtime.jobs``) reads and sends.
"""

from __future__ import annotations

import itertools
import math
import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from streams.domain.drift import severity_level
from streams.domain.events import DriftDetected, KeyEvaluated
from streams.domain.values import FeedDriftType

FEED_KEY = "*"  # a feed alert's payer and CPT group: the whole feed
EVENT_NAMESPACE = uuid.UUID("0b7d3c52-6a0e-4f4e-8d7c-6f1f2b9a4e13")
DAY_MS, HOUR_MS = 86_400_000, 3_600_000
WARNING, CRITICAL = 0.3, 0.6  # severities at the threshold and at twice past it


@dataclass(frozen=True)
class FeedWatch:
    """Thresholds of the feed watch (``UPSTREAM_FEED_*`` settings)."""

    every_ms: int = 15 * 60_000  # one evaluation per period
    silence_floor_h: float = 48.0  # never a silence alert before this many hours
    volume_drop: float = 0.5  # a day below this share of its weekday's usual volume is low
    dead_letter_floor: int = 20  # rejected claims in an hour below this never alert
    history_days: int = 63  # nine weeks: eight same weekdays before yesterday
    min_active_days: int = 7


@dataclass(frozen=True)
class FeedState:
    """What Postgres knows of one customer's feed at ``now`` (wall clock, aware)."""

    customer_id: str
    received: dict[date, int]  # claim messages per UTC day received, the last history_days
    last_received_at: datetime | None
    rejected_last_hour: int
    rejected_week_before: int  # in the 7 days before the last hour


@dataclass(frozen=True)
class _Found:
    """What a test of the feed found, ``past`` times its threshold (1: at it)."""

    window_days: float
    baseline: tuple[int, int]  # ms, [start, end)
    current: tuple[int, int]
    baseline_value: float
    current_value: float
    baseline_n: int
    current_n: int
    past: float


def evaluate(feed: FeedState, watch: FeedWatch, now: datetime) -> list[KeyEvaluated]:
    """The feed's evaluations at ``now``: one per drift type tested (none for a feed without
    enough history); a silent feed's volume is not tested (its silence says it)."""
    at_ms = int(now.timestamp() * 1000) // watch.every_ms * watch.every_ms
    active = sorted(d for d, n in feed.received.items() if n > 0)
    if len(active) < watch.min_active_days or feed.last_received_at is None:
        return []
    silence = _silence(watch, active, feed.last_received_at, now, at_ms)
    found: list[tuple[FeedDriftType, _Found | None]] = [("feed_silence", silence)]
    if silence is None:
        tested, volume = _volume(feed, watch, active[0], now)
        if tested:
            found.append(("feed_volume", volume))
    found.append(("dead_letters", _dead_letters(feed, watch, now)))
    return [
        KeyEvaluated(
            customer_id=feed.customer_id,
            payer_id=FEED_KEY,
            cpt_group=FEED_KEY,
            evaluated_at_ms=at_ms,
            drift_types=(kind,),
            detections=() if f is None else (_drift(feed.customer_id, kind, at_ms, f),),
        )
        for kind, f in found
    ]


def usual_gap_days(active: list[date]) -> int:
    """The 90th percentile (nearest rank) of the days between consecutive days with claims."""
    gaps = sorted((b - a).days for a, b in itertools.pairwise(active))
    if not gaps:
        return 1
    return gaps[max(0, math.ceil(0.9 * len(gaps)) - 1)]


def _silence(
    watch: FeedWatch, active: list[date], last: datetime, now: datetime, at_ms: int
) -> _Found | None:
    """No claims for longer than the feed's allowance: its usual gap between days with claims,
    plus the day itself (claims may come early one day, late the next), at least the floor."""
    allowance_h = max(watch.silence_floor_h, 24.0 * (usual_gap_days(active) + 1))
    silent_h = (now - last).total_seconds() / 3600
    if silent_h <= allowance_h:
        return None
    last_ms = int(last.timestamp() * 1000)
    return _Found(silent_h / 24, (_day_ms(active[0]), last_ms), (last_ms, at_ms), allowance_h,
                  silent_h, len(active), 0, silent_h / allowance_h)  # fmt: skip


def _volume(
    feed: FeedState, watch: FeedWatch, began: date, now: datetime
) -> tuple[bool, _Found | None]:
    """(tested, found): yesterday (UTC) brought fewer than ``volume_drop`` of its weekday's
    usual claims, and today is not yet back above that share of its own weekday's usual.
    Nothing yesterday after nothing the day before is left to the silence test (an outage
    raises one alert, not two). Untested with too little history for yesterday's weekday."""
    today = now.astimezone(UTC).date()
    day = today - timedelta(days=1)
    usual, samples = _usual(feed, day, began)
    if usual is None:
        return False, None
    got = feed.received.get(day, 0)
    if got == 0 and feed.received.get(day - timedelta(days=1), 0) == 0:
        return True, None  # days on end with nothing: a silence, the silence test's
    if got >= watch.volume_drop * usual:
        return True, None
    usual_today, _ = _usual(feed, today, began)
    if usual_today is not None and feed.received.get(today, 0) >= watch.volume_drop * usual_today:
        return True, None  # back already
    shortfall = 1 - got / usual  # 1 - volume_drop at the threshold, 1 for nothing at all
    past = 1 + (shortfall - (1 - watch.volume_drop)) / watch.volume_drop
    start = _day_ms(day)
    first = _day_ms(day - timedelta(weeks=samples))
    return True, _Found(1.0, (first, start), (start, start + DAY_MS), usual, float(got), samples,
                        got, past)  # fmt: skip


def _usual(feed: FeedState, day: date, began: date) -> tuple[float | None, int]:
    """(the median claims of the up to 8 same weekdays before ``day`` since ``began``, how many
    weekdays): None when fewer than 3, or a median of 0 (the feed does not send that weekday)."""
    weeks = [k for k in range(1, 9) if day - timedelta(weeks=k) >= began]
    if len(weeks) < 3:
        return None, len(weeks)
    usual = statistics.median(feed.received.get(day - timedelta(weeks=k), 0) for k in weeks)
    return (float(usual) if usual > 0 else None), len(weeks)


def _dead_letters(feed: FeedState, watch: FeedWatch, now: datetime) -> _Found | None:
    """More claims rejected in the last hour than three times the usual hour of the week
    before, and at least the floor."""
    usual_h = feed.rejected_week_before / (7 * 24)
    threshold = max(float(watch.dead_letter_floor), 3 * usual_h)
    got = feed.rejected_last_hour
    if got < threshold:
        return None
    now_ms = int(now.timestamp() * 1000)
    return _Found(1 / 24, (now_ms - 7 * DAY_MS - HOUR_MS, now_ms - HOUR_MS),
                  (now_ms - HOUR_MS, now_ms), usual_h, float(got), feed.rejected_week_before,
                  got, got / threshold)  # fmt: skip


def _drift(customer_id: str, kind: FeedDriftType, at_ms: int, f: _Found) -> DriftDetected:
    """The drift event of a finding: severity 0.3 (warning) at the threshold, rising to 0.6
    (critical) at twice past it. Not a statistical test: p and q are 0, confidence 1."""
    severity = min(1.0, WARNING + (CRITICAL - WARNING) * (f.past - 1))
    event_id = uuid.uuid5(EVENT_NAMESPACE, f"{customer_id}|{kind}|{at_ms}")
    return DriftDetected(
        event_id=str(event_id), customer_id=customer_id, payer_id=FEED_KEY, cpt_group=FEED_KEY,
        drift_type=kind, window_days=round(f.window_days, 4), baseline_start_ms=f.baseline[0],
        baseline_end_ms=f.baseline[1], current_start_ms=f.current[0], current_end_ms=f.current[1],
        baseline_value=round(f.baseline_value, 4), current_value=round(f.current_value, 4),
        delta_value=round(f.current_value - f.baseline_value, 4), baseline_n=f.baseline_n,
        current_n=f.current_n, p_value=0.0, q_value=0.0, severity=round(severity, 4),
        severity_level=severity_level(severity), confidence=1.0, detected_at_ms=at_ms,
    )  # fmt: skip


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
