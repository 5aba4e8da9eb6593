"""Requests and results of organisations, programs, members and accruals."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from clearing.core.kinds import OrgKind
from clearing.core.schemas import (
    Code,
    Currency,
    ExternalId,
    FeeRate,
    MemberToken,
    MinorUnits,
    Model,
    Name,
    Points,
    Rate,
    Reference,
    Zone,
)


class OrganisationCreate(Model):
    kind: OrgKind
    name: Name
    currency: Currency
    zone: Zone = "Asia/Shanghai"
    conversion_fee_rate: FeeRate | None = None
    default_fee_rate: FeeRate | None = None


class OrganisationUpdate(Model):
    status: Literal["active", "suspended"] | None = None
    conversion_fee_rate: FeeRate | None = None
    default_fee_rate: FeeRate | None = None


class OrganisationOut(Model):
    id: uuid.UUID
    kind: str
    name: str
    currency: str
    status: str
    zone: str
    conversion_fee_rate: Decimal | None
    default_fee_rate: Decimal | None


class MerchantTermSet(Model):
    program: Code
    fee_rate: FeeRate


ExpiryPolicyName = Literal["rolling", "year_end"]
WholesaleRate = Annotated[Decimal, Field(gt=0, le=1, max_digits=12, decimal_places=8)]
NoticeDays = Annotated[int, Field(ge=1, le=366)]


class ProgramCreate(Model):
    code: Code
    name: Name
    point_value: Rate
    expiry_months: int | None = Field(default=None, ge=1, le=1200)
    expiry_policy: ExpiryPolicyName = "rolling"
    expiry_notice_days: NoticeDays | None = None
    enrol_on_accrual: bool = False


class PointValueCreate(Model):
    value: Rate
    effective_from: datetime | None = None


class PointValueOut(Model):
    program: str
    version: int
    value: Decimal
    currency: str
    effective_from: datetime


class ProgramOut(Model):
    code: str
    name: str
    issuer_id: uuid.UUID
    status: str
    currency: str
    expiry_months: int | None
    point_value: Decimal
    point_value_version: int
    expiry_policy: str = "rolling"
    expiry_notice_days: int | None = None
    enrol_on_accrual: bool = False


class MemberCreate(Model):
    external_id: ExternalId


class MemberOut(Model):
    program: str
    external_id: str
    status: str
    balance: int
    held: int
    available: int
    debt: int = 0
    """Points the member owes the program (a reversal of points already spent); later
    earnings repay it first."""
    tier: TierStandingOut | None = None
    """The tier held, its privileges and the progress to the next (None: no tiers)."""
    expiring: ExpiringSoon | None = None
    """Points expiring within 30/60/90 days (the member view; None where not read)."""


class MemberStatusUpdate(Model):
    status: Literal["active", "frozen", "closed"]
    """Frozen members neither earn nor spend (disputes); closed members are gone for good."""


class AccrualCreate(Model):
    program: Code
    external_id: ExternalId
    points: Points
    reference: Reference | None = None


class AccrualOut(Model):
    id: uuid.UUID
    entry_id: uuid.UUID
    program: str
    external_id: str
    points: int
    funding_org_id: uuid.UUID
    amount_owed: int
    """Minor units the funding merchant owes the issuer (0 when the issuer funds it)."""
    currency: str
    point_value_version: int
    expires_at: datetime | None


class AccrualBatchCreate(Model):
    items: list[AccrualCreate] = Field(min_length=1, max_length=100_000)


class AccrualBatchOut(Model):
    count: int
    points: int
    amount_owed: int
    accrual_ids: list[uuid.UUID]


class AccrualReversalCreate(Model):
    points: Points


class AccrualReversalOut(Model):
    accrual_id: uuid.UUID
    entry_id: uuid.UUID
    points: int
    amount_returned: int
    reversed_points_total: int
    points_taken: int = 0
    """What the member still had of `points` and gave back; the rest is `debt_recorded` or
    `written_off`, as the program chose."""
    debt_recorded: int = 0
    written_off: int = 0


class MemberLinkCreate(Model):
    source_program: Code
    source_external_id: ExternalId
    target_program: Code
    target_external_id: ExternalId
    link_token: MemberToken
    """The source member's consent: a link token minted by the source program's issuer."""


class MemberLinkOut(Model):
    id: uuid.UUID
    source_program: str
    source_external_id: str
    target_program: str
    target_external_id: str


class StatementLine(Model):
    entry_id: uuid.UUID
    kind: str
    booked_at: datetime
    points: int
    balance_after: int
    debt_recorded: int = 0
    """Points of a reversal the member did not have any more, now owed to the program."""
    written_off: int = 0
    """Points of a reversal the member did not have any more, not claimed (the program's loss)."""
    debt_repaid: int = 0
    counterparty: str | None = None
    """A transfer: the other member's external id."""
    fee: int = 0
    """A transfer: the points the sender paid the program on top of what it sent."""


class OrganisationPatch(OrganisationUpdate):
    """PATCH /organizations/{id}: status, fee rates and a merchant's per-program terms at once."""

    terms: list[MerchantTermSet] | None = Field(default=None, max_length=100)


class PaymentTokenCreate(Model):
    ttl_seconds: int | None = Field(default=None, ge=10, le=900)
    """Lifetime of the token; default 180 s (a payment code on the member's phone)."""
    max_amount: MinorUnits | None = None
    """The most one checkout may pay with points, in minor units; default no limit."""


class LinkTokenCreate(Model):
    ttl_seconds: int | None = Field(default=None, ge=10, le=3600)
    """Lifetime of the token; default 600 s."""


class MemberTokenIssued(Model):
    """What is kept of a minted token (as the idempotent result): everything but the token."""

    id: uuid.UUID
    purpose: str
    program: str
    external_id: str
    expires_at: datetime
    max_amount: int | None


class MemberTokenOut(MemberTokenIssued):
    token: str
    """Shown once to the member (e.g. as a QR code); the platform keeps only its SHA-256."""


class MerchantTrustSet(Model):
    checkout_without_token: bool
    """True: this merchant may spend the program's members' points without a payment token."""


class MerchantTrustOut(Model):
    program: str
    merchant_id: uuid.UUID
    checkout_without_token: bool


class AgreementCreate(Model):
    """A merchant's or an issuer's proposal of what the merchant may do with a program's points."""

    program: Code
    merchant_id: uuid.UUID | None = Field(
        default=None,
        description="The merchant (an issuer proposing names it; a merchant is itself)",
    )
    accept: bool = Field(description="The merchant may accept the program's points at checkout")
    fund: bool = Field(description="The merchant may fund accruals into the program")
    supply: bool = Field(
        default=False, description="The merchant may offer items in the program's points mall"
    )
    wholesale_rate: WholesaleRate | None = Field(
        default=None,
        description="Share of a supplied item's value the issuer pays per unit (needed to supply)",
    )
    daily_accept_cap: MinorUnits | None = None
    daily_fund_cap: MinorUnits | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None


class AgreementOut(Model):
    id: uuid.UUID
    program: str
    merchant_id: uuid.UUID
    version: int
    status: str
    accept: bool
    fund: bool
    supply: bool
    wholesale_rate: Decimal | None
    fee_rate: Decimal | None = Field(description="The merchant's fee rate for the program's points")
    daily_accept_cap: int | None
    daily_fund_cap: int | None
    valid_from: datetime
    valid_to: datetime | None
    proposed_by: uuid.UUID
    proposed_at: datetime
    approved_by: uuid.UUID | None
    approved_at: datetime | None


class InterchangeSet(Model):
    enabled: bool


class InterchangeOut(Model):
    issuer_id: uuid.UUID
    counterparty_id: uuid.UUID
    enabled: bool
    changed_at: datetime


# returns, adjustments, transfers -------------------------------------------------------------

SpentReversal = Literal["debt", "take_remaining"]
ReasonCode = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
Note = Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]


