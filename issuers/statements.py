"""Member statements: every movement of a member's points with the balance after it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clearing.core.kinds import EntryKind
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
    rows = repository.member_statement_rows(
        session, member.id, member.account_id, after, after_entry, limit
    )
    return [_line(row) for row in rows]


def _line(row: Any) -> StatementLine:
    memo: dict[str, Any] = row.memo or {}
    if row.kind == EntryKind.TRANSFER:
        # Each side sees the other member: the sender's line is negative.
        counterparty = memo.get("to") if row.points < 0 else memo.get("from")
        fee = int(memo.get("fee", 0)) if row.points < 0 else 0
    else:
        counterparty, fee = None, 0
    return StatementLine(
        entry_id=row.entry_id,
        kind=row.kind,
        booked_at=aware(row.booked_at),
        points=row.points,
        balance_after=int(row.balance_after),
        debt_recorded=int(memo.get("debt_recorded", 0)),
        written_off=int(memo.get("written_off", 0)),
        debt_repaid=int(memo.get("debt_repaid", 0)),
        counterparty=counterparty,
        fee=fee,
    )
