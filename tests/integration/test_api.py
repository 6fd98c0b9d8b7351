"""The notifier's JSON API on a real notifier process and Postgres, checked against openapi.json."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

import pytest

from notifier.api import CACHE_TTL_S
from notifier.tokens import mint_token
from tests.apidocs import check_response, document
from tests.integration.stack import (
    SECRET,
    ServiceStack,
    http_get,
    notifier_ready,
    store_rows,
    wait_until,
)
from tests.unit.claims import raw_claim

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _drift(i: int, customer: str = "demo") -> dict[str, Any]:
    detected = T0 + timedelta(hours=i)
    return {"event_id": f"{customer}-e{i:03d}", "customer_id": customer,
            "payer_id": f"payer-{'ab'[i % 2]}", "cpt_group": "radiology",
            "drift_type": ("denial_rate", "decision_lag")[i % 2], "window_days": 7.0,
            "baseline_start": detected - timedelta(days=90), "baseline_end": detected,
            "current_start": detected - timedelta(days=7), "current_end": detected,
            "baseline_value": 0.1, "current_value": 0.3, "delta_value": 0.2, "baseline_n": 500,
            "current_n": 60, "p_value": 1e-6, "q_value": 1e-5, "severity": 0.9,
            "severity_level": ("info", "warning", "critical")[i % 3], "confidence": 0.99,
            "detected_at": detected}  # fmt: skip


def _alert(i: int, customer: str = "demo", status: str = "active") -> dict[str, Any]:
    return {"alert_id": f"{customer}-a{i}", "version": 1, "dedup_key": f"k{i}",
            "customer_id": customer, "rule_id": "default", "drift_event_id": f"{customer}-e{i:03d}",
            "payer_id": "payer-a", "cpt_group": "radiology", "drift_type": "denial_rate",
            "status": status, "transition": "triggered", "severity": 0.8,
            "severity_level": "critical", "occurrence_count": 1, "first_seen": T0,
            "last_seen": T0 + timedelta(minutes=i), "acknowledged_by": None, "resolved_by": None,
            "resolution": None, "verdict": None, "message": "m", "notify": True}  # fmt: skip


def _claim(i: int) -> dict[str, Any]:
    month = 1 + i % 3
    return raw_claim(claim_id=f"c{i}", customer_id="demo", submitted_date=f"2026-0{month}-01",
                     decided_date=f"2026-0{month}-10", outcome="DENIED" if i % 4 == 0 else "PAID",
                     allowed_amount="80.00")  # fmt: skip


def _get(
    stack: ServiceStack, path: str, token: str | None, **headers: str
) -> tuple[int, Message, bytes]:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return http_get(f"http://127.0.0.1:{stack.notifier_port}{path}", sent)


async def get_json(stack: ServiceStack, path: str, token: str | None = None) -> tuple[int, Any]:
    """GET ``path`` off the event loop; (status, parsed JSON body)."""
    status, _, body = await asyncio.to_thread(_get, stack, path, token)
    return status, json.loads(body)


@pytest.fixture
async def api(notifier_stack: ServiceStack) -> ServiceStack:
    """A notifier with 250 drift events, alerts of two customers and claims over 3 months."""
    await (await notifier_ready(notifier_stack)).close()
    await store_rows(
        notifier_stack.database_url,
        [_drift(i) for i in range(250)] + [_drift(i, "other") for i in range(5)],
        [_alert(1), _alert(2), _alert(3, status="resolved"), _alert(4, "other")],
        [_claim(i) for i in range(120)],
    )
    return notifier_stack


async def test_api_answers_each_endpoint_as_openapi_describes(api: ServiceStack) -> None:
    """Alerts, drift events and the denial trend: the customer's rows only, schema-valid."""
    token = mint_token(SECRET, "demo", "alice")
    status, body = await get_json(api, "/api/alerts", token)
    assert status == 200
    check_response("/api/alerts", 200, body)
    assert [a["alert_id"] for a in body["alerts"]] == ["demo-a2", "demo-a1"]  # open, newest first
    assert (body["alerts"][1]["baseline_value"], body["alerts"][1]["current_value"]) == (0.1, 0.3)

    status, body = await get_json(
        api, "/api/drift-events?limit=3&min_severity_level=critical", token
    )
    check_response("/api/drift-events", 200, body)
    assert [e["event_id"] for e in body["drift_events"]] == ["demo-e248", "demo-e245", "demo-e242"]
    query = "payer_id=payer-b&drift_type=decision_lag&since=2026-03-02T00:00:00Z&until=2026-03-03"
    status, body = await get_json(api, f"/api/drift-events?{query}", token)
    assert [e["event_id"] for e in body["drift_events"]] == [
        f"demo-e{i:03d}" for i in range(47, 24, -2)
    ]

    status, body = await get_json(
        api, "/api/trends/denials?since=2026-01-01&until=2026-04-01", token
    )
    check_response("/api/trends/denials", 200, body)
    assert [(m["month"], m["decided"], m["denied"], m["denial_rate"]) for m in body["months"]] == [
        ("2026-01-01", 40, 10, 0.25), ("2026-02-01", 40, 10, 0.25), ("2026-03-01", 40, 10, 0.25)
    ]  # fmt: skip


