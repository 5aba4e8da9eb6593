"""Rules of organisations, programs, point values, members and accruals (no HTTP here)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from clearing.context import Caller
from clearing.db import Sql, bulk_insert, row_to
from clearing.errors import Conflict, Forbidden, InactiveParty, NotFound
from clearing.idempotency import run_once, run_once_reading
from clearing.ids import new_id
from clearing.ledger import (
    CONVERTED_IN,
    CONVERTED_OUT,
    EXPIRED,
    ISSUED,
    MEMBER,
    POSITION,
    REDEEMED,
    EntryDraft,
    Ledger,
    Leg,
    LotSpec,
    ObligationDraft,
    money_asset,
    points_asset,
)
from clearing.models import JournalEntry, Obligation, Posting
from clearing.money import (
    check_fee_rate,
    check_rate,
    cumulative_share,
    exponent,
    value_owed_for_points,
)
from clearing.timeutil import add_months, aware, within_horizon
from issuers.models import (
    Accrual,
    Member,
    MemberToken,
    MerchantTerm,
    Organisation,
    PointValue,
    Program,
)
from issuers.schemas import (
    AccrualBatchCreate,
    AccrualBatchOut,
    AccrualCreate,
    AccrualOut,
    AccrualReversalCreate,
    AccrualReversalOut,
    MemberCreate,
    MemberOut,
    MerchantTermSet,
    OrganisationCreate,
    OrganisationOut,
    OrganisationUpdate,
    PointValueCreate,
    PointValueOut,
    ProgramCreate,
    ProgramOut,
    StatementLine,
)

PROGRAM_ACCOUNTS = (ISSUED, CONVERTED_IN, CONVERTED_OUT, REDEEMED, EXPIRED)


class CurrencyMismatch(Conflict):
    code = "currency_mismatch"
    title = "Currencies differ"


class OrganisationInactive(InactiveParty):
    code = "organisation_inactive"


class ProgramInactive(InactiveParty):
    code = "program_inactive"


class MemberInactive(InactiveParty):
    code = "member_inactive"


class FeeRateNotApplicable(Conflict):
    code = "fee_rate_not_applicable"
    title = "This kind of organisation has no such fee rate"


class PointValueHistory(Conflict):
    code = "point_value_history"
    title = "Point value history cannot change"


class AccrualOverReversed(Conflict):
    code = "reversal_exceeds_accrual"
    title = "Reversal exceeds what remains of the accrual"


# organisations -------------------------------------------------------------------------------


# What the operations read of organisations, programs, point values and members: plain values
# from one prebuilt statement each (`clearing.db.Sql`), not ORM objects, on the hot paths.


@dataclass(frozen=True, slots=True)
class Party:
    """An organisation as the rules read it."""

    id: uuid.UUID
    kind: str
    name: str
    currency: str
    status: str
    default_fee_rate: Decimal | None
    conversion_fee_rate: Decimal | None


@dataclass(frozen=True, slots=True)
class ProgramRef:
    """A program as the rules read it."""

    id: uuid.UUID
    code: str
    issuer_id: uuid.UUID
    status: str
    expiry_months: int | None


@dataclass(frozen=True, slots=True)
class ValueRef:
    """A point value version."""

    version: int
    value: Decimal
    effective_from: datetime


@dataclass(frozen=True, slots=True)
class MemberRef:
    """A member as the rules read it."""

    id: uuid.UUID
    program_id: uuid.UUID
    external_id: str
    status: str
    account_id: uuid.UUID


_ORGS = cast(Table, Organisation.__table__)
_PROGRAMS = cast(Table, Program.__table__)
_VALUES = cast(Table, PointValue.__table__)
_MEMBERS = cast(Table, Member.__table__)
_PARTY_COLUMNS = [_ORGS.c[f.name] for f in fields(Party)]
_PARTY = Sql(select(*_PARTY_COLUMNS).where(_ORGS.c.id == bindparam("b_org")))
_PLATFORM = Sql(select(*_PARTY_COLUMNS).where(_ORGS.c.kind == "platform"))
_PROGRAM_AND_ISSUER = Sql(
    select(
        *[_PROGRAMS.c[f.name] for f in fields(ProgramRef)],
        *[_ORGS.c[f.name].label(f"issuer_org_{f.name}") for f in fields(Party)],
    )
    .join(_ORGS, _ORGS.c.id == _PROGRAMS.c.issuer_id)
    .where(_PROGRAMS.c.code == bindparam("b_code"))
)
_VALUE_AT = Sql(
    select(_VALUES.c.version, _VALUES.c.value, _VALUES.c.effective_from)
    .where(_VALUES.c.program_id == bindparam("b_program"))
    .where(_VALUES.c.effective_from <= bindparam("b_at", type_=_VALUES.c.effective_from.type))
    .order_by(_VALUES.c.version.desc())
    .limit(1)
)
_MEMBER = Sql(
    select(*[_MEMBERS.c[f.name] for f in fields(MemberRef)]).where(
        _MEMBERS.c.program_id == bindparam("b_program"),
        _MEMBERS.c.external_id == bindparam("b_external"),
    )
)


_ISSUERS = _ORGS.alias("issuer")
_TERMS = cast(Table, MerchantTerm.__table__)
_VERSIONS = _VALUES.alias("versions")
_IN_FORCE = (
    select(func.max(_VERSIONS.c.version))
    .where(_VERSIONS.c.program_id == _PROGRAMS.c.id)
    .where(_VERSIONS.c.effective_from <= bindparam("b_at", type_=_VALUES.c.effective_from.type))
    .correlate(_PROGRAMS)
    .scalar_subquery()
)
_MEMBER_CONTEXT_QUERY = (
    select(
        *_PARTY_COLUMNS,
        *[_PROGRAMS.c[f.name].label(f"p_{f.name}") for f in fields(ProgramRef)],
        *[_ISSUERS.c[f.name].label(f"i_{f.name}") for f in fields(Party)],
        _VALUES.c.version.label("v_version"),
        _VALUES.c.value.label("v_value"),
        _VALUES.c.effective_from.label("v_effective_from"),
        *[_MEMBERS.c[f.name].label(f"m_{f.name}") for f in fields(MemberRef)],
        _TERMS.c.fee_rate.label("t_fee_rate"),
    )
    .select_from(
        _ORGS.outerjoin(_PROGRAMS, _PROGRAMS.c.code == bindparam("b_code"))
        .outerjoin(_ISSUERS, _ISSUERS.c.id == _PROGRAMS.c.issuer_id)
        .outerjoin(
            _VALUES, and_(_VALUES.c.program_id == _PROGRAMS.c.id, _VALUES.c.version == _IN_FORCE)
        )
        .outerjoin(
            _MEMBERS,
            and_(
                _MEMBERS.c.program_id == _PROGRAMS.c.id,
                _MEMBERS.c.external_id == bindparam("b_external"),
            ),
        )
        .outerjoin(
            _TERMS, and_(_TERMS.c.merchant_id == _ORGS.c.id, _TERMS.c.program_id == _PROGRAMS.c.id)
        )
    )
    .where(_ORGS.c.id == bindparam("b_org"))
)
_MEMBER_CONTEXT = Sql(_MEMBER_CONTEXT_QUERY)
_TOKENS = cast(Table, MemberToken.__table__)
# A checkout reads the member context, the issuer's trust in the merchant and the presented
# payment token (by its hash, bound to the member) in the same one statement.
_CHECKOUT_CONTEXT = Sql(
    _MEMBER_CONTEXT_QUERY.add_columns(
        _TERMS.c.checkout_without_token.label("t_trusted"),
        _TOKENS.c.id.label("k_id"),
        _TOKENS.c.expires_at.label("k_expires_at"),
        _TOKENS.c.used_at.label("k_used_at"),
        _TOKENS.c.max_amount.label("k_max_amount"),
    ).outerjoin(
        _TOKENS,
        and_(
            _TOKENS.c.token_hash == bindparam("b_token"),
            _TOKENS.c.member_id == _MEMBERS.c.id,
            _TOKENS.c.purpose == "payment",
        ),
    )
)


def _party(row: Any, prefix: str = "") -> Party:
    return row_to(Party, row, prefix)


def organisation_out(org: Organisation) -> OrganisationOut:
    """The public view of an organisation."""
    return OrganisationOut(
        id=org.id,
        kind=org.kind,
        name=org.name,
        currency=org.currency,
        status=org.status,
        zone=org.zone,
        conversion_fee_rate=org.conversion_fee_rate,
        default_fee_rate=org.default_fee_rate,
    )


def create_organisation(session: Session, req: OrganisationCreate, now: datetime) -> Organisation:
    """Register an organisation with its money position account in its settlement currency."""
    exponent(req.currency)
    if req.kind == "platform":
        existing = session.execute(
            select(Organisation.id).where(Organisation.kind == "platform")
        ).first()
        if existing is not None:
            raise Conflict("the platform organisation already exists")
    org = Organisation(
        id=new_id(),
        kind=req.kind,
        name=req.name,
        currency=req.currency,
        status="active",
        zone=req.zone,
        conversion_fee_rate=check_fee_rate(req.conversion_fee_rate, "conversion_fee_rate")
        if req.conversion_fee_rate is not None
        else (Decimal("0") if req.kind == "platform" else None),
        default_fee_rate=check_fee_rate(req.default_fee_rate, "default_fee_rate")
        if req.default_fee_rate is not None
        else (Decimal("0") if req.kind == "merchant" else None),
        created_at=now,
    )
    session.add(org)
    session.flush()
    Ledger(session).open_account(money_asset(req.currency), POSITION, org.id, org.id, now)
    return org


def update_organisation(
    session: Session, org_id: uuid.UUID, req: OrganisationUpdate
) -> Organisation:
    """Change an organisation's status or fee rates (operator only)."""
    org = session.get(Organisation, org_id, with_for_update=True)
    if org is None:
        raise NotFound("unknown organisation")
    if req.status is not None:
        org.status = req.status
    if req.conversion_fee_rate is not None:
        if org.kind != "platform":
            raise FeeRateNotApplicable(
                "only the platform has a conversion fee rate", field="conversion_fee_rate"
            )
        org.conversion_fee_rate = req.conversion_fee_rate
    if req.default_fee_rate is not None:
        if org.kind != "merchant":
            raise FeeRateNotApplicable(
                "only merchants have a default fee rate", field="default_fee_rate"
            )
        org.default_fee_rate = req.default_fee_rate
    session.flush()
    return org


