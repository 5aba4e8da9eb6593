"""Helpers of the console's operator tests: parties and a review a limit held, the way the risk
tests make them (a limit that sends an operation to review), on the console app's database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.policy import PendingReview
from clearing.core.timeutil import utcnow
from issuers.models import Organisation, Program
from reports.console.accounts import SignedIn
from reports.console.models import ConsoleUser
from risk import limits
from risk.schemas import LimitRuleSet
from tests.factories import World, accrue, build_world, member
from tests.reports.console_support import CONSOLE_BASE, ConsoleLogin

REVIEW_ABOVE = 1_000
"""Points above which the test limit sends an accrual of BANKA to review."""


@dataclass(frozen=True, slots=True)
class Held:
    """A review a limit held: its id and the member's points it is about."""

    review_id: uuid.UUID
    external_id: str
    points: int


def world_with_review_limit(app: FastAPI) -> World:
    """The factories' world (platform, three issuers, two merchants) and a BANKA limit: an
    accrual above REVIEW_ABOVE points goes to review."""
    engine = app.state.engine
    world = build_world(engine)
    with transaction(engine) as session:
        program_id = session.scalar(select(Program.id).where(Program.code == "BANKA"))
        limits.set_rule(
            session,
            world.platform,
            LimitRuleSet(
                kind="single_operation",
                action="accrual",
                scope="program",
                scope_id=program_id,
                review_points=REVIEW_ABOVE,
            ),
            utcnow(),
        )
    return world


def held_review(app: FastAPI, world: World, external_id: str, points: int) -> Held:
    """Enrol a BANKA member and accrue `points` to them: the limit holds it for review."""
    engine = app.state.engine
    member(engine, world.bank_a, "BANKA", external_id, now=utcnow())
    with pytest.raises(PendingReview) as held:
        accrue(engine, world.bank_a, "BANKA", external_id, points, now=utcnow())
    return Held(uuid.UUID(str(held.value.body["review_id"])), external_id, points)


def client(app: FastAPI) -> TestClient:
    """A second browser (its own cookies) on the console."""
    return TestClient(app, base_url=CONSOLE_BASE)


def signed_in_of(app: FastAPI, login: ConsoleLogin) -> SignedIn:
    """The signed-in user a page hands the services, for calling them straight (as a page does)."""
    with transaction(app.state.engine) as session:
        user = session.get(ConsoleUser, login.user_id)
        org = session.get(Organisation, login.org_id)
        assert user is not None
        assert org is not None
        return SignedIn(
            id=user.id,
            org_id=user.org_id,
            username=user.username,
            display_name=user.display_name,
            role=user.role,
            locale=user.locale,
            org_name=org.name,
            org_kind=org.kind,
            zone=org.zone,
            csrf_token="not-used-by-services",
        )
