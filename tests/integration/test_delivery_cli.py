"""``upstream routes`` / ``silences`` and the ``upstream dispatcher`` process, on real Postgres
with a webhook receiver on 127.0.0.1: changes audited, secrets hidden, a route set while the
dispatcher runs applies to the alerts that follow, and a SIGKILLed dispatcher loses nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.delivery.dispatcher import Pace
from tests.integration.stack import Received, ServiceStack, http_receiver, store_rows, wait_until
from tests.unit.events import alert_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def hook() -> AsyncIterator[Received]:
    """A webhook receiver on 127.0.0.1 answering each request 0.3 s after it arrived."""
    async with http_receiver(delay_s=0.3) as got:
        yield got


def _keys(hook: Received) -> list[tuple[str, str]]:
    """(path, Idempotency-Key) of each request the receiver took so far."""
    return [(path, headers["Idempotency-Key"]) for path, headers, _ in hook.requests]


def _stack(url: str, tmp_path: Path) -> ServiceStack:
    return ServiceStack("127.0.0.1:1", url, "delivery", tmp_path)


async def test_routes_and_silences_are_set_listed_audited_and_checked(
    database: tuple[str, AsyncEngine], tmp_path: Path
) -> None:
    url, _ = database
    stack = _stack(url, tmp_path)
    route = ("--customer", "acme", "--name", "ops", "--webhook", "http://127.0.0.1:9/hook")
    ok = stack.cli("routes", "set", *route, "--secret", "s3cret", "--min-level", "critical")
    assert (ok.returncode, ok.stdout.strip()) == (0, "route.set ops"), ok.stderr
    listed = [json.loads(line) for line in stack.cli("routes", "list").stdout.splitlines()]
    assert [(r["name"], r["min_level"], r["receivers"][0]["secret"]) for r in listed] == [
        ("ops", "critical", "***")
    ]
    escalating = stack.cli("routes", "set", *route[:3], "pager", "--slack", "http://127.0.0.1:9/s",
                           "--escalate-after-minutes", "30", "--escalate-routing-key", "rk",
                           "--escalate-email", "lead@example.com")  # fmt: skip
    assert escalating.returncode == 0, escalating.stderr
    pager = [json.loads(line) for line in stack.cli("routes", "list").stdout.splitlines()][1]
    assert (pager["escalate_after_s"], pager["receivers"][0]["kind"]) == (1800, "slack")
    assert [(r["kind"], r["target"], r["secret"]) for r in pager["escalation"]] == [
        ("pagerduty", "https://events.pagerduty.com/v2/enqueue", "***"),
        ("email", "lead@example.com", None),
    ]
    nobody = stack.cli("routes", "set", *route, "--escalate-after-minutes", "30")
    assert (nobody.returncode, "escalates to no receiver" in nobody.stderr) == (2, True)
    assert stack.cli("routes", "delete", *route[:3], "pager").returncode == 0
    bad = stack.cli("routes", "set", "--customer", "acme", "--name", "x", "--webhook", "http://h",
                    "--events", "opened,sometimes")  # fmt: skip
    assert bad.returncode == 2
    assert "events must be among" in bad.stderr
    added = stack.cli("silences", "add", "--customer", "acme", "--hours", "1", "--payer-ids", "p1",
                      "--weekly", "sun@22:00+240", "--zone", "America/New_York")  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[-1]
    running = [json.loads(line) for line in stack.cli("silences", "list").stdout.splitlines()]
    assert [(s["silence_id"], s["payer_ids"], s["weekly"]["zone"]) for s in running] == [
        (silence_id, ["p1"], "America/New_York")
    ]
    assert stack.cli("silences", "expire", "--customer", "acme", "--id", silence_id).returncode == 0
    assert stack.cli("silences", "expire", "--customer", "acme", "--id", silence_id).returncode == 1
    assert stack.cli("silences", "list").stdout == ""
    assert stack.cli("routes", "delete", "--customer", "acme", "--name", "ops").returncode == 0
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        audit = conn.execute("SELECT action, detail FROM audit_log ORDER BY id").fetchall()
    assert [a for a, _ in audit] == [
        "route.set", "route.set", "route.delete", "silence.add", "silence.expire", "route.delete"
    ]  # fmt: skip
    assert "s3cret" not in json.dumps([d for _, d in audit])


async def test_the_dispatcher_follows_route_changes_and_survives_sigkill(
    database: tuple[str, AsyncEngine], tmp_path: Path, hook: Received
) -> None:
    url, _ = database
    base = hook.url
    stack = _stack(url, tmp_path)
    set_ = stack.cli("routes", "set", "--customer", "acme", "--name", "a", "--webhook", f"{base}/a")
    assert set_.returncode == 0, set_.stderr
    fast = {"UPSTREAM_DISPATCHER_POLL_S": "0.1", "UPSTREAM_DELIVERY_LEASE_S": "2"}
    stack.start("dispatcher", env=fast)
    try:
        await store_rows(url, [], [alert_event(f"x{i}", 1, "triggered") for i in range(20)], [])

        async def first_sent() -> bool:
            return len(_keys(hook)) == 20

        await wait_until(first_sent, 60, "20 notifications at /a")
        # A second route while it runs: the alerts that follow go to both.
        more = stack.cli("routes", "set", "--customer", "acme", "--name", "b", "--webhook",
                         f"{base}/b")  # fmt: skip
        assert more.returncode == 0, more.stderr
        await store_rows(url, [], [alert_event(f"y{i}", 1, "triggered") for i in range(200)], [])

        async def some_of_them() -> bool:
            return len(_keys(hook)) > 30

        async def all_sent() -> bool:
            return set(_keys(hook)) >= {(f"/{r}", f"y{i}:1") for r in "ab" for i in range(200)}

        await wait_until(some_of_them, 60, "the next alerts on their way")
        stack.kill("dispatcher")
        assert not await all_sent()  # killed mid-delivery
        stack.start("dispatcher", env=fast)  # takes over once the dead one's lease ends

        await wait_until(all_sent, 120, "every notification after the restart", interval_s=0.2)
    finally:
        assert stack.stop_all() == {"dispatcher": 0}, stack.log("dispatcher")[-3000:]
    got = _keys(hook)
    assert {k for p, k in got if p == "/b"} == {f"y{i}:1" for i in range(200)}  # none of x
    duplicates = len(got) - len(set(got))
    # At most the batch it had leased (sent, not yet recorded), each with its Idempotency-Key.
    assert duplicates <= Pace().batch
