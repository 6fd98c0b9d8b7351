"""The operator console in headless Chromium: live alerts, the chart, and a command that a
second operator's browser sees, on the real worker, sink and notifier."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from notifier.tokens import mint_token
from streams.devtools.generator import SPIKE_GROUP, SPIKE_PAYER, Scenario, produce
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.stack import SECRET, ServiceStack, notifier_ready

pytestmark = pytest.mark.e2e

SCENARIO = Scenario(name="denial-spike", customer_id="demo", days=70, spike_day=50)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


# Records each desktop notification the page shows (the browser's own Notification shows it).
RECORD_NOTIFICATIONS = """
const Real = window.Notification;
window.notified = [];
function Recording(title, options) { window.notified.push(title); return new Real(title, options); }
Object.defineProperty(Recording, "permission", {get: () => Real.permission});
Recording.requestPermission = (...args) => Real.requestPermission(...args);
window.Notification = Recording;
"""


async def _open(
    browser: object, stack: ServiceStack, operator: str, customer: str = "demo"
) -> Page:
    origin = f"http://127.0.0.1:{stack.notifier_port}"
    context = await browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    await context.grant_permissions(["notifications"], origin=origin)
    page: Page = await context.new_page()
    await page.add_init_script(RECORD_NOTIFICATIONS)
    token = mint_token(SECRET, customer, operator)
    await page.goto(f"{origin}/?token={token}")
    await page.locator("#status.live").wait_for(timeout=30_000)
    assert "token" not in page.url  # traded for an HttpOnly cookie, out of the address bar
    cookies = await page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("upstream_session", True, "Strict")
    ]
    await page.reload()  # the session alone serves the console again
    await page.locator("#status.live").wait_for(timeout=30_000)
    return page


async def _open_detail(page: Page, row: Locator, ready: str) -> None:
    """Click ``row`` until its alert's detail shows ``ready``. Every live message re-renders the
    table: a click that lands as its row is replaced is lost (say what the console showed if
    three are)."""
    for attempt in range(3):
        await row.click()
        try:
            await page.locator(ready).first.wait_for(timeout=10_000)
            return
        except PlaywrightTimeoutError:
            notice = await page.locator("#notice").inner_text()
            assert attempt < 2, f"no {ready} after 3 clicks; the console says {notice!r}"


async def _check_announced(alice: Page, carol: Page) -> None:
    """A toast, the unseen count in the badge and the tab's title, and a desktop notification
    for the critical alert in the browser that opted in; a click on the badge clears it."""
    await alice.locator("#toasts .toast.critical").first.wait_for(timeout=10_000)
    toast = await alice.locator("#toasts .toast.critical").first.inner_text()
    assert re.fullmatch(rf"(New|Escalated to) critical: {SPIKE_PAYER} / .+", toast), toast
    badge = int(await alice.locator("#badge").inner_text())
    assert badge >= 1
    assert await alice.title() == f"({badge}) Upstream — live alerts"
    await alice.wait_for_function("window.notified.some((t) => t.includes('critical'))")
    assert await carol.evaluate("window.notified") == []  # carol did not opt in
    await alice.locator("#badge").click()
    assert await alice.title() == "Upstream — live alerts"
    assert await alice.locator("#badge").is_hidden()


async def _wait_toasts_gone(page: Page) -> None:
    """Until the toasts (10 s each) have left the dashboard's corner."""
    await page.locator("#toasts .toast").first.wait_for(state="detached", timeout=20_000)
    await page.wait_for_function("document.querySelectorAll('#toasts .toast').length === 0")


async def _check_layout_kept(alice: Page, carol: Page) -> None:
    """A widget hidden and another moved survive a reload (saved for alice on the server), and
    carol's layout is her own."""
    await alice.locator("#w-payers .layout-hide").click()
    await alice.locator("#w-activity .layout-earlier").click()
    await alice.locator("#notice", has_text="layout saved").wait_for(timeout=10_000)
    await alice.reload()
    await alice.locator("#status.live").wait_for(timeout=30_000)
    await alice.locator("#w-payers").wait_for(state="hidden", timeout=10_000)
    order = "(id) => getComputedStyle(document.getElementById(id)).order"
    assert await alice.evaluate(order, "w-activity") == "2"
    assert await alice.evaluate(order, "w-claims") == "1"
    assert (await alice.locator("#hidden-widgets").inner_text()).startswith("Hidden:")
    assert await carol.locator("#w-payers").is_visible()


