"""Members: an issuer's customers, known by the issuer's own id, each with a points account."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, InactiveParty, NotFound
from clearing.core.ids import new_id
from clearing.core.ledger import MEMBER, Ledger, points_asset
from clearing.web.context import Caller
from issuers import debts, repository, standing
from issuers.expiry import expiring_soon
from issuers.models import Member, Program
from issuers.programs import own_program
from issuers.repository import MemberRef, ProgramRef
from issuers.schemas import MemberCreate, MemberOut


class MemberInactive(InactiveParty):
    code = "member_inactive"


class MemberClosed(Conflict):
    code = "member_closed"
    title = "Member is closed"


def create_member(
    session: Session, caller: Caller, code: str, req: MemberCreate, now: datetime
) -> MemberOut:
    """Enrol a member of the caller's program."""
    program = own_program(session, caller, code)
    if repository.member_by_external_id(session, program.id, req.external_id) is not None:
        raise Conflict(f"member {req.external_id} already exists")
    member_id = new_id()
    account_id = Ledger(session).open_account(
        points_asset(program.code), MEMBER, program.issuer_id, member_id, now
    )
    session.add(
        Member(
            id=member_id,
            program_id=program.id,
            external_id=req.external_id,
            status="active",
            account_id=account_id,
            created_at=now,
        )
    )
    session.flush()
    return MemberOut(
        program=code, external_id=req.external_id, status="active", balance=0, held=0, available=0
    )


def member_of(session: Session, program: Program | ProgramRef, external_id: str) -> MemberRef:
    """A member of a program by the issuer's external id."""
    member = repository.member_by_external_id(session, program.id, external_id)
    if member is None:
        raise NotFound(f"unknown member {external_id}")
    return member


def active_member(session: Session, program: Program | ProgramRef, external_id: str) -> MemberRef:
    """A member that may earn and spend."""
    return must_be_active(member_of(session, program, external_id))


def must_be_active(member: MemberRef) -> MemberRef:
    """`member`, which must be active to earn or spend."""
    if member.status != "active":
        raise MemberInactive(
            f"member {member.external_id} is {member.status}", member_status=member.status
        )
    return member


def active_members(
    session: Session, wanted: Sequence[tuple[ProgramRef, str]]
) -> dict[tuple[uuid.UUID, str], MemberRef]:
    """Members by (program id, external id), all of which must exist and be active."""
    if len(wanted) == 1:
        program, external_id = wanted[0]
        return {(program.id, external_id): active_member(session, program, external_id)}
    by_program: dict[uuid.UUID, set[str]] = defaultdict(set)
    for program, external_id in wanted:
        by_program[program.id].add(external_id)
    found = {
        (program_id, member.external_id): member
        for program_id, externals in by_program.items()
        for member in repository.members_by_external_ids(session, program_id, externals)
    }
    for program, external_id in wanted:
        member = found.get((program.id, external_id))
        if member is None:
            raise NotFound(f"unknown member {external_id}")
        must_be_active(member)
    return found


def member_view(
    session: Session, caller: Caller, code: str, external_id: str, now: datetime
) -> MemberOut:
    """Balance, held and available points of one of the caller's members."""
    program = own_program(session, caller, code)
    member = member_of(session, program, external_id)
    balance, held = Ledger(session).member_balance(member.account_id, now)
    return MemberOut(
        program=code,
        external_id=external_id,
        status=member.status,
        balance=balance,
        held=held,
        available=balance - held,
        debt=debts.debt_of(session, member.id),
        tier=standing.member_standing(session, program.id, member, now),
        expiring=expiring_soon(session, member.account_id, now),
    )


def set_member_status(
    session: Session, caller: Caller, code: str, external_id: str, status: str
) -> None:
    """Freeze, unfreeze or close a member; a closed member stays closed."""
    program = own_program(session, caller, code)
    member = member_of(session, program, external_id)
    changing = update(Member).where(Member.id == member.id).values(status=status)
    if status != "closed":
        # Closing is final: a closed account reopened would take points again under an id its
        # owner may no longer hold. Checked in the update itself, so a close that commits
        # meanwhile is never undone.
        changing = changing.where(Member.status != "closed")
    if not session.execute(changing).rowcount:  # type: ignore[attr-defined]
        raise MemberClosed(f"member {external_id} is closed for good", member_status="closed")
