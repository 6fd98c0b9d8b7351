"""The interactive API docs at /docs in headless Chromium: Swagger UI draws every operation of
the notifier's openapi.json, "Try it out" answers with the operator's session, and the page
loads nothing from any other host."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from notifier.tokens import mint_token
from tests.apidocs import document
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.stack import SECRET, ServiceStack, notifier_ready

pytestmark = pytest.mark.e2e


async def test_api_docs_draw_every_operation_and_try_one_with_the_session(
    notifier_stack: ServiceStack,
) -> None:
    """Every path of openapi.json is drawn; GET /api/alerts tried out answers 200 with the
    session cookie /session set; every request the page made went to the notifier."""
    await (await notifier_ready(notifier_stack)).close()
    base = f"http://127.0.0.1:{notifier_stack.notifier_port}"
    operations = [op["operationId"] for path in document("openapi")["paths"].values()
                  for op in path.values()]  # fmt: skip
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            requested: list[str] = []
            context.on("request", lambda request: requested.append(request.url))
            token = mint_token(SECRET, "demo", "alice")
            session = await context.request.get(
                f"{base}/session", headers={"Authorization": f"Bearer {token}"}
            )
            assert session.ok
            page = await context.new_page()
            await page.goto(f"{base}/docs")
            for operation_id in operations:
                await page.locator(f"#operations-default-{operation_id}").wait_for(timeout=30_000)
            alerts = page.locator("#operations-default-listActiveAlerts")
            await alerts.locator(".opblock-summary").click()
            await alerts.get_by_role("button", name="Try it out").click()
            await alerts.get_by_role("button", name="Execute").click()
            status = alerts.locator(
                ".live-responses-table tr.response td.response-col_status"
            ).first
            await status.wait_for(timeout=30_000)
            assert (await status.inner_text()).strip() == "200"
            answer = await alerts.locator(".live-responses-table").first.inner_text()
            assert '"customer_id": "demo"' in answer
        finally:
            await browser.close()
    assert requested, "the page made no request"
    foreign = [url for url in requested if not url.startswith(base)]
    assert not foreign, f"requests to other hosts: {foreign}"
