"""The console at its edges, in headless Chromium on a real notifier, Kafka and Postgres: a bulk
action past the command burst, an alert detail that cannot be fetched, and the downloads."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import openpyxl
import pytest
from playwright.async_api import Page, Route, async_playwright
from pypdf import PdfReader

from notifier.tokens import mint_token
from schemas.registry import ValueCodec
from streams.devtools.probes import read_all
from streams.kafka.topics import create_topics
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.integration.stack import SECRET, ServiceStack, notifier_ready, store_rows
from tests.integration.test_alert_detail import ALERT, BASELINE_CLAIMS, CURRENT_CLAIMS, DRIFT

pytestmark = pytest.mark.e2e
ALERTS = 30  # past the burst of 20 commands a connection may send at once


@asynccontextmanager
async def _console(
    stack: ServiceStack, customer: str = "demo", operator: str = "alice"
) -> AsyncIterator[Page]:
    """An operator's console on ``stack``'s notifier, live."""
    origin = f"http://127.0.0.1:{stack.notifier_port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{origin}/?token={mint_token(SECRET, customer, operator)}")
            await page.locator("#status.live").wait_for(timeout=30_000)
            yield page
        finally:
            await browser.close()


async def test_a_bulk_acknowledge_past_the_command_burst_sends_every_command(
    notifier_stack: ServiceStack,
) -> None:
    """30 alerts ticked and acknowledged in one go: the notifier accepts all 30 (the console
    sends again what the rate limit refused) and all 30 commands are on the topic."""
    settings = notifier_stack.settings()
    await create_topics(settings, notifier_stack.bootstrap)
    await (await notifier_ready(notifier_stack)).close()
    alerts = [{**ALERT, "alert_id": f"demo-b{i}", "dedup_key": f"b{i}", "payer_id": f"payer-{i}"}
              for i in range(ALERTS)]  # fmt: skip
    await store_rows(notifier_stack.database_url, [], alerts, [])
    async with _console(notifier_stack) as page:
        picks = page.locator("#alerts input.pick")
        await picks.nth(ALERTS - 1).wait_for(timeout=10_000)
        for i in range(ALERTS):
            await picks.nth(i).check()
        assert await page.locator("#bulk-count").inner_text() == f"{ALERTS} selected"
        await page.locator("#bulk-note").fill("payer confirmed the change")
        await page.locator("#bulk-acknowledge").click()
        done = f"acknowledge: {ALERTS} of {ALERTS} accepted"
        await page.locator("#notice", has_text=done).wait_for(timeout=30_000)
    codec, topic = ValueCodec(settings.schema_registry_url), settings.topic_commands
    messages = await read_all(notifier_stack.bootstrap, topic)
    sent = [codec.decode(m.value, "AlertCommand", topic) for m in messages]
    assert sorted(str(c["alert_id"]) for c in sent) == sorted(str(a["alert_id"]) for a in alerts)
    assert {(c["command"], c["operator"], c["note"]) for c in sent} == {
        ("acknowledge", "alice", "payer confirmed the change")
    }


async def test_a_detail_that_fails_to_load_shows_nothing_of_the_alert_before(
    notifier_stack: ServiceStack,
) -> None:
    """An alert's detail drawn, then another's fetch fails (the browser is answered 503): the
    detail says so, with none of the first alert's charts, tables or explanation left."""
    await (await notifier_ready(notifier_stack)).close()
    other = {**ALERT, "alert_id": "demo-x2", "dedup_key": "x2", "payer_id": "payer-y"}
    await store_rows(notifier_stack.database_url, [DRIFT], [ALERT, other],
                     BASELINE_CLAIMS + CURRENT_CLAIMS)  # fmt: skip

    async def unavailable(route: Route) -> None:
        await route.fulfill(status=503, content_type="application/json",
                            body='{"error": "database unavailable"}')  # fmt: skip

    async with _console(notifier_stack) as page:
        await page.locator("#alerts tr", has_text="payer-x").first.click()
        await page.locator("#chart-main .main-svg").first.wait_for(timeout=15_000)
        assert await page.locator("#history tbody tr").count() > 0
        await page.route("**/api/alert-detail?alert_id=demo-x2", unavailable)
        await page.locator("#alerts tr", has_text="payer-y").first.click()
        explanation = page.locator("#detail-explanation", has_text="not available")
        await explanation.wait_for(timeout=15_000)
        assert "database unavailable" in await explanation.inner_text()
        assert "payer-y" in await page.locator("#detail-title").inner_text()
        assert await page.locator("#detail .main-svg").count() == 0
        for table in ("#history", "#reasons", "#cpt-codes"):
            assert await page.locator(f"{table} tbody tr").count() == 0, table
        assert await page.locator("#detail-stats dd").count() == 0


