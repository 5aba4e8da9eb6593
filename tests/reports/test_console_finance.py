"""The finance pages: settlement files checked and downloaded, positions and payments, the
dashboard and its charts; each party sees only its own figures."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.app.factory import create_app
from clearing.core.db import transaction
from reports.console import figures
from reports.console.models import ConsoleAction
from reports.console.roles import Role
from risk.models import SettlementPayment
from settlement.models import SettlementFile, SettlementPosition
from tests.reports.console_support import CONSOLE_BASE, console_user, sign_in
from tests.reports.finance_support import batch_id, settle_two_days
from tests.settlement.settlement_world import DAY1, DAY2, Days, settlement_settings

DAY1_BATCH = batch_id(DAY1)


@pytest.fixture
def finance_app(db_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(settlement_settings(db_url, tmp_path))
    yield application
    application.state.engine.dispose()


@pytest.fixture
def settled(finance_app: FastAPI) -> Days:
    return settle_two_days(finance_app)


def _client(app: FastAPI) -> TestClient:
    return TestClient(app, base_url=CONSOLE_BASE)


def _actions(app: FastAPI, action: str) -> list[ConsoleAction]:
    with transaction(app.state.engine) as session:
        return list(session.scalars(select(ConsoleAction).where(ConsoleAction.action == action)))


def _manifest(app: FastAPI, org_id: uuid.UUID, batch: str = DAY1_BATCH) -> dict[str, str]:
    with transaction(app.state.engine) as session:
        row = session.get(SettlementFile, (batch, org_id, "manifest.json"))
        assert row is not None
        path = app.state.settings.settlement_dir / row.path
    return {f["name"]: f["sha256"] for f in json.loads(path.read_bytes())["files"]}


def test_a_party_downloads_only_its_own_files_each_checked(
    finance_app: FastAPI, settled: Days
) -> None:
    shop = settled.world.shop.org_id
    login = console_user(finance_app, shop, Role.FINANCE)
    with _client(finance_app) as browser:
        sign_in(browser, login)
        listing = browser.get("/console/batches")
        assert listing.status_code == 200
        assert f'id="batch-{DAY1_BATCH}"' in listing.text
        assert f'id="batch-{batch_id(DAY2)}"' in listing.text
        page = browser.get(f"/console/batches/{DAY1_BATCH}")
        assert page.status_code == 200
        assert page.text.count('class="card folder"') == 1  # its own folder only
        assert f'id="folder-{shop}"' in page.text
        assert f'<span class="badge good" id="signature-{shop}">valid</span>' in page.text
        assert page.text.count(">verified<") == 5  # three files, the manifest, its signature
        assert "openssl pkeyutl -verify -pubin -inkey platform.pem -rawin" in page.text
        assert "openssl dgst -sha256 statement.csv" in page.text

        answer = browser.get(f"/console/batches/{DAY1_BATCH}/files/{shop}/statement.csv")
        assert answer.status_code == 200
        assert "attachment" in answer.headers["content-disposition"]
        digest = hashlib.sha256(answer.content).hexdigest()
        assert digest == _manifest(finance_app, shop)["statement.csv"]

        other = settled.world.cafe.org_id
        refused = browser.get(f"/console/batches/{DAY1_BATCH}/files/{other}/statement.csv")
        assert refused.status_code == 404
        assert "batch_not_found" in refused.text

        key = browser.get("/console/batches/platform.pem")
        assert key.status_code == 200
        assert key.text.startswith("-----BEGIN PUBLIC KEY-----")
    downloads = _actions(finance_app, "file_downloaded")
    assert [(d.target, d.user_id) for d in downloads] == [
        (f"{DAY1_BATCH}/{shop}/statement.csv", login.user_id)
    ]
    assert downloads[0].detail["sha256"] == digest


def test_the_platform_sees_every_folder_and_a_changed_file_shows(
    finance_app: FastAPI, settled: Days
) -> None:
    platform = settled.world.platform.org_id
    login = console_user(finance_app, platform, Role.FINANCE)
    with transaction(finance_app.state.engine) as session:
        parties = session.scalars(
            select(SettlementPosition.org_id).where(SettlementPosition.batch_id == DAY1_BATCH)
        ).all()
        row = session.get(SettlementFile, (DAY1_BATCH, settled.world.cafe.org_id, "statement.csv"))
        assert row is not None
        tampered = finance_app.state.settings.settlement_dir / row.path
    with _client(finance_app) as browser:
        sign_in(browser, login)
        page = browser.get(f"/console/batches/{DAY1_BATCH}")
        assert page.text.count('class="card folder"') == len(parties) > 2
        assert ">differs from the manifest<" not in page.text
        tampered.write_bytes(tampered.read_bytes().replace(b"\r\n", b"\n", 1))
        again = browser.get(f"/console/batches/{DAY1_BATCH}")
        assert again.text.count(">differs from the manifest<") == 1
        assert f'id="file-{settled.world.cafe.org_id}-statement.csv"' in again.text


def test_a_viewer_is_refused_the_settlement_pages(finance_app: FastAPI, settled: Days) -> None:
    login = console_user(finance_app, settled.world.shop.org_id, Role.VIEWER)
    with _client(finance_app) as browser:
        sign_in(browser, login)
        for path in ("/console/batches", f"/console/batches/{DAY1_BATCH}", "/console/positions"):
            page = browser.get(path)
            assert page.status_code == 403
            assert '<code id="error-code">page_forbidden</code>' in page.text


def test_the_platform_records_a_payment_and_the_party_sees_it(
    finance_app: FastAPI, settled: Days
) -> None:
    world = settled.world
    operator = console_user(finance_app, world.platform.org_id, Role.FINANCE)
    party = console_user(finance_app, world.shop.org_id, Role.FINANCE)
    with transaction(finance_app.state.engine) as session:
        position = session.get(SettlementPosition, (DAY1_BATCH, world.shop.org_id))
        assert position is not None
        assert int(position.net) != 0
        direction = "paid" if int(position.net) < 0 else "received"
    form = {
        "batch_id": DAY1_BATCH,
        "org_id": str(world.shop.org_id),
        "direction": direction,
        "reference": "BANK-REF-42",
    }
    with _client(finance_app) as browser:
        csrf = sign_in(browser, operator)
        page = browser.get("/console/positions")
        assert f'id="confirm-payment-{DAY1_BATCH}-{world.shop.org_id}"' in page.text
        refused = browser.post("/console/positions/payments", data=form)
        assert refused.status_code == 403
        assert "csrf_refused" in refused.text
        done = browser.post("/console/positions/payments", data={**form, "csrf_token": csrf})
        assert done.status_code == 200  # followed to the positions page
        assert 'id="recorded"' in done.text
    with transaction(finance_app.state.engine) as session:
        payments = session.scalars(select(SettlementPayment)).all()
    assert [
        (p.batch_id, p.org_id, p.direction, p.reference, p.recorded_by_key) for p in payments
    ] == [(DAY1_BATCH, world.shop.org_id, direction, "BANK-REF-42", f"console:{operator.username}")]
    assert [a.target for a in _actions(finance_app, "payment_recorded")] == [
        f"{DAY1_BATCH}/{world.shop.org_id}"
    ]
    with _client(finance_app) as browser:
        csrf = sign_in(browser, party)
        page = browser.get("/console/positions")
        assert 'id="read-only"' in page.text
        assert "BANK-REF-42" in page.text
        assert 'class="inline payment-form"' not in page.text
        assert str(world.cafe.org_id) not in page.text  # only its own positions
        denied = browser.post(
            "/console/positions/payments",
            data={**form, "batch_id": batch_id(DAY2), "csrf_token": csrf},
        )
        assert denied.status_code == 403
        assert "payments_read_only" in denied.text


def test_the_dashboard_shows_a_partys_own_figures_and_draws_its_charts(
    finance_app: FastAPI, settled: Days
) -> None:
    world = settled.world
    bank = console_user(finance_app, world.bank_a.org_id, Role.VIEWER)
    with _client(finance_app) as browser:
        sign_in(browser, bank)
        page = browser.get("/console/")
        assert page.status_code == 200
        assert 'id="liability-BANKA"' in page.text
        assert 'id="liability-BANKB"' not in page.text  # another issuer's program
        assert 'id="net-CNY"' in page.text  # the latest published day's position
        assert page.text.count('class="chart"') == 2
        for name in ("liability", "activity"):
            chart = browser.get(f"/console/charts/{name}.svg")
            assert chart.status_code == 200
            assert chart.headers["content-type"].startswith("image/svg+xml")
            csp = chart.headers["content-security-policy"]
            assert csp == "default-src 'none'; style-src 'unsafe-inline'"
            assert b"<svg" in chart.content
            assert b"<script" not in chart.content
    platform = console_user(finance_app, world.platform.org_id, Role.OPERATOR)
    with _client(finance_app) as browser:
        sign_in(browser, platform)
        page = browser.get("/console/")
        for code in ("BANKA", "BANKB", "MOBILE"):
            assert f'id="liability-{code}"' in page.text
        assert "Cafe" in page.text
        assert "Shop" in page.text
    # The charts' figures follow the same tenancy: a bank's own program, the platform's all.
    with transaction(finance_app.state.engine) as session:
        own = figures.liability_by_day(session, world.bank_a.org_id, DAY2)
        every = figures.liability_by_day(session, None, DAY2)
        shop_activity = figures.activity_by_day(session, world.shop.org_id, DAY1, DAY2)
    assert list(own) == ["BANKA"]
    assert sorted(every) == ["BANKA", "BANKB", "MOBILE"]
    assert own["BANKA"] == every["BANKA"]
    assert len(own["BANKA"]) == figures.CHART_DAYS
    assert shop_activity["checkouts"][DAY1].count == 1  # its own capture of day 1
    assert shop_activity["conversions"] == {}  # a merchant is party to no conversion