class ReturnPolicySet(Model):
    spent_reversal: SpentReversal
    """debt: the member owes what it no longer has; take_remaining: the rest is written off."""


class ReturnPolicyOut(Model):
    program: str
    spent_reversal: str


class EventRefundCreate(Model):
    spend: MinorUnits
    """The part of the purchase refunded now, minor units of the event's currency."""


class EventRefundOut(Model):
    event_id: uuid.UUID
    spend: int
    refunded_spend_total: int
    points: int
    """The event's points taken back by this refund (its cumulative share of the spend)."""
    points_taken: int
    debt_recorded: int
    written_off: int
    amount_returned: int
    entry_id: uuid.UUID | None


class AdjustmentCreate(Model):
    external_id: ExternalId
    direction: Literal["credit", "debit"]
    points: Points
    reason_code: ReasonCode
    note: Note = ""


class AdjustmentStepOut(Model):
    step: str
    org_id: uuid.UUID
    key_id: str
    at: datetime


class AdjustmentOut(Model):
    id: uuid.UUID
    program: str
    external_id: str
    direction: str
    points: int
    reason_code: str
    note: str
    status: str
    entry_id: uuid.UUID | None
    steps: list[AdjustmentStepOut]


class TransferRuleSet(Model):
    allowed: bool
    fee_points: int = Field(default=0, ge=0, le=1_000_000_000)
    """Flat fee per transfer in whole points, paid by the sender to the program."""
    min_points: int = Field(default=1, ge=1, le=1_000_000_000_000)
    max_points: int | None = Field(default=None, ge=1, le=1_000_000_000_000)


class TransferRuleOut(Model):
    program: str
    allowed: bool
    fee_points: int
    min_points: int
    max_points: int | None


