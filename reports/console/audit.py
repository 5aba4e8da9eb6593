"""Reading the audit trail: what console users did, newest first, by user, action and date."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.timeutil import business_window
from reports.console.models import ConsoleAction, ConsoleUser

MIDNIGHT = "00:00"
"""The audit trail's days are calendar days in the viewer's zone."""


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One line of the trail, with the user's name (empty for an unknown name at sign-in)."""

    id: uuid.UUID
    at: datetime
    user_id: uuid.UUID | None
    username: str
    action: str
    target: str
    detail: dict[str, Any]


def trail(
    session: Session,
    *,
    org_id: uuid.UUID | None,
    zone: str,
    user_id: uuid.UUID | None = None,
    action: str | None = None,
    day_from: date | None = None,
    day_to: date | None = None,
    before: datetime | None = None,
    limit: int = 100,
) -> list[AuditLine]:
    """Audit lines newest first: of one organisation (None: every one), filtered as asked."""
    query = (
        select(ConsoleAction, ConsoleUser.username)
        .outerjoin(ConsoleUser, ConsoleUser.id == ConsoleAction.user_id)
        .order_by(ConsoleAction.at.desc(), ConsoleAction.id)
        .limit(limit)
    )
    if org_id is not None:
        query = query.where(ConsoleAction.org_id == org_id)
    if user_id is not None:
        query = query.where(ConsoleAction.user_id == user_id)
    if action:
        query = query.where(ConsoleAction.action == action)
    if day_from is not None:
        query = query.where(ConsoleAction.at >= business_window(day_from, zone, MIDNIGHT)[0])
    if day_to is not None:
        query = query.where(ConsoleAction.at < business_window(day_to, zone, MIDNIGHT)[1])
    if before is not None:
        query = query.where(ConsoleAction.at < before)
    return [
        AuditLine(a.id, a.at, a.user_id, username or "", a.action, a.target, dict(a.detail))
        for a, username in session.execute(query)
    ]


def actions_recorded(session: Session, org_id: uuid.UUID | None) -> list[str]:
    """Every action name the trail holds (for the filter's choices)."""
    query = select(ConsoleAction.action).distinct().order_by(ConsoleAction.action)
    if org_id is not None:
        query = query.where(ConsoleAction.org_id == org_id)
    return list(session.scalars(query))


def users_of(session: Session, org_id: uuid.UUID | None) -> list[tuple[uuid.UUID, str]]:
    """Console users (id, username) for the filter's choices."""
    query = select(ConsoleUser.id, ConsoleUser.username).order_by(ConsoleUser.username)
    if org_id is not None:
        query = query.where(ConsoleUser.org_id == org_id)
    return [(user_id, name) for user_id, name in session.execute(query)]
