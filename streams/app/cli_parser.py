"""The ``upstream`` command line's parser: a function per group of commands. What each
command does is :mod:`streams.app.cli`."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from streams.devtools.generator import FEEDS, SCENARIOS

SERVICES = ("worker", "sink", "notifier", "dispatcher")  # the long-running processes


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``upstream`` command and its options."""
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
    sub.add_parser("dispatcher", help="send alert notifications to the routes' receivers")


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
    """The parsers of ``rules``, ``routes``, ``silences``, ``dlq``, ``db`` and ``topics``."""
    from streams.app import delivery_cli, dlq, rules_cli

    rules_cli.add_parser(sub)
    delivery_cli.add_parser(sub)
    dlq.add_parser(sub)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("migrate", help="apply schema migrations to UPSTREAM_DATABASE_URL")

    topics = sub.add_parser("topics", help="Kafka topic maintenance")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    topics_sub.add_parser(
        "create", help="create the topics (UPSTREAM_PARTITIONS each; the ingest ledger one)"
    )
