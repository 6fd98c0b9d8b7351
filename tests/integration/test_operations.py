"""Operations: /readyz and /metrics scraped before and after claims flow; JSON logs that
follow one claim into its drift event and alert across the services."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streams.app.services import migrate_database
from streams.devtools.generator import Scenario, produce
from streams.devtools.probes import scrape
from streams.devtools.stack import free_port
from streams.kafka.topics import create_topics
from tests.integration.stack import (
    ServiceStack,
    create_database,
    get_json,
    wait_until,
)

pytestmark = pytest.mark.integration

SCENARIO = Scenario(name="denial-spike", customer_id="demo", days=70, spike_day=50)
CLAIMS = 70 * 6 * 20


async def test_metrics_move_as_claims_flow_and_services_report_ready(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """Worker and sink become ready; their counters move by exactly the claims sent; the logs
    carry claim_id -> event_id -> alert_id through worker, sink and notifier."""
    stack = ServiceStack(kafka_bootstrap, create_database(postgres_url, f"it_{unique}"), unique,
                         tmp_path)  # fmt: skip
    await create_topics(stack.settings(), kafka_bootstrap)
    ports = {"worker": free_port(), "sink": free_port()}
    for service, port in ports.items():
        stack.start(service, env={"UPSTREAM_METRICS_PORT": str(port)})
    stack.start("notifier")
    url = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    try:

        async def ready(service: str) -> dict[str, Any] | None:
            try:
                status, body = await asyncio.to_thread(get_json, f"{url[service]}/readyz")
            except OSError:  # not listening yet
                return None
            return body if status == 200 else None

        for service in ports:
            body = await wait_until(partial(ready, service), 90, f"{service} /readyz 200")
            assert body["service"] == service
            assert body["status"] == "ok"
        worker_ready = await ready("worker")
        assert worker_ready is not None
        assert set(worker_ready["checks"]) == {"kafka", "rules", "lag"}
        sink_ready = await ready("sink")
        assert sink_ready is not None
        assert set(sink_ready["checks"]) == {"postgres", "kafka", "lag"}

        before = {s: await asyncio.to_thread(scrape, f"{u}/metrics") for s, u in url.items()}
        await produce(SCENARIO, stack.bootstrap, stack.settings().topic_claims)

        async def done() -> bool:
            worker = await asyncio.to_thread(scrape, f"{url['worker']}/metrics")
            sink = await asyncio.to_thread(scrape, f"{url['sink']}/metrics")
            return (
                worker.get("upstream_claims_processed_total", 0.0) >= CLAIMS
                and sink.get('upstream_sink_rows_total{table="claim_records"}', 0.0) >= CLAIMS
                and sink.get('upstream_sink_rows_total{table="alert_transitions"}', 0.0) >= 1
            )

        await wait_until(done, 120, "every claim processed and stored, an alert stored")
        after = {s: await asyncio.to_thread(scrape, f"{u}/metrics") for s, u in url.items()}

        def moved(service: str, name: str) -> float:
            return after[service].get(name, 0.0) - before[service].get(name, 0.0)

        assert moved("worker", "upstream_claims_processed_total") == CLAIMS
        by_outcome = {k: moved("worker", k) for k in after["worker"]
                      if k.startswith("upstream_claims_valid_total{")}  # fmt: skip
        assert sum(by_outcome.values()) == CLAIMS
        assert by_outcome['upstream_claims_valid_total{outcome="DENIED"}'] > 0
        assert any(k.startswith("upstream_worker_consumer_lag_messages{")
                   for k in after["worker"])  # fmt: skip
        assert moved("worker", "upstream_event_time_lag_seconds_count") == CLAIMS
        assert moved("worker", "upstream_bucket_closes_total") > 0
        assert after["worker"]["upstream_active_window_keys"] > 0
        assert moved("worker", 'upstream_drift_events_total{drift_type="denial_rate",'
                               'level="critical"}') > 0  # fmt: skip
        assert moved("worker", 'upstream_alert_transitions_total{transition="triggered"}') >= 1
        assert moved("sink", 'upstream_sink_rows_total{table="claim_records"}') == CLAIMS
        assert moved("sink", "upstream_sink_batch_duration_seconds_count") > 0
        assert moved("sink", 'upstream_sink_rows_total{table="alert_transitions"}') >= 1
        healthz = await asyncio.to_thread(get_json, f"{url['worker']}/healthz")
        assert healthz == (200, {"service": "worker", "status": "ok"})

        # One alert followed through the JSON logs: claim -> drift event -> alert, three services.
        stored = [r for r in _log(stack, "sink") if r["message"] == "alert transition stored"]
        alert_id, event_id = stored[0]["alert_id"], stored[0]["event_id"]
        worker = _log(stack, "worker")
        detected = [r for r in worker if r.get("event_id") == event_id and "claim_id" in r]
        assert detected
        assert detected[0]["message"].startswith("drift detected")
        assert detected[0]["claim_id"]
        assert detected[0]["service"] == "worker"
        assert any(r.get("alert_id") == alert_id and r.get("event_id") == event_id
                   for r in worker)  # fmt: skip

        async def fanned_out() -> bool:
            return any(r.get("alert_id") == alert_id for r in _log(stack, "notifier"))

        await wait_until(fanned_out, 30, "the notifier's log line for the alert")
    finally:
        codes = stack.stop_all()
        assert codes == {"worker": 0, "sink": 0, "notifier": 0}, stack.log("worker")[-3000:]


def _log(stack: ServiceStack, service: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``service`` (its log file is not a terminal, so JSON is chosen)."""
    lines = stack.log(service).splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def test_rule_changes_are_audited(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """`upstream rules set|delete` with a database writes who, what, when and from where."""
    database_url = create_database(postgres_url, f"it_{unique}")
    stack = ServiceStack(kafka_bootstrap, database_url, unique, tmp_path)
    await create_topics(stack.settings(), kafka_bootstrap)
    await asyncio.to_thread(migrate_database, database_url)
    for args in (("set", "--customer", "demo", "--rule", "r1", "--actor", "ann",
                  "--min-severity-level", "critical"),
                 ("delete", "--customer", "demo", "--rule", "r1", "--actor", "ann")):  # fmt: skip
        result = await asyncio.to_thread(stack.cli, "rules", *args)
        assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT customer_id, actor, action, subject, origin, detail, at FROM audit_log "
            "ORDER BY id"
        ).fetchall()
    assert [r[:4] for r in rows] == [("demo", "ann", "rule.set", "r1"),
                                     ("demo", "ann", "rule.delete", "r1")]  # fmt: skip
    assert all(r[4].startswith("cli@") and r[6] is not None for r in rows)
    assert rows[0][5]["min_severity_level"] == "critical"
    assert rows[1][5] == {}


async def test_a_notifier_whose_alert_hub_fails_exits_non_zero(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """The hub retries a lost connection, but an error it does not expect (here: its table
    dropped under it) stops the notifier with a non-zero status, to be restarted, instead of
    leaving it serving and ready while no alert reaches anyone."""
    database_url = create_database(postgres_url, f"it_{unique}")
    stack = ServiceStack(kafka_bootstrap, database_url, unique, tmp_path)
    await create_topics(stack.settings(), kafka_bootstrap)
    notifier = stack.start("notifier")
    try:

        async def ready() -> bool:
            try:
                status, _ = await asyncio.to_thread(
                    get_json, f"http://127.0.0.1:{stack.notifier_port}/readyz"
                )
            except OSError:
                return False
            return status == 200

        await wait_until(ready, 60, "the notifier ready")
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("DROP TABLE alert_transitions CASCADE")

        async def exited() -> tuple[int] | None:
            code = notifier.poll()
            return None if code is None else (code,)

        (code,) = await wait_until(exited, 30, "the notifier to exit")
        assert code != 0, stack.log("notifier")[-3000:]
        assert "alert hub task ended" in stack.log("notifier")
    finally:
        stack.stop_all()