def active_organisation(session: Session, org_id: uuid.UUID) -> Party:
    """An organisation that may act now."""
    row = _PARTY.first(session, {"b_org": org_id})
    if row is None:
        raise NotFound("unknown organisation")
    return _must_act(_party(row))


def _must_act(org: Party) -> Party:
    if org.status != "active":
        raise OrganisationInactive(f"organisation {org.name} is {org.status}")
    return org


def platform(session: Session) -> Party:
    """The platform organisation (central counterparty and fee earner)."""
    row = _PLATFORM.first(session)
    if row is None:
        raise NotFound("the platform organisation is not registered yet")
    return _party(row)


def set_merchant_term(
    session: Session, merchant_id: uuid.UUID, req: MerchantTermSet
) -> MerchantTerm:
    """Set a merchant's fee rate for one program."""
    merchant = session.get(Organisation, merchant_id)
    if merchant is None or merchant.kind != "merchant":
        raise NotFound("unknown merchant")
    program = program_by_code(session, req.program)
    term = session.execute(
        select(MerchantTerm).where(
            MerchantTerm.merchant_id == merchant_id, MerchantTerm.program_id == program.id
        )
    ).scalar()
    if term is None:
        term = MerchantTerm(
            id=new_id(), merchant_id=merchant_id, program_id=program.id, fee_rate=req.fee_rate
        )
        session.add(term)
    else:
        term.fee_rate = req.fee_rate
    session.flush()
    return term


