"""Every query of the issuers' domain: what the rules read of organisations, programs, point
values, members, merchant terms, statements and accruals.

The hot paths read plain values (`Party`, `ProgramRef`, `ValueRef`, `MemberRef`) from one
prebuilt statement each (`clearing.core.db.Sql`), not ORM objects. Lookups answer None when nothing
matches; the rules decide what a miss means.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import BigInteger, Table, and_, bindparam, exists, func, literal, or_, select
from sqlalchemy.orm import Session

from clearing.core.db import Sql, row_to
from clearing.core.idempotency import FirstRead
from clearing.core.kinds import ObligationEvent, OrgKind
from clearing.core.models import JournalEntry, Obligation, Posting
from clearing.core.timeutil import aware
from issuers.models import (
    Member,
    MemberDebt,
    MemberDebtMovement,
    MemberLink,
    MemberToken,
    MerchantTerm,
    Organisation,
    PointValue,
    Program,
)


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
    zone: str
    """IANA zone of the party's business dates (a year-end expiry's year)."""


@dataclass(frozen=True, slots=True)
class ProgramRef:
    """A program as the rules read it."""

    id: uuid.UUID
    code: str
    issuer_id: uuid.UUID
    status: str
    expiry_months: int | None
    expiry_policy: str
    enrol_on_accrual: bool


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
_PLATFORM = Sql(select(*_PARTY_COLUMNS).where(_ORGS.c.kind == OrgKind.PLATFORM))
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
_DEBTS = cast(Table, MemberDebt.__table__)
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
        # An accrual repays a debt first; reading it here spares every accrual of a member
        # without one a statement (the debt row is locked and read again when there is one).
        _DEBTS.c.points.label("d_points"),
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
        .outerjoin(_DEBTS, _DEBTS.c.member_id == _MEMBERS.c.id)
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


def party(row: Any, prefix: str = "") -> Party:
    """The organisation in a row whose columns are named like `Party` (after `prefix`)."""
    return row_to(Party, row, prefix)


def program_ref(row: Any, prefix: str = "") -> ProgramRef:
    """The program in a row whose columns are named like `ProgramRef` (after `prefix`)."""
    return row_to(ProgramRef, row, prefix)


# organisations -------------------------------------------------------------------------------


def party_by_id(session: Session, org_id: uuid.UUID) -> Party | None:
    """An organisation as the rules read it."""
    row = _PARTY.first(session, {"b_org": org_id})
    return None if row is None else party(row)


def platform_party(session: Session) -> Party | None:
    """The platform organisation, once registered."""
    row = _PLATFORM.first(session)
    return None if row is None else party(row)


def merchant_term(
    session: Session, merchant_id: uuid.UUID, program_id: uuid.UUID
) -> MerchantTerm | None:
    """A merchant's term for one program: its fee rate, whether it checks out without tokens."""
    return session.execute(
        select(MerchantTerm).where(
            MerchantTerm.merchant_id == merchant_id, MerchantTerm.program_id == program_id
        )
    ).scalar()


def member_link(
    session: Session, source_member_id: uuid.UUID, target_member_id: uuid.UUID
) -> MemberLink | None:
    """The link that lets a target member receive points converted from a source member."""
    return session.execute(
        select(MemberLink).where(
            MemberLink.source_member_id == source_member_id,
            MemberLink.target_member_id == target_member_id,
        )
    ).scalar()


# programs and point values -------------------------------------------------------------------


def program_by_code(session: Session, code: str) -> Program | None:
    """A program by its code."""
    return session.execute(select(Program).where(Program.code == code)).scalar()


def program_and_issuer(session: Session, code: str) -> tuple[ProgramRef, Party] | None:
    """A program and its issuer, in one statement."""
    row = _PROGRAM_AND_ISSUER.first(session, {"b_code": code})
    return None if row is None else (program_ref(row), party(row, "issuer_org_"))


def programs_after(session: Session, after: str | None, limit: int) -> list[Program]:
    """Programs by code, after the code `after`."""
    query = select(Program).order_by(Program.code).limit(limit)
    if after:
        query = query.where(Program.code > after)
    return list(session.execute(query).scalars())


def point_value_at(session: Session, program_id: uuid.UUID, at: datetime) -> ValueRef | None:
    """The point value version in force at `at`."""
    row = _VALUE_AT.first(session, {"b_program": program_id, "b_at": at})
    return None if row is None else ValueRef(row.version, row.value, aware(row.effective_from))


