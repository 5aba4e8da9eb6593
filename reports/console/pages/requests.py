"""Dual-control requests: another user of the organisation confirms or declines them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from reports.console import dual_control
from reports.console.web import Viewer, see_other

router = APIRouter()


def back_to(request: Request, action: str) -> RedirectResponse:
    """After a decision: the page the action belongs to."""
    spec = dual_control.ACTIONS.get(action)
    return see_other(request, "/" + (spec.page.value if spec else ""))


@router.post("/requests/{request_id}/confirm")
def confirm_request(
    request: Request, viewer: Viewer, session: SessionDep, request_id: uuid.UUID
) -> RedirectResponse:
    """Confirm another user's request: its action runs now, once."""
    row = dual_control.confirm(session, viewer.signed_in, request_id, utcnow())
    return back_to(request, row.action)


@router.post("/requests/{request_id}/decline")
def decline_request(
    request: Request,
    viewer: Viewer,
    session: SessionDep,
    request_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """Decline another user's request: its action never runs."""
    row = dual_control.decline(session, viewer.signed_in, request_id, reason, utcnow())
    return back_to(request, row.action)