# programs and point values -------------------------------------------------------------------


def program_by_code(session: Session, code: str) -> Program:
    """A program by its code."""
    program = session.execute(select(Program).where(Program.code == code)).scalar()
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
    row = _PROGRAM_AND_ISSUER.first(session, {"b_code": code})
    if row is None:
        raise NotFound(f"unknown program {code}")
    return _program_may_run(_program(row), _party(row, "issuer_org_"))


def _program(row: Any, prefix: str = "") -> ProgramRef:
    return row_to(ProgramRef, row, prefix)


def _program_may_run(program: ProgramRef, issuer: Party) -> tuple[ProgramRef, Party]:
    if program.status != "active":
        raise ProgramInactive(f"program {program.code} is {program.status}")
    _must_act(issuer)
    return program, issuer


@dataclass(frozen=True, slots=True)
class MemberContext:
    """What one operation on a member reads before it writes, fetched in one statement: the
    calling organisation and the program with its issuer (both checked active), and the
    member, the point value in force and the caller's fee term, checked when asked for."""

    caller: Party
    program: ProgramRef
    issuer: Party
    external_id: str
    value: ValueRef | None
    member: MemberRef | None
    fee_term: Decimal | None

    def active_member(self) -> MemberRef:
        """The member, which must exist and be active."""
        if self.member is None:
            raise NotFound(f"unknown member {self.external_id}")
        return _must_be_active(self.member)

    def point_value(self) -> ValueRef:
        """The point value version in force."""
        if self.value is None:
            raise NotFound("program has no point value in force")
        return self.value

    def merchant_fee_rate(self) -> Decimal:
        """The calling merchant's fee rate for the program: its term, else its default."""
        if self.fee_term is not None:
            return self.fee_term
        return self.caller.default_fee_rate or Decimal("0")


