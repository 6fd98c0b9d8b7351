"""``/api/dashboard`` on a real notifier and Postgres, from claims and alerts built to the claim,
checked against openapi.json."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import connect

from notifier.tokens import mint_token
from tests.apidocs import check_response, check_ws_message
from tests.integration.stack import SECRET, ServiceStack, notifier_ready, store_rows, ws_url
from tests.integration.test_alert_detail import ALERT
from tests.integration.test_api import get_json
from tests.unit.claims import raw_claim

pytestmark = pytest.mark.integration
AS_OF = date(2026, 3, 31)  # the latest decided date; the current window is 2–31 Mar


def _claims(payer: str, start: date, days: int, denied: int, customer: str = "demo") -> list[Any]:
    """One claim a day of ``payer`` for ``days`` from ``start``, the first ``denied`` denied;
    paid claims are allowed $100."""
    out = []
    for i in range(days):
        decided = start + timedelta(days=i)
        deny = i < denied
        out.append(raw_claim(
            claim_id=f"{payer}-{decided}", customer_id=customer, payer_id=payer,
            cpt_group="radiology", submitted_date=(decided - timedelta(days=3)).isoformat(),
            decided_date=decided.isoformat(), outcome="DENIED" if deny else "PAID",
            billed_amount="150.00", allowed_amount="0.00" if deny else "100.00",
        ))  # fmt: skip
    return out


BASELINE, CURRENT = date(2026, 1, 1), date(2026, 3, 2)
CLAIMS = [
    *_claims("p1", BASELINE, 60, 6), *_claims("p1", CURRENT, 30, 12),  # 10 % → 40 %
    *_claims("p2", BASELINE, 60, 12), *_claims("p2", CURRENT, 30, 6),  # 20 % → 20 %
    *_claims("p9", CURRENT, 30, 30, customer="other"),  # another customer's: never counted
]  # fmt: skip


def _alert(i: int, level: str, status: str, **fields: Any) -> dict[str, Any]:
    return {**ALERT, "alert_id": f"demo-d{i}", "dedup_key": f"d{i}", "severity_level": level,
            "status": status, **fields}  # fmt: skip


@pytest.fixture
async def filled(notifier_stack: ServiceStack) -> ServiceStack:
    """The notifier with the claims above and three alerts, one of them noted by alice."""
    await (await notifier_ready(notifier_stack)).close()
    resolved = _alert(3, "warning", "resolved", transition="resolved", resolution="auto")
    alerts = [_alert(1, "critical", "active"), _alert(2, "warning", "active"), resolved]
    noted = {**alerts[1], "version": 2, "status": "acknowledged", "transition": "acknowledged",
             "acknowledged_by": "alice", "actor": "alice", "note": "called payer-x"}  # fmt: skip
    await store_rows(notifier_stack.database_url, [], alerts, CLAIMS)
    await store_rows(notifier_stack.database_url, [], [noted], [])
    return notifier_stack


async def test_the_dashboard_counts_the_customers_alerts_claims_and_activity(
    filled: ServiceStack,
) -> None:
    """Open alerts by level; claims as of the latest decided date; the payer whose denial rate
    rose, priced; the latest transitions with who made them."""
    status, body = await get_json(filled, "/api/dashboard", mint_token(SECRET, "demo", "alice"))
    assert status == 200, body
    check_response("/api/dashboard", 200, body)
    assert body["as_of"] == AS_OF.isoformat()
    assert body["open_alerts"] == {"info": 0, "warning": 1, "critical": 1}
    assert body["today"] == {"decided": 2, "denied": 0, "denial_rate": 0.0}
    assert body["week"] == {"decided": 14, "denied": 0, "denial_rate": 0.0}
    trend = body["trend"]
    assert [d["day"] for d in trend] == [(AS_OF - timedelta(days=27 - i)).isoformat()
                                         for i in range(28)]  # fmt: skip
    # 4 Mar: p1's 3rd and p2's 3rd current day, both denied; 14 Mar: neither.
    assert (trend[0]["decided"], trend[0]["denial_rate"]) == (2, 1.0)
    assert trend[10]["denial_rate"] == 0.0
    p1, p2 = body["top_payers"]
    assert p1 == {"payer_id": "p1", "baseline_rate": 0.1, "current_rate": 0.4,
                  "change": pytest.approx(0.3), "current_claims": 30, "extra_denials": 9.0,
                  "at_stake": 900.0}  # fmt: skip
    assert (p2["payer_id"], p2["change"], p2["extra_denials"], p2["at_stake"]) == (
        "p2", 0.0, 0.0, None
    )  # fmt: skip
    assert body["top_payers_at_stake"] == [p1]  # p2 puts nothing at stake
    timeline = {a["alert_id"]: (a["severity_level"], a["status"]) for a in body["timeline"]}
    assert timeline == {"demo-d1": ("critical", "active"), "demo-d2": ("warning", "acknowledged"),
                        "demo-d3": ("warning", "resolved")}  # fmt: skip
    assert all(a["first_seen"] <= a["last_seen"] for a in body["timeline"])
    latest = body["activity"][0]
    assert (latest["alert_id"], latest["transition"], latest["actor"], latest["note"]) == (
        "demo-d2", "acknowledged", "alice", "called payer-x"
    )  # fmt: skip
    assert len(body["activity"]) == 4
    assert {a["alert_id"] for a in body["activity"]} == {"demo-d1", "demo-d2", "demo-d3"}


async def test_a_customer_without_claims_gets_an_empty_dashboard(filled: ServiceStack) -> None:
    """Nothing of another customer's shows; no claims: no as-of date, nothing counted."""
    status, body = await get_json(filled, "/api/dashboard", mint_token(SECRET, "nobody", "eve"))
    assert status == 200, body
    check_response("/api/dashboard", 200, body)
    assert (body["as_of"], body["trend"], body["top_payers"], body["activity"]) == (
        None, [], [], []
    )  # fmt: skip
    assert (body["top_payers_at_stake"], body["timeline"]) == ([], [])
    assert body["today"] == {"decided": 0, "denied": 0, "denial_rate": None}


async def test_each_operator_keeps_a_layout_of_their_own(filled: ServiceStack) -> None:
    """A layout message saves the operator's layout (answered layout_saved); GET /api/layout
    reads it back for that operator only; a layout that does not check is refused."""
    alice = mint_token(SECRET, "demo", "alice")
    saved = {"order": ["activity", "open", "claims", "payers", "timeline", "feed"],
             "hidden": ["payers"]}  # fmt: skip
    async with connect(ws_url(filled, alice)) as ws:
        await ws.send(json.dumps({"type": "layout", "layout": saved}))
        reply = json.loads(await ws.recv())
        check_ws_message(reply)
        assert reply == {"type": "layout_saved", "layout": saved}
        for bad in ({"order": ["open"], "hidden": []}, {"order": saved["order"], "hidden": ["x"]},
                    [1, 2]):  # fmt: skip
            await ws.send(json.dumps({"type": "layout", "layout": bad}))
            refused = json.loads(await ws.recv())
            check_ws_message(refused)
            assert refused["type"] == "error"
            assert refused["message"].startswith("layout: ")
    status, body = await get_json(filled, "/api/layout", alice)
    check_response("/api/layout", 200, body)
    assert (status, body) == (200, saved)
    _, default = await get_json(filled, "/api/layout", mint_token(SECRET, "demo", "bob"))
    assert default == {"order": ["open", "claims", "payers", "activity", "timeline", "feed"],
                       "hidden": []}  # fmt: skip
