"""Optional error reporting to Sentry (roadmap O-1): on only when ``SENTRY_DSN`` is set.

Nothing is sent, and the SDK is not even initialised, without ``SENTRY_DSN``. With it, errors
and ERROR log lines of the service go to Sentry after two scrubbing passes:

- Sentry's :class:`EventScrubber` (recursive) drops the values of sensitive keys anywhere in
  the event — its default list plus ours (:data:`DENYLIST`: tokens and secrets, database URLs,
  the claim amounts);
- :func:`scrub_strings` blanks what hides inside free text: operator tokens (JWTs), passwords
  in URLs (``postgresql://user:secret@host``).

No request bodies, no user IPs (``send_default_pii`` off), no performance tracing.
"""

from __future__ import annotations

import re
from typing import Any

FILTERED = "[Filtered]"
DENYLIST = [
    "notifier_secret", "upstream_notifier_secret", "notifier_previous_secrets",
    "upstream_notifier_previous_secrets", "database_url", "upstream_database_url",
    "conninfo", "dsn", "jwt", "bearer", "billed_amount", "allowed_amount", "paid_amount",
    "billed_cents", "allowed_cents",
]  # fmt: skip
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)


def _scrub_text(text: str) -> str:
    text = _JWT.sub(FILTERED, text)
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{FILTERED}@", text)


def _walk(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: _walk(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v) for v in value]
    return value


def scrub_strings(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: ARG001 - Sentry passes a hint to before_send
    """Sentry ``before_send``: tokens and URL passwords blanked in every string of the event."""
    scrubbed: dict[str, Any] = _walk(event)
    return scrubbed


def init_error_reporting(service: str, dsn: str, environment: str = "production") -> bool:
    """Start the Sentry SDK for ``service`` if ``dsn`` (``SENTRY_DSN``) is set; whether it
    started."""
    dsn = dsn.strip()
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        send_default_pii=False,
        event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + DENYLIST, recursive=True),
        before_send=scrub_strings,  # type: ignore[arg-type]
        before_send_transaction=None,
        traces_sample_rate=0.0,
        max_request_body_size="never",
    )
    sentry_sdk.set_tag("service", service)
    return True
