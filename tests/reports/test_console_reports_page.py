"""The reports page: the catalogue, a report's table for a date range, its CSV, XLSX and Parquet
downloads (each recorded); a party's user reads only its own figures."""

from __future__ import annotations

import csv
import io
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
from fastapi import FastAPI
from openpyxl import load_workbook
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from reports.catalogue import REPORTS
from reports.console.models import ConsoleAction
from reports.console.roles import Role
from tests.factories import World, accrue, build_world, member
from tests.reports.console_risk import client
from tests.reports.console_support import console_user, sign_in


def _activity(app: FastAPI) -> tuple[World, str]:
    """BANKA's alice earns 1,200 points and BANKB's bob 300, today; today's business date."""
    engine = app.state.engine
    world = build_world(engine)
    member(engine, world.bank_a, "BANKA", "alice", now=utcnow())
    member(engine, world.bank_b, "BANKB", "bob", now=utcnow())
    accrue(engine, world.bank_a, "BANKA", "alice", 1_200, now=utcnow())
    accrue(engine, world.bank_b, "BANKB", "bob", 300, now=utcnow())
    return world, utcnow().astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()


def _programs_in(html: str) -> set[str]:
    body = html.split('<table id="report">')[1].split("</table>")[0]
    return {code for code in ("BANKA", "BANKB", "MOBILE") if f"<td>{code}</td>" in body}


def test_the_catalogue_a_table_and_its_three_downloads(
    console_app: FastAPI, browser: TestClient
) -> None:
    world, today = _activity(console_app)
    sign_in(browser, console_user(console_app, world.platform.org_id, Role.OPERATOR))
    catalogue = browser.get("/console/reports")
    assert catalogue.status_code == 200
    for name in REPORTS:
        assert f'<tr id="catalogue-{name}">' in catalogue.text
    wanted = {"report": "liability_summary", "from": today, "to": today}
    page = browser.get("/console/reports", params=wanted)
    assert page.status_code == 200
    assert _programs_in(page.text) == {"BANKA", "BANKB", "MOBILE"}
    assert "1,200" in page.text
    for fmt in ("csv", "xlsx", "parquet"):
        assert f'id="download-{fmt}"' in page.text
    answer = browser.get("/console/reports/download", params={**wanted, "format": "csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert f"liability_summary_{today}_{today}.csv" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {r["program_code"]: int(r["closing"]) for r in rows}["BANKA"] == 1_200
    xlsx = browser.get("/console/reports/download", params={**wanted, "format": "xlsx"})
    sheet = load_workbook(io.BytesIO(xlsx.content), read_only=True).active
    assert sheet is not None
    assert len(list(sheet.iter_rows())) == len(rows) + 1  # the header and the same rows
    parquet = browser.get("/console/reports/download", params={**wanted, "format": "parquet"})
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == len(rows)
    with transaction(console_app.state.engine) as session:
        recorded = session.scalars(
            select(ConsoleAction.detail).where(ConsoleAction.action == "report_downloaded")
        ).all()
    assert sorted(d["format"] for d in recorded) == ["csv", "parquet", "xlsx"]
    assert (
        browser.get("/console/reports/download", params={**wanted, "format": "pdf"}).status_code
        == 422
    )


def test_a_partys_user_reads_only_its_own_figures(console_app: FastAPI) -> None:
    world, today = _activity(console_app)
    bank = client(console_app)
    sign_in(bank, console_user(console_app, world.bank_a.org_id, Role.FINANCE))
    wanted = {"report": "liability_summary", "from": today, "to": today}
    own = bank.get("/console/reports", params=wanted)
    assert own.status_code == 200
    assert _programs_in(own.text) == {"BANKA"}
    assert 'name="party"' not in own.text  # no choice of party
    assert "BANKB" not in own.text  # not even among the programs to pick
    other = {**wanted, "party": str(world.bank_b.org_id)}
    refused = bank.get("/console/reports", params=other)
    assert refused.status_code == 403
    assert "report_of_another_party" in refused.text
    download = bank.get("/console/reports/download", params={**other, "format": "csv"})
    assert download.status_code == 403
    file = bank.get("/console/reports/download", params={**wanted, "format": "csv"})
    assert {r["program_code"] for r in csv.DictReader(io.StringIO(file.text))} == {"BANKA"}
    asked_bankb = bank.get("/console/reports", params={**wanted, "program": "BANKB"})
    assert _programs_in(asked_bankb.text) == set()


def test_the_platform_picks_one_party_or_all(console_app: FastAPI) -> None:
    world, today = _activity(console_app)
    operator = client(console_app)
    sign_in(operator, console_user(console_app, world.platform.org_id, Role.VIEWER))
    wanted = {"report": "liability_summary", "from": today, "to": today}
    one = operator.get("/console/reports", params={**wanted, "party": str(world.bank_b.org_id)})
    assert one.status_code == 200
    assert _programs_in(one.text) == {"BANKB"}
    assert 'name="party"' in one.text