def member_context(
    session: Session, org_id: uuid.UUID, code: str, external_id: str, at: datetime
) -> MemberContext:
    """The context of an operation by organisation `org_id` on a member of program `code`."""
    read, params = member_context_read(org_id, code, external_id, at)
    return member_context_of(read.first(session, params), code, external_id)


def member_context_read(
    org_id: uuid.UUID, code: str, external_id: str, at: datetime
) -> tuple[Sql, dict[str, Any]]:
    """The query that reads a member context, to run now or to send with an idempotency claim."""
    return _MEMBER_CONTEXT, {"b_org": org_id, "b_code": code, "b_external": external_id, "b_at": at}


def member_context_of(row: Any | None, code: str, external_id: str) -> MemberContext:
    """The member context in a row of `member_context_read`, checked as `member_context` does."""
    if row is None:
        raise NotFound("unknown organisation")
    caller = _must_act(_party(row))
    if row.p_id is None:
        raise NotFound(f"unknown program {code}")
    program, issuer = _program_may_run(_program(row, "p_"), _party(row, "i_"))
    return MemberContext(
        caller=caller,
        program=program,
        issuer=issuer,
        external_id=external_id,
        value=(
            None
            if row.v_version is None
            else ValueRef(row.v_version, row.v_value, aware(row.v_effective_from))
        ),
        member=(None if row.m_id is None else row_to(MemberRef, row, "m_")),
        fee_term=row.t_fee_rate,
    )


@dataclass(frozen=True, slots=True)
class TokenRef:
    """A payment token presented at checkout, as stored (never the token itself)."""

    id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None
    max_amount: int | None


@dataclass(frozen=True, slots=True)
class CheckoutContext:
    """A member context with what decides the member's consent to a checkout."""

    member: MemberContext
    trusted: bool
    """The issuer lets the calling merchant check out without a payment token."""
    token: TokenRef | None
    """The presented payment token, if it is one of this member's."""


