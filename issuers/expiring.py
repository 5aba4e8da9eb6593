"""Points expiring soon (per member, per program, in the member view), a program's expiry
settings, and the expiry notices the daily job records (issuers/tasks.py) for issuers to read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clearing.core.db import is_postgres
from clearing.core.ids import new_id
from clearing.core.models import Lot
from clearing.core.timeutil import aware
from clearing.web.context import Caller
from issuers.expiry import check_policy
from issuers.members import member_of
from issuers.models import ExpiryNotice, Member, Organisation, Program
from issuers.programs import own_program
from issuers.schemas import (
    ExpiringLot,
    ExpiringMember,
    ExpiryNoticeOut,
    MemberExpiringOut,
    ProgramExpiringOut,
    ProgramExpiryOut,
    ProgramExpirySet,
)

MAX_LOTS_SHOWN = 1000


def program_expiry_out(program: Program) -> ProgramExpiryOut:
    """A program's expiry settings."""
    return ProgramExpiryOut(
        program=program.code,
        expiry_policy=program.expiry_policy,
        expiry_months=program.expiry_months,
        expiry_notice_days=program.expiry_notice_days,
        enrol_on_accrual=program.enrol_on_accrual,
    )


def set_expiry_policy(
    session: Session, caller: Caller, code: str, req: ProgramExpirySet
) -> ProgramExpiryOut:
    """Change a program's expiry policy, notice window and enrolment on first accrual; lots
    already earned keep the expiry they were given."""
    program = own_program(session, caller, code)
    check_policy(req.expiry_policy, req.expiry_months)
    program.expiry_policy = req.expiry_policy
    program.expiry_months = req.expiry_months
    program.expiry_notice_days = req.expiry_notice_days
    program.enrol_on_accrual = req.enrol_on_accrual
    session.flush()
    return program_expiry_out(program)


# expiring soon -------------------------------------------------------------------------------


def member_expiring(
    session: Session, caller: Caller, code: str, external_id: str, now: datetime, days: int
) -> MemberExpiringOut:
    """A member's points expiring within `days` of `now`, by expiry instant (earliest first)."""
    program = own_program(session, caller, code)
    member = member_of(session, program, external_id)
    rows = session.execute(
        select(Lot.expires_at, func.sum(Lot.remaining))
        .where(
            Lot.account_id == member.account_id,
            Lot.remaining > 0,
            Lot.expires_at <= now + timedelta(days=days),
        )
        .group_by(Lot.expires_at)
        .order_by(Lot.expires_at)
        .limit(MAX_LOTS_SHOWN)
    ).all()
    lots = [
        ExpiringLot(expires_at=aware(at), points=int(points))
        for at, points in rows
        if at is not None
    ]
    return MemberExpiringOut(
        program=code,
        external_id=external_id,
        days=days,
        points=sum(lot.points for lot in lots),
        lots=lots,
    )


def program_expiring(
    session: Session,
    caller: Caller,
    code: str,
    now: datetime,
    days: int,
    after: str | None = None,
    limit: int = 100,
) -> ProgramExpiringOut:
    """A program's points expiring within `days`: totals, and a page of members by external id."""
    program = own_program(session, caller, code)
    due = and_(
        Member.program_id == program.id,
        Lot.remaining > 0,
        Lot.expires_at <= now + timedelta(days=days),
    )
    joined = select().select_from(Lot).join(Member, Member.account_id == Lot.account_id)
    members, points = session.execute(
        joined.add_columns(
            func.count(func.distinct(Member.id)), func.coalesce(func.sum(Lot.remaining), 0)
        ).where(due)
    ).one()
    page = (
        joined.add_columns(Member.external_id, func.sum(Lot.remaining), func.min(Lot.expires_at))
        .where(due)
        .group_by(Member.external_id)
        .order_by(Member.external_id)
        .limit(limit + 1)
    )
    if after:
        page = page.where(Member.external_id > after)
    rows = session.execute(page).all()
    items = [
        ExpiringMember(external_id=e, points=int(p), first_expires_at=aware(at))
        for e, p, at in rows[:limit]
    ]
    return ProgramExpiringOut(
        program=code,
        days=days,
        members=int(members),
        points=int(points),
        items=items,
        next=items[-1].external_id if len(rows) > limit else None,
    )


