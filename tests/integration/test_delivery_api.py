"""Routes and silences over HTTP (``/api/routes``, ``/api/silences``) on a real notifier and
Postgres: set, listed with secrets masked, checked, scoped to the token's customer, audited; an
open alert a silence covers is listed as silenced."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest

from notifier.tokens import mint_token
from tests.apidocs import check_response
from tests.integration.stack import SECRET, ServiceStack, notifier_ready, store_rows
from tests.integration.test_api import _alert, _drift

pytestmark = pytest.mark.integration
ROUTE = {
    "min_level": "critical",
    "receivers": [
        {"kind": "webhook", "target": "https://hooks.example.com/up", "secret": "s3cret"}
    ],
    "escalate_after_s": 1800,
    "escalation": [{"kind": "email", "target": "lead@example.com"}],
}


def _call(
    stack: ServiceStack, method: str, path: str, body: Any = None, *, customer: str = "demo",
    scopes: tuple[str, ...] = ("read", "act"), content_type: str = "application/json",
) -> tuple[int, Any]:  # fmt: skip
    token = mint_token(SECRET, customer, "alice", scopes)
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.notifier_port}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - a local URL
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def call(stack: ServiceStack, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """``_call`` off the event loop; the answer checked against openapi.json."""
    status, answer = await asyncio.to_thread(lambda: _call(stack, method, path, body, **kw))
    documented = re.sub(r"^/api/(routes|silences)/[^/]+$", r"/api/\1/{ID}", path)
    documented = documented.replace("{ID}", "{name}" if "routes" in path else "{silence_id}")
    check_response(documented, status, answer, method.lower())
    return status, answer


async def test_routes_are_set_listed_masked_checked_and_deleted(
    notifier_stack: ServiceStack,
) -> None:
    stack = notifier_stack
    await (await notifier_ready(stack)).close()
    status, route = await call(stack, "PUT", "/api/routes/ops", ROUTE)
    assert status == 200, route
    assert (route["name"], route["min_level"], route["escalate_after_s"]) == (
        "ops",
        "critical",
        1800,
    )
    assert route["receivers"] == [
        {"kind": "webhook", "target": "https://hooks.example.com/up", "secret": "***"}
    ]
    assert await call(stack, "GET", "/api/routes") == (
        200, {"customer_id": "demo", "routes": [route]}
    )  # fmt: skip
    assert (await call(stack, "GET", "/api/routes", customer="other"))[1]["routes"] == []
    bad = {**ROUTE, "min_level": "loud"}
    status, error = await call(stack, "PUT", "/api/routes/ops", bad)
    assert (status, "min_level must be one of" in error["error"]) == (400, True)
    status, error = await call(stack, "PUT", "/api/routes/ops", route)  # the masked secret back
    assert (status, "not the mask" in error["error"]) == (400, True)
    assert (await call(stack, "PUT", "/api/routes/ops", b"{", content_type="application/json"))[
        0
    ] == 400
    assert (await call(stack, "PUT", "/api/routes/ops", ROUTE, content_type="text/plain"))[0] == 415
    assert (await call(stack, "PUT", "/api/routes/a%20b", ROUTE))[0] == 400
    inside = {"receivers": [{"kind": "webhook", "target": "http://127.0.0.1:9/x"}]}
    status, error = await call(stack, "PUT", "/api/routes/ops", inside)
    assert (status, "not a public address" in error["error"]) == (400, True)
    assert (await call(stack, "PUT", "/api/routes/ops", ROUTE, scopes=("read",)))[0] == 403
    assert (await call(stack, "DELETE", "/api/routes/ops", customer="other"))[0] == 404
    assert await call(stack, "DELETE", "/api/routes/ops") == (200, {"deleted": "ops"})
    assert (await call(stack, "GET", "/api/routes"))[1]["routes"] == []
    with psycopg.connect(stack.database_url.replace("+psycopg", "")) as conn:
        audit = conn.execute(
            "SELECT action, actor, origin, detail FROM audit_log ORDER BY id"
        ).fetchall()
    assert [(a, who, origin.split("@")[0]) for a, who, origin, _ in audit] == [
        ("route.set", "alice", "api"), ("route.delete", "alice", "api")
    ]  # fmt: skip
    assert "s3cret" not in json.dumps([d for *_, d in audit])


async def test_a_silence_marks_the_open_alerts_it_covers_until_it_is_expired(
    notifier_stack: ServiceStack,
) -> None:
    stack = notifier_stack
    await (await notifier_ready(stack)).close()
    other_payer = {**_alert(2), "payer_id": "payer-b"}
    await store_rows(stack.database_url, [_drift(1), _drift(2), _drift(3)],
                     [_alert(1), other_payer, _alert(3, status="resolved")], [])  # fmt: skip
    asked = {"hours": 1, "payer_ids": ["payer-a"], "comment": "upgrade"}
    status, silence = await call(stack, "POST", "/api/silences", asked)
    assert status == 201, silence
    assert (silence["payer_ids"], silence["comment"]) == (["payer-a"], "upgrade")
    status, listed = await call(stack, "GET", "/api/silences")
    assert [s["silence_id"] for s in listed["silences"]] == [silence["silence_id"]]
    assert listed["silences"][0]["active"] is True
    assert listed["silenced_alerts"] == ["demo-a1"]  # open and of payer-a; not the resolved one
    assert (await call(stack, "GET", "/api/silences", customer="other"))[1]["silences"] == []
    weekly = {"hours": 1, "weekly": {"days": [9], "start": "22:00", "minutes": 60}}
    status, error = await call(stack, "POST", "/api/silences", weekly)
    assert (status, "days from 0" in error["error"]) == (400, True)
    assert (await call(stack, "POST", "/api/silences", {"hours": -1}))[0] == 400
    gone = f"/api/silences/{silence['silence_id']}"
    assert (await call(stack, "DELETE", gone, customer="other"))[0] == 404
    assert await call(stack, "DELETE", gone) == (200, {"expired": silence["silence_id"]})
    assert (await call(stack, "DELETE", gone))[0] == 404
    assert (await call(stack, "GET", "/api/silences"))[1]["silenced_alerts"] == []
