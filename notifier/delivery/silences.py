"""Silences and maintenance windows: an alert they match still exists and shows (marked
silenced), but nothing is sent for it while the silence is active; a still-open alert notifies
once the silence ends.

A silence matches a customer's alerts by drift type, payer and CPT group (each any of a set, or
anything when empty) and is active from ``starts_at`` until ``ends_at``, and, when it has a
weekly window, only inside that window (e.g. Sundays 00:00–06:00 in the customer's zone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from notifier.delivery.routes import covers, names
from streams.domain.values import DriftType

MINUTES_A_WEEK = 7 * 24 * 60


@dataclass(frozen=True)
class Weekly:
    """A window every week: on ``days`` (0 is Monday), from ``start`` for ``minutes``, in the
    time zone ``zone`` (its wall clock; a window may run past midnight)."""

    days: frozenset[int]
    start: time
    minutes: int
    zone: str = "UTC"

    def __post_init__(self) -> None:
        if (
            not self.days
            or not all(type(d) is int for d in self.days)
            or not self.days <= set(range(7))
        ):
            raise ValueError("a weekly window needs days from 0 (Monday) to 6 (Sunday)")
        if type(self.minutes) is not int or not 0 < self.minutes < MINUTES_A_WEEK:
            raise ValueError(f"a weekly window lasts 1 to {MINUTES_A_WEEK - 1} minutes")
        ZoneInfo(self.zone)  # raises for an unknown zone

    def covers(self, at: datetime) -> bool:
        """Whether the aware instant ``at`` falls inside one of the windows."""
        return self.window_end(at) is not None

    def window_end(self, at: datetime) -> datetime | None:
        """The end of the window ``at`` falls in (the latest, should two overlap); None when it
        falls in none."""
        zone = ZoneInfo(self.zone)
        local = at.astimezone(zone)
        ends = []
        for back in range(self.minutes // (24 * 60) + 2):  # windows that began up to then
            day = local.date() - timedelta(days=back)
            if day.weekday() in self.days:
                begins = datetime.combine(day, self.start, tzinfo=zone)
                if begins <= local < begins + timedelta(minutes=self.minutes):
                    ends.append(begins + timedelta(minutes=self.minutes))
        return max(ends) if ends else None


@dataclass(frozen=True)
class Silence:
    """One silence of a customer's alerts."""

    silence_id: str
    customer_id: str
    starts_at: datetime
    ends_at: datetime
    drift_types: frozenset[DriftType] = frozenset()
    payer_ids: frozenset[str] = frozenset()
    cpt_groups: frozenset[str] = frozenset()
    weekly: Weekly | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("a silence's start and end carry a time zone")
        if self.ends_at <= self.starts_at:
            raise ValueError("a silence ends after it starts")

    def active(self, at: datetime) -> bool:
        """Whether the silence holds at the aware instant ``at``."""
        if not self.starts_at <= at < self.ends_at:
            return False
        return self.weekly is None or self.weekly.covers(at)

    def silences(self, alert: Mapping[str, Any], at: datetime) -> bool:
        """Whether ``alert`` (an AlertEvent's fields) is silenced by this at ``at``."""
        return self.active(at) and covers(
            alert, self.customer_id, self.drift_types, self.payer_ids, self.cpt_groups
        )

    def holds_until(self, at: datetime) -> datetime:
        """When what this silences at ``at`` is free again: the end of its weekly window then,
        or of the silence, whichever comes first."""
        window = self.weekly.window_end(at) if self.weekly is not None else None
        return self.ends_at if window is None else min(window, self.ends_at)


def silence_spec(silence: Silence) -> dict[str, Any]:
    """What is stored of a silence besides its id, customer and range (``silences.spec``)."""
    weekly = silence.weekly
    return {
        "drift_types": sorted(silence.drift_types),
        "payer_ids": sorted(silence.payer_ids),
        "cpt_groups": sorted(silence.cpt_groups),
        "comment": silence.comment,
        "weekly": None if weekly is None else {
            "days": sorted(weekly.days), "start": weekly.start.isoformat(),
            "minutes": weekly.minutes, "zone": weekly.zone,
        },
    }  # fmt: skip


def silence_from(row: Mapping[str, Any]) -> Silence:
    """A stored silence: a ``silences`` row (id, customer, range, spec); ValueError naming what
    does not check."""
    spec = row["spec"]
    weekly = spec.get("weekly")
    if weekly is not None and not isinstance(weekly, dict):
        raise ValueError("weekly is an object: days, start, minutes, zone")
    comment = spec.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 2000:
        raise ValueError("comment is a string of at most 2,000 characters")
    return Silence(
        silence_id=row["silence_id"],
        customer_id=row["customer_id"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        drift_types=frozenset(names(spec, "drift_types")),
        payer_ids=frozenset(names(spec, "payer_ids")),
        cpt_groups=frozenset(names(spec, "cpt_groups")),
        comment=comment,
        weekly=None if weekly is None else Weekly(
            frozenset(weekly["days"]), time.fromisoformat(weekly["start"]), weekly["minutes"],
            weekly.get("zone", "UTC"),
        ),
    )  # fmt: skip
