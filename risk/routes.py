"""Routes of the risk domain: the operator's controls and the decision log."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from clearing.core.config import Settings
from clearing.core.errors import NotFound
from clearing.core.idempotency import Operation
from clearing.core.timeutil import utcnow
from clearing.web.api import IdempotencyKey, Limit, SessionDep, json_response, respond_once
from clearing.web.auth import CallerDep, OperatorDep
from risk import exposure
from risk.decisions import list_decisions
from risk.schemas import (
    DecisionOut,
    ExposureCapOut,
    ExposureCapSet,
    ExposureOut,
    PaymentOut,
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
