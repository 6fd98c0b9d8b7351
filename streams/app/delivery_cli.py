"""``upstream routes set|list|delete`` and ``upstream silences add|list|expire``: where a
customer's alerts are sent, and when they are not. Each change is written to ``audit_log``;
a running dispatcher applies it to the alerts that follow."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from notifier.delivery.routes import TRANSITION_EVENTS, Receiver, Route, route_from, route_spec
from notifier.delivery.silences import Silence, Weekly, silence_from, silence_spec
from sinks import delivery
from sinks.audit import record_audit

PAGERDUTY = "https://events.pagerduty.com/v2/enqueue"  # PagerDuty's Events API v2
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``routes`` and ``silences`` on the top-level parser."""
    routes = sub.add_parser("routes", help="where a customer's alerts are sent")
    actions = routes.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="create or replace a route")
    set_.add_argument("--customer", required=True, help="customer_id")
    set_.add_argument("--name", required=True, help="the route's name")
    _add_receivers(set_, "", "")
    set_.add_argument("--escalate-after-minutes", type=int, default=None,
                      help="send an alert nobody acknowledged this long after its first "
                      "notification to the --escalate-* receivers, once")  # fmt: skip
    _add_receivers(set_, "escalate-", "escalation: ")
    set_.add_argument("--min-level", default="warning", choices=["info", "warning", "critical"])
    _add_matchers(set_)
    set_.add_argument("--events", default="opened,escalated,resolved",
                      help=f"comma-separated among {','.join(TRANSITION_EVENTS)}")  # fmt: skip
    set_.add_argument("--repeat-minutes", type=int, default=240,
                      help="re-send still-active alerts this often (0: never)")  # fmt: skip
    set_.add_argument("--actor", default=None, help="who, for the audit log (default: $USER)")
    list_ = actions.add_parser("list", help="print the routes (JSON lines; secrets hidden)")
    list_.add_argument("--customer", default=None, help="only this customer")
    delete = actions.add_parser("delete", help="delete a route")
    delete.add_argument("--customer", required=True, help="customer_id")
    delete.add_argument("--name", required=True, help="the route's name")
    delete.add_argument("--actor", default=None, help="who, for the audit log (default: $USER)")

    silences = sub.add_parser("silences", help="hold a customer's alert notifications for a time")
    s_actions = silences.add_subparsers(dest="silences_command", required=True, metavar="ACTION")
    add = s_actions.add_parser("add", help="add a silence or a weekly maintenance window")
    add.add_argument("--customer", required=True, help="customer_id")
    add.add_argument("--hours", type=float, default=2.0, help="how long from now (default 2)")
    add.add_argument("--until", default=None, help="end instead, ISO 8601 (UTC if no offset)")
    _add_matchers(add)
    add.add_argument("--weekly", default=None, help="a weekly window within the range: "
                     "DAYS@HH:MM+MINUTES (days mon..sun), e.g. sun@22:00+240")  # fmt: skip
    add.add_argument("--zone", default="UTC", help="the weekly window's time zone (default UTC)")
    add.add_argument("--comment", default="", help="why")
    add.add_argument("--actor", default=None, help="who, for the audit log (default: $USER)")
    s_list = s_actions.add_parser("list", help="print the silences still running (JSON lines)")
    s_list.add_argument("--customer", default=None, help="only this customer")
    expire = s_actions.add_parser("expire", help="end a silence now")
    expire.add_argument("--customer", required=True, help="customer_id")
    expire.add_argument("--id", required=True, help="the silence's id")
    expire.add_argument("--actor", default=None, help="who, for the audit log (default: $USER)")


def _add_receivers(parser: argparse.ArgumentParser, prefix: str, what: str) -> None:
    """A route's receivers (``prefix`` empty) or its escalation receivers."""
    parser.add_argument(f"--{prefix}webhook", action="append", default=[],
                        help=f"{what}a webhook URL (repeatable)")  # fmt: skip
    parser.add_argument(f"--{prefix}secret", default=None, help=f"{what}the webhooks' HMAC key")
    parser.add_argument(f"--{prefix}slack", action="append", default=[],
                        help=f"{what}a Slack incoming-webhook URL (repeatable)")  # fmt: skip
    parser.add_argument(f"--{prefix}pagerduty-url", default=PAGERDUTY,
                        help=f"{what}PagerDuty Events API v2 URL")  # fmt: skip
    parser.add_argument(f"--{prefix}routing-key", default=None,
                        help=f"{what}PagerDuty routing key (sends to PagerDuty)")  # fmt: skip
    parser.add_argument(f"--{prefix}email", action="append", default=[],
                        help=f"{what}an email address (repeatable)")  # fmt: skip


def _add_matchers(parser: argparse.ArgumentParser) -> None:
    """The alerts a route or silence is for: by drift type, payer and CPT group."""
    for name, what in (("drift-types", "type"), ("payer-ids", "payer"), ("cpt-groups", "group")):
        parser.add_argument(f"--{name}", default="", help=f"comma-separated; empty = every {what}")


def _split(text: str) -> frozenset[Any]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _receivers(args: argparse.Namespace, prefix: str) -> list[Receiver]:
    """The receivers named by the options starting with ``prefix`` (:func:`_add_receivers`)."""
    opt = vars(args)
    receivers = [
        Receiver("webhook", url, opt[f"{prefix}secret"]) for url in opt[f"{prefix}webhook"]
    ]
    receivers += [Receiver("slack", url) for url in opt[f"{prefix}slack"]]
    if opt[f"{prefix}routing_key"]:
        receivers.append(
            Receiver("pagerduty", opt[f"{prefix}pagerduty_url"], opt[f"{prefix}routing_key"])
        )
    return receivers + [Receiver("email", address) for address in opt[f"{prefix}email"]]


