"""``upstream rules set|list|delete``: manage alert rules on the compacted rules topic.

With ``UPSTREAM_DATABASE_URL`` set, each change is also written to ``audit_log``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from typing import cast

import psycopg
from aiokafka import AIOKafkaProducer

from notifier.hub import psycopg_conninfo
from schemas.registry import ValueCodec
from sinks.audit import record_audit
from streams.domain.rules import AlertRule, DriftTypes, InvalidRule, RuleBook
from streams.domain.values import DRIFT_TYPES
from streams.kafka.rules_feed import RulesFeed
from streams.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``rules`` and its actions on the top-level parser."""
    rules = sub.add_parser("rules", help="manage alert rules (the compacted alerts.rules topic)")
    actions = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="create or replace a rule")
    set_.add_argument("--customer", required=True, help="customer_id")
    set_.add_argument("--rule", required=True, help="rule_id")
    set_.add_argument(
        "--drift-types",
        default=",".join(DRIFT_TYPES),
        help=f"comma-separated drift types (default: all, {','.join(DRIFT_TYPES)})",
    )
    set_.add_argument(
        "--min-severity-level",
        default="warning",
        choices=["info", "warning", "critical"],
        help="default warning",
    )
    set_.add_argument("--min-confidence", type=float, default=0.0, help="0..1 (default 0)")
    set_.add_argument("--payer-ids", default="", help="comma-separated; empty = every payer")
    set_.add_argument("--cpt-groups", default="", help="comma-separated; empty = every group")
    set_.add_argument("--dedup-window-hours", type=int, default=24, help="default 24")
    set_.add_argument(
        "--auto-resolve-after",
        type=int,
        default=2,
        help="clean evaluations before an alert resolves itself (default 2)",
    )
    set_.add_argument("--disabled", action="store_true", help="store the rule switched off")
    set_.add_argument("--actor", default=None, help="who, for the audit log (default: $USER)")
    list_ = actions.add_parser("list", help="print the rules (JSON lines)")
    list_.add_argument("--customer", default=None, help="only this customer")
    delete = actions.add_parser("delete", help="delete a rule (a tombstone on its key)")
    delete.add_argument("--customer", required=True, help="customer_id")
    delete.add_argument("--rule", required=True, help="rule_id")
    delete.add_argument("--actor", default=None, help="who, for the audit log (default: $USER)")


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


async def run(args: argparse.Namespace, settings: Settings, bootstrap: str) -> int:
    """Carry out ``upstream rules <action>``; return the exit code."""
    codec = ValueCodec(settings.schema_registry_url)
    if args.rules_command == "list":
        book = RuleBook()
        await RulesFeed(bootstrap, settings.topic_rules, codec, book).run(stop_when_ready=True)
        for key in sorted(book.rules):
            rule = book.rules[key]
            if args.customer in (None, rule.customer_id):
                print(json.dumps(rule.to_record()))
        return 0
    if args.rules_command == "set":
        try:
            rule = AlertRule(
                customer_id=args.customer, rule_id=args.rule,
                drift_types=cast(DriftTypes, _split(args.drift_types)),  # checked by AlertRule
                min_severity_level=args.min_severity_level,
                min_confidence=args.min_confidence, payer_ids=_split(args.payer_ids),
                cpt_groups=_split(args.cpt_groups), dedup_window_hours=args.dedup_window_hours,
                auto_resolve_after=args.auto_resolve_after, enabled=not args.disabled,
            )  # fmt: skip
        except InvalidRule as exc:
            print(f"upstream rules set: {exc}", file=sys.stderr)
            return 2
        key = rule.kafka_key
        value: bytes | None = codec.encode("AlertRule", settings.topic_rules, rule.to_record())
    else:
        key, value = f"{args.customer}|{args.rule}", None
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_rules, key=key.encode(), value=value)
    finally:
        await producer.stop()
    print(f"{'set' if value else 'deleted'} rule {key}")
    if settings.database_url:
        detail = rule.to_record() if value else {}
        try:
            await _audit(settings.database_url, args, "rule.set" if value else "rule.delete",
                         detail)  # fmt: skip
        except psycopg.Error as exc:
            print(f"upstream rules: the change is published, but audit_log was not written: "
                  f"{exc}", file=sys.stderr)  # fmt: skip
            return 1
    return 0


async def _audit(
    database_url: str, args: argparse.Namespace, action: str, detail: dict[str, object]
) -> None:
    """An ``audit_log`` row for a rule change: who (``--actor`` or the OS user), from where."""
    actor = args.actor or getpass.getuser()
    origin = f"cli@{socket.gethostname()}"
    async with await psycopg.AsyncConnection.connect(psycopg_conninfo(database_url)) as conn:
        await record_audit(conn, customer_id=args.customer, actor=actor, action=action,
                           subject=args.rule, origin=origin, detail=detail)  # fmt: skip
