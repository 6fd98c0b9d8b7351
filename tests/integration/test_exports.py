"""Downloads from the notifier: ``/api/export/{kind}.{format}`` and ``/api/report.pdf``, on a real
notifier and Postgres; each opened as its user would (CSV, JSON lines, openpyxl, pypdf)."""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import json
import socket
from typing import Any

import openpyxl
import psycopg
import pytest
from pypdf import PdfReader

from notifier.tokens import mint_token
from tests.integration.stack import SECRET, ServiceStack, notifier_ready, store_rows, wait_until
from tests.integration.test_api import _alert, _claim, _drift, _get

pytestmark = pytest.mark.integration
CLAIMS = 30_000  # enough that the answer is sent in chunks, as it is read


@pytest.fixture
async def stored(notifier_stack: ServiceStack) -> ServiceStack:
    """Two customers' drift events, alerts and claims (``demo`` has many claims)."""
    await (await notifier_ready(notifier_stack)).close()
    other_claims = [{**_claim(i), "claim_id": f"o{i}", "customer_id": "other",
                     "payer_id": "payer-o"} for i in range(5)]  # fmt: skip
    await store_rows(
        notifier_stack.database_url,
        [_drift(i) for i in range(12)] + [_drift(i, "other") for i in range(3)],
        [_alert(1), _alert(2), _alert(3, status="resolved"), _alert(4, "other")],
        [_claim(i) for i in range(CLAIMS)] + other_claims,
    )
    return notifier_stack


async def _download(
    stack: ServiceStack, path: str, operator: str = "alice", customer: str = "demo", **headers: str
) -> tuple[int, Any, bytes]:
    token = mint_token(SECRET, customer, operator)
    return await asyncio.to_thread(lambda: _get(stack, path, token, **headers))


async def test_a_claim_export_streams_every_claim_of_the_customer_as_csv(
    stored: ServiceStack,
) -> None:
    """Sent as read (chunked, no length), every claim of the customer and of no other."""
    status, headers, body = await _download(stored, "/api/export/claims.csv")
    assert status == 200, body[:200]
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Content-Length"] is None
    assert headers["Content-Disposition"] == 'attachment; filename="demo_claims.csv"'
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(rows) == CLAIMS
    assert {r["customer_id"] for r in rows} == {"demo"}
    assert {r["claim_id"] for r in rows} == {f"c{i}" for i in range(CLAIMS)}


async def test_filters_and_dates_choose_the_rows(stored: ServiceStack) -> None:
    """Level, drift type and payer filters; a date range; JSON lines."""
    status, _, body = await _download(
        stored, "/api/export/drift-events.jsonl?level=critical&drift_type=denial_rate"
    )
    assert status == 200
    events = [json.loads(line) for line in body.decode().splitlines()]
    wanted = [i for i in range(12) if i % 3 == 2 and i % 2 == 0]
    assert [e["event_id"] for e in events] == [f"demo-e{i:03d}" for i in wanted]
    status, _, body = await _download(
        stored, "/api/export/claims.csv?since=2026-02-01&until=2026-03-01&payer_id=payer-a"
    )
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert {r["decided_date"] for r in rows} == {"2026-02-10"}
    assert len(rows) == CLAIMS // 3
    status, _, body = await _download(stored, "/api/export/alerts.csv?status=active")
    assert [r["alert_id"] for r in csv.DictReader(io.StringIO(body.decode()))] == [
        "demo-a1", "demo-a2"
    ]  # fmt: skip


async def test_an_alert_workbook_opens_with_its_summary_and_details(
    stored: ServiceStack, tmp_path: Any
) -> None:
    status, headers, body = await _download(stored, "/api/export/alerts.xlsx")
    assert status == 200
    assert headers["Content-Disposition"] == 'attachment; filename="demo_alerts.xlsx"'
    path = tmp_path / "alerts.xlsx"
    path.write_bytes(body)
    book = openpyxl.load_workbook(path, read_only=True)
    assert book.sheetnames == ["Summary", "Details"]
    details = list(book["Details"].iter_rows(values_only=True))
    summary = list(book["Summary"].iter_rows(values_only=True))
    book.close()
    header = details[0]
    ids = [row[header.index("alert_id")] for row in details[1:]]
    assert sorted(ids) == ["demo-a1", "demo-a2", "demo-a3"]
    assert summary[2] == ("payer_id", "active", "acknowledged", "resolved")
    assert summary[3] == ("payer-a", 2, 0, 1)


