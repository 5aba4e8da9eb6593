"""Routes of the risk domain: the operator's controls and the decision log."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from clearing.core.config import Settings
from clearing.core.errors import NotFound
from clearing.core.idempotency import Operation
from clearing.core.schemas import Code
from clearing.core.timeutil import utcnow
from clearing.web.api import IdempotencyKey, Limit, SessionDep, json_response, respond_once
from clearing.web.auth import CallerDep, OperatorDep
from risk import exposure, freezes, limits, reviews
from risk.decisions import list_decisions
from risk.schemas import (
    BlocklistCreate,
    BlocklistOut,
    DecisionOut,
    ExposureCapOut,
    ExposureCapSet,
    ExposureOut,
    FreezeCreate,
    FreezeOut,
    LiftCreate,
    LimitRuleOut,
    LimitRuleSet,
    PaymentOut,
    ReviewDecided,
    ReviewOut,
    ReviewReject,
    SettlementPaymentCreate,
    SettlementPaymentOut,
    SettlementRestrictionOut,
)

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


# freezes -------------------------------------------------------------------------------------


@router.get("/freezes")
def get_freezes(
    session: SessionDep,
    _operator: OperatorDep,
    include_lifted: Annotated[bool, Query()] = False,
    limit: Limit = 50,
) -> list[FreezeOut]:
    """Freezes in force (or all), newest first."""
    return freezes.list_freezes(session, active=not include_lifted, limit=limit)


@router.post("/freezes", status_code=201, response_model=FreezeOut)
def post_freeze(
    session: SessionDep, operator: OperatorDep, key: IdempotencyKey, req: FreezeCreate
) -> Response:
    """Freeze a member, part of a member's points, a program or an organisation."""
    now = utcnow()
    operation = Operation(
        "risk_freeze", req, FreezeOut, lambda _: freezes.freeze(session, operator, req, now)
    )
    return respond_once(session, operator.org_id, key, operation, now)


@router.post("/freezes/{freeze_id}/lift", status_code=201, response_model=FreezeOut)
def post_unfreeze(
    session: SessionDep,
    operator: OperatorDep,
    key: IdempotencyKey,
    freeze_id: uuid.UUID,
    req: LiftCreate,
) -> Response:
    """Lift a freeze (a frozen amount's points become spendable again)."""
    now = utcnow()
    operation = Operation(
        "risk_unfreeze",
        {"freeze": str(freeze_id), **req.model_dump(mode="json")},
        FreezeOut,
        lambda _: freezes.unfreeze(session, operator, freeze_id, req.reason, now),
    )
    return respond_once(session, operator.org_id, key, operation, now)


# blocklist -----------------------------------------------------------------------------------


@router.get("/blocklist")
def get_blocklist(
    session: SessionDep,
    _operator: OperatorDep,
    program: Annotated[Code | None, Query()] = None,
    include_removed: Annotated[bool, Query()] = False,
    limit: Limit = 50,
) -> list[BlocklistOut]:
    """Blocklist entries in force (or all), newest first, of one program or all."""
    return freezes.list_blocklist(session, program=program, active=not include_removed, limit=limit)


@router.post("/blocklist", status_code=201, response_model=BlocklistOut)
def post_blocklist(
    session: SessionDep, operator: OperatorDep, key: IdempotencyKey, req: BlocklistCreate
) -> Response:
    """Put a member id of a program on the blocklist."""
    now = utcnow()
    operation = Operation(
        "risk_block", req, BlocklistOut, lambda _: freezes.block(session, operator, req, now)
    )
    return respond_once(session, operator.org_id, key, operation, now)


@router.post("/blocklist/{entry_id}/remove", status_code=201, response_model=BlocklistOut)
def post_unblock(
    session: SessionDep,
    operator: OperatorDep,
    key: IdempotencyKey,
    entry_id: uuid.UUID,
    req: LiftCreate,
) -> Response:
    """Take a member id off the blocklist."""
    now = utcnow()
    operation = Operation(
        "risk_unblock",
        {"entry": str(entry_id), **req.model_dump(mode="json")},
        BlocklistOut,
        lambda _: freezes.unblock(session, operator, entry_id, req.reason, now),
    )
    return respond_once(session, operator.org_id, key, operation, now)


# reviews -------------------------------------------------------------------------------------


