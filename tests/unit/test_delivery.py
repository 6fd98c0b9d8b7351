"""Alert delivery's rules: which transitions go where, silences, and each receiver's format."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, time
from email import message_from_bytes, policy
from typing import Any

import pytest

from notifier.delivery.admin import BadChangeError, masked, public_targets
from notifier.delivery.formats import email, pagerduty, signature, slack, summary, webhook
from notifier.delivery.routes import (
    Receiver,
    Route,
    escalation_due,
    event_of,
    receiver_key,
    repeat_due,
    route_from,
    route_spec,
)
from notifier.delivery.silences import Silence, Weekly, silence_from

LINK = "http://127.0.0.1:8765/#alert=a1"


def _alert(**fields: Any) -> dict[str, Any]:
    return {
        "alert_id": "a1", "version": 1, "dedup_key": "acme|default|p1|radiology|denial_rate",
        "customer_id": "acme", "rule_id": "default", "drift_event_id": "e1", "payer_id": "p1",
        "cpt_group": "radiology", "drift_type": "denial_rate", "status": "active",
        "transition": "triggered", "severity": 0.9, "severity_level": "critical",
        "occurrence_count": 1, "first_seen": "2026-03-01T00:00:00+00:00",
        "last_seen": "2026-03-01T00:00:00+00:00", "message": "Denials rose from 10% to 30%",
        "notify": True, "acknowledged_by": None, "resolved_by": None, "resolution": None,
        "verdict": None, "assignee": None, "actor": None, "note": None, **fields,
    }  # fmt: skip


HOOK = Receiver("webhook", "http://127.0.0.1:1/hook", "s3cret")
PAGER = Receiver("pagerduty", "http://127.0.0.1:1/v2/enqueue", "R" * 32)


@pytest.mark.parametrize(
    ("fields", "event"),
    [
        ({}, "opened"),
        ({"transition": "updated", "notify": True}, "escalated"),
        ({"transition": "updated", "notify": False}, None),  # a silent update
        ({"transition": "updated", "notify": True, "status": "acknowledged"}, None),
        ({"transition": "acknowledged", "status": "acknowledged", "notify": False}, "acknowledged"),
        ({"transition": "resolved", "status": "resolved"}, "resolved"),
        ({"transition": "noted", "notify": False}, None),
        ({"transition": "judged", "notify": False}, None),
    ],
)
def test_each_transition_is_at_most_one_event(fields: dict[str, Any], event: str | None) -> None:
    assert event_of(_alert(**fields)) == event


def test_a_route_matches_by_level_payer_and_group_and_pagerduty_follows_the_lifecycle() -> None:
    route = Route("acme", "oncall", (HOOK, PAGER), min_level="warning", payer_ids=frozenset({"p1"}))
    assert route.sends(_alert()) == [(HOOK, "opened"), (PAGER, "opened")]
    acknowledged = _alert(transition="acknowledged", status="acknowledged", notify=False)
    assert route.sends(acknowledged) == [(PAGER, "acknowledged")]  # not in the route's events
    assert route.sends(_alert(severity_level="info")) == []
    assert route.sends(_alert(payer_id="p2")) == []
    assert route.sends(_alert(customer_id="beta")) == []
    groups = Route("acme", "rad", (HOOK,), cpt_groups=frozenset({"surgery"}))
    assert groups.sends(_alert()) == []


def test_a_route_needs_receivers_and_positive_intervals() -> None:
    with pytest.raises(ValueError, match="no receiver"):
        Route("acme", "empty", ())
    with pytest.raises(ValueError, match="escalates to no receiver"):
        Route("acme", "x", (HOOK,), escalate_after_s=600)
    with pytest.raises(ValueError, match="positive"):
        Route("acme", "x", (HOOK,), repeat_interval_s=0)


def test_repeat_and_escalation_are_due_only_for_unacknowledged_alerts_in_time() -> None:
    route = Route("acme", "x", (HOOK,), repeat_interval_s=3600, escalate_after_s=900,
                  escalation=(PAGER,))  # fmt: skip
    assert not repeat_due(route, _alert(), 0.0, 3599.0)
    assert repeat_due(route, _alert(), 0.0, 3600.0)
    assert not repeat_due(route, _alert(status="acknowledged"), 0.0, 9999.0)
    assert not escalation_due(route, _alert(), 100.0, 999.0)
    assert escalation_due(route, _alert(), 100.0, 1000.0)
    assert not escalation_due(route, _alert(status="resolved"), 100.0, 5000.0)


def test_a_silence_holds_for_its_matchers_within_its_range() -> None:
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    silence = Silence("s1", "acme", start, end, payer_ids=frozenset({"p1"}))
    inside, after = datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    assert silence.silences(_alert(), inside)
    assert not silence.silences(_alert(), after)  # the end is not in it
    assert not silence.silences(_alert(payer_id="p2"), inside)
    assert not silence.silences(_alert(customer_id="beta"), inside)
    with pytest.raises(ValueError, match="ends after"):
        Silence("s2", "acme", after, inside)


def test_a_weekly_window_runs_past_midnight_in_its_own_zone() -> None:
    """Sundays 22:00–02:00 New York time, for a year."""
    weekly = Weekly(frozenset({6}), time(22), 240, "America/New_York")
    silence = Silence("s1", "acme", datetime(2026, 1, 1, tzinfo=UTC),
                      datetime(2027, 1, 1, tzinfo=UTC), weekly=weekly)  # fmt: skip
    sunday_late = datetime(2026, 3, 2, 4, 30, tzinfo=UTC)  # Sun 1 Mar 23:30 in New York
    monday_early = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)  # Mon 01:30 there
    monday_later = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)  # Mon 02:30 there
    saturday_late = datetime(2026, 3, 1, 4, 30, tzinfo=UTC)  # Sat 23:30 there
    assert silence.active(sunday_late)
    assert silence.active(monday_early)
    assert not silence.active(monday_later)
    assert not silence.active(saturday_late)
    with pytest.raises(ValueError, match="days"):
        Weekly(frozenset({7}), time(0), 60)


def test_the_webhook_is_signed_and_keyed_by_alert_and_version() -> None:
    body, headers = webhook(_alert(version=3), "opened", "s3cret", LINK, 1_700_000_000)
    assert headers["Idempotency-Key"] == "a1:3"
    t, v1 = (part.split("=", 1)[1] for part in headers["X-Upstream-Signature"].split(","))
    expected = hmac.new(b"s3cret", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    assert headers["X-Upstream-Signature"] == signature("s3cret", 1_700_000_000, body)
    sent = json.loads(body)
    assert (sent["event"], sent["link"], sent["alert"]["alert_id"]) == ("opened", LINK, "a1")
    assert sent["summary"] == summary(_alert(), "opened")
    assert "X-Upstream-Signature" not in webhook(_alert(), "opened", None, LINK, 0)[1]


def test_slack_gets_a_readable_message_with_a_link_to_the_console() -> None:
    body, _ = slack(_alert(message="a <b> & c"), "opened", LINK)
    sent = json.loads(body)
    assert sent["text"].startswith("[critical] denial rate alert opened: payer p1 / radiology")
    assert "&lt;b&gt; &amp; c" in sent["blocks"][0]["text"]["text"]
    assert f"<{LINK}|Open in Upstream>" in sent["blocks"][1]["elements"][0]["text"]


def test_pagerduty_events_follow_the_alert_by_its_dedup_key() -> None:
    trigger = json.loads(pagerduty(_alert(), "opened", "R" * 32, LINK)[0])
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "acme|default|p1|radiology|denial_rate"
    assert set(trigger["payload"]) >= {"summary", "source", "severity"}
    assert trigger["payload"]["severity"] in {"critical", "error", "warning", "info"}
    resolve = json.loads(pagerduty(_alert(transition="resolved"), "resolved", "R" * 32, LINK)[0])
    assert resolve == {"routing_key": "R" * 32, "event_action": "resolve",
                       "dedup_key": trigger["dedup_key"]}  # fmt: skip
    long_key = json.loads(pagerduty(_alert(dedup_key="k" * 300), "opened", "R" * 32, LINK)[0])
    assert len(long_key["dedup_key"]) == 64


def test_the_email_has_text_and_html_and_one_message_id_per_transition() -> None:
    message = email(_alert(version=2), "escalated", "upstream@example.org", "ops@example.org", LINK)
    parsed = message_from_bytes(bytes(message), policy=policy.default)
    assert parsed["Subject"].startswith("[critical] denial rate alert escalated")
    assert parsed["Message-ID"] == "<a1.2@upstream.invalid>"
    text = parsed.get_body(("plain",))
    page = parsed.get_body(("html",))
    assert text is not None
    assert LINK in text.get_content()
    assert page is not None
    assert f'href="{LINK}"' in page.get_content()


def test_a_weekly_silence_holds_until_its_window_ends_not_the_silence() -> None:
    """A year of Sunday nights holds a Sunday alert until Monday 02:00 there, not for a year;
    a plain silence holds until its end."""
    weekly = Weekly(frozenset({6}), time(22), 240, "America/New_York")
    end = datetime(2027, 1, 1, tzinfo=UTC)
    silence = Silence("s1", "acme", datetime(2026, 1, 1, tzinfo=UTC), end, weekly=weekly)
    sunday_late = datetime(2026, 3, 2, 4, 30, tzinfo=UTC)  # Sun 1 Mar 23:30 in New York
    assert silence.holds_until(sunday_late) == datetime(2026, 3, 2, 7, tzinfo=UTC)  # 02:00 there
    plain = Silence("s2", "acme", datetime(2026, 1, 1, tzinfo=UTC), end)
    assert plain.holds_until(sunday_late) == end


def test_each_pagerduty_service_is_a_receiver_of_its_own_and_hears_the_resolution() -> None:
    """Two routing keys on PagerDuty's one URL are two receivers; an escalation to PagerDuty
    also gets the alert's acknowledgement and resolution, so its incident closes."""
    other = Receiver("pagerduty", PAGER.target, "S" * 32)
    assert receiver_key(PAGER) != receiver_key(other)
    assert receiver_key(HOOK) == f"webhook:{HOOK.target}"
    route = Route("acme", "x", (HOOK,), escalate_after_s=900, escalation=(other,))
    resolved = _alert(transition="resolved", status="resolved")
    assert route.sends(resolved) == [(HOOK, "resolved"), (other, "resolved")]
    assert route.sends(_alert()) == [(HOOK, "opened")]  # it is triggered by the escalation


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"receivers": [{"kind": "webhook", "target": "http://h/x", "secret": 7}]}, "secret"),
        ({"receivers": [{"kind": "email", "target": "ops@example.org\nBcc: x@y.z"}]}, "email"),
        ({"receivers": [{"kind": "email", "target": "nobody"}]}, "email"),
        ({"receivers": [{"kind": "webhook", "target": "ftp://h/x"}]}, "http"),
        ({"receivers": [{"kind": "webhook", "target": "http://h/" + "x" * 600}]}, "characters"),
        ({"receivers": [{"kind": "pagerduty", "target": "https://events.pagerduty.com/x"}]},
         "routing key"),
        ({"receivers": [{"kind": "fax", "target": "123"}]}, "kind"),
        ({"receivers": "http://h/x"}, "list"),
        ({"receivers": [{"kind": "webhook", "target": "http://h/x"}],
          "drift_types": "denial_rate"}, "list of strings"),
        ({"receivers": [{"kind": "webhook", "target": "http://h/x"}], "payer_ids": [1]},
         "strings"),
        ({"receivers": [{"kind": "webhook", "target": "http://h/x"}], "repeat_interval_s": 1},
         "at least 60"),
        ({"receivers": [{"kind": "webhook", "target": "http://h/x"}], "repeat_interval_s": 9.5},
         "whole seconds"),
    ],
)  # fmt: skip
def test_a_route_that_does_not_check_is_refused_with_the_reason(
    spec: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        route_from("acme", "x", spec)


def test_a_silence_that_does_not_check_is_refused() -> None:
    row = {"silence_id": "s", "customer_id": "acme", "starts_at": datetime(2026, 1, 1, tzinfo=UTC),
           "ends_at": datetime(2026, 1, 2, tzinfo=UTC)}  # fmt: skip
    for spec in ({"weekly": {"days": [6], "start": "22:00", "minutes": 90.5}},
                 {"weekly": {"days": "6", "start": "22:00", "minutes": 90}},
                 {"weekly": "sun"}, {"payer_ids": "p1"}, {"comment": 5}):  # fmt: skip
        with pytest.raises(ValueError):  # noqa: PT011 - each names its own field
            silence_from({**row, "spec": spec})


def test_reminders_and_escalations_have_keys_of_their_own() -> None:
    """A receiver that drops a repeated Idempotency-Key still gets each reminder."""
    keys = [webhook({**_alert(), "event": e}, "opened", None, LINK, 0)[1]["Idempotency-Key"]
            for e in ("opened", "repeat:1", "repeat:2", "escalation")]  # fmt: skip
    assert keys == ["a1:1", "a1:1:repeat:1", "a1:1:repeat:2", "a1:1:escalation"]


def test_listings_mask_secrets_slack_urls_and_queries() -> None:
    route = Route("acme", "x", (
        Receiver("slack", "https://hooks.slack.com/services/T0/B0/XXXX"),
        Receiver("webhook", "https://hooks.example.com/up?token=abc", "s3cret"),
        Receiver("email", "ops@example.org"),
    ))  # fmt: skip
    shown = masked(route_spec(route))["receivers"]
    assert [(r["target"], r["secret"]) for r in shown] == [
        ("https://hooks.slack.com/***", None),
        ("https://hooks.example.com/up?***", "***"),
        ("ops@example.org", None),
    ]


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.1:9/x", "http://10.0.0.5/x", "http://169.254.169.254/latest", "http://[::1]/x",
     "http://localhost:8765/x", "http://api.localhost/x"],
)  # fmt: skip
def test_the_api_refuses_routes_to_the_deployments_own_network(target: str) -> None:
    with pytest.raises(BadChangeError, match="not a public address"):
        public_targets(Route("acme", "x", (Receiver("webhook", target),)))
    public_targets(Route("acme", "x", (Receiver("webhook", "https://hooks.example.com/x"),)))
