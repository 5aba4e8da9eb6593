"""`clearing report list` and `clearing report show`: tables and files with the API's figures;
every mistake one line and a non-zero exit."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from clearing.core.money import format_minor
from reports.catalogue import REPORTS
from tests.clearing.test_cli import invoke, one_line_error
from tests.reports.flow_world import DAY1, DAY2, book_flows
from tests.reports.test_flow_reports import expected_accruals, expected_checkouts

RANGE = ["--from", DAY1.isoformat(), "--to", DAY2.isoformat()]


@pytest.fixture(autouse=True)
def _own_var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARING_VAR_DIR", str(tmp_path / "var"))
    for name in ("CLEARING_SETTLEMENT_DIR", "CLEARING_PLATFORM_KEY", "CLEARING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_list_names_every_report(db_url: str) -> None:
    result = invoke(db_url, "report", "list")
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == list(REPORTS)


def test_show_prints_a_table_and_writes_each_file(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    flows = book_flows(engine)
    expected = expected_checkouts(flows)
    shown = invoke(db_url, "report", "show", "checkout_volume", *RANGE)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert "checkout_volume" in shown.stdout
    for row in expected:
        assert format_minor(row[12], "CNY") in shown.stdout  # net, in yuan
    # CSV to stdout
    as_csv = invoke(db_url, "report", "show", "checkout_volume", *RANGE, "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["business_date"], int(r["net"])) for r in records] == [
        (r[0].isoformat(), r[12]) for r in expected
    ]
    # one party's figures, one program, to files
    shop = str(flows.world.shop.org_id)
    own = expected_accruals(flows, shop)
    xlsx, parquet = tmp_path / "a.xlsx", tmp_path / "a.parquet"
    for fmt, path in (("xlsx", xlsx), ("parquet", parquet)):
        result = invoke(
            db_url,
            "report",
            "show",
            "funded_accruals",
            *RANGE,
            "--org",
            shop,
            "--format",
            fmt,
            "--out",
            str(path),
        )
        assert result.exit_code == 0, (result.output, result.exception)
        assert result.stdout.strip() == f"{path} ({len(own)} rows)"
    assert [tuple(r.values()) for r in pq.read_table(parquet).to_pylist()] == own
    sheet = openpyxl.load_workbook(xlsx)["funded_accruals"]
    cells = list(sheet.iter_rows(min_row=2, values_only=True))
    assert [(c[1], c[6]) for c in cells] == [(r[1], r[6]) for r in own]
    narrowed = invoke(
        db_url, "report", "show", "checkout_volume", *RANGE, "--program", "MOBILE", "--format",
        "csv",
    )  # fmt: skip
    lines = narrowed.stdout.splitlines()
    assert len(lines) == 1 + len([r for r in expected if r[3] == "MOBILE"])
    assert all(",MOBILE," in line for line in lines[1:])


def test_mistakes_are_one_line(db_url: str) -> None:
    assert one_line_error(invoke(db_url, "report", "show", "no_such", *RANGE)) == (
        "error: unknown_report: no report is called 'no_such'"
    )
    assert "--out" in one_line_error(
        invoke(db_url, "report", "show", "checkout_volume", *RANGE, "--format", "xlsx")
    )
    assert "before" in one_line_error(
        invoke(db_url, "report", "show", "checkout_volume", "--from", "2026-11-21", "--to",
               "2026-11-20")
    )  # fmt: skip
    assert "not a date" in one_line_error(
        invoke(db_url, "report", "show", "checkout_volume", "--from", "yesterday", "--to",
               "2026-11-20"),
        exit_code=2,
    )  # fmt: skip
    assert "not per program" in one_line_error(
        invoke(db_url, "report", "show", "settlement_positions", *RANGE, "--program", "BANKA")
    )
