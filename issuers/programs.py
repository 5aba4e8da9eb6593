"""Programs (an issuer's points currency) and their point values, effective-dated; merchant terms."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, Forbidden, InactiveParty, NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import OrgKind
from clearing.core.ledger import (
    CONVERTED_IN,
    CONVERTED_OUT,
    EXPIRED,
    ISSUED,
    REDEEMED,
    Ledger,
    points_asset,
)
from clearing.core.money import check_rate
from clearing.core.policy import Action, OperationContext, screen
from clearing.core.timeutil import aware, within_horizon
from clearing.web.context import Caller
from issuers import repository
from issuers.expiry import check_policy
from issuers.models import MerchantTerm, Organisation, PointValue, Program
from issuers.organisations import active_organisation, must_act
from issuers.repository import Party, ProgramRef, ValueRef
from issuers.schemas import (
    MerchantTermSet,
    PointValueCreate,
    PointValueOut,
    ProgramCreate,
    ProgramOut,
)

PROGRAM_ACCOUNTS = (ISSUED, CONVERTED_IN, CONVERTED_OUT, REDEEMED, EXPIRED)


class ProgramInactive(InactiveParty):
    code = "program_inactive"


class PointValueHistory(Conflict):
    code = "point_value_history"
    title = "Point value history cannot change"


def program_by_code(session: Session, code: str) -> Program:
    """A program by its code."""
    program = repository.program_by_code(session, code)
    if program is None:
        raise NotFound(f"unknown program {code}")
    return program


def own_program(session: Session, caller: Caller, code: str) -> Program:
    """A program of the calling issuer; another issuer's program does not exist for the caller."""
    program = program_by_code(session, code)
    if program.issuer_id != caller.org_id:
        raise NotFound(f"unknown program {code}")
    return program


def active_program(session: Session, code: str) -> tuple[ProgramRef, Party]:
    """A program and its issuer, both active."""
    found = repository.program_and_issuer(session, code)
    if found is None:
        raise NotFound(f"unknown program {code}")
    return program_may_run(*found)


def program_may_run(program: ProgramRef, issuer: Party) -> tuple[ProgramRef, Party]:
    """The program and its issuer, which must both be active for the program to run."""
    if program.status != "active":
        raise ProgramInactive(f"program {program.code} is {program.status}")
    must_act(issuer)
    return program, issuer


def create_program(
    session: Session, caller: Caller, req: ProgramCreate, now: datetime
) -> ProgramOut:
    """Register an issuer's program with its first point value and its system accounts."""
    if caller.kind != OrgKind.ISSUER:
        raise Forbidden("only issuers register programs")
    issuer = active_organisation(session, caller.org_id)
    check_rate(req.point_value, "point_value")
    check_policy(req.expiry_policy, req.expiry_months)
    if repository.program_by_code(session, req.code) is not None:
        raise Conflict(f"program code {req.code} is taken")
    program = Program(
        id=new_id(),
        code=req.code,
        issuer_id=issuer.id,
        name=req.name,
        status="active",
        expiry_months=req.expiry_months,
        created_at=now,
        expiry_policy=req.expiry_policy,
        expiry_notice_days=req.expiry_notice_days,
        enrol_on_accrual=req.enrol_on_accrual,
    )
    session.add(program)
    session.flush()
    session.add(
        PointValue(
            program_id=program.id,
            version=1,
            value=req.point_value,
            effective_from=now,
            created_at=now,
        )
    )
    session.flush()
    ledger = Ledger(session)
    for role in PROGRAM_ACCOUNTS:
        ledger.open_account(points_asset(program.code), role, issuer.id, program.id, now)
    return program_out(session, program, now)


def program_out(session: Session, program: Program, now: datetime) -> ProgramOut:
    """The public view of a program with its point value in force at `now`."""
    value = point_value_at(session, program.id, now)
    issuer = session.get(Organisation, program.issuer_id)
    assert issuer is not None
    return ProgramOut(
        code=program.code,
        name=program.name,
        issuer_id=program.issuer_id,
        status=program.status,
        currency=issuer.currency,
        expiry_months=program.expiry_months,
        point_value=value.value,
        point_value_version=value.version,
        expiry_policy=program.expiry_policy,
        expiry_notice_days=program.expiry_notice_days,
        enrol_on_accrual=program.enrol_on_accrual,
    )


def list_programs(
    session: Session, now: datetime, after: str | None, limit: int
) -> list[ProgramOut]:
    """Programs by code, a page at a time."""
    return [program_out(session, p, now) for p in repository.programs_after(session, after, limit)]


def point_value_at(session: Session, program_id: uuid.UUID, at: datetime) -> ValueRef:
    """The point value version in force at `at`."""
    value = repository.point_value_at(session, program_id, at)
    if value is None:
        raise NotFound("program has no point value in force")
    return value


def add_point_value(
    session: Session, caller: Caller, code: str, req: PointValueCreate, now: datetime
) -> PointValueOut:
    """Publish a new point value version, effective now or later; history never changes."""
    program = own_program(session, caller, code)
    check_rate(req.value, "value")
    effective = within_horizon(aware(req.effective_from) if req.effective_from else now, now)
    if effective < now:
        raise PointValueHistory("a point value cannot take effect in the past")
    latest = repository.latest_point_value(session, program.id)
    if effective < aware(latest.effective_from):
        raise PointValueHistory("a point value cannot take effect before the latest version")
    screen(
        session,
        [
            OperationContext(
                action=Action.RATE,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=effective,
                program_id=program.id,
                program_code=program.code,
                issuer_org_id=program.issuer_id,
                point_value=req.value,
            )
        ],
    )
    value = PointValue(
        program_id=program.id,
        version=latest.version + 1,
        value=req.value,
        effective_from=effective,
        created_at=now,
    )
    session.add(value)
    session.flush()
    issuer = session.get(Organisation, program.issuer_id)
    assert issuer is not None
    return PointValueOut(
        program=program.code,
        version=value.version,
        value=value.value,
        currency=issuer.currency,
        effective_from=effective,
    )


def set_merchant_term(
    session: Session, merchant_id: uuid.UUID, req: MerchantTermSet
) -> MerchantTerm:
    """Set a merchant's fee rate for one program."""
    merchant = session.get(Organisation, merchant_id)
    if merchant is None or merchant.kind != OrgKind.MERCHANT:
        raise NotFound("unknown merchant")
    program = program_by_code(session, req.program)
    term = repository.merchant_term(session, merchant_id, program.id)
    if term is None:
        term = MerchantTerm(
            id=new_id(), merchant_id=merchant_id, program_id=program.id, fee_rate=req.fee_rate
        )
        session.add(term)
    else:
        term.fee_rate = req.fee_rate
    session.flush()
    return term