# notices -------------------------------------------------------------------------------------

_NOTICES = cast(Table, ExpiryNotice.__table__)
NOTICE_BATCH = 5000


def notice_programs(session: Session) -> list[uuid.UUID]:
    """Programs that ask for expiry notices."""
    return list(
        session.execute(
            select(Program.id).where(Program.expiry_notice_days.is_not(None)).order_by(Program.id)
        ).scalars()
    )


def record_notices(session: Session, program_id: uuid.UUID, now: datetime) -> int:
    """Record a notice for each member and day (issuer's zone) on which some of its points expire
    within the program's window after `now`; a notice already recorded is left as it is, so a
    second run records nothing new. Returns how many were recorded."""
    program, zone = session.execute(
        select(Program, Organisation.zone)
        .join(Organisation, Organisation.id == Program.issuer_id)
        .where(Program.id == program_id)
    ).one()
    if program.expiry_notice_days is None:
        return 0
    before = _notice_count(session, program_id)
    batch: list[dict[str, Any]] = []
    for row in _due_by_member_and_day(session, program, ZoneInfo(zone), now):
        batch.append(row)
        if len(batch) >= NOTICE_BATCH:
            _insert_new(session, batch)
            batch = []
    _insert_new(session, batch)
    return _notice_count(session, program_id) - before


def _notice_count(session: Session, program_id: uuid.UUID) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(_NOTICES).where(_NOTICES.c.program_id == program_id)
        ).scalar_one()
    )


def _due_by_member_and_day(
    session: Session, program: Program, zone: ZoneInfo, now: datetime
) -> Iterator[dict[str, Any]]:
    """Notice rows: per member and local day, the points due then; streamed in member order."""
    assert program.expiry_notice_days is not None
    rows = session.execute(
        select(Member.id, Lot.expires_at, func.sum(Lot.remaining))
        .join(Member, Member.account_id == Lot.account_id)
        .where(
            Member.program_id == program.id,
            Lot.remaining > 0,
            Lot.expires_at > now,
            Lot.expires_at <= now + timedelta(days=program.expiry_notice_days),
        )
        .group_by(Member.id, Lot.expires_at)
        .order_by(Member.id, Lot.expires_at),
        execution_options={"yield_per": NOTICE_BATCH},
    )
    current: dict[str, Any] | None = None
    for member_id, expires_at, points in rows:
        at = aware(cast(datetime, expires_at))  # the query keeps only lots that expire
        day: date = at.astimezone(zone).date()
        if current is not None and (current["member_id"], current["expires_on"]) == (
            member_id,
            day,
        ):
            current["points"] += int(points)
            continue
        if current is not None:
            yield current
        current = {
            "id": new_id(),
            "program_id": program.id,
            "member_id": member_id,
            "expires_on": day,
            "expires_at": at,
            "points": int(points),
            "created_at": now,
        }
    if current is not None:
        yield current


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert the notices not recorded yet (a member's day is noticed once)."""
    if not rows:
        return
    dialect = postgresql if is_postgres(session) else sqlite
    statement = dialect.insert(_NOTICES).on_conflict_do_nothing(
        index_elements=["member_id", "expires_on"]
    )
    session.execute(statement, rows)


def list_notices(
    session: Session, caller: Caller, code: str, after: uuid.UUID | None, limit: int
) -> list[ExpiryNoticeOut]:
    """A program's expiry notices in the order recorded, a page at a time."""
    program = own_program(session, caller, code)
    query = (
        select(ExpiryNotice, Member.external_id)
        .join(Member, Member.id == ExpiryNotice.member_id)
        .where(ExpiryNotice.program_id == program.id)
        .order_by(ExpiryNotice.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(ExpiryNotice.id > after)
    return [
        ExpiryNoticeOut(
            id=n.id,
            program=code,
            external_id=external_id,
            expires_on=n.expires_on,
            expires_at=aware(n.expires_at),
            points=n.points,
            created_at=aware(n.created_at),
        )
        for n, external_id in session.execute(query).all()
    ]