async def test_an_alert_tells_when_operators_were_first_notified(api: ServiceStack) -> None:
    """first_notified_at is the wall-clock time the sink stored an alert's first transition
    (its first_seen is event time, months before); a later version leaves it as it was."""
    token = mint_token(SECRET, "demo", "alice")
    before = datetime.now(UTC)
    await store_rows(api.database_url, [_drift(9)], [_alert(9)], [])
    after = datetime.now(UTC)
    _, body = await get_json(api, "/api/alerts", token)
    alert = next(a for a in body["alerts"] if a["alert_id"] == "demo-a9")
    first = datetime.fromisoformat(alert["first_notified_at"])
    assert before - timedelta(seconds=1) <= first <= after + timedelta(seconds=1)
    assert datetime.fromisoformat(alert["first_seen"]) == T0
    acknowledged = {**_alert(9), "version": 2, "status": "acknowledged",
                    "transition": "acknowledged", "acknowledged_by": "alice"}  # fmt: skip
    await store_rows(api.database_url, [], [acknowledged], [])

    async def updated() -> dict[str, Any] | None:
        _, body = await get_json(api, "/api/alerts", token)
        return next((a for a in body["alerts"] if a["version"] == 2), None)

    alert = await wait_until(updated, 10, "version 2 served")  # past the 2 s answer cache
    assert datetime.fromisoformat(alert["first_notified_at"]) == first


async def test_alert_series_is_the_keys_daily_value(api: ServiceStack) -> None:
    """The chart's data: daily denial rate of the alert's key up to its last_seen, with baseline."""
    token = mint_token(SECRET, "demo", "alice")
    status, body = await get_json(api, "/api/alert-series?alert_id=demo-a1&days=120", token)
    assert status == 200
    check_response("/api/alert-series", 200, body)
    assert (body["drift_type"], body["baseline_value"], body["current_value"]) == (
        "denial_rate", 0.1, 0.3
    )  # fmt: skip
    # Claims decided on the 10th of Jan, Feb and Mar; the alert was last seen on 1 March.
    assert body["days"] == [
        {"day": "2026-01-10", "value": 0.25, "claims": 40},
        {"day": "2026-02-10", "value": 0.25, "claims": 40},
    ]
    for alert_id in ("no-such-alert", "other-a4"):  # unknown, or another customer's
        status, body = await get_json(api, f"/api/alert-series?alert_id={alert_id}", token)
        assert status == 404
        assert "no alert" in body["error"]


async def test_drift_events_pages_cover_everything_once(api: ServiceStack) -> None:
    """Following next_cursor visits all 250 events, newest first, none twice."""
    token = mint_token(SECRET, "demo", "alice")
    seen: list[str] = []
    path = "/api/drift-events?limit=100"
    while True:
        status, body = await get_json(api, path, token)
        assert status == 200
        seen += [e["event_id"] for e in body["drift_events"]]
        if body["next_cursor"] is None:
            break
        path = f"/api/drift-events?limit=100&cursor={body['next_cursor']}"
    assert seen == [f"demo-e{i:03d}" for i in range(249, -1, -1)]


@pytest.mark.parametrize(
    ("path", "token", "status", "error"),
    [
        ("/api/alerts", None, 401, "Authorization: Bearer"),
        (
            "/api/alerts",
            mint_token("another-secret-of-at-least-32-bytes!!", "demo", "x"),
            401,
            "invalid token",
        ),
        (
            "/api/alerts?customer_id=other",
            mint_token(SECRET, "demo", "alice"),
            403,
            "another customer",
        ),
        (
            "/api/drift-events?limit=0",
            mint_token(SECRET, "demo", "alice"),
            400,
            "limit: Input should be greater than or equal to 1",
        ),
        (
            "/api/drift-events?drift_type=nope",
            mint_token(SECRET, "demo", "alice"),
            400,
            "drift_type: Input should be 'denial_rate', 'decision_lag', 'allowed_amount', "
            "'feed_silence', 'feed_volume' or 'dead_letters'",
        ),
        (
            "/api/drift-events?min_severity_level=urgent",
            mint_token(SECRET, "demo", "alice"),
            400,
            "min_severity_level: Input should be 'info', 'warning' or 'critical'",
        ),
        (
            "/api/drift-events?since=yesterday",
            mint_token(SECRET, "demo", "alice"),
            400,
            "since: Value error, must be an ISO 8601 date or time",
        ),
        ("/api/drift-events?cursor=%21%21", mint_token(SECRET, "demo", "alice"), 400, "cursor"),
        ("/api/nothing", mint_token(SECRET, "demo", "alice"), 404, "openapi.json"),
    ],
    ids=[
        "no-token",
        "forged",
        "foreign-customer",
        "bad-limit",
        "bad-drift-type",
        "bad-level",
        "bad-since",
        "bad-cursor",
        "404",
    ],
)
async def test_api_refusals(
    api: ServiceStack, path: str, token: str | None, status: int, error: str
) -> None:
    """Each refusal has its status and a JSON error naming the problem."""
    got, body = await get_json(api, path, token)
    assert got == status
    assert error in body["error"]