def checkout_context_read(
    org_id: uuid.UUID, code: str, external_id: str, token_hash: str | None, at: datetime
) -> tuple[Sql, dict[str, Any]]:
    """The query that reads a checkout's context: member context, trust and payment token."""
    _, params = member_context_read(org_id, code, external_id, at)
    return _CHECKOUT_CONTEXT, {**params, "b_token": token_hash}


def checkout_context_of(row: Any | None, code: str, external_id: str) -> CheckoutContext:
    """The checkout context in a row of `checkout_context_read`."""
    context = member_context_of(row, code, external_id)
    assert row is not None
    token = (
        None
        if row.k_id is None
        else TokenRef(
            row.k_id,
            aware(row.k_expires_at),
            None if row.k_used_at is None else aware(row.k_used_at),
            row.k_max_amount,
        )
    )
    return CheckoutContext(context, bool(row.t_trusted), token)


def create_program(
    session: Session, caller: Caller, req: ProgramCreate, now: datetime
) -> ProgramOut:
    """Register an issuer's program with its first point value and its system accounts."""
    if caller.kind != "issuer":
        raise Forbidden("only issuers register programs")
    issuer = active_organisation(session, caller.org_id)
    check_rate(req.point_value, "point_value")
    if session.execute(select(Program.id).where(Program.code == req.code)).first():
        raise Conflict(f"program code {req.code} is taken")
    program = Program(
        id=new_id(),
        code=req.code,
        issuer_id=issuer.id,
        name=req.name,
        status="active",
        expiry_months=req.expiry_months,
        created_at=now,
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
    )


def list_programs(
    session: Session, now: datetime, after: str | None, limit: int
) -> list[ProgramOut]:
    """Programs by code, a page at a time."""
    query = select(Program).order_by(Program.code).limit(limit)
    if after:
        query = query.where(Program.code > after)
    return [program_out(session, p, now) for p in session.execute(query).scalars()]


def point_value_at(session: Session, program_id: uuid.UUID, at: datetime) -> ValueRef:
    """The point value version in force at `at`."""
    row = _VALUE_AT.first(session, {"b_program": program_id, "b_at": at})
    if row is None:
        raise NotFound("program has no point value in force")
    return ValueRef(row.version, row.value, aware(row.effective_from))


def add_point_value(
    session: Session, caller: Caller, code: str, req: PointValueCreate, now: datetime
) -> PointValueOut:
    """Publish a new point value version, effective now or later; history never changes."""
    program = own_program(session, caller, code)
    check_rate(req.value, "value")
    effective = within_horizon(aware(req.effective_from) if req.effective_from else now, now)
    if effective < now:
        raise PointValueHistory("a point value cannot take effect in the past")
    latest = session.execute(
        select(PointValue)
        .where(PointValue.program_id == program.id)
        .order_by(PointValue.version.desc())
        .limit(1)
        .with_for_update()
    ).scalar_one()
    if effective < aware(latest.effective_from):
        raise PointValueHistory("a point value cannot take effect before the latest version")
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


# members -------------------------------------------------------------------------------------


def create_member(
    session: Session, caller: Caller, code: str, req: MemberCreate, now: datetime
) -> MemberOut:
    """Enrol a member of the caller's program."""
    program = own_program(session, caller, code)
    exists = session.execute(
        select(Member.id).where(
            Member.program_id == program.id, Member.external_id == req.external_id
        )
    ).first()
    if exists:
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
    row = _MEMBER.first(session, {"b_program": program.id, "b_external": external_id})
    if row is None:
        raise NotFound(f"unknown member {external_id}")
    return row_to(MemberRef, row)


def active_member(session: Session, program: Program | ProgramRef, external_id: str) -> MemberRef:
    """A member that may earn and spend."""
    return _must_be_active(member_of(session, program, external_id))


def _must_be_active(member: MemberRef) -> MemberRef:
    if member.status != "active":
        raise MemberInactive(
            f"member {member.external_id} is {member.status}", member_status=member.status
        )
    return member


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
    )


