"""Routes of bilateral rates, conversions and checkouts (thin)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response

from clearing.core.idempotency import Operation
from clearing.core.timeutil import utcnow
from clearing.web.api import (
    IdempotencyKey,
    SessionDep,
    json_response,
    once_response,
    respond_once,
)
from clearing.web.auth import CallerDep
from exchange import service
from exchange.schemas import (
    BilateralRateCreate,
    BilateralRateOut,
    CaptureCreate,
    CheckoutCreate,
    CheckoutOut,
    ConversionCreate,
    ConversionOut,
    QuoteCreate,
    QuoteOut,
    RefundCreate,
    RefundOut,
)

router = APIRouter(prefix="/v1")


# conversions ---------------------------------------------------------------------------------


@router.post(
    "/bilateral-rates", tags=["conversions"], status_code=201, response_model=BilateralRateOut
)
def set_bilateral_rate(
    caller: CallerDep, key: IdempotencyKey, req: BilateralRateCreate, session: SessionDep
) -> Response:
    """Publish a block rate from one of the caller's programs into another program."""
    now = utcnow()
    operation = Operation(
        "bilateral_rate",
        req,
        BilateralRateOut,
        lambda _: service.set_bilateral_rate(session, caller, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.post("/conversion-quotes", tags=["conversions"], status_code=201, response_model=QuoteOut)
def quote_conversion(
    caller: CallerDep, key: IdempotencyKey, req: QuoteCreate, session: SessionDep
) -> Response:
    """Price a conversion from a member of the caller's program into a linked member."""
    now = utcnow()
    operation = Operation(
        "conversion_quote",
        req,
        QuoteOut,
        lambda _: service.quote_conversion(session, caller, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.post("/conversions", tags=["conversions"], status_code=201, response_model=ConversionOut)
def convert(
    caller: CallerDep, key: IdempotencyKey, req: ConversionCreate, session: SessionDep
) -> Response:
    """Execute a quote: debit the source member, credit the linked target member."""
    outcome = service.convert(session, caller, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


# checkouts -----------------------------------------------------------------------------------


@router.post("/checkouts", tags=["checkouts"], status_code=201, response_model=CheckoutOut)
def authorise(
    caller: CallerDep,
    key: IdempotencyKey,
    req: CheckoutCreate,
    session: SessionDep,
    request: Request,
) -> Response:
    """Authorise a points payment: hold the member's points for the calling merchant."""
    ttl = timedelta(seconds=request.app.state.settings.hold_ttl_seconds)
    outcome = service.authorise(session, caller, req, utcnow(), key, hold_ttl=ttl)
    return once_response(session, caller.org_id, key, outcome)


@router.get("/checkouts/{checkout_id}", tags=["checkouts"], response_model=CheckoutOut)
def get_checkout(caller: CallerDep, checkout_id: uuid.UUID, session: SessionDep) -> Response:
    """One of the calling merchant's checkouts."""
    return json_response(service.get_checkout(session, caller, checkout_id, utcnow()))


@router.post(
    "/checkouts/{checkout_id}/capture",
    tags=["checkouts"],
    status_code=201,
    response_model=CheckoutOut,
)
def capture(
    caller: CallerDep,
    key: IdempotencyKey,
    checkout_id: uuid.UUID,
    session: SessionDep,
    req: Annotated[CaptureCreate | None, Body()] = None,
) -> Response:
    """Capture an authorised checkout, in full (no body) or in part."""
    body = req or CaptureCreate()
    outcome = service.capture(session, caller, checkout_id, body, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/checkouts/{checkout_id}/void",
    tags=["checkouts"],
    status_code=201,
    response_model=CheckoutOut,
)
def void(
    caller: CallerDep, key: IdempotencyKey, checkout_id: uuid.UUID, session: SessionDep
) -> Response:
    """Release the hold of an authorised checkout."""
    outcome = service.void(session, caller, checkout_id, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/checkouts/{checkout_id}/refunds",
    tags=["checkouts"],
    status_code=201,
    response_model=RefundOut,
)
def refund(
    caller: CallerDep,
    key: IdempotencyKey,
    checkout_id: uuid.UUID,
    req: RefundCreate,
    session: SessionDep,
) -> Response:
    """Refund part or all of a captured checkout: points go back to the member."""
    outcome = service.refund(session, caller, checkout_id, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)
