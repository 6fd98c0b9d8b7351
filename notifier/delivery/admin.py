"""Changes to a customer's routes and silences, checked and audited, as the CLI
(``upstream routes|silences``) and the HTTP API (``/api/routes``, ``/api/silences``) make them;
and their listings, receiver secrets masked. A running dispatcher reads the stored routes and
silences before each step, so a change applies to the notifications that follow."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncConnection

from notifier.delivery.routes import Route, route_from, route_spec
from notifier.delivery.silences import Silence, silence_from, silence_spec
from sinks import delivery
from sinks.audit import record_audit

MASK = "***"
ROUTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BadChangeError(ValueError):
    """A route or silence that does not check; the message says why."""


@dataclass(frozen=True)
class Who:
    """Who makes a change, and from where, for the audit log."""

    actor: str
    origin: str


def checked_route(customer_id: str, name: str, spec: Mapping[str, Any]) -> Route:
    """A route from its stored form; BadChangeError naming what does not check."""
    if not ROUTE_NAME.fullmatch(name):
        raise BadChangeError("a route's name is 1-64 letters, digits, '-' or '_' (ASCII)")
    try:
        return route_from(customer_id, name, spec)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadChangeError(str(exc)) from None


def checked_silence(customer_id: str, spec: Mapping[str, Any], now: datetime) -> Silence:
    """A silence from now: ``spec`` holds ``hours`` (default 2) or ``ends_at`` (ISO 8601, UTC
    if it names no zone), the matchers, a ``weekly`` window and a ``comment``."""
    try:
        ends = now + timedelta(hours=float(spec.get("hours", 2)))
        if spec.get("ends_at"):
            ends = datetime.fromisoformat(str(spec["ends_at"]))
            ends = ends if ends.tzinfo else ends.replace(tzinfo=now.tzinfo)
        row = {"silence_id": uuid.uuid4().hex[:12], "customer_id": customer_id,
               "starts_at": now, "ends_at": ends, "spec": spec}  # fmt: skip
        return silence_from(row)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise BadChangeError(f"silence: {exc}") from None


def public_targets(route: Route) -> None:
    """BadChangeError when a receiver's URL names a loopback, private, link-local or reserved
    address (literally, or ``localhost``): the API's routes may not aim at the deployment's
    own network. A name that resolves to one is not looked up."""
    for receiver in (*route.receivers, *route.escalation):
        if receiver.kind == "email":
            continue
        host = urlsplit(receiver.target).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if host == "localhost" or host.endswith(".localhost"):
                raise BadChangeError(f"{receiver.target}: not a public address") from None
            continue
        if not address.is_global:
            raise BadChangeError(f"{receiver.target}: not a public address")


def masked(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A route's stored form with its receivers' secrets masked: the secret, a Slack URL's
    path (the URL is the credential) and any URL's query."""

    def target(r: dict[str, Any]) -> str:
        if r["kind"] == "email":
            return str(r["target"])
        url = urlsplit(r["target"])
        path = "/" + MASK if r["kind"] == "slack" else url.path
        return str(urlunsplit((url.scheme, url.netloc, path, MASK if url.query else "", "")))

    def mask(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "target": target(r), "secret": MASK if r.get("secret") else None}
                for r in items]  # fmt: skip

    return {**spec, "receivers": mask(spec["receivers"]), "escalation": mask(spec["escalation"])}


async def set_route(conn: AsyncConnection, route: Route, who: Who) -> None:
    """Create or replace ``route``; audited (secrets masked)."""
    spec = route_spec(route)
    await delivery.save_route(conn, route.customer_id, route.name, spec, who.actor)
    await _audit(conn, who, route.customer_id, "route.set", route.name, masked(spec))


async def delete_route(conn: AsyncConnection, customer_id: str, name: str, who: Who) -> bool:
    """Delete a route; whether there was one (audited if so)."""
    if not await delivery.delete_route(conn, customer_id, name):
        return False
    await _audit(conn, who, customer_id, "route.delete", name, {})
    return True


async def add_silence(conn: AsyncConnection, silence: Silence, who: Who) -> None:
    """Store ``silence``; audited."""
    detail = {"silence_id": silence.silence_id, "starts_at": silence.starts_at,
              "ends_at": silence.ends_at, "spec": silence_spec(silence)}  # fmt: skip
    await delivery.add_silence(conn, {**detail, "customer_id": silence.customer_id}, who.actor)
    await _audit(conn, who, silence.customer_id, "silence.add", silence.silence_id, detail)


async def expire_silence(
    conn: AsyncConnection, customer_id: str, silence_id: str, who: Who
) -> bool:
    """End a running silence now; whether it was running (audited if so)."""
    if not await delivery.expire_silence(conn, customer_id, silence_id):
        return False
    await _audit(conn, who, customer_id, "silence.expire", silence_id, {})
    return True


async def routes_of(conn: AsyncConnection, customer_id: str | None) -> list[dict[str, Any]]:
    """The routes (of one customer, or all), secrets masked, by customer and name."""
    return [
        {"customer_id": c, "name": n, **masked(route_spec(route_from(c, n, spec)))}
        for c, n, spec in await delivery.load_routes(conn)
        if customer_id in (None, c)
    ]


async def silences_of(conn: AsyncConnection, customer_id: str | None) -> list[Silence]:
    """The silences not yet ended (of one customer, or all), by end."""
    return [silence_from(row) for row in await delivery.running_silences(conn, customer_id)]


def silence_listed(silence: Silence) -> dict[str, Any]:
    """A silence as the CLI and the API list it."""
    return {"silence_id": silence.silence_id, "customer_id": silence.customer_id,
            "starts_at": silence.starts_at, "ends_at": silence.ends_at,
            **silence_spec(silence)}  # fmt: skip


async def _audit(
    conn: AsyncConnection, who: Who, customer_id: str, action: str, subject: str,
    detail: Mapping[str, Any],
) -> None:  # fmt: skip
    raw: Any = (await conn.get_raw_connection()).driver_connection  # psycopg's, under SQLAlchemy
    await record_audit(raw, customer_id=customer_id, actor=who.actor, action=action,
                       subject=subject, origin=who.origin, detail=detail)  # fmt: skip