class TransferCreate(Model):
    from_external_id: ExternalId
    to_external_id: ExternalId
    points: Points
    """What the receiver gets; the sender pays this plus the program's fee."""
    reference: Reference | None = None


class TransferOut(Model):
    entry_id: uuid.UUID
    program: str
    from_external_id: str
    to_external_id: str
    points: int
    fee: int


# tiers ---------------------------------------------------------------------------------------

Privilege = Annotated[str, Field(min_length=1, max_length=100)]
Multiplier = Annotated[Decimal, Field(gt=0, le=100, max_digits=12, decimal_places=6)]
Threshold = Annotated[int, Field(ge=1, le=10**15)]


class TierCreate(Model):
    code: Code
    name: Name
    rank: int = Field(ge=0, le=100)
    """0 is the base tier every member starts in; it must exist before any other."""
    multiplier: Multiplier = Decimal(1)
    qualify_points: Threshold | None = None
    """Qualifying points over a rolling 12 months that reach the tier."""
    qualify_spend: Threshold | None = None
    """Qualifying spend over a rolling 12 months, minor units of the issuer's currency."""
    privileges: list[Privilege] = Field(default_factory=list, max_length=50)


class TierChangeSet(Model):
    """A new definition of a tier: the fields given replace the current ones (null clears a
    threshold); its code and rank never change."""

    name: Name | None = None
    multiplier: Multiplier | None = None
    qualify_points: Threshold | None = None
    qualify_spend: Threshold | None = None
    privileges: list[Privilege] | None = Field(default=None, max_length=50)


class TierOut(Model):
    code: str
    name: str
    rank: int
    multiplier: Decimal
    qualify_points: int | None
    qualify_spend: int | None
    privileges: list[str]
    version: int
    changed_at: datetime


class MemberTierSet(Model):
    tier: Code


class TierMoveOut(Model):
    id: uuid.UUID
    program: str
    external_id: str
    from_tier: str | None
    to_tier: str
    reason: str
    """upgrade, downgrade or manual."""
    qualifying_points: int
    qualifying_spend: int
    changed_by_key: str | None
    changed_at: datetime


class NextTierOut(Model):
    code: str
    name: str
    qualify_points: int | None
    qualify_spend: int | None
    points_missing: int | None
    """Qualifying points still to earn to reach it by points (None: not reachable by points)."""
    spend_missing: int | None
    """Qualifying spend still to make to reach it by spend, minor units."""


class TierStandingOut(Model):
    code: str
    name: str
    rank: int
    multiplier: Decimal
    privileges: list[str]
    since: datetime | None
    """When the member moved to it (None: the base tier, held since enrolment)."""
    qualifying_points: int
    """Trailing 12 months: credited by accruals, net of their reversals."""
    qualifying_spend: int
    """Trailing 12 months: purchase events' spend net of refunds, minor units."""
    qualifies_for: str
    """The tier the figures reach today: the one the anniversary review would leave."""
    next_review: date
    """The member's next anniversary of enrolment (the issuer's zone): the only day it can lose
    a tier."""
    next_tier: NextTierOut | None


# expiry and enrolment at scale ---------------------------------------------------------------


class ProgramExpirySet(Model):
    """A program's expiry policy: it applies to points earned from now on."""

    expiry_policy: ExpiryPolicyName = "rolling"
    expiry_months: int | None = Field(default=None, ge=1, le=1200)
    """rolling only: months from earning to expiry; None: points never expire."""
    expiry_notice_days: NoticeDays | None = None
    enrol_on_accrual: bool = False


class ProgramExpiryOut(Model):
    program: str
    expiry_policy: str
    expiry_months: int | None
    expiry_notice_days: int | None
    enrol_on_accrual: bool


class ExpiringSoon(Model):
    """Points of a member expiring within 30, 60 and 90 days (each window includes the shorter,
    and points already due that the next expiry run takes)."""

    within_30_days: int
    within_60_days: int
    within_90_days: int


class ExpiringLot(Model):
    expires_at: datetime
    points: int


class MemberExpiringOut(Model):
    program: str
    external_id: str
    days: int
    points: int
    lots: list[ExpiringLot]


class ExpiringMember(Model):
    external_id: str
    points: int
    first_expires_at: datetime


class ProgramExpiringOut(Model):
    """A program's points expiring within `days`: totals, and one page of its members."""

    program: str
    days: int
    members: int
    points: int
    items: list[ExpiringMember]
    next: str | None = None


class ExpiryNoticeOut(Model):
    id: uuid.UUID
    program: str
    external_id: str
    expires_on: date
    expires_at: datetime
    points: int
    created_at: datetime


class MemberBatchCreate(Model):
    """Members to enrol, all or none."""

    items: list[MemberCreate] = Field(min_length=1, max_length=100_000)


class MemberBatchOut(Model):
    program: str
    enrolled: int


# MemberOut refers to standings and expiring points defined after it.
MemberOut.model_rebuild()
