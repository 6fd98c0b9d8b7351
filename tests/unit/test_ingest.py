"""CSV ingest: layouts, validation, reports, reference data; no broker (a fake ``send``)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
from pathlib import Path
from typing import IO, Any

import pytest

from streams.app.claim_files import IngestError, RejectReport, RowReader, open_text, write_csv
from streams.app.ingest import IN_FLIGHT, Progress, Publisher, default_report_path, ingest
from streams.devtools.generator import Scenario, generate
from streams.domain.cpt import CptGroups
from streams.reference import Payers, load_reference

FULL = ("claim_id,customer_id,payer_id,cpt_code,submitted_date,decided_date,outcome,"
        "billed_amount,allowed_amount,denial_reason_codes")  # fmt: skip
LEGACY = "payer,cpt,submitted_date,decided_date,outcome,allowed_amount"


def _run(
    text: str | IO[str],
    tmp_path: Path,
    customer: str | None = None,
    encoding: str = "utf-8",
    history_days: float | None = None,
    resume_after: int = 0,
    checkpoints: list[tuple[int, int, bool]] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def checkpoint(line: int, published: int, finished: bool) -> None:
        assert checkpoints is not None
        checkpoints.append((line, published, finished))

    async def send(record: dict[str, Any]) -> Any:
        sent.append(record)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    report = RejectReport(tmp_path / "rejects.csv")
    reference = load_reference()
    publisher = Publisher(send, None if checkpoints is None else checkpoint, resume_after)
    summary = asyncio.run(
        ingest(
            io.StringIO(text) if isinstance(text, str) else text,
            lambda header: RowReader(header, customer, reference),
            publisher,
            report,
            Progress(lambda: (0, 0), quiet=True),
            encoding,
            history_days,
        )
    )
    report.close()
    return summary, sent


def _report(tmp_path: Path) -> list[dict[str, str]]:
    with (tmp_path / "rejects.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_good_bad_and_duplicate_rows_are_counted_and_reported_by_line(tmp_path: Path) -> None:
    text = "\n".join([
        FULL,
        "c1,acme,p1,71046,2026-01-01,2026-01-05,PAID,100.00,80.00,",
        "c2,acme,p1,99213,2026-01-01,2026-01-05,denied,100,0,CO-97;CO-16",
        "c2,acme,p1,99213,2026-01-01,2026-01-05,denied,100,0,CO-97;CO-16",  # a resend
        "c3,acme,p1,71046,2026-01-09,2026-01-05,PAID,100,80,",  # decided before submitted
        "c4,acme,p1,71046,2026-01-01,2026-01-05,LOST,100,80,",
        "",
        "c5,acme,p1,71046,2026-01-01,2026-01-05,PAID,-1,80,",
        "c6,acme,p1,71046,2026-01-01",
    ])  # fmt: skip
    summary, sent = _run(text, tmp_path)
    assert (summary.rows, summary.published, summary.rejected) == (7, 3, 4)
    assert [r["claim_id"] for r in sent] == ["c1", "c2", "c2"]
    assert sent[1]["outcome"] == "denied"
    assert sent[1]["denial_reason_codes"] == ["CO-97", "CO-16"]
    assert sent[0]["cpt_group"] == "radiology"
    assert "denial_reason_codes" in sent[0]
    report = _report(tmp_path)
    assert [(r["line"], r["reason"]) for r in report] == [
        ("5", "bad_value"), ("6", "bad_value"), ("8", "bad_value"), ("9", "bad_row"),
    ]  # fmt: skip
    assert report[0]["message"] == "decided_date is before submitted_date"
    assert report[1]["row"].startswith("c4,acme,p1,71046")


def test_legacy_rows_get_normalised_payers_and_deterministic_ids(tmp_path: Path) -> None:
    rows = [LEGACY, "Blue Cross,71046,2026-01-01,2026-01-05,denied,0",
            "AETNA, INC.,99213,2026-01-01,2026-01-03,PAID,80.5",
            "Acme Health Plan,99213,2026-01-01,2026-01-03,PAID,80.5"]  # fmt: skip
    rows[2] = '"AETNA, INC.",99213,2026-01-01,2026-01-03,PAID,80.5'
    _, first = _run("\n".join(rows), tmp_path, customer="acme")
    _, again = _run("\n".join(rows), tmp_path, customer="acme")
    assert [r["claim_id"] for r in first] == [r["claim_id"] for r in again]  # re-ingest: no-op
    assert len({r["claim_id"] for r in first}) == 3
    assert [(r["payer_id"], r["payer_name"]) for r in first] == [
        ("bcbs", "Blue Cross Blue Shield"), ("aetna", "Aetna"),
        ("acme-health-plan", "Acme Health Plan"),
    ]  # fmt: skip
    assert first[0]["billed_amount"] == first[0]["allowed_amount"] == "0"
    assert all(r["customer_id"] == "acme" for r in first)
    # The same row on another line is another claim: legacy exports carry no id.
    _, moved = _run("\n".join([rows[0], rows[3], rows[1]]), tmp_path, customer="acme")
    assert moved[1]["claim_id"] != first[0]["claim_id"]


@pytest.mark.parametrize(
    ("header", "customer", "message"),
    [
        (LEGACY, None, "pass --customer"),
        ("payer_id,cpt_code", None, "unknown header"),
        ("claim_id,customer_id,payer_id", None, "missing column(s): cpt_code"),
    ],
)
def test_a_header_that_cannot_be_read_fails_before_any_row(
    header: str, customer: str | None, message: str, tmp_path: Path
) -> None:
    with pytest.raises(IngestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _run(header + "\nx,y,z\n", tmp_path, customer)


def test_customer_flag_fills_and_guards_the_customer_column(tmp_path: Path) -> None:
    header = FULL.replace("customer_id,", "")
    summary, sent = _run(
        header + "\nc1,p1,71046,2026-01-01,2026-01-05,PAID,1,1,\n", tmp_path, customer="acme"
    )
    assert sent[0]["customer_id"] == "acme"
    assert summary.rejected == 0
    summary, sent = _run(
        FULL + "\nc1,other,p1,71046,2026-01-01,2026-01-05,PAID,1,1,\n", tmp_path, customer="acme"
    )
    assert not sent
    assert _report(tmp_path)[0]["reason"] == "wrong_customer"


def test_customer_reference_files_win_over_the_defaults(tmp_path: Path) -> None:
    own = tmp_path / "acme"
    own.mkdir()
    (own / "payers.csv").write_text(
        "# version: acme-3\nalias,payer_id,payer_name\nBCBS TX,bcbs-tx,BCBS Texas\n"
    )
    (own / "cpt_groups.csv").write_text(
        "first,last,group\n71000,71999,chest_imaging\nJ9000,J9999,oncology_drugs\n"
    )
    reference = load_reference("acme", tmp_path)
    assert reference.payers.resolve("bcbs  tx").payer_id == "bcbs-tx"
    assert reference.payers.resolve("Blue Cross").payer_id == "bcbs"  # defaults still there
    assert reference.cpt.group_for("71046") == "chest_imaging"
    assert reference.cpt.group_for("72100") == "radiology"
    assert reference.cpt.group_for("J9035") == "oncology_drugs"
    assert reference.cpt.group_for("A0425") == "hcpcs_a"
    assert "acme-3" in reference.version
    assert load_reference("other", tmp_path).cpt.group_for("71046") == "radiology"


def test_reference_files_with_a_bad_row_name_it() -> None:
    with pytest.raises(ValueError, match=r"cpt\.csv: data row 1"):
        CptGroups.parse("first,last,group\n123,71999,x\n", "cpt.csv")
    with pytest.raises(ValueError, match=r"p\.csv: data row 1"):
        Payers.parse("alias,payer_id\nfoo,\n", "p.csv")


def test_generated_claims_survive_csv_gzip_and_ingest_unchanged(tmp_path: Path) -> None:
    records = generate(Scenario(days=5))
    path = tmp_path / "claims.csv.gz"
    assert write_csv(str(path), records) == len(records)
    with gzip.open(path, "rt") as f:
        assert f.readline().startswith("claim_id,customer_id,")
    with contextlib.ExitStack() as stack:
        text, probe = open_text(str(path), stack)
        summary, sent = _run(text.read(), tmp_path)
        assert probe()[1] == path.stat().st_size
    assert summary.rejected == 0
    expected = [{**r, "denial_reason_codes": r.get("denial_reason_codes", [])} for r in records]
    assert sent == expected


def test_report_path_sits_next_to_the_file() -> None:
    assert default_report_path("/d/claims.csv.gz") == Path("/d/claims.rejects.csv")
    assert default_report_path("x.csv") == Path("x.rejects.csv")
    assert default_report_path("-") == Path("ingest.rejects.csv")


def test_memory_stays_flat_as_the_file_grows(tmp_path: Path) -> None:
    """Rows stream through: the peak for 30,000 rows is about that for 3,000."""
    import tracemalloc

    def peak(n: int) -> int:
        path = tmp_path / f"{n}.csv"
        with path.open("w") as f:
            f.write(FULL + "\n")
            for i in range(n):
                f.write(f"c{i},acme,p{i % 7},71046,2026-01-01,2026-01-05,PAID,100,80,CO-97\n")
        tracemalloc.start()
        try:
            with contextlib.ExitStack() as stack:
                text, _ = open_text(str(path), stack)
                report = RejectReport(tmp_path / "r.csv")
                reference = load_reference()
                summary = asyncio.run(
                    ingest(text, lambda h: RowReader(h, None, reference), None, report,
                           Progress(lambda: (0, 0), quiet=True))
                )  # fmt: skip
                assert summary.published == n
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(3_000), peak(30_000)
    assert large < small * 1.5 + 256 * 1024, (small, large)


def test_a_clean_run_leaves_no_report_behind(tmp_path: Path) -> None:
    (tmp_path / "rejects.csv").write_text("line,reason\n9,stale\n")
    summary, _ = _run(FULL + "\nc1,acme,p1,71046,2026-01-01,2026-01-05,PAID,1,1,\n", tmp_path)
    assert summary.rejected == 0
    assert not (tmp_path / "rejects.csv").exists()


def _ingest_file(path: Path, tmp_path: Path, encoding: str = "utf-8") -> tuple[Any, list[Any]]:
    """Ingest ``path`` as ``upstream ingest`` reads files (bytes, decoded per row)."""
    with contextlib.ExitStack() as stack:
        text, _ = open_text(str(path), stack, encoding)
        return _run(text, tmp_path, encoding=encoding)


def _claim_line(i: int, payer_name: str = "Acme") -> str:
    return f"c{i},acme,p1,71046,2026-01-01,2026-01-05,PAID,100.00,80.00,,{payer_name}"


def test_a_byte_not_in_the_encoding_rejects_its_row_and_reading_goes_on(tmp_path: Path) -> None:
    """One cp1252 byte near the end of a 3,010-row UTF-8 file: that row rejected with its line
    number and the encodings to try; every other row published."""
    lines = [f"{FULL},payer_name".encode()]
    lines += [_claim_line(i).encode() for i in range(3010)]
    lines[2990] = _claim_line(2989, "Soci\xe9t\xe9").encode("cp1252")
    path = tmp_path / "claims.csv"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    summary, sent = _ingest_file(path, tmp_path)
    assert (summary.rows, summary.published, summary.rejected) == (3010, 3009, 1)
    assert len({r["claim_id"] for r in sent}) == 3009
    [reject] = _report(tmp_path)
    assert (reject["line"], reject["reason"]) == ("2991", "bad_encoding")
    assert "--encoding cp1252 or latin-1" in reject["message"]
    assert "Soci\ufffdt\ufffd" in reject["row"]

    summary, sent = _ingest_file(path, tmp_path, encoding="cp1252")  # as the message says
    assert (summary.published, summary.rejected) == (3010, 0)  # ASCII rows read the same
    assert sent[2989]["payer_name"] == "Société"


def test_a_field_over_the_csv_limit_rejects_its_row_and_reading_goes_on(tmp_path: Path) -> None:
    lines = [f"{FULL},payer_name"] + [_claim_line(i) for i in range(10)]
    lines[5] = _claim_line(4, "x" * 1_000_000)
    path = tmp_path / "claims.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary, _ = _ingest_file(path, tmp_path)
    assert (summary.rows, summary.published, summary.rejected) == (10, 9, 1)
    [reject] = _report(tmp_path)
    assert (reject["line"], reject["reason"]) == ("6", "bad_row")
    assert "field larger than field limit" in reject["message"]


def test_an_unknown_encoding_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "claims.csv"
    path.write_text(FULL + "\n", encoding="utf-8")
    with pytest.raises(IngestError, match="unknown encoding 'klingon'"):
        _ingest_file(path, tmp_path, encoding="klingon")


def test_rows_older_than_their_customers_history_are_counted(tmp_path: Path) -> None:
    """Published all the same (the worker decides), and counted in the summary: a row 100 days
    before its customer's newest row so far, with 93 days of history; not another customer's."""
    text = "\n".join([
        FULL,
        "c1,acme,p1,71046,2026-04-01,2026-04-10,PAID,100,80,",
        "c2,acme,p1,71046,2025-12-25,2026-01-01,PAID,100,80,",  # 99 days before: beyond
        "c3,acme,p1,71046,2026-01-05,2026-01-10,PAID,100,80,",  # 90 days before: kept
        "c4,beta,p1,71046,2025-12-25,2026-01-01,PAID,100,80,",  # beta's first row
    ])  # fmt: skip
    summary, sent = _run(text, tmp_path, history_days=93)
    assert (summary.published, summary.beyond_history) == (4, 1)
    assert len(sent) == 4


def test_a_resumed_ingest_sends_only_the_rows_after_the_line_given(tmp_path: Path) -> None:
    """Rows up to ``resume_after`` are validated and counted, not sent; checkpoints follow."""
    rows = [f"c{i},acme,p1,71046,2026-01-01,2026-01-05,PAID,100.00,80.00," for i in range(5000)]
    rows[3000] = "bad,acme,p1,ABC,2026-01-01,2026-01-05,PAID,100,80,"  # line 3002
    text = "\n".join([FULL, *rows]) + "\n"
    whole: list[tuple[int, int, bool]] = []
    summary, sent = _run(text, tmp_path, checkpoints=whole)
    assert len(sent) == 4999
    assert summary.already_published == 0
    # After each block in flight is acknowledged: the line of its last row, rows so far.
    assert whole == [(1 + IN_FLIGHT, IN_FLIGHT, False), (2 + 2 * IN_FLIGHT, 2 * IN_FLIGHT, False),
                     (5001, 4999, True)]  # fmt: skip

    resumed: list[tuple[int, int, bool]] = []
    summary, sent = _run(text, tmp_path, resume_after=whole[0][0], checkpoints=resumed)
    assert [r["claim_id"] for r in sent] == [f"c{i}" for i in range(IN_FLIGHT, 5000) if i != 3000]
    assert summary.already_published == IN_FLIGHT
    assert summary.published == 4999 - IN_FLIGHT
    assert summary.rejected == 1
    assert resumed[-1] == (5001, 4999, True)