async def test_gzip_cache_invalidation_and_rate_limit(api: ServiceStack) -> None:
    """Large answers are gzipped; a new transition shows at once; a flood gets 429."""
    token = mint_token(SECRET, "demo", "alice")
    status, headers, raw = await asyncio.to_thread(
        _get, api, "/api/drift-events?limit=200", token, Accept_Encoding="gzip"
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(raw))["drift_events"]) == 200

    cached_at = time.monotonic()  # the answer below is cached until at least cached_at + 2 s
    assert [a["alert_id"] for a in (await get_json(api, "/api/alerts", token))[1]["alerts"]] == [
        "demo-a2", "demo-a1"
    ]  # fmt: skip
    await store_rows(api.database_url, [], [_alert(9)], [])  # the sink NOTIFYs; the hub moves on

    async def fresh() -> bool:
        body = (await get_json(api, "/api/alerts", token))[1]
        newest: str = body["alerts"][0]["alert_id"]
        return newest == "demo-a9"

    await wait_until(fresh, CACHE_TTL_S, "the new alert in /api/alerts", interval_s=0.05)
    # Seen within the cached answer's lifetime: only the invalidation can have shown it.
    assert time.monotonic() < cached_at + CACHE_TTL_S

    flood = mint_token(SECRET, "demo", "flood")
    statuses = [(await get_json(api, "/api/alerts", flood))[0] for _ in range(60)]
    assert statuses[:40] == [200] * 40
    assert 429 in statuses[40:]


async def test_docs_are_served(api: ServiceStack) -> None:
    """/openapi.json and /asyncapi.json are the files in notifier/static."""
    for name in ("openapi", "asyncapi"):
        status, body = await get_json(api, f"/{name}.json")
        assert status == 200
        assert body == document(name)


async def test_answers_outside_the_api_are_as_openapi_describes(api: ServiceStack) -> None:
    """/healthz, /session (with a token and without) and an API error: each body is the
    schema openapi.json gives for its status."""
    token = mint_token(SECRET, "demo", "alice")
    status, body = await get_json(api, "/healthz")
    check_response("/healthz", status, body)
    status, body = await get_json(api, "/session", token)
    assert status == 200
    check_response("/session", 200, body)
    assert body == {"customer_id": "demo", "operator": "alice"}
    status, body = await get_json(api, "/session")
    assert status == 401
    check_response("/session", 401, body)
    status, body = await get_json(api, "/api/alert-series?alert_id=nothing", token)
    assert status == 404
    check_response("/api/alert-series", 404, body)


async def test_the_api_docs_page_and_its_assets_come_from_the_notifier(
    api: ServiceStack,
) -> None:
    """/docs is an HTML page whose scripts, styles and icon are all served under /docs/ by the
    notifier itself (Swagger UI's assets cached for a day)."""
    status, headers, body = await asyncio.to_thread(_get, api, "/docs", None)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets
    assert all(asset.startswith("/docs/") for asset in assets), assets
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        status, headers, body = await asyncio.to_thread(_get, api, asset, None)
        assert status == 200, asset
        assert body
        assert headers["Content-Type"].startswith(types[asset[asset.rindex(".") :]]), asset
    _, headers, _ = await asyncio.to_thread(_get, api, "/docs/swagger-ui-bundle.js", None)
    assert headers["Cache-Control"] == "public, max-age=86400"


async def test_readiness_reports_each_check(api: ServiceStack) -> None:
    """/readyz: Postgres and Kafka each ok, with the Kafka round trip's latency."""
    status, body = await get_json(api, "/readyz")
    assert status == 200
    check_response("/readyz", 200, body)
    assert body["status"] == "ok"
    assert body["checks"]["postgres"] == {"ok": True}
    assert body["checks"]["kafka"]["ok"] is True
    assert body["checks"]["kafka"]["latency_ms"] >= 0
