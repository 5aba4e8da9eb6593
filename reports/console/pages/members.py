"""Member lookup: a member by program and external id, with balance, tier, holds, freezes and the
statement, read through the issuers' own services (as the program's issuer would read them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.errors import NotFound
from clearing.core.models import Hold
from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from clearing.web.context import Caller
from issuers.members import member_of, member_view
from issuers.programs import program_by_code
from issuers.statements import statement
from reports.console.directory import directory
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render
from risk.freezes import list_blocklist
from risk.models import Freeze

router = APIRouter()
Analyst = Annotated[Viewing, Depends(allowed(Page.MEMBERS))]
STATEMENT_PAGE = 100


def _reader(session: Session, viewer: Viewing, code: str) -> Caller:
    """Who the issuers' services read as: the program's issuer for the platform's users; a
    party's user reads as its own organisation, so another issuer's program is not found."""
    key = f"console:{viewer.signed_in.id}"
    if viewer.is_platform:
        return Caller(program_by_code(session, code).issuer_id, "issuer", key)
    return Caller(viewer.org_id, viewer.signed_in.org_kind, key)


@router.get("/members", response_class=HTMLResponse)
def members_page(
    request: Request,
    viewer: Analyst,
    session: SessionDep,
    program: Annotated[str, Query(max_length=40)] = "",
    external_id: Annotated[str, Query(max_length=100)] = "",
    after: Annotated[datetime | None, Query()] = None,
    after_entry: Annotated[uuid.UUID | None, Query()] = None,
) -> HTMLResponse:
    """Look a member up; show what they hold, what holds and freezes bind, and the statement."""
    now = utcnow()
    names = directory(session, None if viewer.is_platform else viewer.org_id)
    context: dict[str, Any] = {}
    program, external_id = program.strip(), external_id.strip()
    if program and external_id:
        if program not in {p.code for p in names.programs.values()}:
            raise NotFound(f"unknown program {program}")
        reader = _reader(session, viewer, program)
        view = member_view(session, reader, program, external_id, now)
        found = program_by_code(session, program)
        member = member_of(session, found, external_id)
        lines = statement(
            session, reader, program, external_id, after, STATEMENT_PAGE + 1, after_entry
        )
        holds = session.scalars(
            select(Hold)
            .where(Hold.account_id == member.account_id, Hold.status == "authorised")
            .order_by(Hold.created_at)
        ).all()
        frozen = session.scalars(
            select(Freeze)
            .where(Freeze.subject_id == member.id, Freeze.lifted_at.is_(None))
            .order_by(Freeze.frozen_at)
        ).all()
        blocked = [
            b for b in list_blocklist(session, program=program) if b.external_id == external_id
        ]
        context = {
            "member": view,
            "holds": holds,
            "freezes": frozen,
            "blocked": blocked,
            "lines": lines[:STATEMENT_PAGE],
            "more": lines[STATEMENT_PAGE - 1] if len(lines) > STATEMENT_PAGE else None,
        }
    return render(
        request,
        "members.html",
        viewer=viewer,
        programs=sorted(p.code for p in names.programs.values()),
        program=program,
        external_id=external_id,
        names=names,
        **context,
    )