def _route(args: argparse.Namespace) -> Route:
    def spec_of(receivers: list[Receiver]) -> list[dict[str, Any]]:
        return [{"kind": r.kind, "target": r.target, "secret": r.secret} for r in receivers]

    minutes = args.escalate_after_minutes
    spec = {
        "min_level": args.min_level, "drift_types": sorted(_split(args.drift_types)),
        "payer_ids": sorted(_split(args.payer_ids)), "cpt_groups": sorted(_split(args.cpt_groups)),
        "events": sorted(_split(args.events)),
        "repeat_interval_s": args.repeat_minutes * 60 or None,
        "escalate_after_s": None if minutes is None else minutes * 60,
        "receivers": spec_of(_receivers(args, "")),
        "escalation": spec_of(_receivers(args, "escalate_")),
    }  # fmt: skip
    return route_from(args.customer, args.name, spec)


def _weekly(text: str | None, zone: str) -> Weekly | None:
    """``DAYS@HH:MM+MINUTES``: days as mon..sun joined by commas."""
    if text is None:
        return None
    try:
        days, rest = text.split("@", 1)
        start, minutes = rest.split("+", 1)
        numbers = frozenset(DAYS.index(d.strip().lower()[:3]) for d in days.split(","))
        return Weekly(numbers, time.fromisoformat(start), int(minutes), zone)
    except ValueError as exc:
        raise ValueError(f"--weekly is DAYS@HH:MM+MINUTES, e.g. sun@22:00+240 ({exc})") from None


def _silence(args: argparse.Namespace) -> Silence:
    now = datetime.now(UTC)
    ends = now + timedelta(hours=args.hours)
    if args.until:
        ends = datetime.fromisoformat(args.until)
        ends = ends if ends.tzinfo else ends.replace(tzinfo=UTC)
    return Silence(
        silence_id=uuid.uuid4().hex[:12], customer_id=args.customer, starts_at=now, ends_at=ends,
        drift_types=_split(args.drift_types), payer_ids=_split(args.payer_ids),
        cpt_groups=_split(args.cpt_groups), weekly=_weekly(args.weekly, args.zone),
        comment=args.comment,
    )  # fmt: skip


def _hidden(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with receiver secrets masked."""

    def mask(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "secret": "***" if r.get("secret") else None} for r in items]

    return {**spec, "receivers": mask(spec["receivers"]), "escalation": mask(spec["escalation"])}


async def run(args: argparse.Namespace, database_url: str) -> int:
    """Carry out ``upstream routes|silences <action>``; return the exit code."""
    try:
        change = _change(args)
    except ValueError as exc:
        print(f"upstream {args.command}: {exc}", file=sys.stderr)
        return 2
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            if change is None:  # a list
                for line in await _listed(conn, args):
                    print(json.dumps(line, default=str))
                return 0
            action, subject, detail = change
            done = await _apply(conn, args, action, detail)
            if not done:
                print(f"upstream {args.command}: no {subject} for {args.customer}", file=sys.stderr)
                return 1
            await record_audit(
                await _raw(conn), customer_id=args.customer, actor=args.actor or getpass.getuser(),
                action=action, subject=subject, origin=f"cli@{socket.gethostname()}",
                detail=_hidden(detail) if action == "route.set" else detail,
            )  # fmt: skip
        print(f"{action} {subject}")
        return 0
    finally:
        await engine.dispose()


async def _raw(conn: Any) -> Any:
    """The psycopg connection under an SQLAlchemy one (the audit log writes through it)."""
    return (await conn.get_raw_connection()).driver_connection


def _change(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]] | None:
    """What the command changes: (audit action, subject, detail); None for a list. Checks the
    arguments (ValueError)."""
    if args.command == "routes":
        if args.routes_command == "set":
            return "route.set", args.name, route_spec(_route(args))
        if args.routes_command == "delete":
            return "route.delete", args.name, {}
        return None
    if args.silences_command == "add":
        silence = _silence(args)
        detail = {"silence_id": silence.silence_id, "starts_at": silence.starts_at,
                  "ends_at": silence.ends_at, "spec": silence_spec(silence)}  # fmt: skip
        return "silence.add", silence.silence_id, detail
    if args.silences_command == "expire":
        return "silence.expire", args.id, {}
    return None


async def _apply(conn: Any, args: argparse.Namespace, action: str, detail: dict[str, Any]) -> bool:
    if action == "route.set":
        await delivery.save_route(conn, args.customer, args.name, detail, args.actor or "cli")
        return True
    if action == "route.delete":
        return await delivery.delete_route(conn, args.customer, args.name)
    if action == "silence.add":
        await delivery.add_silence(conn, {**detail, "customer_id": args.customer},
                                   args.actor or getpass.getuser())  # fmt: skip
        return True
    return await delivery.expire_silence(conn, args.customer, args.id)


async def _listed(conn: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.command == "routes":
        return [
            {"customer_id": c, "name": n, **_hidden(route_spec(route_from(c, n, spec)))}
            for c, n, spec in await delivery.load_routes(conn)
            if args.customer in (None, c)
        ]
    rows = await delivery.running_silences(conn, args.customer)
    return [{"silence_id": s.silence_id, "customer_id": s.customer_id, "starts_at": s.starts_at,
             "ends_at": s.ends_at, **silence_spec(s)} for s in map(silence_from, rows)]  # fmt: skip
