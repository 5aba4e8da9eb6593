"""What one operation on a member reads before it writes, in one statement (often sent with
its idempotency claim), and the checks on it: the member context, and a checkout's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from clearing.core.db import row_to
from clearing.core.errors import NotFound
from clearing.core.timeutil import aware
from issuers import repository
from issuers.members import must_be_active
from issuers.organisations import must_act
from issuers.programs import program_may_run
from issuers.repository import MemberRef, Party, ProgramRef, ValueRef, party, program_ref


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
    member_debt: int = 0
    """Points the member owes its program as read (unlocked): 0 lets an accrual skip the debts."""

    def active_member(self) -> MemberRef:
        """The member, which must exist and be active."""
        if self.member is None:
            raise NotFound(f"unknown member {self.external_id}")
        return must_be_active(self.member)

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
    read = repository.member_context_read(org_id, code, external_id, at)
    return member_context_of(read.query.first(session, read.params), code, external_id)


def member_context_of(row: Any | None, code: str, external_id: str) -> MemberContext:
    """The member context in a row of `repository.member_context_read`, checked as
    `member_context` does."""
    if row is None:
        raise NotFound("unknown organisation")
    caller = must_act(party(row))
    if row.p_id is None:
        raise NotFound(f"unknown program {code}")
    program, issuer = program_may_run(program_ref(row, "p_"), party(row, "i_"))
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
        member_debt=row.d_points or 0,
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


def checkout_context_of(row: Any | None, code: str, external_id: str) -> CheckoutContext:
    """The checkout context in a row of `repository.checkout_context_read`."""
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