def set_member_status(
    session: Session, caller: Caller, code: str, external_id: str, status: str
) -> None:
    """Freeze, unfreeze or close a member."""
    program = own_program(session, caller, code)
    member = member_of(session, program, external_id)
    session.execute(update(Member).where(Member.id == member.id).values(status=status))


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
    running = func.sum(Posting.amount).over(order_by=(JournalEntry.booked_at, JournalEntry.id))
    inner = (
        select(
            JournalEntry.id.label("entry_id"),
            JournalEntry.kind,
            JournalEntry.booked_at,
            Posting.amount.label("points"),
            running.label("balance_after"),
        )
        .join(Posting, Posting.entry_id == JournalEntry.id)
        .where(Posting.account_id == member.account_id)
        .subquery()
    )
    query = select(inner).order_by(inner.c.booked_at, inner.c.entry_id).limit(limit)
    if after is not None and after_entry is not None:
        # Entries share timestamps: the cursor is the (booked_at, entry_id) of the last line seen.
        query = query.where(
            or_(
                inner.c.booked_at > after,
                and_(inner.c.booked_at == after, inner.c.entry_id > after_entry),
            )
        )
    elif after is not None:
        query = query.where(inner.c.booked_at > after)
    return [
        StatementLine(
            entry_id=row.entry_id,
            kind=row.kind,
            booked_at=aware(row.booked_at),
            points=row.points,
            balance_after=int(row.balance_after),
        )
        for row in session.execute(query)
    ]


# accruals ------------------------------------------------------------------------------------


def accrue(
    session: Session, caller: Caller, req: AccrualCreate, now: datetime, idempotency_key: str
) -> tuple[AccrualOut, bool]:
    """Credit points to a member, funded by the issuer or by the calling merchant."""
    read, params = member_context_read(caller.org_id, req.program, req.external_id, now)

    def run(row: Any | None) -> AccrualOut:
        context = member_context_of(row, req.program, req.external_id)
        return _post_accruals(session, caller, [req], now, context)[0]

    return run_once_reading(
        session,
        caller.org_id,
        idempotency_key,
        "accrual",
        req.model_dump(mode="json"),
        now,
        AccrualOut,
        read,
        params,
        run,
    )


def accrue_batch(
    session: Session, caller: Caller, req: AccrualBatchCreate, now: datetime, idempotency_key: str
) -> tuple[AccrualBatchOut, bool]:
    """Credit a partner's bulk file of accruals in one transaction: all lines or none."""

    def run() -> AccrualBatchOut:
        accruals = _post_accruals(session, caller, req.items, now)
        return AccrualBatchOut(
            count=len(accruals),
            points=sum(a.points for a in accruals),
            amount_owed=sum(a.amount_owed for a in accruals),
            accrual_ids=[a.id for a in accruals],
        )

    return run_once(
        session,
        caller.org_id,
        idempotency_key,
        "accrual_batch",
        req.model_dump(mode="json"),
        now,
        AccrualBatchOut,
        run,
    )


