"""Agreements between parties: what a merchant may do with a program's points (accept them,
fund accruals into it), agreed by both sides; and issuers' consent to interchange points."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from clearing.core.cache import ProcessCopy
from clearing.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import OrgKind
from clearing.core.timeutil import aware, within_horizon
from clearing.web.context import Caller
from issuers import repository
from issuers.models import Interchange, MerchantAgreement, Organisation, Program
from issuers.programs import program_by_code
from issuers.schemas import AgreementCreate, AgreementOut, InterchangeOut, InterchangeSet


class AgreementNotPending(Conflict):
    code = "agreement_not_pending"
    title = "The agreement is not waiting for approval"


class OwnProposal(Forbidden):
    code = "own_proposal"
    title = "The other side approves a proposal"


def propose(session: Session, caller: Caller, req: AgreementCreate, now: datetime) -> AgreementOut:
    """A merchant proposes terms for a program's points, or the program's issuer for a merchant."""
    program = program_by_code(session, req.program)
    if caller.kind == OrgKind.MERCHANT:
        if req.merchant_id not in (None, caller.org_id):
            raise Forbidden("a merchant proposes agreements for itself")
        merchant_id = caller.org_id
    elif caller.kind == OrgKind.ISSUER and program.issuer_id == caller.org_id:
        if req.merchant_id is None:
            raise InvalidInput("name the merchant of the agreement", field="merchant_id")
        merchant_id = req.merchant_id
    else:
        raise NotFound(f"unknown program {req.program}")
    merchant = session.get(Organisation, merchant_id)
    if merchant is None or merchant.kind != OrgKind.MERCHANT:
        raise NotFound("unknown merchant")
    if req.supply and req.wholesale_rate is None:
        raise InvalidInput(
            "an agreement to supply the mall sets a wholesale_rate", field="wholesale_rate"
        )
    if not req.supply and req.wholesale_rate is not None:
        raise InvalidInput("a wholesale_rate applies to supply only", field="wholesale_rate")
    valid_from = within_horizon(aware(req.valid_from) if req.valid_from else now, now, "valid_from")
    valid_to = aware(req.valid_to) if req.valid_to else None
    if valid_to is not None and valid_to <= valid_from:
        raise InvalidInput("valid_to must be after valid_from", field="valid_to")
    latest = session.execute(
        select(MerchantAgreement.version)
        .where(
            MerchantAgreement.merchant_id == merchant_id,
            MerchantAgreement.program_id == program.id,
        )
        .order_by(MerchantAgreement.version.desc())
        .limit(1)
    ).scalar()
    agreement = MerchantAgreement(
        id=new_id(),
        merchant_id=merchant_id,
        program_id=program.id,
        version=(latest or 0) + 1,
        status="proposed",
        accept=req.accept,
        fund=req.fund,
        supply=req.supply,
        wholesale_rate=req.wholesale_rate,
        daily_accept_cap=req.daily_accept_cap,
        daily_fund_cap=req.daily_fund_cap,
        valid_from=valid_from,
        valid_to=valid_to,
        proposed_by=caller.org_id,
        proposed_at=now,
    )
    session.add(agreement)
    session.flush()
    return agreement_out(session, agreement, program.code)


def approve(
    session: Session, caller: Caller, agreement_id: uuid.UUID, now: datetime
) -> AgreementOut:
    """The other side agrees: the proposal comes into force and supersedes the one before."""
    agreement, program = _party_to(session, caller, agreement_id, lock=True)
    if agreement.status != "proposed":
        raise AgreementNotPending(f"the agreement is {agreement.status}")
    if agreement.proposed_by == caller.org_id:
        raise OwnProposal("the side that proposed an agreement cannot approve it")
    session.execute(
        update(MerchantAgreement)
        .where(
            MerchantAgreement.merchant_id == agreement.merchant_id,
            MerchantAgreement.program_id == agreement.program_id,
            MerchantAgreement.status == "active",
        )
        .values(status="superseded", ended_at=now)
    )
    agreement.status = "active"
    _ACTIVE.changed(session)
    agreement.approved_by = caller.org_id
    agreement.approved_key = caller.key_id
    agreement.approved_at = now
    session.flush()
    return agreement_out(session, agreement, program.code)


def end(session: Session, caller: Caller, agreement_id: uuid.UUID, now: datetime) -> AgreementOut:
    """Either side ends an agreement (or withdraws a proposal): from now on it allows nothing."""
    agreement, program = _party_to(session, caller, agreement_id, lock=True)
    if agreement.status not in ("proposed", "active"):
        raise AgreementNotPending(f"the agreement is already {agreement.status}")
    agreement.status = "ended"
    _ACTIVE.changed(session)
    agreement.ended_at = now
    session.flush()
    return agreement_out(session, agreement, program.code)


def list_agreements(session: Session, caller: Caller) -> list[AgreementOut]:
    """The caller's agreements: as the merchant, or as the issuer of the program."""
    rows = session.execute(
        select(MerchantAgreement, Program.code)
        .join(Program, Program.id == MerchantAgreement.program_id)
        .where(
            or_(
                MerchantAgreement.merchant_id == caller.org_id,
                Program.issuer_id == caller.org_id,
            )
        )
        .order_by(Program.code, MerchantAgreement.merchant_id, MerchantAgreement.version)
    ).all()
    return [agreement_out(session, agreement, code) for agreement, code in rows]


def _party_to(
    session: Session, caller: Caller, agreement_id: uuid.UUID, lock: bool
) -> tuple[MerchantAgreement, Program]:
    agreement = session.get(MerchantAgreement, agreement_id, with_for_update=lock)
    program = session.get(Program, agreement.program_id) if agreement else None
    if agreement is None or program is None:
        raise NotFound("unknown agreement")
    if caller.org_id not in (agreement.merchant_id, program.issuer_id):
        raise NotFound("unknown agreement")
    return agreement, program


