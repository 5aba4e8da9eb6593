"""Dual control: a request runs only when a second user of the organisation confirms it, once,
through the domain's own service; a decline or a failure is recorded; only roles that may act
ask or decide; concurrent confirmations on PostgreSQL run the action exactly once."""

from __future__ import annotations

import threading
import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.timeutil import utcnow
from clearing.web.context import Caller
from issuers.models import Organisation
from reports.console import dual_control
from reports.console.accounts import SignedIn
from reports.console.dual_control import (
    ActionForbidden,
    CheckerIsMaker,
    RequestAlreadyPending,
    RequestDecided,
    RequestNotFound,
    UnknownAction,
)
from reports.console.models import ConsoleAction, ConsoleRequest
from reports.console.roles import Role
from risk import reviews
from risk.models import LimitVersion, Review
from tests.factories import World, balance, build_world
from tests.reports.console_risk import held_review, signed_in_of, world_with_review_limit
from tests.reports.console_support import console_user


def _users(app: FastAPI, world: World, *roles: Role) -> list[SignedIn]:
    return [signed_in_of(app, console_user(app, world.platform.org_id, r)) for r in roles]


def _ask(app: FastAPI, user: SignedIn, action: str, payload: dict[str, object]) -> uuid.UUID:
    with transaction(app.state.engine) as session:
        return dual_control.request_action(session, user, action, payload, utcnow()).id


def _request(app: FastAPI, request_id: uuid.UUID) -> ConsoleRequest:
    with transaction(app.state.engine) as session:
        row = session.get(ConsoleRequest, request_id)
        assert row is not None
        return row


def _status(app: FastAPI, org_id: uuid.UUID) -> str:
    with transaction(app.state.engine) as session:
        org = session.get(Organisation, org_id)
        assert org is not None
        return org.status


def _audit(app: FastAPI) -> list[tuple[str, dict[str, object]]]:
    with transaction(app.state.engine) as session:
        return [
            (a.action, a.detail)
            for a in session.scalars(select(ConsoleAction).order_by(ConsoleAction.at))
        ]


def _versions(app: FastAPI) -> int:
    with transaction(app.state.engine) as session:
        return int(
            session.scalar(select(func.count()).where(LimitVersion.kind == "member_window")) or 0
        )


def test_suspend_runs_on_confirmation_and_a_decline_never_runs(console_app: FastAPI) -> None:
    world = build_world(console_app.state.engine)
    maker, checker = _users(console_app, world, Role.OPERATOR, Role.OPERATOR)
    engine = console_app.state.engine
    suspend = _ask(console_app, maker, "org_suspend", {"org_id": str(world.shop.org_id)})
    assert _status(console_app, world.shop.org_id) == "active"
    with transaction(engine) as session:
        dual_control.confirm(session, checker, suspend, utcnow())
    assert _status(console_app, world.shop.org_id) == "suspended"
    assert (_request(console_app, suspend).status, _request(console_app, suspend).outcome) == (
        "done",
        "suspended",
    )
    back = _ask(console_app, maker, "org_reactivate", {"org_id": str(world.shop.org_id)})
    with transaction(engine) as session:
        dual_control.decline(session, checker, back, "wait for the bank's letter", utcnow())
    assert _status(console_app, world.shop.org_id) == "suspended"
    declined = _request(console_app, back)
    assert (declined.status, declined.outcome) == ("rejected", "wait for the bank's letter")
    with pytest.raises(RequestDecided), transaction(engine) as session:
        dual_control.confirm(session, checker, back, utcnow())
    assert _status(console_app, world.shop.org_id) == "suspended"
    audit = [action for action, _ in _audit(console_app)]
    assert audit.count("request_made") == 2
    assert audit.count("request_confirmed") == 1
    assert audit.count("request_declined") == 1


def test_a_limit_the_limits_service_refuses_is_refused_when_asked(console_app: FastAPI) -> None:
    world = build_world(console_app.state.engine)
    maker = _users(console_app, world, Role.RISK_ANALYST)[0]
    before = _versions(console_app)
    # Valid for the schema; the limits service refuses it (an authorisation is never reviewed).
    bad = {"kind": "member_window", "action": "authorisation", "period": "hour", "review_count": 5}
    with pytest.raises(ClearingError) as refused:
        _ask(console_app, maker, "limit_set", bad)
    assert refused.value.code == "limit_invalid"
    with transaction(console_app.state.engine) as session:
        assert session.scalars(select(ConsoleRequest)).all() == []
    assert _versions(console_app) == before  # the trial run left nothing behind


