"""The console's notifications panel, in headless Chromium on a real notifier and Postgres: a
route saved and deleted, a silence added that marks the alert it holds, then expired; every
change made through the API as the operator, and audited."""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.test_console_edges import _console
from tests.integration.stack import ServiceStack, notifier_ready, store_rows
from tests.integration.test_alert_detail import ALERT

pytestmark = pytest.mark.e2e


async def test_an_operator_sets_a_route_and_a_silence_that_marks_its_alert(
    notifier_stack: ServiceStack,
) -> None:
    await (await notifier_ready(notifier_stack)).close()
    other = {**ALERT, "alert_id": "demo-b1", "dedup_key": "b1", "payer_id": "payer-other"}
    await store_rows(notifier_stack.database_url, [], [ALERT, other], [])
    async with _console(notifier_stack) as page:
        await page.locator("#delivery summary").click()
        form = page.locator("#route-form")
        await form.locator("[name=name]").fill("ops")
        await form.locator("[name=min_level]").select_option("critical")
        await form.locator("[name=kind]").select_option("slack")
        await form.locator("[name=target]").fill("https://hooks.slack.com/services/T0/B0/XXXX")
        await page.locator("#route-save").click()
        route = page.locator("#routes tbody tr", has_text="slack https://hooks.slack.com/***")
        await route.wait_for(timeout=10_000)
        assert "≥ critical" in await route.inner_text()

        silence = page.locator("#silence-form")
        await silence.locator("[name=payer]").fill(str(ALERT["payer_id"]))
        await silence.locator("[name=comment]").fill("payer portal upgrade")
        await page.locator("#silence-add").click()
        held = page.locator(f'#alerts tr[data-alert-id="{ALERT["alert_id"]}"] td.silenced')
        await held.wait_for(timeout=10_000)
        assert await held.inner_text() == f"{ALERT['status']} · silenced"
        free = page.locator('#alerts tr[data-alert-id="demo-b1"] td.silenced')
        assert await free.count() == 0
        await page.locator("#silences tbody tr", has_text="payer portal upgrade").wait_for()

        await page.locator("#silences tbody button", has_text="Expire").click()
        await held.wait_for(state="detached", timeout=10_000)
        await route.locator("button", has_text="Delete").click()
        await route.wait_for(state="detached", timeout=10_000)
    with psycopg.connect(notifier_stack.database_url.replace("+psycopg", "")) as conn:
        audit = conn.execute("SELECT action, actor FROM audit_log ORDER BY id").fetchall()
    assert audit == [("route.set", "alice"), ("silence.add", "alice"),
                     ("silence.expire", "alice"), ("route.delete", "alice")]  # fmt: skip