async def _check_dashboard(alice: Page, other: Page) -> None:
    """The dashboard's widgets fill with the customer's live data, and another customer's
    dashboard shows none of it."""
    critical = alice.locator("#open-critical")
    await alice.wait_for_function(
        "document.getElementById('open-critical').firstChild.textContent !== '–'"
        " && +document.getElementById('open-critical').firstChild.textContent >= 1"
    )
    assert (await critical.inner_text()).split()[-1] == "critical"
    title = await alice.locator("#claims-title").inner_text()
    assert re.fullmatch(r"Claims decided, as of \d{4}-\d\d-\d\d \(latest decided date\)", title)
    assert await alice.locator("#trend-chart .xtick").count() > 0  # a dated axis drawn
    payer = await alice.locator("#payers tbody tr").first.locator("td").all_inner_texts()
    assert payer[0] == SPIKE_PAYER, payer  # the spike payer's denial rate rose most
    assert payer[2].startswith("+"), payer
    activity = await alice.locator("#activity li").all_inner_texts()
    assert any("Upstream — triggered " + SPIKE_PAYER in a for a in activity), activity
    timeline = alice.locator("#timeline-chart")
    assert await timeline.locator(".bars .point").count() >= 1  # the spike's alert
    assert await timeline.locator(".g-xtitle").text_content() == "Event dates"
    assert SPIKE_PAYER in " ".join(await timeline.locator(".ytick text").all_text_contents())
    await alice.locator("#payers-by").select_option("top_payers_at_stake")
    by_stake = await alice.locator("#payers tbody tr").first.locator("td").all_inner_texts()
    assert by_stake[3].startswith("$"), by_stake  # only payers with money at stake
    await alice.locator("#payers-by").select_option("top_payers")
    feed = await alice.locator("#feed-summary").inner_text()
    assert re.match(r"Last claim received: (just now|\d+ min ago) .* · quality \d+(\.\d)? · "
                    r"7 days: [1-9][\d,]* received", feed), feed  # fmt: skip
    assert await alice.locator("#feed-chart .bars .point").count() > 0  # today's bar
    assert await alice.locator("#feed-chart .g-xtitle").text_content() == "Day received (UTC)"
    assert (await alice.locator("#feed-formula").inner_text()).startswith("quality = 100 × ")
    await other.wait_for_function(
        "document.getElementById('open-critical').firstChild.textContent === '0'"
    )
    assert await other.locator("#payers tbody tr").count() == 0
    assert await other.locator("#activity li").count() == 0
    assert await other.locator("#timeline-chart .bars .point").count() == 0
    assert await other.locator("#claims-title").inner_text() == "Claims: none yet"
    assert (await other.locator("#feed-summary").inner_text()).startswith(
        "Last claim received: never · quality – · 7 days: 0 received"
    )


async def _check_detail(page: Page) -> None:
    """The change in words, the key's daily denial rate with dated and labelled axes, both
    windows drawn as bands, the other two metrics below, the codes, examples and history."""
    words = await page.locator("#detail-explanation").inner_text()
    assert re.fullmatch(
        r"Denials rose from \d+\.\d% to \d+\.\d% of [\d,]+ claims decided "
        r"\d+ \w{3}( \d{4})? – \d+ \w{3} \d{4} \(the last \d+ days\); "
        r"about [\d,]+ more denials than usual, "
        r"≈ \$[\d.,]+[kM]? of allowed amount at stake\.",
        words,
    ), words
    main = page.locator("#chart-main")
    assert await main.locator(".g-xtitle").text_content() == "Decided date"
    assert await main.locator(".g-ytitle").text_content() == "Denial rate"
    ticks = await main.locator(".xtick text").all_text_contents()
    assert ticks
    assert all(re.fullmatch(r"\d\d \w{3}", t) for t in ticks), ticks
    assert await main.locator(".scatterlayer .point").count() > 30  # ~70 days of claims
    assert await main.locator(".shapelayer path").count() == 2  # the two windows
    others = [await page.locator(f"#chart-other-{i} .g-ytitle").text_content()
              for i in range(2)]  # fmt: skip
    assert others == ["Mean days to decision", "Typical allowed amount ($)"]
    assert await page.locator("#reasons tbody tr").count() > 0
    assert await page.locator("#cpt-codes tbody tr").count() > 0
    assert (await page.locator("#examples").inner_text()).startswith("Example claims")
    times = await page.locator("#detail-times").inner_text()
    assert re.fullmatch(
        r"First told: .+ · Detected in claims decided by \d{4}-\d\d-\d\d, last by "
        r"\d{4}-\d\d-\d\d \(event dates\)",
        times,
    ), times
    assert "not recorded" not in times
    history = await page.locator("#history tbody tr").first.locator("td").all_inner_texts()
    assert history[:2] == ["1", "triggered"], history


