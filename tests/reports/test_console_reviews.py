"""The review queue page: a review is approved or rejected only when a second user confirms the
first one's request; the requester cannot confirm; forms need their CSRF token; roles hold."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from reports.console.models import ConsoleAction, ConsoleRequest
from reports.console.roles import Role
from risk.models import Review
from tests.factories import balance
from tests.reports.console_risk import client, held_review, world_with_review_limit
from tests.reports.console_support import console_user, sign_in


def _requests(app: FastAPI) -> list[ConsoleRequest]:
    with transaction(app.state.engine) as session:
        return list(session.scalars(select(ConsoleRequest).order_by(ConsoleRequest.requested_at)))


def _review(app: FastAPI, review_id: object) -> Review:
    with transaction(app.state.engine) as session:
        review = session.get(Review, review_id)
        assert review is not None
        return review


def _actions(app: FastAPI) -> list[str]:
    with transaction(app.state.engine) as session:
        return list(session.scalars(select(ConsoleAction.action).order_by(ConsoleAction.at)))


def test_a_review_is_approved_only_when_a_second_user_confirms(
    console_app: FastAPI, browser: TestClient
) -> None:
    world = world_with_review_limit(console_app)
    held = held_review(console_app, world, "alice", 1_500)
    analyst = console_user(console_app, world.platform.org_id, Role.RISK_ANALYST)
    operator = console_user(console_app, world.platform.org_id, Role.OPERATOR)
    csrf = sign_in(browser, analyst)
    page = browser.get("/console/reviews")
    assert page.status_code == 200
    assert f'<tr id="review-{held.review_id}">' in page.text
    assert f'id="approve-{held.review_id}"' in page.text
    assert f'id="reject-{held.review_id}"' in page.text
    assert "BANKA · alice" in page.text
    assert "1,500" in page.text  # the points of the held accrual
    asked = browser.post(
        f"/console/reviews/{held.review_id}/approve",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert asked.status_code == 303
    [request] = _requests(console_app)
    assert (request.action, request.status) == ("review_approve", "pending")
    assert _review(console_app, held.review_id).status == "pending"  # nothing ran yet
    mine = browser.get("/console/reviews").text
    assert f'<tr id="request-{request.id}">' in mine
    assert f'id="confirm-{request.id}"' not in mine
    assert "Waiting for another user" in mine
    request_row = mine.split(f'<tr id="request-{request.id}">')[1].split("</tr>")[0]
    assert "accrual · BANKA · alice · 1500" in request_row  # what the request is about
    assert f'id="approve-{held.review_id}"' not in mine  # already requested

    second = client(console_app)
    csrf2 = sign_in(second, operator)
    theirs = second.get("/console/reviews").text
    assert f'id="confirm-{request.id}"' in theirs
    assert f'id="decline-{request.id}"' in theirs
    done = second.post(
        f"/console/requests/{request.id}/confirm",
        data={"csrf_token": csrf2},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/console/reviews"
    review = _review(console_app, held.review_id)
    assert review.status == "approved"
    assert review.decided_by_key == f"console:{operator.user_id}"
    assert balance(console_app.state.engine, world.bank_a, "BANKA", "alice")[0] == 1_500
    [request] = _requests(console_app)
    assert (request.status, request.decided_by, request.outcome) == (
        "done",
        operator.user_id,
        "approved",
    )
    after = second.get("/console/reviews").text
    assert f'<tr id="review-{held.review_id}">' not in after
    assert f'<tr id="decided-{request.id}">' in after
    actions = _actions(console_app)
    assert actions.count("request_made") == 1
    assert actions.count("request_confirmed") == 1


def test_a_rejection_asks_a_reason_and_releases_the_hold_once_confirmed(
    console_app: FastAPI, browser: TestClient
) -> None:
    world = world_with_review_limit(console_app)
    held = held_review(console_app, world, "bob", 2_000)
    analyst = console_user(console_app, world.platform.org_id, Role.RISK_ANALYST)
    other = console_user(console_app, world.platform.org_id, Role.RISK_ANALYST)
    csrf = sign_in(browser, analyst)
    no_reason = browser.post(
        f"/console/reviews/{held.review_id}/reject", data={"csrf_token": csrf, "reason": " "}
    )
    assert no_reason.status_code == 422
    assert _requests(console_app) == []
    browser.post(
        f"/console/reviews/{held.review_id}/reject",
        data={"csrf_token": csrf, "reason": "card testing pattern"},
    )
    [request] = _requests(console_app)
    assert request.payload == {"review_id": str(held.review_id), "reason": "card testing pattern"}
    second = client(console_app)
    csrf2 = sign_in(second, other)
    second.post(f"/console/requests/{request.id}/confirm", data={"csrf_token": csrf2})
    review = _review(console_app, held.review_id)
    assert review.status == "rejected"
    assert balance(console_app.state.engine, world.bank_a, "BANKA", "bob")[0] == 0


def test_the_requester_cannot_confirm_their_own_request(
    console_app: FastAPI, browser: TestClient
) -> None:
    world = world_with_review_limit(console_app)
    held = held_review(console_app, world, "alice", 1_500)
    analyst = console_user(console_app, world.platform.org_id, Role.RISK_ANALYST)
    csrf = sign_in(browser, analyst)
    browser.post(f"/console/reviews/{held.review_id}/approve", data={"csrf_token": csrf})
    [request] = _requests(console_app)
    refused = browser.post(f"/console/requests/{request.id}/confirm", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert "checker_is_maker" in refused.text
    declined = browser.post(f"/console/requests/{request.id}/decline", data={"csrf_token": csrf})
    assert declined.status_code == 403
    assert _requests(console_app)[0].status == "pending"
    assert _review(console_app, held.review_id).status == "pending"
    actions = _actions(console_app)
    assert "confirm_refused" in actions
    assert "decline_refused" in actions


def test_every_review_form_needs_its_csrf_token(console_app: FastAPI, browser: TestClient) -> None:
    world = world_with_review_limit(console_app)
    held = held_review(console_app, world, "alice", 1_500)
    analyst = console_user(console_app, world.platform.org_id, Role.RISK_ANALYST)
    operator = console_user(console_app, world.platform.org_id, Role.OPERATOR)
    csrf = sign_in(browser, analyst)
    for form in ({}, {"csrf_token": "x" * 43}):
        assert (
            browser.post(f"/console/reviews/{held.review_id}/approve", data=form).status_code == 403
        )
        rejected = browser.post(
            f"/console/reviews/{held.review_id}/reject", data={**form, "reason": "no"}
        )
        assert rejected.status_code == 403
    assert _requests(console_app) == []
    browser.post(f"/console/reviews/{held.review_id}/approve", data={"csrf_token": csrf})
    [request] = _requests(console_app)
    second = client(console_app)
    sign_in(second, operator)
    for path in ("confirm", "decline"):
        answer = second.post(f"/console/requests/{request.id}/{path}", data={})
        assert answer.status_code == 403
        assert "csrf_refused" in answer.text
    assert _requests(console_app)[0].status == "pending"


def test_a_role_without_the_page_can_neither_see_nor_ask_nor_confirm(console_app: FastAPI) -> None:
    world = world_with_review_limit(console_app)
    held = held_review(console_app, world, "alice", 1_500)
    analyst = console_user(console_app, world.platform.org_id, Role.RISK_ANALYST)
    platform_viewer = console_user(console_app, world.platform.org_id, Role.VIEWER)
    bank_finance = console_user(console_app, world.bank_a.org_id, Role.FINANCE)
    first = client(console_app)
    csrf = sign_in(first, analyst)
    first.post(f"/console/reviews/{held.review_id}/approve", data={"csrf_token": csrf})
    [request] = _requests(console_app)
    for login in (platform_viewer, bank_finance):
        other = client(console_app)
        their_csrf = sign_in(other, login)
        page = other.get("/console/reviews")
        assert page.status_code == 403
        assert "page_forbidden" in page.text
        assert str(held.review_id) not in page.text
        asked = other.post(
            f"/console/reviews/{held.review_id}/approve", data={"csrf_token": their_csrf}
        )
        assert asked.status_code == 403
        confirmed = other.post(
            f"/console/requests/{request.id}/confirm", data={"csrf_token": their_csrf}
        )
        # The bank's user does not even learn that the platform's request exists.
        assert confirmed.status_code == (403 if login is platform_viewer else 404)
    assert _requests(console_app)[0].status == "pending"
    assert _review(console_app, held.review_id).status == "pending"
