"""The operator console in headless Chromium: live alerts, the chart, and a command that a
second operator's browser sees, on the real worker, sink and notifier."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from notifier.tokens import mint_token
from streams.devtools.generator import SPIKE_GROUP, SPIKE_PAYER, Scenario, produce
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.stack import SECRET, ServiceStack, notifier_ready

pytestmark = pytest.mark.e2e

SCENARIO = Scenario(name="denial-spike", customer_id="demo", days=70, spike_day=50)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


async def _open(browser: object, stack: ServiceStack, operator: str) -> Page:
    page: Page = await browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    token = mint_token(SECRET, "demo", operator)
    await page.goto(f"http://127.0.0.1:{stack.notifier_port}/?token={token}")
    await page.locator("#status.live").wait_for(timeout=30_000)
    assert "token" not in page.url  # traded for an HttpOnly cookie, out of the address bar
    cookies = await page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("upstream_session", True, "Strict")
    ]
    await page.reload()  # the session alone serves the console again
    await page.locator("#status.live").wait_for(timeout=30_000)
    return page


async def test_console_shows_alerts_live_and_acknowledge_reaches_another_browser(
    stack: ServiceStack,
) -> None:
    """An alert appears live and opens explained; Acknowledge in one browser shows in the
    other's table and in the alert's history there."""
    await (await notifier_ready(stack)).close()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            alice, carol = (
                await _open(browser, stack, "alice"),
                await _open(browser, stack, "carol"),
            )
            await produce(SCENARIO, stack.bootstrap, stack.settings().topic_claims)

            # The alert may show as a warning first and escalate a moment later (two
            # transitions): wait for the row as it ends up, not for its first drawing.
            row = alice.locator("#alerts tr", has_text=SPIKE_PAYER).filter(has_text="critical")
            row = row.first
            await row.wait_for(timeout=120_000)
            cells = await row.locator("td").all_inner_texts()
            assert cells[:5] == ["critical", "active", SPIKE_PAYER, SPIKE_GROUP, "denial_rate"]
            assert "% → " in cells[5]  # baseline → current denial rate
            # First told by the wall clock (moments ago), not by the claims' event time (the
            # scenario's days lie weeks back).
            assert re.fullmatch(r"just now|\d+ min ago", cells[7]), cells[7]

            # The alert's detail: the change in words, the key's daily denial rate with dated
            # and labelled axes, both windows drawn as bands, the other two metrics below, and
            # the alert's history. Every live message re-renders the table: a click that lands
            # as its row is replaced is lost, so click again until the detail fills (and say
            # what the console showed if not).
            for attempt in range(3):
                await row.click()
                try:
                    await alice.locator("#chart-main .main-svg").first.wait_for(timeout=10_000)
                    break
                except PlaywrightTimeoutError:
                    notice = await alice.locator("#notice").inner_text()
                    assert attempt < 2, f"no chart after 3 clicks; the console says {notice!r}"
            words = await alice.locator("#detail-explanation").inner_text()
            assert re.fullmatch(
                r"Denials rose from \d+\.\d% to \d+\.\d% of [\d,]+ claims decided "
                r"\d+ \w{3}( \d{4})? – \d+ \w{3} \d{4} \(the last \d+ days\); "
                r"about [\d,]+ more denials than usual, "
                r"≈ \$[\d.,]+[kM]? of allowed amount at stake\.",
                words,
            ), words
            main = alice.locator("#chart-main")
            assert await main.locator(".g-xtitle").text_content() == "Decided date"
            assert await main.locator(".g-ytitle").text_content() == "Denial rate"
            ticks = await main.locator(".xtick text").all_text_contents()
            assert ticks
            assert all(re.fullmatch(r"\d\d \w{3}", t) for t in ticks), ticks
            assert await main.locator(".scatterlayer .point").count() > 30  # ~70 days of claims
            assert await main.locator(".shapelayer path").count() == 2  # the two windows
            others = [await alice.locator(f"#chart-other-{i} .g-ytitle").text_content()
                      for i in range(2)]  # fmt: skip
            assert others == ["Mean days to decision", "Typical allowed amount ($)"]
            assert await alice.locator("#reasons tbody tr").count() > 0
            assert await alice.locator("#cpt-codes tbody tr").count() > 0
            assert (await alice.locator("#examples").inner_text()).startswith("Example claims")
            times = await alice.locator("#detail-times").inner_text()
            assert re.fullmatch(
                r"First told: .+ · Detected in claims decided by \d{4}-\d\d-\d\d, last by "
                r"\d{4}-\d\d-\d\d \(event dates\)",
                times,
            ), times
            assert "not recorded" not in times
            history = await alice.locator("#history tbody tr").first.locator("td").all_inner_texts()
            assert history[:2] == ["1", "triggered"], history
            alert_id = await row.get_attribute("data-alert-id")
            carol_row = carol.locator(f'#alerts tr[data-alert-id="{alert_id}"]')
            for attempt in range(3):  # the same alert's detail in the other browser
                await carol_row.click()
                try:
                    await carol.locator("#history tbody tr").first.wait_for(timeout=10_000)
                    break
                except PlaywrightTimeoutError:
                    assert attempt < 2, "no detail in the second browser after 3 clicks"

            await row.get_by_role("button", name="Acknowledge").click()
            await alice.locator("#notice", has_text="command accepted").wait_for(timeout=15_000)
            await carol_row.locator("td", has_text="acknowledged").wait_for(timeout=60_000)
            assert await carol_row.get_by_role("button", name="Acknowledge").is_disabled()
            # Carol's open detail lists the acknowledgement with who made it.
            acknowledged = carol.locator("#history tbody tr", has_text="acknowledged")
            await acknowledged.filter(has_text="alice").first.wait_for(timeout=15_000)

            ARTIFACTS.mkdir(exist_ok=True)
            await alice.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
        finally:
            await browser.close()
