"""The parties page: organisations, programs and agreements; suspending or reactivating a party
runs only when a second operator confirms it, through the issuers' own service."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from issuers.models import Organisation
from reports.console.models import ConsoleRequest
from reports.console.roles import Role
from tests.factories import agree_all, build_world
from tests.reports.console_risk import client
from tests.reports.console_support import console_user, sign_in


def _status(app: FastAPI, org_id: object) -> str:
    with transaction(app.state.engine) as session:
        org = session.get(Organisation, org_id)
        assert org is not None
        return org.status


def _pending(app: FastAPI) -> list[ConsoleRequest]:
    with transaction(app.state.engine) as session:
        return list(
            session.scalars(select(ConsoleRequest).where(ConsoleRequest.status == "pending"))
        )


def test_parties_programs_and_agreements_are_shown(
    console_app: FastAPI, browser: TestClient
) -> None:
    world = build_world(console_app.state.engine)
    agree_all(console_app.state.engine, world)
    sign_in(browser, console_user(console_app, world.platform.org_id, Role.OPERATOR))
    page = browser.get("/console/parties")
    assert page.status_code == 200
    for org in (world.platform, world.bank_a, world.shop, world.cafe):
        assert f'<tr id="org-{org.org_id}">' in page.text
    for code in ("BANKA", "BANKB", "MOBILE"):
        assert f'<tr id="program-{code}">' in page.text
    assert page.text.count('<tr id="agreement-') == 6  # two merchants x three programs
    assert "12 months" in page.text  # BANKA's points expire after a year


def test_a_party_is_suspended_and_reactivated_only_on_confirmation(
    console_app: FastAPI, browser: TestClient
) -> None:
    world = build_world(console_app.state.engine)
    shop = world.shop.org_id
    csrf = sign_in(browser, console_user(console_app, world.platform.org_id, Role.OPERATOR))
    for change in ("suspend", "reactivate"):
        assert browser.post(f"/console/parties/{shop}/{change}", data={}).status_code == 403
    assert _pending(console_app) == []
    browser.post(f"/console/parties/{shop}/suspend", data={"csrf_token": csrf})
    [request] = _pending(console_app)
    assert _status(console_app, shop) == "active"
    page = browser.get("/console/parties").text
    assert f'id="suspend-{shop}"' not in page  # requested already
    assert f'id="confirm-{request.id}"' not in page  # not by the one who asked
    assert "Shop" in page.split(f'<tr id="request-{request.id}">')[1].split("</tr>")[0]
    refused = browser.post(f"/console/requests/{request.id}/confirm", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert _status(console_app, shop) == "active"

    checker = client(console_app)
    csrf2 = sign_in(checker, console_user(console_app, world.platform.org_id, Role.OPERATOR))
    checker.post(f"/console/requests/{request.id}/confirm", data={"csrf_token": csrf2})
    assert _status(console_app, shop) == "suspended"
    page = checker.get("/console/parties").text
    assert f'id="reactivate-{shop}"' in page
    checker.post(f"/console/parties/{shop}/reactivate", data={"csrf_token": csrf2})
    [back] = _pending(console_app)
    browser.post(f"/console/requests/{back.id}/decline", data={"csrf_token": csrf, "reason": "no"})
    assert _status(console_app, shop) == "suspended"  # declined: nothing ran
    checker.post(f"/console/parties/{shop}/reactivate", data={"csrf_token": csrf2})
    [again] = _pending(console_app)
    browser.post(f"/console/requests/{again.id}/confirm", data={"csrf_token": csrf})
    assert _status(console_app, shop) == "active"


def test_only_operators_open_the_parties_page(console_app: FastAPI) -> None:
    world = build_world(console_app.state.engine)
    for org_id, role in (
        (world.platform.org_id, Role.RISK_ANALYST),
        (world.platform.org_id, Role.VIEWER),
        (world.bank_a.org_id, Role.FINANCE),
    ):
        other = client(console_app)
        csrf = sign_in(other, console_user(console_app, org_id, role))
        page = other.get("/console/parties")
        assert page.status_code == 403
        assert "Shop" not in page.text
        for change in ("suspend", "reactivate"):
            refused = other.post(
                f"/console/parties/{world.shop.org_id}/{change}", data={"csrf_token": csrf}
            )
            assert refused.status_code == 403
    assert _pending(console_app) == []
    assert _status(console_app, world.shop.org_id) == "active"


def test_the_operators_pages_render_in_chinese(console_app: FastAPI, browser: TestClient) -> None:
    world = build_world(console_app.state.engine)
    agree_all(console_app.state.engine, world)
    login = console_user(console_app, world.platform.org_id, Role.OPERATOR, locale="zh_CN")
    sign_in(browser, login)
    for path, words in (
        ("/console/parties", ("机构", "12 个月", "暂停")),
        ("/console/reviews", ("没有待审核的操作。", "等待另一位用户确认的请求")),
        ("/console/rules", ("生效中的限额规则", "提交变更请求")),
        ("/console/members?program=BANKA&external_id=", ("查询",)),
        ("/console/audit", ("全部用户", "筛选")),
        ("/console/reports", ("全部报表",)),
    ):
        page = browser.get(path)
        assert page.status_code == 200, path
        for word in words:
            assert word in page.text, (path, word)
