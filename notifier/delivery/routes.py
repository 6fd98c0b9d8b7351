"""Routes: which of a customer's alert transitions go to which receivers, and when.

A route matches alerts by level (at least ``min_level``), drift type, payer and CPT group (each
any of a set, or anything when the set is empty) and sends the *events* it is for to its
receivers in order. An alert transition is at most one event:

- ``opened``: the alert was triggered;
- ``escalated``: an update that raised the level of an active alert (``notify`` set);
- ``acknowledged`` and ``resolved``: the lifecycle (PagerDuty's incident follows it);
- anything else (a silent update, a note, a verdict, an assignment): no event.

Two more events come from the clock, not from a transition: ``repeat`` (a reminder of an alert
still active, not acknowledged, ``repeat_interval_s`` after the route last notified of it) and
``escalation`` (to the escalation receivers, once, ``escalate_after_s`` after the route first
notified of an alert nobody has acknowledged).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from streams.domain.values import LEVELS, DriftType, Level

Event = Literal["opened", "escalated", "acknowledged", "resolved", "repeat", "escalation"]
EVENTS: tuple[Event, ...] = get_args(Event)
ReceiverKind = Literal["webhook", "slack", "pagerduty", "email"]
RECEIVER_KINDS: tuple[ReceiverKind, ...] = get_args(ReceiverKind)
DEFAULT_EVENTS: frozenset[Event] = frozenset({"opened", "escalated", "resolved"})
TRANSITION_EVENTS: tuple[Event, ...] = ("opened", "escalated", "acknowledged", "resolved")
MAX_TARGET = 512  # characters of a receiver's URL or address
MAX_NAME = 128  # characters of a matcher's value
MIN_INTERVAL_S = 60  # the shortest repeat interval or escalation delay


@dataclass(frozen=True)
class Receiver:
    """Where a route sends: a webhook, Slack or PagerDuty URL, or an email address."""

    kind: ReceiverKind
    target: str  # the URL, or the email address
    secret: str | None = None  # webhook: the HMAC key; PagerDuty: the routing key

    def events(self, route_events: frozenset[Event]) -> frozenset[Event]:
        """The events this receiver is sent: the route's; PagerDuty also every lifecycle event,
        so that its incident is acknowledged and resolved with the alert."""
        if self.kind == "pagerduty":
            return route_events | {"opened", "acknowledged", "resolved"}
        return route_events


@dataclass(frozen=True)
class Route:
    """One customer's route: what it matches, what it sends where, and when again."""

    customer_id: str
    name: str
    receivers: tuple[Receiver, ...]
    min_level: Level = "warning"
    drift_types: frozenset[DriftType] = frozenset()
    payer_ids: frozenset[str] = frozenset()
    cpt_groups: frozenset[str] = frozenset()
    events: frozenset[Event] = DEFAULT_EVENTS
    repeat_interval_s: int | None = 4 * 3600
    escalate_after_s: int | None = None
    escalation: tuple[Receiver, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.receivers:
            raise ValueError(f"route {self.name!r} has no receiver")
        if self.escalate_after_s is not None and not self.escalation:
            raise ValueError(f"route {self.name!r} escalates to no receiver")
        for seconds in (self.repeat_interval_s, self.escalate_after_s):
            if seconds is not None and seconds <= 0:
                raise ValueError(f"route {self.name!r}: intervals are positive seconds")

    def matches(self, alert: Mapping[str, Any]) -> bool:
        """Whether ``alert`` (an AlertEvent's fields) is one this route is for."""
        return LEVELS.index(alert["severity_level"]) >= LEVELS.index(self.min_level) and covers(
            alert, self.customer_id, self.drift_types, self.payer_ids, self.cpt_groups
        )

    def sends(self, alert: Mapping[str, Any]) -> list[tuple[Receiver, Event]]:
        """The receivers ``alert`` goes to, each with its event; none if the route does not
        match or the transition is no event a receiver is sent."""
        event = event_of(alert)
        if event is None or not self.matches(alert):
            return []
        out = [(r, event) for r in self.receivers if event in r.events(self.events)]
        if event in ("acknowledged", "resolved"):  # a PagerDuty incident an escalation opened
            out += [(r, event) for r in self.escalation if r.kind == "pagerduty"]
        return out


def covers(
    alert: Mapping[str, Any], customer_id: str, drift_types: frozenset[str],
    payer_ids: frozenset[str], cpt_groups: frozenset[str],
) -> bool:  # fmt: skip
    """Whether the matchers of a route or silence take ``alert``: the customer's, and of any of
    the drift types, payers and CPT groups (an empty set: any)."""
    return (
        alert["customer_id"] == customer_id
        and (not drift_types or alert["drift_type"] in drift_types)
        and (not payer_ids or alert["payer_id"] in payer_ids)
        and (not cpt_groups or alert["cpt_group"] in cpt_groups)
    )


def event_of(alert: Mapping[str, Any]) -> Event | None:
    """The event an alert transition is, if any (module docstring)."""
    transition = alert["transition"]
    if transition == "triggered":
        return "opened"
    if transition == "updated":
        return "escalated" if alert["notify"] and alert["status"] == "active" else None
    if transition in ("acknowledged", "resolved"):
        event: Event = transition
        return event
    return None


def repeat_due(route: Route, alert: Mapping[str, Any], last_sent_s: float, now_s: float) -> bool:
    """Whether an alert last notified at ``last_sent_s`` is due again: still active (nobody
    acknowledged it) and the route's repeat interval has passed."""
    return _active_for(route, alert, now_s - last_sent_s, route.repeat_interval_s)


def escalation_due(route: Route, alert: Mapping[str, Any], opened_s: float, now_s: float) -> bool:
    """Whether an alert opened at ``opened_s`` (wall clock, when first notified) and still not
    acknowledged goes to the route's escalation receivers now."""
    return _active_for(route, alert, now_s - opened_s, route.escalate_after_s)


def _active_for(
    route: Route, alert: Mapping[str, Any], elapsed_s: float, limit_s: int | None
) -> bool:
    """A matching alert still active after ``limit_s`` (never, when None)."""
    return (
        limit_s is not None
        and alert["status"] == "active"
        and route.matches(alert)
        and elapsed_s >= limit_s
    )


def receiver_key(receiver: Receiver) -> str:
    """How the delivery log names a receiver: ``kind:target``, and for PagerDuty, whose target
    is the same Events API for every service, a digest of its routing key after ``#``."""
    key = f"{receiver.kind}:{receiver.target}"
    if receiver.kind == "pagerduty" and receiver.secret:
        key += "#" + hashlib.sha256(receiver.secret.encode()).hexdigest()[:12]
    return key


def receivers_spec(items: Iterable[Receiver]) -> list[dict[str, Any]]:
    """Receivers as stored: kind, target, secret."""
    return [{"kind": r.kind, "target": r.target, "secret": r.secret} for r in items]


def route_spec(route: Route) -> dict[str, Any]:
    """The route as stored (``delivery_routes.spec``): JSON, sets as sorted lists."""
    return {
        "min_level": route.min_level,
        "drift_types": sorted(route.drift_types),
        "payer_ids": sorted(route.payer_ids),
        "cpt_groups": sorted(route.cpt_groups),
        "events": sorted(route.events, key=EVENTS.index),
        "repeat_interval_s": route.repeat_interval_s,
        "escalate_after_s": route.escalate_after_s,
        "receivers": receivers_spec(route.receivers),
        "escalation": receivers_spec(route.escalation),
    }


def route_from(customer_id: str, name: str, spec: Mapping[str, Any]) -> Route:
    """A stored route (:func:`route_spec`); ValueError naming what does not check."""
    level = spec.get("min_level", "warning")
    if level not in LEVELS:
        raise ValueError(f"min_level must be one of {', '.join(LEVELS)}")
    events = frozenset(names(spec, "events", DEFAULT_EVENTS))
    if not events <= set(TRANSITION_EVENTS):
        raise ValueError(f"events must be among {', '.join(TRANSITION_EVENTS)}")
    return Route(
        customer_id=customer_id,
        name=name,
        receivers=_receivers(spec.get("receivers")),
        min_level=level,
        drift_types=frozenset(names(spec, "drift_types")),
        payer_ids=frozenset(names(spec, "payer_ids")),
        cpt_groups=frozenset(names(spec, "cpt_groups")),
        events=events,
        repeat_interval_s=_seconds(spec, "repeat_interval_s", 4 * 3600),
        escalate_after_s=_seconds(spec, "escalate_after_s", None),
        escalation=_receivers(spec.get("escalation")),
    )


def names(spec: Mapping[str, Any], key: str, default: Iterable[Any] = ()) -> list[Any]:
    """``spec[key]``: a list of strings (absent: ``default``); ValueError otherwise."""
    value = spec.get(key, default)
    if isinstance(value, str) or not isinstance(value, list | tuple | frozenset):
        raise ValueError(f"{key} is a list of strings")
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_NAME for v in value):
        raise ValueError(f"{key} holds strings of 1 to {MAX_NAME} characters")
    return list(value)


