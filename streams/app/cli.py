"""``upstream`` command line. Environment variables (``UPSTREAM_*``) configure; flags override."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

from streams.devtools.generator import FEEDS, SCENARIOS
from streams.observability.error_reporting import init_error_reporting
from streams.observability.logs import configure as configure_logging
from streams.settings import Settings, SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upstream",
        description="Streaming detection of payer behaviour drift in healthcare claims.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_services(sub)
    _add_generate(sub)
    _add_ingest(sub)
    _add_export(sub)
    _add_token(sub)
    _add_maintenance(sub)
    return parser


def _add_services(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The parsers of the long-running services and the dev stack."""
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
    sub.add_parser("sink", help="write claims, drift events and alerts to Postgres")
    sub.add_parser("notifier", help="serve operators over WebSocket and HTTP")


def _add_generate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The parsers of ``upstream generate``."""
    gen = sub.add_parser("generate", help="produce synthetic claims with a drift scenario")
    gen.add_argument(
        "--scenario",
        default="denial-spike",
        choices=SCENARIOS,
        help="drift scenario (default denial-spike)",
    )
    gen.add_argument("--customer", default="demo", help="customer_id (default demo)")
    gen.add_argument(
        "--customers",
        type=int,
        default=1,
        metavar="N",
        help="N customers in one stream, named after --customer with -1..N appended (demo-1, "
        "demo-2, …), each with its own seed (default 1)",
    )
    gen.add_argument(
        "--feed",
        default="on-time",
        metavar="FEED[,FEED...]",
        help=f"how claims reach Upstream: {', '.join(FEEDS)}; a list is cycled over the "
        "customers (default on-time)",
    )
    gen.add_argument(
        "--onboard-day",
        type=int,
        default=None,
        help="day of the onboarding feed's history burst (default: two thirds of --days)",
    )
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

    gen.add_argument(
        "--to-csv",
        metavar="FILE",
        help="write the claims to FILE (.csv or .csv.gz; - for stdout) instead of Kafka",
    )


def _add_ingest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The parsers of ``upstream ingest``."""
    ingest = sub.add_parser(
        "ingest",
        help="publish a CSV claim export (.csv, .csv.gz, - for stdin) to claims.decided",
        description="Validate every row of a claim export and publish the valid ones to "
        "claims.decided keyed by claim_id. Accepts the standard columns (claim_id, "
        "customer_id, payer_id, cpt_code, …) and the legacy "
        "payer,cpt,submitted_date,decided_date,outcome,allowed_amount export. Rejected rows "
        "(invalid, or unreadable: bytes not in --encoding, a field over 128 KiB) are not "
        "published; they go to a report file with line number and reason, and reading goes "
        "on. Exit code 1 when rows were rejected (unless --allow-rejects), 2 when the file "
        "cannot be opened or has no usable header, 3 when publishing failed.",
    )
    ingest.add_argument("file", help="CSV file, .csv.gz, or - for standard input")
    ingest.add_argument(
        "--customer",
        help="customer_id of every row (required for legacy exports; checked against the "
        "customer_id column otherwise)",
    )
    ingest.add_argument(
        "--report",
        type=Path,
        help="where rejected rows go, replaced on each run (default: <file>.rejects.csv next "
        "to the file)",
    )
    ingest.add_argument(
        "--allow-rejects", action="store_true", help="exit 0 even when rows were rejected"
    )
    ingest.add_argument(
        "--dry-run", action="store_true", help="validate and write the report; publish nothing"
    )
    ingest.add_argument("--format", choices=["json", "avro"], default="json", help="value format")
    ingest.add_argument(
        "--encoding",
        default="utf-8",
        help="the file's text encoding (default utf-8; exports from billing systems are often "
        "cp1252 or latin-1). A row with bytes that are not text in it is rejected, not published",
    )
    ingest.add_argument(
        "--again",
        action="store_true",
        help="publish every row even if this file (same bytes, topic, --customer, "
        "--encoding, --format and mappings) was ingested before; without it such a file "
        "publishes nothing, and one whose ingest stopped part-way resumes after the last line "
        "the broker acknowledged",
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress line")


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The parsers of ``upstream export``."""
    export = sub.add_parser(
        "export",
        help="write a customer's drift events, alerts or claims as CSV, JSON lines or XLSX",
        description="Stream one customer's rows from Postgres (UPSTREAM_DATABASE_URL) in a "
        "time range. XLSX has a Summary sheet with a chart and a Details sheet.",
    )
    export.add_argument("kind", choices=["drift-events", "alerts", "claims"], help="what")
    export.add_argument("--customer", required=True, help="customer_id")
    export.add_argument(
        "--since", type=date.fromisoformat, default=date(1970, 1, 1), help="first day, ISO date"
    )
    export.add_argument(
        "--until",
        type=date.fromisoformat,
        default=date(9999, 12, 31),
        help="day after the last, ISO date (default: no end)",
    )
    export.add_argument("--format", choices=["csv", "jsonl", "xlsx"], default="csv")
    export.add_argument(
        "--output", "-o", default="-", help="file to write (default stdout; XLSX needs a file)"
    )
    export.add_argument("--quiet", action="store_true", help="no progress line")


def _add_token(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The parsers of ``upstream token``."""
    token = sub.add_parser(
        "token",
        help="mint an operator token (printed alone on the last line), or revoke one",
        description="Mint: upstream token --customer C --operator O (its jti on stderr). "
        "Revoke: upstream token revoke JTI --customer C; the notifiers refuse the token and "
        "close its connections within seconds.",
    )
    token.add_argument("--customer", help="customer_id the token is for")
    token.add_argument("--operator", help="operator name (the token's sub)")
    token.add_argument("--scope", default="read,act", help="comma-separated: read,act")
    token.add_argument("--ttl-hours", type=float, default=12.0, help="validity (default 12 h)")
    token_actions = token.add_subparsers(dest="tokens_verb", metavar="revoke")
    revoke = token_actions.add_parser(
        "revoke", help="revoke a token by its jti (needs UPSTREAM_DATABASE_URL)"
    )
    revoke.add_argument("jti", help="the token's jti (printed when it was minted), or the token")
    revoke.add_argument("--customer", required=True, help="customer_id the token is for")
    revoke.add_argument("--reason", default="", help="why, for the audit log")


def _add_maintenance(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The parsers of ``rules``, ``dlq``, ``db`` and ``topics``."""
    from streams.app import dlq, rules_cli

    rules_cli.add_parser(sub)
    dlq.add_parser(sub)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("migrate", help="apply schema migrations to UPSTREAM_DATABASE_URL")

    topics = sub.add_parser("topics", help="Kafka topic maintenance")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topics_sub.add_parser(
        "create", help="create the topics (UPSTREAM_PARTITIONS each; the ingest ledger one)"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``upstream`` console script."""
    args = _parser().parse_args(argv)
    service = args.command if args.command in ("worker", "sink", "notifier", "dev") else "cli"
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"upstream: {exc}", file=sys.stderr)
        return 2
    configure_logging(service, args.log_level, settings.log_format)
    if service in ("worker", "sink", "notifier"):  # only with SENTRY_DSN
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
        history_days = (
            settings.grace_days
            + (settings.long_window_buckets + settings.baseline_buckets)
            * settings.bucket_hours
            / 24
        )
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
            history_days=history_days,
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
    if summary.earlier is not None and summary.earlier.complete:
        print(f"upstream ingest: {summary.earlier.describe()}: nothing published (--again "
              "publishes it again)", file=sys.stderr)  # fmt: skip
        return 0
    if summary.earlier is not None:
        print(f"resuming: {summary.earlier.describe()}", file=sys.stderr)
    verb = "would publish" if args.dry_run else f"published to {topic}"
    print(f"{summary.layout} layout, mappings {reference.version}", file=sys.stderr)
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
    "generate": _generate,
    "ingest": _ingest,
    "export": _export,
    "token": _token,
    "rules": _rules,
    "dlq": _dlq,
    "db": _db,
    "topics": _topics,
}


if __name__ == "__main__":
    sys.exit(main())