@router.get("/reviews")
def get_reviews(
    session: SessionDep,
    _operator: OperatorDep,
    status: Annotated[str | None, Query(pattern="^(pending|approved|rejected|all)$")] = None,
    limit: Limit = 50,
) -> list[ReviewOut]:
    """The review queue, oldest first: pending (by default), approved, rejected or all."""
    wanted = "pending" if status is None else None if status == "all" else status
    return reviews.list_reviews(session, status=wanted, limit=limit)


@router.post("/reviews/{review_id}/approve", status_code=201, response_model=ReviewDecided)
def post_approve(
    session: SessionDep, operator: OperatorDep, key: IdempotencyKey, review_id: uuid.UUID
) -> Response:
    """Approve a reviewed operation: it completes now, once (never by the key that asked)."""
    now = utcnow()

    def run(_: None) -> ReviewDecided:
        review, result = reviews.approve(session, operator, review_id, now)
        return ReviewDecided(review=review, result=json.loads(result.model_dump_json()))

    operation = Operation("risk_approve", {"review": str(review_id)}, ReviewDecided, run)
    return respond_once(session, operator.org_id, key, operation, now)


@router.post("/reviews/{review_id}/reject", status_code=201, response_model=ReviewDecided)
def post_reject(
    session: SessionDep,
    operator: OperatorDep,
    key: IdempotencyKey,
    review_id: uuid.UUID,
    req: ReviewReject,
) -> Response:
    """Reject a reviewed operation: its hold is released; a retry of its request gets 409."""
    now = utcnow()
    operation = Operation(
        "risk_reject",
        {"review": str(review_id), **req.model_dump(mode="json")},
        ReviewDecided,
        lambda _: ReviewDecided(
            review=reviews.reject(session, operator, review_id, req.reason, now)
        ),
    )
    return respond_once(session, operator.org_id, key, operation, now)


# settlement risk ---------------------------------------------------------------------------


@router.get("/exposure", response_model=ExposureOut)
def get_exposure(
    caller: CallerDep,
    session: SessionDep,
    org_id: Annotated[uuid.UUID | None, Query()] = None,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
) -> Response:
    """A party's open net debit, cap and headroom per currency: its own, or (operator) any."""
    party = caller.org_id if org_id is None else org_id
    if party != caller.org_id and not caller.is_platform:
        raise NotFound("unknown organisation")
    return json_response(exposure.exposure(session, party, currency))


@router.post("/exposure-caps", status_code=201, response_model=ExposureCapOut)
def post_exposure_cap(
    caller: OperatorDep, key: IdempotencyKey, req: ExposureCapSet, session: SessionDep
) -> Response:
    """Set a new version of a party's net debit cap: a limit, or collateral times a multiple."""
    now = utcnow()
    operation = Operation(
        "exposure_cap", req, ExposureCapOut, lambda _: exposure.set_cap(session, caller, req, now)
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/exposure-caps")
def get_exposure_caps(
    _operator: OperatorDep,
    session: SessionDep,
    org_id: Annotated[uuid.UUID, Query()],
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
) -> list[ExposureCapOut]:
    """Every version of a party's caps, newest first (operator)."""
    return exposure.cap_history(session, org_id, currency)


@router.post("/settlement-payments", status_code=201, response_model=SettlementPaymentOut)
def post_settlement_payment(
    caller: OperatorDep, key: IdempotencyKey, req: SettlementPaymentCreate, session: SessionDep
) -> Response:
    """Record that a party paid (or received) its net position of a published batch."""
    now = utcnow()
    operation = Operation(
        "settlement_payment",
        req,
        SettlementPaymentOut,
        lambda _: exposure.record_payment(session, caller, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/settlement-payments")
def get_settlement_payments(
    _operator: OperatorDep,
    session: SessionDep,
    batch_id: Annotated[str | None, Query(max_length=40)] = None,
    org_id: Annotated[uuid.UUID | None, Query()] = None,
) -> list[PaymentOut]:
    """Recorded payments of a batch and/or a party, newest first (operator)."""
    return exposure.list_payments(session, batch_id, org_id)


@router.get("/settlement-restrictions")
def get_settlement_restrictions(
    _operator: OperatorDep,
    session: SessionDep,
    org_id: Annotated[uuid.UUID | None, Query()] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
) -> list[SettlementRestrictionOut]:
    """Restrictions of parties past the payment deadline, newest first (operator)."""
    return exposure.list_restrictions(session, org_id, open_only)
