"""``upstream`` command line. Environment variables (``UPSTREAM_*``) configure; flags override."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import date

from streams.generator import SCENARIOS
from streams.settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upstream",
        description="Streaming detection of payer behaviour drift in healthcare claims.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run the whole stack on embedded Kafka and Postgres")
    dev.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds over which the scenario's days are streamed (default 60)",
    )
    dev.add_argument(
        "--scenario",
        default="denial-spike",
        choices=SCENARIOS,
        help="generator scenario (default denial-spike)",
    )

    sub.add_parser("worker", help="run the Faust stream worker")
    sub.add_parser("sink", help="write drift events and alerts to Postgres")
    sub.add_parser("notifier", help="serve operators over WebSocket and HTTP")

    gen = sub.add_parser("generate", help="produce synthetic claims with a drift scenario")
    gen.add_argument(
        "--scenario",
        default="denial-spike",
        choices=SCENARIOS,
        help="drift scenario (default denial-spike)",
    )
    gen.add_argument("--customer", default="demo", help="customer_id (default demo)")
    gen.add_argument("--days", type=int, default=120, help="days of event time (default 120)")
    gen.add_argument("--spike-day", type=int, default=75, help="day the spike starts (default 75)")
    gen.add_argument("--per-day", type=int, default=20, help="claims per key per day (default 20)")
    gen.add_argument(
        "--start",
        type=date.fromisoformat,
        default=date(2026, 1, 1),
        help="first decided_date, ISO (default 2026-01-01)",
    )
    gen.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    gen.add_argument("--format", choices=["json", "avro"], default="json", help="value format")
    gen.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="spread the days over this many seconds (default 0: as fast as possible)",
    )

    token = sub.add_parser("token", help="mint an operator token (printed alone on the last line)")
    token.add_argument("--customer", required=True, help="customer_id the token is for")
    token.add_argument("--operator", required=True, help="operator name (the token's sub)")
    token.add_argument("--scope", default="read,act", help="comma-separated: read,act")
    token.add_argument("--ttl-hours", type=float, default=12.0, help="validity (default 12 h)")

    from streams import rules_cli

    rules_cli.add_parser(sub)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("migrate", help="apply schema migrations to UPSTREAM_DATABASE_URL")

    topics = sub.add_parser("topics", help="Kafka topic maintenance")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topics_sub.add_parser("create", help="create the public topics (UPSTREAM_PARTITIONS each)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``upstream`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return _dispatch(args)
    except SettingsError as exc:
        print(f"upstream: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from streams import services

    settings = load_settings()
    command = args.command
    if command == "dev":
        from streams.dev import run_dev
        from streams.generator import Scenario

        return run_dev(settings, Scenario(name=args.scenario), args.duration)
    if command == "worker":
        services.run_worker(settings)
    elif command == "sink":
        services.run_sink(settings)
    elif command == "notifier":
        services.run_notifier(settings)
    elif command == "generate":
        return _generate(args, settings)
    elif command == "token":
        from notifier.tokens import mint_token

        scopes = tuple(s.strip() for s in args.scope.split(",") if s.strip())
        try:
            print(
                mint_token(
                    services.require_secret(settings),
                    args.customer,
                    args.operator,
                    scopes,
                    int(args.ttl_hours * 3600),
                )
            )
        except ValueError as exc:
            print(f"upstream token: {exc}", file=sys.stderr)
            return 2
    elif command == "rules":
        from streams import rules_cli

        return asyncio.run(rules_cli.run(args, settings, services.require_bootstrap(settings)))
    elif command == "db":
        services.migrate_database(services.require_database(settings))
        print("database schema is up to date")
    elif command == "topics":
        from streams.topics import create_topics

        created = asyncio.run(create_topics(settings, services.require_bootstrap(settings)))
        print(f"created {len(created)} topic(s): {', '.join(created) or '(all existed)'}")
    return 0


def _generate(args: argparse.Namespace, settings: object) -> int:
    from schemas.registry import ValueCodec
    from streams import services
    from streams.generator import Scenario, produce
    from streams.settings import Settings

    assert isinstance(settings, Settings)
    try:
        scenario = Scenario(
            args.scenario,
            args.customer,
            args.start,
            args.days,
            args.spike_day,
            args.per_day,
            args.seed,
        )
    except ValueError as exc:
        print(f"upstream generate: {exc}", file=sys.stderr)
        return 2

    def progress(sent: int, of: int) -> None:
        print(f"\rsent {sent}/{of} claims", end="", file=sys.stderr, flush=True)

    sent = asyncio.run(
        produce(
            scenario,
            services.require_bootstrap(settings),
            settings.topic_claims,
            fmt=args.format,
            codec=ValueCodec(settings.schema_registry_url),
            duration_s=args.duration,
            progress=progress,
        )
    )
    print(f"\nsent {sent} claims to {settings.topic_claims}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