async def _download(page: Page, link: str, into: Path) -> Path:
    """Click the export form's ``link`` and save what it downloads under ``into``."""
    async with page.expect_download() as started:
        await page.locator(link).click()
    download = await started.value
    await asyncio.to_thread(into.mkdir, parents=True, exist_ok=True)
    path = into / download.suggested_filename
    await download.save_as(path)
    return path


async def test_exports_download_from_the_console_and_open_for_their_customer_only(
    notifier_stack: ServiceStack, tmp_path: Path
) -> None:
    """Claims as CSV with a payer filter, alerts as XLSX and the PDF report, each opened; the
    other customer's operator downloads none of this customer's rows."""
    await (await notifier_ready(notifier_stack)).close()
    theirs = {**ALERT, "alert_id": "other-x9", "customer_id": "other", "payer_id": "payer-o"}
    their_claim = {**BASELINE_CLAIMS[0], "claim_id": "o1", "customer_id": "other",
                   "payer_id": "payer-o"}  # fmt: skip
    await store_rows(notifier_stack.database_url, [DRIFT], [ALERT, theirs],
                     [*BASELINE_CLAIMS, *CURRENT_CLAIMS, their_claim])  # fmt: skip
    async with _console(notifier_stack) as page:
        await page.locator("#export summary").click()
        form = page.locator("#export form")
        await form.locator("select[name=kind]").select_option("claims")
        await form.locator("input[name=payer_id]").fill("payer-x")
        claims = await _download(page, "#export-download", tmp_path)
        rows = list(csv.DictReader(claims.read_text(encoding="utf-8").splitlines()))
        assert len(rows) == len(BASELINE_CLAIMS + CURRENT_CLAIMS)
        assert {(r["customer_id"], r["payer_id"]) for r in rows} == {("demo", "payer-x")}
        await form.locator("select[name=kind]").select_option("alerts")
        await form.locator("select[name=format]").select_option("xlsx")
        alerts = await _download(page, "#export-download", tmp_path)
        book = openpyxl.load_workbook(alerts, read_only=True)
        details = list(book["Details"].values)
        book.close()
        assert [row[details[0].index("alert_id")] for row in details[1:]] == ["demo-x1"]
        report = await _download(page, "#export-report", tmp_path)
        text = "".join(p.extract_text() for p in PdfReader(report).pages)
        assert "Upstream report: demo" in text
        assert "payer-x" in text
    async with _console(notifier_stack, "other", "olaf") as page:
        await page.locator("#export summary").click()
        await page.locator("#export select[name=kind]").select_option("claims")
        claims = await _download(page, "#export-download", tmp_path / "other")
        rows = list(csv.DictReader(claims.read_text(encoding="utf-8").splitlines()))
        assert [(r["customer_id"], r["claim_id"]) for r in rows] == [("other", "o1")]
        text = "".join(p.extract_text() for p in PdfReader(
            await _download(page, "#export-report", tmp_path / "other")).pages)  # fmt: skip
        assert "payer-x" not in text
        assert "payer-o" in text
