"""The audit trail page: every console action, newest first, filtered by user, action and date."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from clearing.core.errors import InvalidInput
from clearing.web.api import SessionDep
from reports.console import audit
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render

router = APIRouter()
Auditor = Annotated[Viewing, Depends(allowed(Page.AUDIT))]
PAGE = 100


def _optional_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


def _day(text: str, field: str) -> date | None:
    """A date of the filter ('' when left empty, as a browser sends it)."""
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        raise InvalidInput(f"{field} is not a date (YYYY-MM-DD)", field=field) from None


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    viewer: Auditor,
    session: SessionDep,
    user: Annotated[str, Query(max_length=36)] = "",
    action: Annotated[str, Query(max_length=60)] = "",
    day_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    day_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    before: Annotated[datetime | None, Query()] = None,
) -> HTMLResponse:
    """The trail of the viewer's scope: every party's for the platform, else its own."""
    scope = None if viewer.is_platform else viewer.org_id
    lines = audit.trail(
        session,
        org_id=scope,
        zone=viewer.zone,
        user_id=_optional_uuid(user),
        action=action or None,
        day_from=_day(day_from, "from"),
        day_to=_day(day_to, "to"),
        before=before,
        limit=PAGE + 1,
    )
    return render(
        request,
        "audit.html",
        viewer=viewer,
        lines=lines[:PAGE],
        older=lines[PAGE - 1].at if len(lines) > PAGE else None,
        users=audit.users_of(session, scope),
        actions=audit.actions_recorded(session, scope),
        chosen={"user": user, "action": action, "from": day_from, "to": day_to},
    )
