"""Routes of the risk domain: the operator's controls and the decision log."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from clearing.core.config import Settings
from clearing.core.idempotency import Operation
from clearing.core.timeutil import utcnow
from clearing.web.api import IdempotencyKey, Limit, SessionDep, respond_once
from clearing.web.auth import OperatorDep
from risk import limits
from risk.decisions import list_decisions
from risk.schemas import DecisionOut, LimitRuleOut, LimitRuleSet

router = APIRouter(prefix="/v1/risk", tags=["risk"])


@router.get("/decisions")
def get_decisions(
    request: Request,
    session: SessionDep,
    _operator: OperatorDep,
    member_id: Annotated[uuid.UUID | None, Query()] = None,
    org_id: Annotated[uuid.UUID | None, Query()] = None,
    day: Annotated[date | None, Query(alias="date")] = None,
    limit: Limit = 50,
) -> list[DecisionOut]:
    """Decisions of the risk controls, newest first: per member, organisation and/or day."""
    settings: Settings = request.app.state.settings
    return list_decisions(
        session, member_id=member_id, org_id=org_id, day=day, zone=settings.zone, limit=limit
    )


# limits ------------------------------------------------------------------------------------------


@router.get("/limits")
def get_limits(session: SessionDep, _operator: OperatorDep) -> list[LimitRuleOut]:
    """The limit rules in force, with their scope, thresholds, version and who set them."""
    return limits.list_rules(session)


@router.get("/limits/{rule_id}/history")
def get_limit_history(
    session: SessionDep, _operator: OperatorDep, rule_id: uuid.UUID
) -> list[LimitRuleOut]:
    """Every version of a limit rule, oldest first."""
    return limits.rule_history(session, rule_id)


@router.post("/limits", status_code=201, response_model=LimitRuleOut)
def set_limit(
    session: SessionDep, operator: OperatorDep, key: IdempotencyKey, req: LimitRuleSet
) -> Response:
    """Put a new version of a limit rule in force (a new rule if its slot and scope had none)."""
    now = utcnow()
    operation = Operation(
        "limit_rule", req, LimitRuleOut, lambda _: limits.set_rule(session, operator, req, now)
    )
    return respond_once(session, operator.org_id, key, operation, now)


@router.post("/limits/{rule_id}/disable", status_code=201, response_model=LimitRuleOut)
def disable_limit(
    session: SessionDep, operator: OperatorDep, key: IdempotencyKey, rule_id: uuid.UUID
) -> Response:
    """Take a limit rule out of force (a new, disabled version)."""
    now = utcnow()
    operation = Operation(
        "limit_rule_disable",
        {"rule_id": str(rule_id)},
        LimitRuleOut,
        lambda _: limits.disable_rule(session, operator, rule_id, now),
    )
    return respond_once(session, operator.org_id, key, operation, now)
