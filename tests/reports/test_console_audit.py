"""The audit trail page: every action newest first, filtered by user, action and date; only
operators open it."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from issuers.models import Organisation
from reports.console.models import ConsoleAction
from reports.console.roles import Role
from tests.factories import build_world
from tests.reports.console_risk import client
from tests.reports.console_support import console_user, sign_in


def _rows(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('<tr id="action-')[1:]]


def test_the_trail_is_newest_first_and_filters_by_user_action_and_date(
    console_app: FastAPI, browser: TestClient
) -> None:
    world = build_world(console_app.state.engine)
    operator = console_user(console_app, world.platform.org_id, Role.OPERATOR)
    other = console_user(console_app, world.platform.org_id, Role.RISK_ANALYST)
    second = client(console_app)
    csrf2 = sign_in(second, other)
    second.post(
        "/console/locale", data={"locale": "zh_CN", "csrf_token": csrf2, "back": "/console/"}
    )
    sign_in(browser, operator)
    page = browser.get("/console/audit")
    assert page.status_code == 200
    with transaction(console_app.state.engine) as session:
        everything = list(
            session.scalars(
                select(ConsoleAction).order_by(ConsoleAction.at.desc(), ConsoleAction.id)
            )
        )
    assert _rows(page.text) == [str(a.id) for a in everything]
    mine = browser.get("/console/audit", params={"user": str(operator.user_id)})
    assert {a.user_id for a in everything if str(a.id) in _rows(mine.text)} == {operator.user_id}
    assert len(_rows(mine.text)) == 2  # added, signed in
    locale = browser.get("/console/audit", params={"action": "locale_set"})
    assert [a.user_id for a in everything if str(a.id) in _rows(locale.text)] == [other.user_id]
    tomorrow = (utcnow() + timedelta(days=2)).date().isoformat()
    later = browser.get("/console/audit", params={"from": tomorrow, "to": "", "user": ""})
    assert later.status_code == 200
    assert _rows(later.text) == []
    with transaction(console_app.state.engine) as session:
        zone = session.get(Organisation, world.platform.org_id).zone  # type: ignore[union-attr]
    today = utcnow().astimezone(ZoneInfo(zone)).date().isoformat()
    on_the_day = browser.get("/console/audit", params={"from": today, "to": today})
    assert len(_rows(on_the_day.text)) == len(_rows(browser.get("/console/audit").text))
    bad = browser.get("/console/audit", params={"from": "yesterday"})
    assert bad.status_code == 422


def test_only_operators_read_the_trail(console_app: FastAPI) -> None:
    world = build_world(console_app.state.engine)
    for org_id, role in (
        (world.platform.org_id, Role.RISK_ANALYST),
        (world.bank_a.org_id, Role.FINANCE),
        (world.bank_a.org_id, Role.VIEWER),
    ):
        other = client(console_app)
        sign_in(other, console_user(console_app, org_id, role))
        page = other.get("/console/audit")
        assert page.status_code == 403
        assert 'id="action-' not in page.text
    with transaction(console_app.state.engine) as session:
        refusals = session.scalars(
            select(ConsoleAction.target).where(ConsoleAction.action == "page_refused")
        ).all()
    assert refusals == ["audit", "audit", "audit"]