def _seconds(spec: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_INTERVAL_S:
        raise ValueError(f"{key} is whole seconds, at least {MIN_INTERVAL_S}, or null")
    return value


def _receivers(items: Any) -> tuple[Receiver, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ValueError("receivers are a list")
    return tuple(_receiver(item) for item in items)


def _receiver(item: Any) -> Receiver:
    """One receiver, checked: a known kind; an http(s) URL or an email address of at most
    :data:`MAX_TARGET` characters; a secret that is a string, if any."""
    if not isinstance(item, dict) or item.get("kind") not in RECEIVER_KINDS:
        raise ValueError(f"a receiver's kind is one of {', '.join(RECEIVER_KINDS)}")
    kind, target, secret = item["kind"], item.get("target"), item.get("secret")
    if not isinstance(target, str) or not 0 < len(target) <= MAX_TARGET:
        raise ValueError(f"a receiver's target is a string of 1 to {MAX_TARGET} characters")
    if secret is not None and (not isinstance(secret, str) or not 0 < len(secret) <= 512):
        raise ValueError("a receiver's secret is a string of 1 to 512 characters")
    if kind == "email":
        try:
            domain = Address(addr_spec=target).domain
        except (ValueError, IndexError, TypeError):  # also HeaderParseError's defects
            domain = ""
        if not domain:
            raise ValueError(f"{target!r} is not an email address")
    else:
        url = urlsplit(target)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{target!r} is not an http(s) URL")
    if kind == "pagerduty" and not secret:
        raise ValueError("a PagerDuty receiver needs its routing key (secret)")
    return Receiver(kind, target, secret)


def planner(routes: Iterable[Route]) -> Callable[[Mapping[str, Any]], list[tuple[str, str, str]]]:
    """For an alert transition: (route name, receiver key, event) of every notification it
    makes under ``routes``."""
    by_customer: dict[str, list[Route]] = {}
    for route in routes:
        by_customer.setdefault(route.customer_id, []).append(route)

    def plan(alert: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        return [
            (route.name, receiver_key(receiver), event)
            for route in by_customer.get(alert["customer_id"], ())
            for receiver, event in route.sends(alert)
        ]

    return plan