def agreement_out(session: Session, agreement: MerchantAgreement, program: str) -> AgreementOut:
    """An agreement as the API shows it, with the fee its merchant term sets."""
    term = repository.merchant_term(session, agreement.merchant_id, agreement.program_id)
    fee_rate = term.fee_rate if term is not None else None
    if fee_rate is None:
        merchant = session.get(Organisation, agreement.merchant_id)
        fee_rate = merchant.default_fee_rate if merchant is not None else None
    return AgreementOut(
        id=agreement.id,
        program=program,
        merchant_id=agreement.merchant_id,
        version=agreement.version,
        status=agreement.status,
        accept=agreement.accept,
        fund=agreement.fund,
        supply=agreement.supply,
        wholesale_rate=agreement.wholesale_rate,
        fee_rate=fee_rate,
        daily_accept_cap=agreement.daily_accept_cap,
        daily_fund_cap=agreement.daily_fund_cap,
        valid_from=aware(agreement.valid_from),
        valid_to=aware(agreement.valid_to) if agreement.valid_to else None,
        proposed_by=agreement.proposed_by,
        proposed_at=aware(agreement.proposed_at),
        approved_by=agreement.approved_by,
        approved_at=aware(agreement.approved_at) if agreement.approved_at else None,
    )


@dataclass(frozen=True, slots=True)
class AgreementInForce:
    """An approved agreement, as the risk controls read it on every merchant operation."""

    id: uuid.UUID
    version: int
    accept: bool
    fund: bool
    daily_accept_cap: int | None
    daily_fund_cap: int | None
    valid_from: datetime
    valid_to: datetime | None
    supply: bool = False
    wholesale_rate: Decimal | None = None


def _active(session: Session) -> dict[tuple[uuid.UUID, uuid.UUID], AgreementInForce]:
    rows = session.execute(
        select(
            MerchantAgreement.merchant_id,
            MerchantAgreement.program_id,
            MerchantAgreement.id,
            MerchantAgreement.version,
            MerchantAgreement.accept,
            MerchantAgreement.fund,
            MerchantAgreement.daily_accept_cap,
            MerchantAgreement.daily_fund_cap,
            MerchantAgreement.valid_from,
            MerchantAgreement.valid_to,
            MerchantAgreement.supply,
            MerchantAgreement.wholesale_rate,
        ).where(MerchantAgreement.status == "active")
    )
    return {
        (row[0], row[1]): AgreementInForce(
            *row[2:8],
            aware(row.valid_from),
            aware(row.valid_to) if row.valid_to else None,
            row.supply,
            row.wholesale_rate,
        )
        for row in rows
    }


_ACTIVE = ProcessCopy(_active)
"""Every operation of a merchant reads its agreement: from this copy, not a statement each
time (an approval or end is seen at once by its process, within seconds by the others)."""


def in_force(
    session: Session, pairs: Iterable[tuple[uuid.UUID, uuid.UUID]], at: datetime
) -> dict[tuple[uuid.UUID, uuid.UUID], AgreementInForce]:
    """The agreements in force at `at` for (merchant id, program id) pairs."""
    active = _ACTIVE.get(session)
    found = {}
    for pair in pairs:
        agreement = active.get(pair)
        if (
            agreement is not None
            and agreement.valid_from <= at
            and (agreement.valid_to is None or at < agreement.valid_to)
        ):
            found[pair] = agreement
    return found


# interchange ---------------------------------------------------------------------------------


def set_interchange(
    session: Session, caller: Caller, counterparty_id: uuid.UUID, req: InterchangeSet, now: datetime
) -> InterchangeOut:
    """An issuer consents (or stops consenting) to exchange points with another issuer."""
    if caller.kind != OrgKind.ISSUER:
        raise Forbidden("only issuers consent to interchange")
    counterparty = session.get(Organisation, counterparty_id)
    if counterparty is None or counterparty.kind != OrgKind.ISSUER:
        raise NotFound("unknown issuer")
    if counterparty_id == caller.org_id:
        raise InvalidInput("an issuer always exchanges with itself", field="counterparty_id")
    row = session.execute(
        select(Interchange).where(
            Interchange.issuer_id == caller.org_id, Interchange.counterparty_id == counterparty_id
        )
    ).scalar()
    if row is None:
        row = Interchange(id=new_id(), issuer_id=caller.org_id, counterparty_id=counterparty_id)
        session.add(row)
    row.enabled = req.enabled
    row.changed_by_key = caller.key_id
    row.changed_at = now
    session.flush()
    return InterchangeOut(
        issuer_id=row.issuer_id,
        counterparty_id=row.counterparty_id,
        enabled=row.enabled,
        changed_at=aware(row.changed_at),
    )


def consents(session: Session) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """Every (issuer, counterparty) pair where the issuer consents to interchange."""
    rows = session.execute(
        select(Interchange.issuer_id, Interchange.counterparty_id).where(Interchange.enabled)
    )
    return {(a, b) for a, b in rows}


def consented(session: Session, issuer_id: uuid.UUID, counterparty_id: uuid.UUID) -> bool:
    """Whether `issuer_id` consents to interchange with `counterparty_id` (always with itself)."""
    if issuer_id == counterparty_id:
        return True
    return bool(
        session.execute(
            select(Interchange.enabled).where(
                Interchange.issuer_id == issuer_id, Interchange.counterparty_id == counterparty_id
            )
        ).scalar()
    )
