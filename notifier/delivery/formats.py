"""What each kind of receiver is sent for one alert event: the request body and headers (the
webhook, Slack and PagerDuty formats) or the message (email)."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal, cast

from notifier.delivery.payloads import PagerDutyEvent, SlackMessage, WebhookBody
from notifier.delivery.routes import TRANSITION_EVENTS, Event
from notifier.messages import AlertEvent
from sinks.tables import ALERT_FIELDS
from streams.domain.values import FEED_DRIFT_TYPES

DRIFT_WORDS = {
    "denial_rate": "denial rate",
    "decision_lag": "time to decision",
    "allowed_amount": "allowed amount",
    "feed_silence": "feed silence",
    "feed_volume": "feed volume",
    "dead_letters": "dead letters",
}
EVENT_WORDS = {
    "opened": "opened",
    "escalated": "escalated",
    "acknowledged": "acknowledged",
    "resolved": "resolved",
    "repeat": "still active (reminder)",
    "escalation": "not acknowledged (escalated)",
}
PAGERDUTY_ACTIONS: dict[Event, Literal["trigger", "acknowledge", "resolve"]] = {
    "opened": "trigger",
    "escalated": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
    "repeat": "trigger",
    "escalation": "trigger",
}
PAGERDUTY_DEDUP_MAX = 255  # the Events API's limit on dedup_key


def summary(alert: Mapping[str, Any], event: Event) -> str:
    """One line a person reads: what happened to which key, and the alert's own message."""
    what = DRIFT_WORDS.get(alert["drift_type"], alert["drift_type"])
    about = (
        f"the feed of customer {alert['customer_id']}"
        if alert["drift_type"] in FEED_DRIFT_TYPES
        else f"payer {alert['payer_id']} / {alert['cpt_group']} (customer {alert['customer_id']})"
    )
    level = alert["severity_level"]
    return f"[{level}] {what} alert {EVENT_WORDS[event]}: {about}: {alert['message']}"


def idempotency_key(alert: Mapping[str, Any]) -> str:
    """The same for every attempt at one notification: ``<alert_id>:<version>`` for a
    transition's, and with ``:<event>`` after it for a reminder or an escalation (``event`` of
    the delivery log: ``repeat:2``, ``escalation``), which repeat no transition's key."""
    key = f"{alert['alert_id']}:{alert['version']}"
    event = alert.get("event")
    return key if event is None or event in TRANSITION_EVENTS else f"{key}:{event}"


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``: a receiver recomputes it
    with the shared secret, and refuses an old ``t`` (a replay)."""
    signed = f"{timestamp_s}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={digest}"


def _time(value: Any) -> str:
    """A time as RFC 3339 (``T``, offset); anything else as its text."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=_time).encode()


def alert_event(alert: Mapping[str, Any]) -> AlertEvent:
    """The AlertEvent's fields of a stored transition (nothing of the delivery log)."""
    return cast("AlertEvent", {name: alert[name] for name in ALERT_FIELDS})


def webhook(
    alert: Mapping[str, Any], event: Event, secret: str | None, link: str, now_s: int
) -> tuple[bytes, dict[str, str]]:
    """The generic webhook: the AlertEvent, the event, a summary and the console link, as JSON;
    signed when the receiver has a secret."""
    payload = WebhookBody(event=event, summary=summary(alert, event), link=link,
                          alert=alert_event(alert))  # fmt: skip
    body = _json(payload)
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key(alert)}
    if secret:
        headers["X-Upstream-Signature"] = signature(secret, now_s, body)
    return body, headers


def slack(alert: Mapping[str, Any], event: Event, link: str) -> tuple[bytes, dict[str, str]]:
    """A Slack incoming-webhook message: the summary, and a link to the alert in the console."""
    line = summary(alert, event)
    escaped = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = _json(SlackMessage({
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{escaped}*"}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"<{link}|Open in Upstream> · alert {alert['alert_id']}"
                 f" v{alert['version']} · seen {alert['occurrence_count']} times"},
            ]},
        ],
    }))  # fmt: skip
    return body, {"Content-Type": "application/json"}


def pagerduty_dedup_key(alert: Mapping[str, Any]) -> str:
    """The alert's dedup key, or its SHA-256 when longer than PagerDuty takes."""
    key = str(alert["dedup_key"])
    if len(key) <= PAGERDUTY_DEDUP_MAX:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def pagerduty(
    alert: Mapping[str, Any], event: Event, routing_key: str, link: str
) -> tuple[bytes, dict[str, str]]:
    """A PagerDuty Events API v2 event: trigger (opened, escalated), acknowledge or resolve, by
    the alert's dedup key, so the incident follows the alert."""
    action = PAGERDUTY_ACTIONS[event]
    message = PagerDutyEvent(
        routing_key=routing_key, event_action=action, dedup_key=pagerduty_dedup_key(alert)
    )
    if action == "trigger":
        message["payload"] = {
            "summary": summary(alert, event)[:1024],
            "source": f"upstream:{alert['customer_id']}",
            "severity": alert["severity_level"],  # critical, warning and info are PagerDuty's too
            "timestamp": _time(alert["last_seen"]),
            "component": alert["payer_id"],
            "group": alert["cpt_group"],
            "class": alert["drift_type"],
            "custom_details": {k: alert[k] for k in ("alert_id", "version", "occurrence_count",
                                                     "severity", "rule_id", "drift_event_id")},
        }  # fmt: skip
        message["links"] = [{"href": link, "text": "Open in Upstream"}]
    return _json(message), {"Content-Type": "application/json"}


def email(alert: Mapping[str, Any], event: Event, sender: str, to: str, link: str) -> EmailMessage:
    """The email: the summary as subject, plain text and HTML bodies with the console link."""
    message = EmailMessage()
    message["Subject"] = summary(alert, event)[:200]
    message["From"], message["To"] = sender, to
    # One Message-ID per transition: a mail server or client drops a second delivery of it.
    message["Message-ID"] = f"<{idempotency_key(alert).replace(':', '.')}@upstream.invalid>"
    lines = [
        summary(alert, event),
        "",
        f"Alert {alert['alert_id']} (version {alert['version']}), "
        f"status {alert['status']}, seen {alert['occurrence_count']} times.",
        f"Open it in Upstream: {link}",
    ]
    message.set_content("\n".join(lines))
    page = "".join(f"<p>{html.escape(line)}</p>" for line in lines[:3] if line)
    message.add_alternative(
        f'<html><body>{page}<p><a href="{html.escape(link, quote=True)}">Open in Upstream</a>'
        "</p></body></html>",
        subtype="html",
    )
    return message
