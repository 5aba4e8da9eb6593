"""The reports through the signed API: JSON and files, a party's own figures, the operator's all."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from starlette.testclient import TestClient

from clearing.app.factory import create_app
from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from clearing.web.context import Caller
from issuers.keys import ApiKeyCreate, add_key
from reports.catalogue import REPORTS
from tests.api.api_support import BASE, Party, assert_problem, make_settings, public_pem, signed
from tests.reports.flow_world import DAY1, DAY2, Flows, book_flows
from tests.reports.test_flow_reports import expected_checkouts, expected_conversions

RANGE = f"date_from={DAY1 - timedelta(days=1)}&date_to={DAY2 + timedelta(days=1)}"


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(make_settings(db_url, tmp_path))
    yield application
    application.state.engine.dispose()


def keyed(app: FastAPI, caller: Caller) -> Party:
    """A signing key for a party of the booked world, as `clearing key add` registers one."""
    key = Ed25519PrivateKey.generate()
    with transaction(app.state.engine) as session:
        added = add_key(session, caller.org_id, ApiKeyCreate(public_key=public_pem(key)), utcnow())
    return Party(str(caller.org_id), added.keyid, key)


@pytest.fixture
def booked(app: FastAPI) -> tuple[TestClient, Flows, dict[str, Party]]:
    flows = book_flows(app.state.engine)
    w = flows.world
    parties = {
        name: keyed(app, caller)
        for name, caller in (
            ("operator", w.platform),
            ("shop", w.shop),
            ("cafe", w.cafe),
            ("bank_a", w.bank_a),
            ("carrier", w.carrier),
        )
    }
    return TestClient(app, base_url=BASE), flows, parties


def rows_of(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The JSON rows as tuples in column order, dates back from ISO text."""
    names = [c["name"] for c in body["columns"]]
    kinds = {c["name"]: c["kind"] for c in body["columns"]}
    return [
        tuple(date.fromisoformat(r[n]) if kinds[n] == "date" else r[n] for n in names)
        for r in body["rows"]
    ]


def test_the_list_names_every_report(booked: tuple[TestClient, Flows, dict[str, Party]]) -> None:
    http, _, parties = booked
    response = signed(http, parties["shop"], "GET", "/v1/reports")
    assert response.status_code == 200, response.text
    names = {r["name"] for r in response.json()}
    assert names == set(REPORTS)
    assert {"conversion_matrix", "checkout_volume", "funded_accruals"} <= names


def test_the_operator_sees_all_and_a_party_its_own(
    booked: tuple[TestClient, Flows, dict[str, Party]],
) -> None:
    http, flows, parties = booked
    w = flows.world
    everything = signed(http, parties["operator"], "GET", f"/v1/reports/checkout_volume?{RANGE}")
    assert everything.status_code == 200, everything.text
    body = everything.json()
    assert body["report"] == "checkout_volume"
    assert {"name": "net", "kind": "money"} in body["columns"]
    assert rows_of(body) == expected_checkouts(flows)
    for name in ("shop", "cafe", "bank_a", "carrier"):
        own = signed(http, parties[name], "GET", f"/v1/reports/checkout_volume?{RANGE}")
        assert own.status_code == 200, own.text
        assert rows_of(own.json()) == expected_checkouts(flows, parties[name].org_id)
    shop_rows = rows_of(
        signed(http, parties["shop"], "GET", f"/v1/reports/checkout_volume?{RANGE}").json()
    )
    assert shop_rows
    assert {r[1] for r in shop_rows} == {str(w.shop.org_id)}
    # the operator may look through one party's eyes; a party may name only itself
    as_shop = signed(
        http,
        parties["operator"],
        "GET",
        f"/v1/reports/checkout_volume?{RANGE}&org_id={w.shop.org_id}",
    )
    assert rows_of(as_shop.json()) == shop_rows
    itself = signed(
        http, parties["shop"], "GET", f"/v1/reports/checkout_volume?{RANGE}&org_id={w.shop.org_id}"
    )
    assert rows_of(itself.json()) == shop_rows
    peeking = signed(
        http, parties["shop"], "GET", f"/v1/reports/checkout_volume?{RANGE}&org_id={w.cafe.org_id}"
    )
    assert_problem(peeking, 403, "report_of_another_party")
    # conversions: the carrier is party to none
    carrier = signed(http, parties["carrier"], "GET", f"/v1/reports/conversion_matrix?{RANGE}")
    assert carrier.json()["rows"] == []
    bank_a = signed(http, parties["bank_a"], "GET", f"/v1/reports/conversion_matrix?{RANGE}")
    assert rows_of(bank_a.json()) == expected_conversions(flows, parties["bank_a"].org_id)
    assert len(bank_a.json()["rows"]) == 2


def test_files_come_with_their_type_and_name(
    booked: tuple[TestClient, Flows, dict[str, Party]],
) -> None:
    http, flows, parties = booked
    expected = expected_checkouts(flows, parties["shop"].org_id)
    base = f"/v1/reports/checkout_volume?{RANGE}&format="
    as_csv = signed(http, parties["shop"], "GET", base + "csv")
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"] == (
        'attachment; filename="checkout_volume_2026-11-19_2026-11-22.csv"'
    )
    records = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["net"]) for r in records] == [r[12] for r in expected]
    as_xlsx = signed(http, parties["shop"], "GET", base + "xlsx")
    assert as_xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.content))["checkout_volume"]
    cells = list(sheet.iter_rows(min_row=2, values_only=True))
    assert [(c[0].date(), c[5]) for c in cells] == [(r[0], r[5]) for r in expected]
    as_parquet = signed(http, parties["shop"], "GET", base + "parquet")
    assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
    read = pq.read_table(io.BytesIO(as_parquet.content))
    assert [tuple(r.values()) for r in read.to_pylist()] == expected


def test_unknown_reports_and_bad_dates_are_problems(
    booked: tuple[TestClient, Flows, dict[str, Party]],
) -> None:
    http, _, parties = booked
    shop = parties["shop"]
    assert_problem(
        signed(http, shop, "GET", f"/v1/reports/no_such_report?{RANGE}"), 404, "unknown_report"
    )
    for query in (
        "date_from=2026-13-01&date_to=2026-11-20",
        "date_from=2026-11-21&date_to=2026-11-20",
        "date_from=2000-01-01&date_to=2026-11-20",
        "date_from=0001-01-01&date_to=0001-01-02",
        "date_from=9999-12-30&date_to=9999-12-31",
        "date_to=2026-11-20",
        f"{RANGE}&format=pdf",
        f"{RANGE}&program=BANKA",  # settlement positions are not per program
    ):
        report = "settlement_positions" if "program" in query else "checkout_volume"
        assert_problem(
            signed(http, shop, "GET", f"/v1/reports/{report}?{query}"), 422, "invalid_input"
        )
    unsigned = TestClient(http.app, base_url=BASE).get(f"/v1/reports/checkout_volume?{RANGE}")
    assert unsigned.status_code == 401