async def test_the_pdf_report_lists_the_open_alerts_and_the_weeks_drift(
    stored: ServiceStack,
) -> None:
    status, headers, body = await _download(stored, "/api/report.pdf")
    assert status == 200
    assert headers["Content-Type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages)
    assert "Upstream report: demo" in text
    assert "Open alerts: 2 (2 critical, 0 warning, 0 info)" in text
    # The week of event time up to the latest drift event (12 hourly events on 1 Mar 2026).
    assert "Drift events of 2026-02-23 to 2026-03-01" in text
    assert text.count("payer-a") >= 2
    _, _, other = await _download(stored, "/api/report.pdf", "olaf", "other")
    other_text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(other)).pages)
    assert "Open alerts: 1 (1 critical" in other_text
    assert "demo" not in other_text


async def test_refusals_and_the_audit_log(stored: ServiceStack) -> None:
    """No token 401, another customer 403, a bad filter or date 400, an unknown kind 404; each
    download is audited with who, what and the filters."""
    status, _, _ = await asyncio.to_thread(_get, stored, "/api/export/claims.csv", None)
    assert status == 401
    for path, expected in (
        ("/api/export/claims.csv?customer_id=other", 403),
        ("/api/export/claims.csv?level=critical", 400),  # claims have no level
        ("/api/export/alerts.csv?status=closed", 400),
        ("/api/export/alerts.csv?since=yesterday", 400),
        ("/api/export/alerts.csv?since=2026-03-01&until=2026-03-01", 400),
        ("/api/export/payers.csv", 404),
        ("/api/export/alerts.pdf", 404),
    ):
        status, _, body = await _download(stored, path)
        assert (status, "error" in json.loads(body)) == (expected, True), path
    # A forwarded-for header changes nothing: the origin is the peer's address.
    await _download(stored, "/api/export/alerts.csv?status=active&level=critical", "carol",
                    X_Forwarded_For="203.0.113.9")  # fmt: skip
    with psycopg.connect(stored.database_url.replace("+psycopg", "")) as conn:
        audit = conn.execute(
            "SELECT customer_id, actor, action, subject, origin, detail FROM audit_log ORDER BY id"
        ).fetchall()
    assert len(audit) == 1  # a refused download is not audited
    assert audit[-1][:5] == ("demo", "carol", "export.alerts", "demo_alerts.csv", "127.0.0.1")
    assert audit[-1][5] == {"format": "csv", "since": "1970-01-01", "until": "9999-12-31",
                            "status": ["active"], "level": ["critical"]}  # fmt: skip


async def test_downloads_past_four_at_once_wait_their_turn(stored: ServiceStack) -> None:
    """Four claim exports whose clients do not read hold their slots; a fifth is answered 429;
    once their clients go away the slots are free again (their cursors closed)."""
    token = mint_token(SECRET, "demo", "alice")

    def started() -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        # A small receive window, and ~10 MB of JSON lines: more than the sockets' buffers
        # hold, so the notifier is still sending while the client does not read.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", stored.notifier_port))
        conn = http.client.HTTPConnection("127.0.0.1", stored.notifier_port, timeout=30)
        conn.sock = sock
        conn.request(
            "GET", "/api/export/claims.jsonl", headers={"Authorization": f"Bearer {token}"}
        )
        return conn, conn.getresponse()  # the headers only: the body waits in the socket

    held = [await asyncio.to_thread(started) for _ in range(4)]
    assert [r.status for _, r in held] == [200] * 4
    status, headers, body = await _download(stored, "/api/export/alerts.csv")
    assert (status, headers["Retry-After"]) == (429, "5"), body
    for conn, response in held:
        response.close()
        conn.close()

    async def a_slot_is_free() -> bool:
        status, _, _ = await _download(stored, "/api/export/alerts.csv")
        return status == 200

    await wait_until(a_slot_is_free, 30, "a download after the held ones went away")
