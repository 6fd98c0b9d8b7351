"""``upstream`` command line. Environment variables (``UPSTREAM_*``) configure; flags override."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from streams.app.cli_parser import SERVICES, build_parser
from streams.observability.error_reporting import init_error_reporting
from streams.observability.logs import configure as configure_logging
from streams.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from streams.app.ingest import Summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``upstream`` console script."""
    args = build_parser().parse_args(argv)
    service = args.command if args.command in (*SERVICES, "dev") else "cli"
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"upstream: {exc}", file=sys.stderr)
        return 2
    configure_logging(service, args.log_level, settings.log_format)
    if service in SERVICES:  # only with SENTRY_DSN
        init_error_reporting(
            service, settings.sentry_dsn.get_secret_value(), settings.sentry_environment
        )
    try:
        return _dispatch(args, settings)
    except SettingsError as exc:
        print(f"upstream: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    return _COMMANDS[args.command](args, settings)


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app.dev import ending_today, run_dev
    from streams.devtools.generator import Scenario

    return run_dev(settings, ending_today(Scenario(name=args.scenario)), args.duration)


def _service(run: str) -> Callable[[argparse.Namespace, Settings], int]:
    def start(_args: argparse.Namespace, settings: Settings) -> int:
        from streams.app import services

        getattr(services, run)(settings)
        return 0

    return start


def _export(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from sinks import export
    from streams.app import services

    try:
        count = export.run(
            services.require_database(settings), args.kind, args.customer, args.since,
            args.until, args.format, args.output, args.quiet,
        )  # fmt: skip
    except ValueError as exc:
        print(f"upstream export: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"upstream export: database error: {exc}".rstrip(), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"upstream export: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    where = "" if args.output == "-" else f" to {args.output}"
    print(f"exported {count} {args.kind} row(s){where}", file=sys.stderr)
    return 0


def _rules(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import rules_cli, services

    return asyncio.run(rules_cli.run(args, settings, services.require_bootstrap(settings)))


def _delivery(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import delivery_cli, services

    return asyncio.run(delivery_cli.run(args, services.require_database(settings)))


def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import dlq, services

    return dlq.run(args, settings, services.require_bootstrap(settings))


def _db(_args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import services

    services.migrate_database(services.require_database(settings))
    print("database schema is up to date")
    return 0


def _topics(_args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import services
    from streams.kafka.topics import create_topics

    created = asyncio.run(create_topics(settings, services.require_bootstrap(settings)))
    print(f"created {len(created)} topic(s): {', '.join(created) or '(all existed)'}")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.tokens import mint_token, token_id
    from streams.app import services

    if args.tokens_verb == "revoke":
        from notifier.revocations import revoke

        jti = token_id(args.jti) if args.jti.count(".") == 2 else args.jti  # a whole token
        try:
            actor = getpass.getuser()
        except (OSError, KeyError):  # no USER and no passwd entry (a container's own UID)
            actor = "cli"
        asyncio.run(revoke(services.require_database(settings), jti, args.customer, actor,
                           args.reason))  # fmt: skip
        print(f"revoked token {jti} of {args.customer}", file=sys.stderr)
        return 0
    if not args.customer or not args.operator:
        print("upstream token: minting needs --customer and --operator", file=sys.stderr)
        return 2
    scopes = tuple(s.strip() for s in args.scope.split(",") if s.strip())
    try:
        token = mint_token(services.require_keys(settings), args.customer, args.operator, scopes,
                           int(args.ttl_hours * 3600))  # fmt: skip
    except ValueError as exc:
        print(f"upstream token: {exc}", file=sys.stderr)
        return 2
    print(f"jti {token_id(token)} (upstream token revoke it to end it early)", file=sys.stderr)
    print(token)
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    from schemas.registry import ValueCodec
    from streams.app import ingest, services
    from streams.app.claim_files import IngestError
    from streams.kafka.ledger import LedgerUnavailableError
    from streams.kafka.topics import TopicMissingError, create_topics
    from streams.reference import load_reference

    codec = ValueCodec(settings.schema_registry_url)
    topic = settings.topic_claims
    report = args.report or ingest.default_report_path(args.file)
    try:
        reference = load_reference(args.customer, settings.reference_dir)
        bootstrap = None if args.dry_run else services.require_bootstrap(settings)
        if bootstrap is not None:
            asyncio.run(create_topics(settings, bootstrap, public=False, worker=False))
        job = ingest.Job(
            args.file,
            topic,
            reference,
            report,
            codec,
            bootstrap=bootstrap,
            customer=args.customer,
            encoding=args.encoding,
            value_format=args.format,
            history_days=settings.history_days,
            ledger_topic=settings.topic_ingest_ledger,
            again=args.again,
            quiet=args.quiet,
        )
        summary = asyncio.run(ingest.run(job))
    except (IngestError, ValueError) as exc:
        print(f"upstream ingest: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, LedgerUnavailableError, TopicMissingError) as exc:
        print(f"upstream ingest: Kafka failed: {exc}", file=sys.stderr)
        return 3
    read_as = f"{summary.layout} layout, mappings {reference.version}"
    return _ingest_summary(args, summary, topic, report, read_as)


def _ingest_summary(
    args: argparse.Namespace, summary: Summary, topic: str, report: Path, read_as: str
) -> int:
    """Print what an ingest did on stderr; its exit status (1: rows rejected, unless allowed)."""
    if summary.earlier is not None and summary.earlier.complete:
        print(f"upstream ingest: {summary.earlier.describe()}: nothing published (--again "
              "publishes it again)", file=sys.stderr)  # fmt: skip
        return 0
    if summary.earlier is not None:
        print(f"resuming: {summary.earlier.describe()}", file=sys.stderr)
    verb = "would publish" if args.dry_run else f"published to {topic}"
    print(read_as, file=sys.stderr)
    if summary.ignored_columns:
        print(f"ignored column(s): {', '.join(summary.ignored_columns)}", file=sys.stderr)
    resumed = f", {summary.already_published} already published" if summary.earlier else ""
    print(f"{summary.rows} rows: {summary.published} {verb}{resumed}, {summary.rejected} "
          "rejected", file=sys.stderr)  # fmt: skip
    if summary.beyond_history:
        print(f"{summary.beyond_history} published row(s) are older than their customer's "
              "history by newer rows of this file alone: the worker dead-letters them as "
              "beyond_history (see `upstream dlq stats`)", file=sys.stderr)  # fmt: skip
    if summary.rejected:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(summary.reasons.items()))
        print(f"rejected rows ({reasons}) are in {report}", file=sys.stderr)
        return 0 if args.allow_rejects else 1
    return 0


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.registry import ValueCodec
    from streams.app import services
    from streams.devtools.generator import Scenario, generate, generate_mix, produce

    feeds = [f.strip() for f in args.feed.split(",") if f.strip()]
    try:
        if args.customers < 1 or not feeds:
            raise ValueError("--customers must be at least 1, and --feed name a feed")
        scenarios = [
            Scenario(
                args.scenario,
                args.customer if args.customers == 1 else f"{args.customer}-{n + 1}",
                args.start,
                args.days,
                args.spike_day,
                args.per_day,
                args.seed + n,
                feed=feeds[n % len(feeds)],
                onboard_day=args.onboard_day,
            )
            for n in range(args.customers)
        ]
    except ValueError as exc:
        print(f"upstream generate: {exc}", file=sys.stderr)
        return 2
    claims = generate(scenarios[0]) if len(scenarios) == 1 else generate_mix(scenarios)

    if args.to_csv:
        from streams.app.claim_files import write_csv

        count = write_csv(args.to_csv, claims)
        print(f"wrote {count} claims to {args.to_csv}", file=sys.stderr)
        return 0

    def progress(sent: int, of: int) -> None:
        print(f"\rsent {sent}/{of} claims", end="", file=sys.stderr, flush=True)

    sent = asyncio.run(
        produce(
            scenarios[0],
            services.require_bootstrap(settings),
            settings.topic_claims,
            fmt=args.format,
            codec=ValueCodec(settings.schema_registry_url),
            duration_s=args.duration,
            progress=progress,
            claims=claims,
        )
    )
    print(f"\nsent {sent} claims to {settings.topic_claims}", file=sys.stderr)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "dev": _dev,
    "worker": _service("run_worker"),
    "sink": _service("run_sink"),
    "notifier": _service("run_notifier"),
    "dispatcher": _service("run_dispatcher"),
    "generate": _generate,
    "ingest": _ingest,
    "export": _export,
    "token": _token,
    "rules": _rules,
    "routes": _delivery,
    "silences": _delivery,
    "dlq": _dlq,
    "db": _db,
    "topics": _topics,
}


if __name__ == "__main__":
    sys.exit(main())
