"""Organisations: issuers, merchants and the platform, with their money position accounts."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, InactiveParty, NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import OrgKind
from clearing.core.ledger import POSITION, Ledger, money_asset
from clearing.core.money import check_fee_rate, exponent
from issuers import repository
from issuers.models import Organisation
from issuers.repository import Party
from issuers.schemas import OrganisationCreate, OrganisationOut, OrganisationUpdate


class FeeRateNotApplicable(Conflict):
    code = "fee_rate_not_applicable"
    title = "This kind of organisation has no such fee rate"


class CurrencyMismatch(Conflict):
    code = "currency_mismatch"
    title = "Currencies differ"


class OrganisationInactive(InactiveParty):
    code = "organisation_inactive"


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
    if req.kind == OrgKind.PLATFORM and repository.platform_party(session) is not None:
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
        else (Decimal("0") if req.kind == OrgKind.PLATFORM else None),
        default_fee_rate=check_fee_rate(req.default_fee_rate, "default_fee_rate")
        if req.default_fee_rate is not None
        else (Decimal("0") if req.kind == OrgKind.MERCHANT else None),
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
        if org.kind != OrgKind.PLATFORM:
            raise FeeRateNotApplicable(
                "only the platform has a conversion fee rate", field="conversion_fee_rate"
            )
        org.conversion_fee_rate = req.conversion_fee_rate
    if req.default_fee_rate is not None:
        if org.kind != OrgKind.MERCHANT:
            raise FeeRateNotApplicable(
                "only merchants have a default fee rate", field="default_fee_rate"
            )
        org.default_fee_rate = req.default_fee_rate
    session.flush()
    return org


def active_organisation(session: Session, org_id: uuid.UUID) -> Party:
    """An organisation that may act now."""
    org = repository.party_by_id(session, org_id)
    if org is None:
        raise NotFound("unknown organisation")
    return must_act(org)


def must_act(org: Party) -> Party:
    """`org`, which must be active to act."""
    if org.status != "active":
        raise OrganisationInactive(f"organisation {org.name} is {org.status}")
    return org


def platform(session: Session) -> Party:
    """The platform organisation (central counterparty and fee earner)."""
    org = repository.platform_party(session)
    if org is None:
        raise NotFound("the platform organisation is not registered yet")
    return org
