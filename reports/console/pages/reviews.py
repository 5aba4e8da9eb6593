"""The review queue: operations a risk control held, approved or rejected under dual control."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.timeutil import utcnow
from clearing.web.api import SessionDep
from issuers.models import Member, Organisation, Program
from reports.console import dual_control
from reports.console.roles import Page
from reports.console.web import Viewing, allowed, render, see_other
from risk.reviews import list_reviews
from risk.schemas import ReviewOut

router = APIRouter()
Reviewer = Annotated[Viewing, Depends(allowed(Page.REVIEWS))]


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """A pending review with the names a person reads: the member's program and id, the party."""

    review: ReviewOut
    party: str
    program: str
    member: str
    requested: bool
    """A dual-control request about it is waiting already."""


def _rows(session: Session, viewer: Viewing, waiting: set[str]) -> list[ReviewRow]:
    found = list_reviews(session, status="pending")
    if not viewer.is_platform:
        found = [r for r in found if r.org_id == viewer.org_id]
    member_ids = sorted({r.member_id for r in found if r.member_id is not None})
    members = {
        row.id: (row.code, row.external_id)
        for row in session.execute(
            select(Member.id, Program.code, Member.external_id)
            .join(Program, Program.id == Member.program_id)
            .where(Member.id.in_(member_ids))
        )
    }
    parties: dict[uuid.UUID, str] = {
        org_id: name
        for org_id, name in session.execute(
            select(Organisation.id, Organisation.name).where(
                Organisation.id.in_(sorted({r.org_id for r in found}))
            )
        )
    }
    rows = []
    for review in found:
        program, member = members.get(review.member_id, ("", "")) if review.member_id else ("", "")
        rows.append(
            ReviewRow(
                review=review,
                party=parties.get(review.org_id, ""),
                program=program,
                member=member,
                requested=str(review.id) in waiting,
            )
        )
    return rows


@router.get("/reviews", response_class=HTMLResponse)
def reviews_page(request: Request, viewer: Reviewer, session: SessionDep) -> HTMLResponse:
    """Pending reviews, and the requests about them waiting for a second user."""
    actions = dual_control.actions_of(Page.REVIEWS)
    pending = dual_control.requests_of(session, viewer.org_id, actions, pending=True)
    decided = dual_control.requests_of(session, viewer.org_id, actions, pending=False, limit=20)
    waiting = {r.target for r in pending}
    return render(
        request,
        "reviews.html",
        viewer=viewer,
        reviews=_rows(session, viewer, waiting),
        requests=pending,
        decided=decided,
        back="/reviews",
    )


@router.post("/reviews/{review_id}/approve")
def request_approval(
    request: Request, viewer: Reviewer, session: SessionDep, review_id: uuid.UUID
) -> RedirectResponse:
    """Ask for a review's approval (another user confirms it)."""
    dual_control.request_action(
        session, viewer.signed_in, "review_approve", {"review_id": str(review_id)}, utcnow()
    )
    return see_other(request, "/reviews")


@router.post("/reviews/{review_id}/reject")
def request_rejection(
    request: Request,
    viewer: Reviewer,
    session: SessionDep,
    review_id: uuid.UUID,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """Ask for a review's rejection, with the reason the requester of the operation reads."""
    dual_control.request_action(
        session,
        viewer.signed_in,
        "review_reject",
        {"review_id": str(review_id), "reason": reason},
        utcnow(),
    )
    return see_other(request, "/reviews")