def _post_accruals(
    session: Session,
    caller: Caller,
    items: Sequence[AccrualCreate],
    now: datetime,
    context: MemberContext | None = None,
) -> list[AccrualOut]:
    """Accruals of one funder: each its own entry and lot, posted together."""
    ledger = Ledger(session)
    programs: dict[str, tuple[ProgramRef, Party, ValueRef, uuid.UUID]] = {}
    if len(items) == 1:
        # A single accrual reads everything it needs in one statement.
        item = items[0]
        if context is None:
            context = member_context(session, caller.org_id, item.program, item.external_id, now)
        funder = _may_fund(context.caller)
        _may_fund_in(funder, context.program, context.issuer)
        issued = ledger.account_id(points_asset(item.program), ISSUED, context.program.id)
        value = context.point_value()
        programs[item.program] = (context.program, context.issuer, value, issued)
        members = {(context.program.id, item.external_id): context.active_member()}
    else:
        funder = _may_fund(active_organisation(session, caller.org_id))
        for code in dict.fromkeys(item.program for item in items):
            program, issuer = active_program(session, code)
            _may_fund_in(funder, program, issuer)
            issued = ledger.account_id(points_asset(code), ISSUED, program.id)
            programs[code] = (program, issuer, point_value_at(session, program.id, now), issued)
        wanted = [(programs[i.program][0], i.external_id) for i in items]
        members = _active_members(session, wanted)
    expiry = {
        program.id: add_months(now, program.expiry_months) if program.expiry_months else None
        for program, _, _, _ in programs.values()
    }
    drafts: list[EntryDraft] = []
    results: list[AccrualOut] = []
    for item in items:
        program, issuer, value, issued = programs[item.program]
        member = members[(program.id, item.external_id)]
        expires_at = expiry[program.id]
        owed = 0
        obligations: list[ObligationDraft] = []
        if funder.kind == "merchant":
            # Rounded up: every line owes at least one minor unit, so no split of a file into
            # many small lines owes less than the whole (clearing.money).
            owed = value_owed_for_points(item.points, value.value, issuer.currency)
            obligations.append(
                ObligationDraft(
                    event_type="merchant_funded_accrual",
                    payer_org_id=funder.id,
                    payee_org_id=issuer.id,
                    currency=issuer.currency,
                    amount=owed,
                    program_code=program.code,
                    points=item.points,
                    point_value=value.value,
                    point_value_version=value.version,
                )
            )
        draft = EntryDraft(
            kind="accrual",
            org_id=funder.id,
            booked_at=now,
            legs=[
                Leg(issued, -item.points),
                Leg(
                    member.account_id,
                    item.points,
                    lot=LotSpec("accrual", expires_at, funding_org_id=funder.id),
                ),
            ],
            obligations=obligations,
            memo={"reference": item.reference} if item.reference else {},
        )
        drafts.append(draft)
        results.append(
            AccrualOut(
                id=new_id(),
                entry_id=draft.id,
                program=program.code,
                external_id=member.external_id,
                points=item.points,
                funding_org_id=funder.id,
                amount_owed=owed,
                currency=issuer.currency,
                point_value_version=value.version,
                expires_at=expires_at,
            )
        )
    posted = ledger.post_many(drafts)
    bulk_insert(
        session,
        cast(Table, Accrual.__table__),
        [
            {
                "id": out.id,
                "entry_id": out.entry_id,
                "member_id": members[(programs[out.program][0].id, out.external_id)].id,
                "funding_org_id": funder.id,
                "points": out.points,
                "reversed_points": 0,
                "lot_id": entry.lots_created[0],
                "created_at": now,
            }
            for out, entry in zip(results, posted, strict=True)
        ],
    )
    return results


def _may_fund(funder: Party) -> Party:
    if funder.kind not in ("issuer", "merchant"):
        raise Forbidden("only issuers and merchants fund accruals")
    return funder


def _may_fund_in(funder: Party, program: ProgramRef, issuer: Party) -> None:
    if funder.kind == "issuer" and program.issuer_id != funder.id:
        raise NotFound(f"unknown program {program.code}")
    if funder.kind == "merchant" and funder.currency != issuer.currency:
        raise CurrencyMismatch(
            f"merchant settles in {funder.currency}, program {program.code} in"
            f" {issuer.currency}; no currency rate exists between them",
        )


def _active_members(
    session: Session, wanted: Sequence[tuple[ProgramRef, str]]
) -> dict[tuple[uuid.UUID, str], MemberRef]:
    """Members by (program id, external id), all of which must exist and be active."""
    if len(wanted) == 1:
        program, external_id = wanted[0]
        return {(program.id, external_id): active_member(session, program, external_id)}
    by_program: dict[uuid.UUID, set[str]] = defaultdict(set)
    for program, external_id in wanted:
        by_program[program.id].add(external_id)
    found: dict[tuple[uuid.UUID, str], MemberRef] = {}
    columns = [_MEMBERS.c[f.name] for f in fields(MemberRef)]
    for program_id, externals in by_program.items():
        ids = sorted(externals)
        for start in range(0, len(ids), 5000):
            for row in session.execute(
                select(*columns).where(
                    _MEMBERS.c.program_id == program_id,
                    _MEMBERS.c.external_id.in_(ids[start : start + 5000]),
                )
            ):
                found[(program_id, row.external_id)] = MemberRef(*row)
    for program, external_id in wanted:
        member = found.get((program.id, external_id))
        if member is None:
            raise NotFound(f"unknown member {external_id}")
        _must_be_active(member)
    return found


