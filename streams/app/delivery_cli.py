"""``upstream routes set|list|delete`` and ``upstream silences add|list|expire``: where a
customer's alerts are sent, and when they are not. Each change is written to ``audit_log``;
a running dispatcher applies it to the alerts that follow."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from notifier.delivery import admin
from notifier.delivery.routes import TRANSITION_EVENTS, Receiver, Route, receivers_spec
from notifier.delivery.silences import Silence

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
    parser.add_argument(f"--{prefix}secret", default=None,
                        help=f"{what}the HMAC key of these webhooks (one for all)")  # fmt: skip
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
    minutes = args.escalate_after_minutes
    spec = {
        "min_level": args.min_level, "drift_types": sorted(_split(args.drift_types)),
        "payer_ids": sorted(_split(args.payer_ids)), "cpt_groups": sorted(_split(args.cpt_groups)),
        "events": sorted(_split(args.events)),
        "repeat_interval_s": args.repeat_minutes * 60 or None,
        "escalate_after_s": None if minutes is None else minutes * 60,
        "receivers": receivers_spec(_receivers(args, "")),
        "escalation": receivers_spec(_receivers(args, "escalate_")),
    }  # fmt: skip
    return admin.checked_route(args.customer, args.name, spec)


def _weekly(text: str | None, zone: str) -> dict[str, Any] | None:
    """``DAYS@HH:MM+MINUTES`` (days as mon..sun joined by commas) as a silence's ``weekly``."""
    if text is None:
        return None
    try:
        days, rest = text.split("@", 1)
        start, minutes = rest.split("+", 1)
        numbers = sorted({DAYS.index(d.strip().lower()[:3]) for d in days.split(",")})
        return {"days": numbers, "start": time.fromisoformat(start).isoformat(),
                "minutes": int(minutes), "zone": zone}  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"--weekly is DAYS@HH:MM+MINUTES, e.g. sun@22:00+240 ({exc})") from None


def _silence(args: argparse.Namespace) -> Silence:
    spec = {
        "hours": args.hours, "ends_at": args.until, "drift_types": sorted(_split(args.drift_types)),
        "payer_ids": sorted(_split(args.payer_ids)), "cpt_groups": sorted(_split(args.cpt_groups)),
        "weekly": _weekly(args.weekly, args.zone), "comment": args.comment,
    }  # fmt: skip
    return admin.checked_silence(args.customer, spec, datetime.now(UTC))


async def run(args: argparse.Namespace, database_url: str) -> int:
    """Carry out ``upstream routes|silences <action>``; return the exit code."""
    action = args.routes_command if args.command == "routes" else args.silences_command
    who = admin.Who(
        getattr(args, "actor", None) or getpass.getuser(), f"cli@{socket.gethostname()}"
    )
    try:
        route = _route(args) if action == "set" else None
        silence = _silence(args) if action == "add" else None
    except ValueError as exc:
        print(f"upstream {args.command}: {exc}", file=sys.stderr)
        return 2
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            if action == "list":
                for line in await _listed(conn, args):
                    print(json.dumps(line, default=str))
                return 0
            if route is not None:
                await admin.set_route(conn, route, who)
                done, subject = True, f"route.set {route.name}"
            elif silence is not None:
                await admin.add_silence(conn, silence, who)
                done, subject = True, f"silence.add {silence.silence_id}"
            elif args.command == "routes":
                done = await admin.delete_route(conn, args.customer, args.name, who)
                subject = f"route.delete {args.name}"
            else:
                done = await admin.expire_silence(conn, args.customer, args.id, who)
                subject = f"silence.expire {args.id}"
        if not done:
            print(f"upstream {args.command}: no {subject.split()[1]} for {args.customer}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(subject)
        return 0
    finally:
        await engine.dispose()


async def _listed(conn: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.command == "routes":
        return await admin.routes_of(conn, args.customer)
    return [admin.silence_listed(s) for s in await admin.silences_of(conn, args.customer)]
