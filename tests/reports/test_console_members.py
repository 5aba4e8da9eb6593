"""Member lookup: balance, holds, freezes and the statement, read through the issuers' services;
a party's user finds only its own programs' members."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from reports.console.roles import Role
from risk import freezes
from risk.schemas import FreezeCreate
from tests.factories import accrue, build_world, member
from tests.reports.console_risk import client
from tests.reports.console_support import console_user, sign_in


def test_a_member_is_shown_with_balance_freezes_and_statement(
    console_app: FastAPI, browser: TestClient
) -> None:
    world = build_world(console_app.state.engine)
    engine = console_app.state.engine
    member(engine, world.bank_a, "BANKA", "alice", now=utcnow())
    for points in (700, 500):
        accrue(engine, world.bank_a, "BANKA", "alice", points, now=utcnow())
    with transaction(engine) as session:
        freezes.freeze(
            session,
            world.platform,
            FreezeCreate(
                subject="member",
                program="BANKA",
                external_id="alice",
                points=200,
                reason="disputed accrual",
            ),
            utcnow(),
        )
    sign_in(browser, console_user(console_app, world.platform.org_id, Role.RISK_ANALYST))
    empty = browser.get("/console/members")
    assert empty.status_code == 200
    assert 'id="member"' not in empty.text
    page = browser.get("/console/members", params={"program": "BANKA", "external_id": "alice"})
    assert page.status_code == 200
    assert 'id="member-balance">1,200<' in page.text
    assert 'id="member-held">200<' in page.text  # the frozen part is held
    assert 'id="member-available">1,000<' in page.text
    assert "disputed accrual" in page.text
    assert page.text.count('<tr id="entry-') == 2
    assert page.text.count('<tr id="hold-') == 1
    unknown = browser.get("/console/members", params={"program": "BANKA", "external_id": "zed"})
    assert unknown.status_code == 404


def test_the_statement_pages_through_later_movements(
    console_app: FastAPI, browser: TestClient
) -> None:
    from reports.console.pages.members import STATEMENT_PAGE

    world = build_world(console_app.state.engine)
    engine = console_app.state.engine
    member(engine, world.bank_b, "BANKB", "bob", now=utcnow())
    for _ in range(STATEMENT_PAGE + 3):
        accrue(engine, world.bank_b, "BANKB", "bob", 1, now=utcnow())
    sign_in(browser, console_user(console_app, world.platform.org_id, Role.OPERATOR))
    first = browser.get("/console/members", params={"program": "BANKB", "external_id": "bob"})
    assert first.text.count('<tr id="entry-') == STATEMENT_PAGE
    more = first.text.split('id="statement-more" href="')[1].split('"')[0].replace("&amp;", "&")
    second = browser.get(more)
    assert second.text.count('<tr id="entry-') == 3
    assert 'id="statement-more"' not in second.text


def test_a_role_without_the_page_and_another_partys_user_see_no_member(
    console_app: FastAPI,
) -> None:
    world = build_world(console_app.state.engine)
    engine = console_app.state.engine
    member(engine, world.bank_a, "BANKA", "alice", now=utcnow())
    accrue(engine, world.bank_a, "BANKA", "alice", 900, now=utcnow())
    wanted = {"program": "BANKA", "external_id": "alice"}
    for org_id, role in ((world.platform.org_id, Role.VIEWER), (world.bank_b.org_id, Role.FINANCE)):
        other = client(console_app)
        sign_in(other, console_user(console_app, org_id, role))
        page = other.get("/console/members", params=wanted)
        assert page.status_code == 403
        assert "900" not in page.text
