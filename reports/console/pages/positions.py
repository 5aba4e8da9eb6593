"""Positions per batch and party, and the payments recorded against them.

Recording a payment is the API's `POST /v1/risk/settlement-payments`, which only the platform
organisation may call: the platform's users get the form, a party's users read their own
positions and payments.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from clearing.core.errors import InvalidInput
from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from clearing.web.context import Caller
from reports.console import finance
from reports.console.accounts import record
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render, see_other
from risk import exposure
from risk.schemas import SettlementPaymentCreate

router = APIRouter()
Finance = Annotated[Viewing, Depends(allowed(Page.POSITIONS))]


def may_record_payments(viewer: Viewing) -> bool:
    """The API records payments for the platform organisation only; so does the console."""
    return viewer.is_platform


@router.get("/positions", response_class=HTMLResponse)
def position_list(request: Request, viewer: Finance, session: SessionDep) -> HTMLResponse:
    """Positions of the latest batches (a party: its own) and their payment confirmations."""
    shown = finance.positions(session, None if viewer.is_platform else viewer.org_id)
    return render(
        request,
        "positions.html",
        viewer=viewer,
        batches=shown,
        may_record=may_record_payments(viewer),
        recorded=request.query_params.get("recorded"),
    )


@router.post("/positions/payments")
def record_payment(
    request: Request,
    viewer: Finance,
    session: SessionDep,
    batch_id: Annotated[str, Form(max_length=40)],
    org_id: Annotated[uuid.UUID, Form()],
    direction: Annotated[Literal["paid", "received"], Form()],
    reference: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Record that a party paid (or received) its net position, as the API's operator does."""
    if not may_record_payments(viewer):
        raise finance.PaymentsReadOnly("only the platform's users record payments")
    user = viewer.signed_in
    now = utcnow()
    try:
        asked = SettlementPaymentCreate(
            batch_id=batch_id, org_id=org_id, direction=direction, reference=reference
        )
    except ValidationError:
        raise InvalidInput("the payment's batch or reference is not valid") from None
    paid = exposure.record_payment(
        session,
        # The console user acts for the platform organisation; the key column names the person.
        Caller(org_id=user.org_id, kind=user.org_kind, key_id=f"console:{user.username}"),
        asked,
        now,
    )
    record(
        session,
        user,
        "payment_recorded",
        f"{batch_id}/{org_id}",
        {"direction": direction, "amount": paid.amount, "reference": reference},
        now,
    )
    return see_other(request, f"/positions?recorded={batch_id}")