def reverse_accrual(
    session: Session,
    caller: Caller,
    accrual_id: uuid.UUID,
    req: AccrualReversalCreate,
    now: datetime,
    idempotency_key: str,
) -> tuple[AccrualReversalOut, bool]:
    """Take back points of an accrual (goods returned), in full or in part."""
    return run_once(
        session,
        caller.org_id,
        idempotency_key,
        "accrual_reversal",
        {"accrual": str(accrual_id), **req.model_dump(mode="json")},
        now,
        AccrualReversalOut,
        lambda: _reverse_accrual(session, caller, accrual_id, req, now),
    )


def _reverse_accrual(
    session: Session,
    caller: Caller,
    accrual_id: uuid.UUID,
    req: AccrualReversalCreate,
    now: datetime,
) -> AccrualReversalOut:
    accrual = session.get(Accrual, accrual_id, with_for_update=True)
    member = session.get(Member, accrual.member_id) if accrual else None
    program = session.get(Program, member.program_id) if member else None
    if accrual is None or member is None or program is None:
        raise NotFound("unknown accrual")
    if caller.org_id not in (accrual.funding_org_id, program.issuer_id):
        raise NotFound("unknown accrual")
    if accrual.reversed_points + req.points > accrual.points:
        raise AccrualOverReversed(
            "cannot reverse more points than the accrual credited",
            reversible=accrual.points - accrual.reversed_points,
        )
    ledger = Ledger(session)
    original = accrual.entry_id
    obligations: list[ObligationDraft] = []
    returned = 0
    funder = session.get(Organisation, accrual.funding_org_id)
    assert funder is not None
    if funder.kind == "merchant":
        value_row = _accrual_obligation(session, original)
        if value_row is not None:
            owed, pv, version, currency = value_row
            before = cumulative_share(owed, accrual.reversed_points, accrual.points)
            after = cumulative_share(owed, accrual.reversed_points + req.points, accrual.points)
            returned = after - before
            if returned > 0:
                obligations.append(
                    ObligationDraft(
                        event_type="accrual_reversal",
                        payer_org_id=program.issuer_id,
                        payee_org_id=funder.id,
                        currency=currency,
                        amount=returned,
                        program_code=program.code,
                        points=req.points,
                        point_value=pv,
                        point_value_version=version,
                    )
                )
    posted = ledger.post(
        EntryDraft(
            kind="accrual_reversal",
            org_id=caller.org_id,
            booked_at=now,
            reverses_id=original,
            legs=[
                Leg(member.account_id, -req.points, prefer_lots=(accrual.lot_id,)),
                Leg(ledger.account_id(points_asset(program.code), ISSUED, program.id), req.points),
            ],
            obligations=obligations,
        )
    )
    accrual.reversed_points += req.points
    session.flush()
    return AccrualReversalOut(
        accrual_id=accrual.id,
        entry_id=posted.id,
        points=req.points,
        amount_returned=returned,
        reversed_points_total=accrual.reversed_points,
    )


def _accrual_obligation(
    session: Session, entry_id: uuid.UUID
) -> tuple[int, Decimal | None, int | None, str] | None:
    row = session.execute(
        select(
            Obligation.amount,
            Obligation.point_value,
            Obligation.point_value_version,
            Obligation.currency,
        ).where(Obligation.entry_id == entry_id, Obligation.event_type == "merchant_funded_accrual")
    ).first()
    return None if row is None else (row[0], row[1], row[2], row[3])