async def test_console_shows_alerts_live_and_acknowledge_reaches_another_browser(
    stack: ServiceStack,
) -> None:
    """The dashboard fills; an alert appears live, announced, and opens explained; an
    acknowledgement, a note, an assignment and a bulk resolve in one browser show in the other's
    table and in the alert's history there."""
    await (await notifier_ready(stack)).close()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            alice, carol = (
                await _open(browser, stack, "alice"),
                await _open(browser, stack, "carol"),
            )
            other = await _open(browser, stack, "olaf", customer="other")
            await alice.locator("#desktop").check()  # desktop notifications for critical
            assert await alice.locator("#desktop").is_checked()  # the permission was granted
            await produce(SCENARIO, stack.bootstrap, stack.settings().topic_claims)

            # The alert may show as a warning first and escalate a moment later (two
            # transitions): wait for the row as it ends up, not for its first drawing.
            row = alice.locator("#alerts tr", has_text=SPIKE_PAYER).filter(has_text="critical")
            row = row.first
            await row.wait_for(timeout=120_000)
            await _check_announced(alice, carol)
            await _check_dashboard(alice, other)
            cells = await row.locator("td").all_inner_texts()
            assert cells[:5] == ["critical", "active", SPIKE_PAYER, SPIKE_GROUP, "denial_rate"]
            assert "% → " in cells[5]  # baseline → current denial rate
            # First told by the wall clock (moments ago), not by the claims' event time (the
            # scenario's days lie weeks back).
            assert re.fullmatch(r"just now|\d+ min ago", cells[7]), cells[7]

            await _open_detail(alice, row, "#chart-main .main-svg")
            await _check_detail(alice)
            alert_id = await row.get_attribute("data-alert-id")
            carol_row = carol.locator(f'#alerts tr[data-alert-id="{alert_id}"]')
            await _open_detail(carol, carol_row, "#history tbody tr")  # the same alert

            await row.get_by_role("button", name="Acknowledge").click()
            await alice.locator("#notice", has_text="command accepted").wait_for(timeout=15_000)
            await carol_row.locator("td", has_text="acknowledged").wait_for(timeout=60_000)
            assert await carol_row.get_by_role("button", name="Acknowledge").is_disabled()
            # Carol's open detail lists the acknowledgement with who made it.
            acknowledged = carol.locator("#history tbody tr", has_text="acknowledged")
            await acknowledged.filter(has_text="alice").first.wait_for(timeout=15_000)
            # A note and an assignment in alice's browser reach carol's detail and table.
            await alice.locator("#note-text").fill("payer confirmed a policy change")
            await alice.locator("#add-note").click()
            noted = carol.locator("#history tbody tr", has_text="payer confirmed a policy change")
            await noted.filter(has_text="alice").first.wait_for(timeout=15_000)
            assert (await noted.first.locator("td").all_inner_texts())[1] == "noted"
            await alice.locator("#assignee").fill("ravi")
            await alice.locator("#assign").click()
            await carol_row.locator("td", has_text="ravi").wait_for(timeout=15_000)
            assigned = carol.locator("#history tbody tr", has_text="assigned")
            await assigned.filter(has_text="ravi").first.wait_for(timeout=15_000)

            ARTIFACTS.mkdir(exist_ok=True)  # make screenshots copies these into docs/images
            await alice.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
            await _wait_toasts_gone(alice)
            await alice.locator("#dashboard").screenshot(path=str(ARTIFACTS / "dashboard.png"))
            await alice.locator("#detail").screenshot(path=str(ARTIFACTS / "alert-detail.png"))

            # A bulk resolve with a note, from the ticked rows.
            await row.locator("input.pick").check()
            assert await alice.locator("#bulk-count").inner_text() == "1 selected"
            await alice.locator("#bulk-note").fill("closed after the payer call")
            await alice.locator("#bulk-resolve").click()
            resolved = carol.locator("#history tbody tr", has_text="closed after the payer call")
            await resolved.filter(has_text="resolved").first.wait_for(timeout=15_000)
            await carol_row.wait_for(state="detached", timeout=15_000)  # resolved: not shown
            await _check_layout_kept(alice, carol)
        finally:
            await browser.close()
