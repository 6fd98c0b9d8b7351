"""``/api/alert-detail`` on a real notifier and Postgres: an alert explained from its key's
claims, exact to the claim, and checked against openapi.json."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from notifier.tokens import mint_token
from tests.apidocs import check_response
from tests.integration.stack import SECRET, ServiceStack, notifier_ready, store_rows
from tests.integration.test_api import get_json
from tests.unit.claims import raw_claim

pytestmark = pytest.mark.integration
BASELINE = datetime(2026, 1, 1, tzinfo=UTC)  # 60 days, then the current window of 30
CURRENT, END = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)


def _claims(window: str, start: date, days: int, cpt: dict[str, tuple[int, int]],
            reasons: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """Claims of payer-x/radiology spread over ``days`` from ``start``: per CPT code (claims,
    denied); the denials carry ``reasons`` in turn; paid claims are allowed $100."""
    out: list[dict[str, Any]] = []
    denials = iter(reasons)
    for code, (claims, denied) in cpt.items():
        for i in range(claims):
            decided = start + timedelta(days=len(out) % days)
            deny = i < denied
            out.append(raw_claim(
                claim_id=f"{window}-{len(out):03d}", customer_id="demo", payer_id="payer-x",
                cpt_code=code, cpt_group="radiology",
                submitted_date=(decided - timedelta(days=5)).isoformat(),
                decided_date=decided.isoformat(), outcome="DENIED" if deny else "PAID",
                billed_amount="150.00", allowed_amount="0.00" if deny else "100.00",
                denial_reason_codes=[next(denials)] if deny else [],
            ))  # fmt: skip
    return out


BASELINE_CLAIMS = _claims("b", BASELINE.date(), 60, {"71046": (80, 8), "71045": (20, 2)},
                          ["CO-50"] * 6 + ["CO-16"] * 4)  # fmt: skip
CURRENT_CLAIMS = _claims("c", CURRENT.date(), 30, {"71046": (40, 18), "71045": (10, 2)},
                         ["CO-50"] * 15 + ["CO-16"] * 5)  # fmt: skip
DRIFT = {
    "event_id": "demo-x-e1", "customer_id": "demo", "payer_id": "payer-x",
    "cpt_group": "radiology", "drift_type": "denial_rate", "window_days": 30.0,
    "baseline_start": BASELINE, "baseline_end": CURRENT, "current_start": CURRENT,
    "current_end": END, "baseline_value": 0.1, "current_value": 0.4, "delta_value": 0.3,
    "baseline_n": 100, "current_n": 50, "p_value": 1e-9, "q_value": 2e-8, "severity": 0.95,
    "severity_level": "critical", "confidence": 0.99, "detected_at": END,
}  # fmt: skip
ALERT = {
    "alert_id": "demo-x1", "version": 1, "dedup_key": "demo|default|payer-x|radiology|denial_rate",
    "customer_id": "demo", "rule_id": "default", "drift_event_id": "demo-x-e1",
    "payer_id": "payer-x", "cpt_group": "radiology", "drift_type": "denial_rate",
    "status": "active", "transition": "triggered", "severity": 0.95,
    "severity_level": "critical", "occurrence_count": 1, "first_seen": END, "last_seen": END,
    "acknowledged_by": None, "resolved_by": None, "resolution": None, "verdict": None,
    "message": "Denial rate of payer payer-x for radiology rose", "notify": True,
}  # fmt: skip
ACKNOWLEDGED = {**ALERT, "version": 2, "status": "acknowledged", "transition": "acknowledged",
                "acknowledged_by": "alice", "notify": False}  # fmt: skip


@pytest.fixture
async def explained(notifier_stack: ServiceStack) -> ServiceStack:
    """The notifier, with one alert (two versions) of payer-x/radiology and its claims; and an
    alert whose drift event is not stored."""
    await (await notifier_ready(notifier_stack)).close()
    claims = BASELINE_CLAIMS + CURRENT_CLAIMS
    await store_rows(notifier_stack.database_url, [DRIFT], [ALERT], claims)
    orphan = {**ALERT, "alert_id": "demo-x2", "drift_event_id": "missing", "dedup_key": "k2"}
    await store_rows(notifier_stack.database_url, [], [ACKNOWLEDGED, orphan], [])
    return notifier_stack


async def test_an_alert_is_explained_from_its_keys_claims(explained: ServiceStack) -> None:
    """The change in words (extra denials priced at the baseline's median allowed amount), the
    reason and CPT codes that carry the extra denials, example denied claims, three metrics a
    day over both windows, and both versions with who acknowledged and when it was stored."""
    token = mint_token(SECRET, "demo", "alice")
    status, body = await get_json(explained, "/api/alert-detail?alert_id=demo-x1", token)
    assert status == 200, body
    check_response("/api/alert-detail", 200, body)
    assert body["explanation"] == (
        "Denials rose from 10.0% to 40.0% of 50 claims decided 2 Mar – 31 Mar 2026 (the last 30 "
        "days); about 15 more denials than usual, ≈ $1.5k of allowed amount at stake."
    )
    assert body["median_allowed"] == 100.0
    assert body["drift_event"]["event_id"] == "demo-x-e1"
    assert (body["drift_event"]["current_n"], body["drift_event"]["q_value"]) == (50, 2e-8)
    assert body["denial_reasons"] == [  # 15 - 6 * 50/100, 5 - 4 * 50/100
        {"code": "CO-50", "baseline_denials": 6, "current_denials": 15, "extra_denials": 12.0},
        {"code": "CO-16", "baseline_denials": 4, "current_denials": 5, "extra_denials": 3.0},
    ]
    assert body["cpt_codes"] == [  # each code's baseline rate is 10 %
        {"code": "71046", "baseline_denials": 8, "current_denials": 18, "extra_denials": 14.0},
        {"code": "71045", "baseline_denials": 2, "current_denials": 2, "extra_denials": 1.0},
    ]
    # Denied: c-000…c-017 decided 2–19 Mar, c-040 and c-041 on 12 and 13 Mar: the latest five.
    assert body["example_claim_ids"] == ["c-017", "c-016", "c-015", "c-014", "c-013"]
    assert len(body["days"]) == 90  # a claim decided every day of both windows
    first = body["days"][0]
    assert first["day"] == "2026-01-01"
    assert first["decision_lag_days"] == 5.0
    assert sum(d["claims"] for d in body["days"]) == 150
    history = body["history"]
    assert [(h["version"], h["transition"], h["acknowledged_by"]) for h in history] == [
        (1, "triggered", None), (2, "acknowledged", "alice")
    ]  # fmt: skip
    now = datetime.now(UTC)
    for entry in history:
        stored = datetime.fromisoformat(entry["stored_at"])
        assert now - timedelta(minutes=5) < stored <= now + timedelta(seconds=1)


async def test_an_alert_without_its_drift_event_has_its_history_only(
    explained: ServiceStack,
) -> None:
    """Nothing to explain from: no sentence, no drift event, still the versions."""
    token = mint_token(SECRET, "demo", "alice")
    status, body = await get_json(explained, "/api/alert-detail?alert_id=demo-x2", token)
    assert status == 200, body
    check_response("/api/alert-detail", 200, body)
    assert (body["explanation"], body["drift_event"], body["days"]) == (None, None, [])
    assert [h["version"] for h in body["history"]] == [1]


async def test_a_feed_alert_is_explained_in_its_own_words(explained: ServiceStack) -> None:
    """A feed silence of the whole feed (payer and CPT group "*"): a sentence of hours, no
    claims of a key to chart; the dashboard still answers."""
    feed_drift = {**DRIFT, "event_id": "demo-feed-e1", "payer_id": "*", "cpt_group": "*",
                  "drift_type": "feed_silence", "baseline_value": 48.0, "current_value": 75.0,
                  "delta_value": 27.0, "baseline_n": 30, "current_n": 0, "p_value": 0.0,
                  "q_value": 0.0, "severity": 0.47, "severity_level": "warning",
                  "confidence": 1.0}  # fmt: skip
    feed_alert = {**ALERT, "alert_id": "demo-feed", "dedup_key": "demo|default|*|*|feed_silence",
                  "drift_event_id": "demo-feed-e1", "payer_id": "*", "cpt_group": "*",
                  "drift_type": "feed_silence", "severity": 0.47,
                  "severity_level": "warning"}  # fmt: skip
    await store_rows(explained.database_url, [feed_drift], [feed_alert], [])
    token = mint_token(SECRET, "demo", "alice")
    status, body = await get_json(explained, "/api/alert-detail?alert_id=demo-feed", token)
    assert status == 200, body
    check_response("/api/alert-detail", 200, body)
    assert body["explanation"] == (
        "No claims received for 75 h; this feed usually goes at most 48 h without one."
    )
    assert (body["denial_reasons"], body["example_claim_ids"], body["days"]) == ([], [], [])
    assert body["drift_event"]["drift_type"] == "feed_silence"
    status, dashboard = await get_json(explained, "/api/dashboard", token)
    assert status == 200, dashboard
    assert dashboard["open_alerts"]["warning"] == 1


async def test_alert_detail_refusals(explained: ServiceStack) -> None:
    """Another customer's alert is not found; the id is required."""
    other = mint_token(SECRET, "other", "bob")
    status, body = await get_json(explained, "/api/alert-detail?alert_id=demo-x1", other)
    assert (status, body) == (404, {"error": "no alert demo-x1 for this customer"})
    check_response("/api/alert-detail", 404, body)
    status, body = await get_json(explained, "/api/alert-detail", other)
    assert status == 400
    check_response("/api/alert-detail", 400, body)
