"""Member statements: every movement of a member's points with the balance after it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from clearing.core.timeutil import aware
from clearing.web.context import Caller
from issuers import repository
from issuers.members import member_of
from issuers.programs import own_program
from issuers.schemas import StatementLine


def statement(
    session: Session,
    caller: Caller,
    code: str,
    external_id: str,
    after: datetime | None,
    limit: int,
    after_entry: uuid.UUID | None = None,
) -> list[StatementLine]:
    """Every movement of a member's points, oldest first, with the balance after each."""
    program = own_program(session, caller, code)
    member = member_of(session, program, external_id)
    return [
        StatementLine(
            entry_id=row.entry_id,
            kind=row.kind,
            booked_at=aware(row.booked_at),
            points=row.points,
            balance_after=int(row.balance_after),
        )
        for row in repository.statement_rows(session, member.account_id, after, after_entry, limit)
    ]
