"""The rules page: limits, caps, freezes and the blocklist shown; a limit is changed or disabled
only when a second user confirms the request, through risk.limits' own functions."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.timeutil import utcnow
from reports.console.models import ConsoleRequest
from reports.console.roles import Role
from risk import exposure, freezes, limits
from risk.models import LimitVersion
from risk.schemas import BlocklistCreate, ExposureCapSet, FreezeCreate
from tests.factories import World, member
from tests.reports.console_risk import client, world_with_review_limit
from tests.reports.console_support import console_user, sign_in


def _controls(app: FastAPI, world: World) -> None:
    engine = app.state.engine
    member(engine, world.bank_a, "BANKA", "mallory", now=utcnow())
    with transaction(engine) as session:
        freezes.freeze(
            session,
            world.platform,
            FreezeCreate(
                subject="member", program="BANKA", external_id="mallory", reason="chargebacks"
            ),
            utcnow(),
        )
        freezes.block(
            session,
            world.platform,
            BlocklistCreate(program="BANKB", external_id="eve", reason="stolen card ring"),
            utcnow(),
        )
        exposure.set_cap(
            session,
            world.platform,
            ExposureCapSet(org_id=world.shop.org_id, currency="CNY", limit=123_456),
            utcnow(),
        )


def _rule(app: FastAPI, kind: str) -> LimitVersion:
    with transaction(app.state.engine) as session:
        return session.scalars(
            select(LimitVersion)
            .where(
                LimitVersion.kind == kind,
                LimitVersion.action == "accrual",
                LimitVersion.period == "hour",
            )
            .order_by(LimitVersion.version.desc())
            .limit(1)
        ).one()


def test_the_controls_in_force_are_shown(console_app: FastAPI, browser: TestClient) -> None:
    world = world_with_review_limit(console_app)
    _controls(console_app, world)
    sign_in(browser, console_user(console_app, world.platform.org_id, Role.RISK_ANALYST))
    page = browser.get("/console/rules")
    assert page.status_code == 200
    with transaction(console_app.state.engine) as session:
        in_force = limits.list_rules(session)
    assert in_force
    for rule in in_force:
        assert f'<tr id="limit-{rule.rule_id}">' in page.text
    assert "review_points</code> 1000" in page.text  # the test's BANKA rule
    assert "chargebacks" in page.text
    assert "stolen card ring" in page.text
    assert "1,234.56" in page.text  # the shop's cap, in yuan


def test_a_limit_changes_only_when_a_second_user_confirms(console_app: FastAPI) -> None:
    world = world_with_review_limit(console_app)
    analyst = client(console_app)
    csrf = sign_in(analyst, console_user(console_app, world.platform.org_id, Role.RISK_ANALYST))
    form = {
        "csrf_token": csrf,
        "scope": "platform",
        "kind": "member_window",
        "action": "accrual",
        "period": "hour",
        "max_count": "40",
        "review_count": "20",
        "note": "busy season",
    }
    assert analyst.post("/console/rules/limits", data={**form, "csrf_token": ""}).status_code == 403
    bad = analyst.post("/console/rules/limits", data={**form, "max_count": "forty"})
    assert bad.status_code == 422
    assert "max_count" in bad.text
    assert (
        analyst.post("/console/rules/limits", data=form, follow_redirects=False).status_code == 303
    )
    with transaction(console_app.state.engine) as session:
        [request] = session.scalars(select(ConsoleRequest)).all()
        assert (
            session.scalars(select(LimitVersion).where(LimitVersion.note == "busy season")).all()
            == []
        )
    page = analyst.get("/console/rules").text
    assert f'<tr id="request-{request.id}">' in page
    assert f'id="confirm-{request.id}"' not in page

    operator = console_user(console_app, world.platform.org_id, Role.OPERATOR)
    checker = client(console_app)
    csrf2 = sign_in(checker, operator)
    assert f'id="confirm-{request.id}"' in checker.get("/console/rules").text
    done = checker.post(
        f"/console/requests/{request.id}/confirm",
        data={"csrf_token": csrf2},
        follow_redirects=False,
    )
    assert done.headers["location"] == "/console/rules"
    rule = _rule(console_app, "member_window")
    assert (rule.max_count, rule.review_count, rule.enabled) == (40, 20, True)
    assert rule.created_by_key == f"console:{operator.user_id}"
    assert rule.created_by_org == world.platform.org_id

    # Taking it out of force is a request too.
    analyst.post(
        f"/console/rules/limits/{rule.rule_id}/disable", data={"csrf_token": csrf, "note": "over"}
    )
    with transaction(console_app.state.engine) as session:
        disable = session.scalars(
            select(ConsoleRequest).where(ConsoleRequest.action == "limit_disable")
        ).one()
    assert _rule(console_app, "member_window").enabled
    checker.post(f"/console/requests/{disable.id}/confirm", data={"csrf_token": csrf2})
    latest = _rule(console_app, "member_window")
    assert (latest.version, latest.enabled) == (rule.version + 1, False)


def test_a_role_without_the_rules_page_is_refused(console_app: FastAPI) -> None:
    world = world_with_review_limit(console_app)
    for org_id, role in ((world.platform.org_id, Role.VIEWER), (world.bank_a.org_id, Role.FINANCE)):
        other = client(console_app)
        csrf = sign_in(other, console_user(console_app, org_id, role))
        page = other.get("/console/rules")
        assert page.status_code == 403
        assert "limit-" not in page.text
        asked = other.post(
            "/console/rules/limits",
            data={"csrf_token": csrf, "kind": "program_issuance", "max_points": "1"},
        )
        assert asked.status_code == 403
    with transaction(console_app.state.engine) as session:
        assert session.scalars(select(ConsoleRequest)).all() == []


def test_a_freeze_is_lifted_and_a_member_unblocked_only_on_confirmation(
    console_app: FastAPI,
) -> None:
    world = world_with_review_limit(console_app)
    _controls(console_app, world)
    with transaction(console_app.state.engine) as session:
        [frozen] = freezes.list_freezes(session)
        [blocked] = freezes.list_blocklist(session)
    analyst = client(console_app)
    csrf = sign_in(analyst, console_user(console_app, world.platform.org_id, Role.RISK_ANALYST))
    page = analyst.get("/console/rules").text
    assert f'id="lift-{frozen.id}"' in page
    assert f'id="unblock-{blocked.id}"' in page
    lift = f"/console/rules/freezes/{frozen.id}/lift"
    assert analyst.post(lift, data={"reason": "resolved"}).status_code == 403  # no CSRF token
    assert analyst.post(lift, data={"csrf_token": csrf, "reason": ""}).status_code == 422
    analyst.post(lift, data={"csrf_token": csrf, "reason": "dispute resolved"})
    analyst.post(
        f"/console/rules/blocklist/{blocked.id}/remove",
        data={"csrf_token": csrf, "reason": "cleared by the bank"},
    )
    with transaction(console_app.state.engine) as session:
        asked = session.scalars(select(ConsoleRequest).order_by(ConsoleRequest.action)).all()
        assert len(freezes.list_freezes(session)) == 1  # nothing ran yet
    assert [r.action for r in asked] == ["blocklist_remove", "freeze_lift"]
    operator = console_user(console_app, world.platform.org_id, Role.OPERATOR)
    checker = client(console_app)
    csrf2 = sign_in(checker, operator)
    for request in asked:
        checker.post(f"/console/requests/{request.id}/confirm", data={"csrf_token": csrf2})
    with transaction(console_app.state.engine) as session:
        assert freezes.list_freezes(session) == []
        assert freezes.list_blocklist(session) == []
        [lifted] = freezes.list_freezes(session, active=False)
    assert (lifted.lifted_reason, lifted.lifted_by_key) == (
        "dispute resolved",
        f"console:{operator.user_id}",
    )


def test_every_rules_form_needs_its_csrf_token_and_a_role_that_may_act(
    console_app: FastAPI,
) -> None:
    world = world_with_review_limit(console_app)
    _controls(console_app, world)
    with transaction(console_app.state.engine) as session:
        [frozen] = freezes.list_freezes(session)
        [blocked] = freezes.list_blocklist(session)
        rule_id = limits.list_rules(session)[0].rule_id
    forms = {
        f"/console/rules/limits/{rule_id}/disable": {"note": "off"},
        f"/console/rules/freezes/{frozen.id}/lift": {"reason": "resolved"},
        f"/console/rules/blocklist/{blocked.id}/remove": {"reason": "cleared"},
        "/console/rules/limits": {"kind": "program_issuance", "max_points": "5"},
    }
    analyst = client(console_app)
    sign_in(analyst, console_user(console_app, world.platform.org_id, Role.RISK_ANALYST))
    viewer = client(console_app)
    viewer_csrf = sign_in(viewer, console_user(console_app, world.platform.org_id, Role.VIEWER))
    for path, form in forms.items():
        assert analyst.post(path, data=form).status_code == 403, path
        assert analyst.post(path, data={**form, "csrf_token": "forged"}).status_code == 403, path
        assert viewer.post(path, data={**form, "csrf_token": viewer_csrf}).status_code == 403, path
    with transaction(console_app.state.engine) as session:
        assert session.scalars(select(ConsoleRequest)).all() == []
