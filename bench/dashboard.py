"""The console's load with a busy customer: 1,000 open alerts over 500 keys, in Chromium.

Starts an embedded PostgreSQL and Tansu broker and one ``upstream notifier``; stores, through the
sink's own writer, one customer's 500 keys (50 payers × 10 CPT groups) with ``--claims-per-day``
claims a day each over 90 days, 1,000 open alerts (two drift types per key) and their drift
events. Then loads the console in Debian's Chromium ``--loads`` times (each a fresh page with
the session cookie) and times, from the navigation: the alert table live with every alert
drawn, and the dashboard's widgets filled. Also times ``/api/dashboard`` and ``/api/alerts``
alone. Prints JSON on stdout (p50 / max of each), progress and a table on stderr.

    python -m bench.dashboard --loads 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright
from sqlalchemy.ext.asyncio import create_async_engine

from bench.harness import on_embedded_stack, percentiles
from bench.machine import machine
from notifier.tokens import mint_token
from sinks.rows import alert_row, claim_row, drift_row
from sinks.writer import PostgresWriter
from streams.devtools.stack import (
    free_port,
    spawn_service,
    stop_process,
    wait_for_port,
)

SECRET = "dashboard-bench-secret-of-at-least-32-bytes"  # noqa: S105 -- a throwaway local stack
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip
CUSTOMER = "busy"
PAYERS, GROUPS, DAYS = 50, 10, 90
END = date(2026, 3, 31)
DRIFT_TYPES = ("denial_rate", "decision_lag")
FILLED = """() => document.querySelector('#status.live') !== null
    && document.querySelectorAll('#alerts tr').length >= %d"""
DASHBOARD = """() => document.getElementById('open-critical').firstChild.textContent !== '–'
    && document.querySelector('#trend-chart .xtick') !== null
    && document.querySelectorAll('#payers tbody tr').length > 0
    && document.querySelector('#timeline-chart .xtick') !== null
    && document.querySelector('#feed-chart .xtick') !== null"""


def _keys() -> list[tuple[str, str]]:
    return [(f"payer-{p:02d}", f"group-{g}") for p in range(PAYERS) for g in range(GROUPS)]


def _claims(claims_per_day: int) -> list[dict[str, Any]]:
    out = []
    for k, (payer, group) in enumerate(_keys()):
        for day in range(DAYS):
            decided = END - timedelta(days=day)
            for i in range(claims_per_day):
                denied = (k + day + i) % (7 if day < 30 else 10) == 0
                out.append({
                    "claim_id": f"{payer}-{group}-{day}-{i}", "customer_id": CUSTOMER,
                    "payer_id": payer, "cpt_code": "71046", "cpt_group": group,
                    "submitted_date": (decided - timedelta(days=5)).isoformat(),
                    "decided_date": decided.isoformat(), "outcome": "DENIED" if denied else "PAID",
                    "billed_amount": "150.00", "allowed_amount": "0.00" if denied else "100.00",
                    "denial_reason_codes": ["CO-50"] if denied else [],
                })  # fmt: skip
    return out


def _alerts() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """1,000 open alerts (two drift types per key) and their drift events."""
    drifts: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    at = datetime(END.year, END.month, END.day, tzinfo=UTC)
    for k, (payer, group) in enumerate(_keys()):
        for drift_type in DRIFT_TYPES:
            n = len(alerts)
            drifts.append({
                "event_id": f"e{n}", "customer_id": CUSTOMER, "payer_id": payer,
                "cpt_group": group, "drift_type": drift_type, "window_days": 30.0,
                "baseline_start": at - timedelta(days=90), "baseline_end": at - timedelta(days=30),
                "current_start": at - timedelta(days=30), "current_end": at,
                "baseline_value": 0.1, "current_value": 0.14, "delta_value": 0.04,
                "baseline_n": 600, "current_n": 300, "p_value": 1e-4, "q_value": 1e-3,
                "severity": 0.8, "severity_level": ("warning", "critical")[k % 2],
                "confidence": 0.99, "detected_at": at,
            })  # fmt: skip
            alerts.append({
                "alert_id": f"a{n}", "version": 1, "dedup_key": f"{CUSTOMER}|{payer}|{group}|{n}",
                "customer_id": CUSTOMER, "rule_id": "default", "drift_event_id": f"e{n}",
                "payer_id": payer, "cpt_group": group, "drift_type": drift_type,
                "status": "active", "transition": "triggered", "severity": 0.8,
                "severity_level": ("warning", "critical")[k % 2], "occurrence_count": 1,
                "first_seen": at, "last_seen": at - timedelta(minutes=n), "acknowledged_by": None,
                "resolved_by": None, "resolution": None, "verdict": None,
                "message": f"{drift_type} of {payer} for {group} rose", "notify": True,
            })  # fmt: skip
    return drifts, alerts


async def _store(database_url: str, claims_per_day: int) -> int:
    drifts, alerts = _alerts()
    claims = _claims(claims_per_day)
    engine = create_async_engine(database_url)
    try:
        writer = PostgresWriter(engine)
        await writer.write([drift_row(d) for d in drifts], [alert_row(a) for a in alerts], [])
        for start in range(0, len(claims), 20_000):
            part = claims[start : start + 20_000]
            await writer.write([], [], [claim_row(c, 0, start + i) for i, c in enumerate(part)])
            print(f"  {start + len(part):,} claims stored", file=sys.stderr)
    finally:
        await engine.dispose()
    return len(claims)


def _api_ms(port: int, path: str, token: str, times: int) -> list[float]:
    """Wall milliseconds of ``times`` GETs of ``path`` (past the 2 s answer cache each)."""
    out = []
    for _ in range(times):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 -- local
            reply.read()
        out.append((time.perf_counter() - started) * 1000)
        time.sleep(2.1)
    return out


async def _loads(port: int, loads: int) -> tuple[list[float], list[float]]:
    """Milliseconds from navigation to the table filled, and to the dashboard filled."""
    token = mint_token(SECRET, CUSTOMER, "bench")
    table_ms, dashboard_ms = [], []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"http://127.0.0.1:{port}/?token={token}")  # the session cookie
            await page.wait_for_function(DASHBOARD, timeout=60_000)
            for n in range(loads):
                await asyncio.sleep(2.1)  # past the API's answer cache
                started = time.perf_counter()
                await page.goto(f"http://127.0.0.1:{port}/")
                await page.wait_for_function(FILLED % 1000, timeout=60_000, polling=10)
                table_ms.append((time.perf_counter() - started) * 1000)
                await page.wait_for_function(DASHBOARD, timeout=60_000, polling=10)
                dashboard_ms.append((time.perf_counter() - started) * 1000)
                print(f"  load {n + 1}: table {table_ms[-1]:.0f} ms, dashboard "
                      f"{dashboard_ms[-1]:.0f} ms", file=sys.stderr)  # fmt: skip
        finally:
            await browser.close()
    return table_ms, dashboard_ms


async def _run(args: argparse.Namespace, database_url: str, bootstrap: str) -> dict[str, Any]:
    print("storing the customer's claims and alerts…", file=sys.stderr)
    claims = await _store(database_url, args.claims_per_day)
    port = free_port()
    env = {**os.environ, "UPSTREAM_DATABASE_URL": database_url,
           "UPSTREAM_KAFKA_BOOTSTRAP": bootstrap, "UPSTREAM_NOTIFIER_SECRET": SECRET,
           "UPSTREAM_NOTIFIER_PORT": str(port)}  # fmt: skip
    log = Path(tempfile.mkstemp(suffix="-notifier.log")[1])
    notifier = spawn_service("notifier", env, log)
    try:
        wait_for_port(port, 60, notifier, log)
        table_ms, dashboard_ms = await _loads(port, args.loads)
        token = mint_token(SECRET, CUSTOMER, "bench-api")
        api_dashboard = await asyncio.to_thread(_api_ms, port, "/api/dashboard", token, 5)
        api_alerts = await asyncio.to_thread(_api_ms, port, "/api/alerts", token, 5)
    finally:
        stop_process(notifier)
    return {
        "benchmark": "dashboard",
        "open_alerts": 1000,
        "keys": PAYERS * GROUPS,
        "claims": claims,
        "loads": args.loads,
        "table_live_ms": percentiles(table_ms),
        "dashboard_filled_ms": percentiles(dashboard_ms),
        "api_dashboard_ms": percentiles(api_dashboard),
        "api_alerts_ms": percentiles(api_alerts),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=10, help="console loads timed")
    parser.add_argument("--claims-per-day", type=int, default=2, help="per key, over 90 days")
    args = parser.parse_args(argv)
    report = on_embedded_stack(lambda database_url, bootstrap: _run(args, database_url, bootstrap))
    print(json.dumps(report, indent=2))
    print("| open alerts | keys | claims | table live p50 / max ms | dashboard p50 / max ms | "
          "/api/dashboard p50 ms | /api/alerts p50 ms |", file=sys.stderr)  # fmt: skip
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    t, d = report["table_live_ms"], report["dashboard_filled_ms"]
    print(f"| 1,000 | 500 | {report['claims']:,} | {t['p50']} / {t['max']} | "
          f"{d['p50']} / {d['max']} | {report['api_dashboard_ms']['p50']} | "
          f"{report['api_alerts_ms']['p50']} |", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
