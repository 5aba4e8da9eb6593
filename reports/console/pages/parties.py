"""Parties: organisations with their programs and agreements; suspending or reactivating one is a
dual-control request run through the issuers service the API uses for it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import or_, select

from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from issuers.agreements import agreement_out
from issuers.models import MerchantAgreement, Program
from issuers.programs import program_out
from reports.console import dual_control
from reports.console.directory import directory
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render, see_other

router = APIRouter()
Operator = Annotated[Viewing, Depends(allowed(Page.PARTIES))]


@router.get("/parties", response_class=HTMLResponse)
def parties_page(request: Request, viewer: Operator, session: SessionDep) -> HTMLResponse:
    """Every organisation (a party's user: its own), its programs and agreements."""
    now = utcnow()
    names = directory(session, None if viewer.is_platform else viewer.org_id)
    agreements = select(MerchantAgreement, Program.code).join(
        Program, Program.id == MerchantAgreement.program_id
    )
    if not viewer.is_platform:
        agreements = agreements.where(
            or_(MerchantAgreement.merchant_id == viewer.org_id, Program.issuer_id == viewer.org_id)
        )
    agreements = agreements.order_by(
        Program.code, MerchantAgreement.merchant_id, MerchantAgreement.version
    )
    actions = dual_control.actions_of(Page.PARTIES)
    pending = dual_control.requests_of(session, viewer.org_id, actions, pending=True)
    return render(
        request,
        "parties.html",
        viewer=viewer,
        names=names,
        organisations=list(names.organisations.values()),
        programs=[program_out(session, p, now) for p in names.programs.values()],
        agreements=[agreement_out(session, a, code) for a, code in session.execute(agreements)],
        requested={r.target for r in pending},
        requests=pending,
        decided=dual_control.requests_of(session, viewer.org_id, actions, pending=False, limit=20),
    )


def _ask(
    request: Request, viewer: Viewing, session: SessionDep, action: str, org_id: uuid.UUID
) -> RedirectResponse:
    dual_control.request_action(
        session, viewer.signed_in, action, {"org_id": str(org_id)}, utcnow()
    )
    return see_other(request, "/parties")


@router.post("/parties/{org_id}/suspend")
def request_suspension(
    request: Request, viewer: Operator, session: SessionDep, org_id: uuid.UUID
) -> RedirectResponse:
    """Ask for an organisation to be suspended (another user confirms it)."""
    return _ask(request, viewer, session, "org_suspend", org_id)


@router.post("/parties/{org_id}/reactivate")
def request_reactivation(
    request: Request, viewer: Operator, session: SessionDep, org_id: uuid.UUID
) -> RedirectResponse:
    """Ask for a suspended organisation to be reactivated (another user confirms it)."""
    return _ask(request, viewer, session, "org_reactivate", org_id)