def latest_point_value(session: Session, program_id: uuid.UUID) -> PointValue:
    """The latest point value version of a program (every program has one), locked."""
    return session.execute(
        select(PointValue)
        .where(PointValue.program_id == program_id)
        .order_by(PointValue.version.desc())
        .limit(1)
        .with_for_update()
    ).scalar_one()


# members -------------------------------------------------------------------------------------


def member_by_external_id(
    session: Session, program_id: uuid.UUID, external_id: str
) -> MemberRef | None:
    """A member of a program by the issuer's external id."""
    row = _MEMBER.first(session, {"b_program": program_id, "b_external": external_id})
    return None if row is None else row_to(MemberRef, row)


def members_by_external_ids(
    session: Session, program_id: uuid.UUID, external_ids: Iterable[str]
) -> Iterable[MemberRef]:
    """The members of a program among `external_ids`, read 5,000 ids at a time."""
    columns = [_MEMBERS.c[f.name] for f in fields(MemberRef)]
    ids = sorted(external_ids)
    for start in range(0, len(ids), 5000):
        for row in session.execute(
            select(*columns).where(
                _MEMBERS.c.program_id == program_id,
                _MEMBERS.c.external_id.in_(ids[start : start + 5000]),
            )
        ):
            yield MemberRef(*row)


def member_context_read(org_id: uuid.UUID, code: str, external_id: str, at: datetime) -> FirstRead:
    """The query that reads a member context, to run now or to send with an idempotency claim."""
    params = {"b_org": org_id, "b_code": code, "b_external": external_id, "b_at": at}
    return FirstRead(_MEMBER_CONTEXT, params)


def checkout_context_read(
    org_id: uuid.UUID, code: str, external_id: str, token_hash: str | None, at: datetime
) -> FirstRead:
    """The query that reads a checkout's context: member context, trust and payment token."""
    params = member_context_read(org_id, code, external_id, at).params
    return FirstRead(_CHECKOUT_CONTEXT, {**params, "b_token": token_hash})


def statement_rows(
    session: Session,
    account_id: uuid.UUID,
    after: datetime | None,
    after_entry: uuid.UUID | None,
    limit: int,
) -> Sequence[Any]:
    """The postings of a member's account, oldest first, with the balance after each."""
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
        .where(Posting.account_id == account_id)
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
    return session.execute(query).all()


# accruals ------------------------------------------------------------------------------------


def accrual_obligation(
    session: Session, entry_id: uuid.UUID
) -> tuple[int, Decimal | None, int | None, str] | None:
    """What a merchant-funded accrual's entry owes: amount, point value, its version, currency."""
    row = session.execute(
        select(
            Obligation.amount,
            Obligation.point_value,
            Obligation.point_value_version,
            Obligation.currency,
        ).where(
            Obligation.entry_id == entry_id,
            Obligation.event_type == ObligationEvent.MERCHANT_FUNDED_ACCRUAL,
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


def member_statement_rows(
    session: Session,
    member_id: uuid.UUID,
    account_id: uuid.UUID,
    after: datetime | None,
    after_entry: uuid.UUID | None,
    limit: int,
) -> Sequence[Any]:
    """A member's statement: the postings of its account, and the entries that moved its debt
    without moving its points (a reversal of points all spent), oldest first, each with its
    entry's memo and the balance after it."""
    moved = (
        select(
            JournalEntry.id.label("entry_id"),
            JournalEntry.kind,
            JournalEntry.booked_at,
            Posting.amount.label("points"),
            JournalEntry.memo,
        )
        .join(Posting, Posting.entry_id == JournalEntry.id)
        .where(Posting.account_id == account_id)
    )
    debt_only = select(
        JournalEntry.id,
        JournalEntry.kind,
        JournalEntry.booked_at,
        literal(0, BigInteger),
        JournalEntry.memo,
    ).where(
        JournalEntry.id.in_(
            select(MemberDebtMovement.entry_id).where(MemberDebtMovement.member_id == member_id)
        ),
        ~exists().where(Posting.entry_id == JournalEntry.id, Posting.account_id == account_id),
    )
    lines = moved.union_all(debt_only).subquery()
    running = func.sum(lines.c.points).over(order_by=(lines.c.booked_at, lines.c.entry_id))
    inner = select(lines, running.label("balance_after")).subquery()
    query = select(inner).order_by(inner.c.booked_at, inner.c.entry_id).limit(limit)
    if after is not None and after_entry is not None:
        query = query.where(
            or_(
                inner.c.booked_at > after,
                and_(inner.c.booked_at == after, inner.c.entry_id > after_entry),
            )
        )
    elif after is not None:
        query = query.where(inner.c.booked_at > after)
    return session.execute(query).all()