def test_a_failing_action_is_undone_and_recorded_with_its_code(console_app: FastAPI) -> None:
    world = world_with_review_limit(console_app)
    held = held_review(console_app, world, "alice", 1_500)
    maker, checker = _users(console_app, world, Role.RISK_ANALYST, Role.OPERATOR)
    asked = _ask(console_app, maker, "review_approve", {"review_id": str(held.review_id)})
    # Meanwhile an operator rejects the review through the API's service.
    with transaction(console_app.state.engine) as session:
        reviews.reject(
            session,
            Caller(world.platform.org_id, "platform", "api-key"),
            held.review_id,
            "seen on the API first",
            utcnow(),
        )
    with transaction(console_app.state.engine) as session:
        dual_control.confirm(session, checker, asked, utcnow())
    failed = _request(console_app, asked)
    assert (failed.status, failed.outcome, failed.decided_by) == (
        "failed",
        "review_decided",
        checker.id,
    )
    with transaction(console_app.state.engine) as session:
        review = session.get(Review, held.review_id)
        assert review is not None
        assert (review.status, review.decided_by_key) == ("rejected", "api-key")
    assert balance(console_app.state.engine, world.bank_a, "BANKA", "alice")[0] == 0
    [(_, detail)] = [a for a in _audit(console_app) if a[0] == "request_confirmed"]
    assert detail["error"] == "review_decided"
    assert detail["status"] == "failed"


def test_only_a_role_that_may_act_asks_or_decides(console_app: FastAPI) -> None:
    world = build_world(console_app.state.engine)
    operator, viewer = _users(console_app, world, Role.OPERATOR, Role.VIEWER)
    analyst = _users(console_app, world, Role.RISK_ANALYST)[0]
    bank = signed_in_of(console_app, console_user(console_app, world.bank_a.org_id, Role.FINANCE))
    payload: dict[str, object] = {"org_id": str(world.cafe.org_id)}
    for who in (viewer, bank, analyst):  # parties are the operator's page only
        with pytest.raises(ActionForbidden):
            _ask(console_app, who, "org_suspend", payload)
    with pytest.raises(UnknownAction):
        _ask(console_app, operator, "drop_database", {})
    asked = _ask(console_app, operator, "org_suspend", payload)
    with pytest.raises(RequestAlreadyPending):
        _ask(console_app, operator, "org_suspend", payload)
    engine = console_app.state.engine
    with pytest.raises(CheckerIsMaker), transaction(engine) as session:
        dual_control.confirm(session, operator, asked, utcnow())
    for who, refusal in (
        (viewer, ActionForbidden),
        (analyst, ActionForbidden),
        (bank, RequestNotFound),  # another organisation's request does not exist for it
    ):
        with pytest.raises(refusal), transaction(engine) as session:
            dual_control.confirm(session, who, asked, utcnow())
    assert _request(console_app, asked).status == "pending"
    assert _status(console_app, world.cafe.org_id) == "active"
    refused = [a for a, _ in _audit(console_app) if a.endswith("_refused")]
    assert refused.count("request_refused") == 3
    assert refused.count("confirm_refused") == 3


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_confirmations_run_the_action_exactly_once(console_app: FastAPI) -> None:
    world = build_world(console_app.state.engine)
    engine = console_app.state.engine
    maker, first, second = _users(
        console_app, world, Role.RISK_ANALYST, Role.OPERATOR, Role.OPERATOR
    )
    before = _versions(console_app)
    for round_ in range(3):
        rule = {
            "kind": "member_window",
            "action": "accrual",
            "period": "hour",
            "max_count": 100 + round_,
        }
        asked = _ask(console_app, maker, "limit_set", rule)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def confirm(
            user: SignedIn,
            asked: uuid.UUID = asked,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                with transaction(engine) as session:
                    dual_control.confirm(session, user, asked, utcnow())
                outcomes.append("done")
            except ClearingError as error:
                outcomes.append(error.code)

        threads = [threading.Thread(target=confirm, args=(u,)) for u in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["done", "request_decided"]
        assert (
            _versions(console_app) == before + round_ + 1
        )  # one new version per request, never two
        assert _request(console_app, asked).status == "done"
    confirmed = [a for a, _ in _audit(console_app) if a == "request_confirmed"]
    assert len(confirmed) == 3
