"""Organisations, programs, point values, merchant acceptance terms, members."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from clearing.core.db import Base, ExactDecimal
from clearing.core.kinds import OrgKind
from clearing.core.models import UTCDateTime

ORG_KINDS = tuple(kind.value for kind in OrgKind)
ORG_STATUSES = ("active", "suspended")
MEMBER_STATUSES = ("active", "frozen", "closed")
TOKEN_PURPOSES = ("payment", "link")


class Organisation(Base):
    """An issuer, a merchant or the platform itself."""

    __tablename__ = "organisations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    """Settlement currency, ISO 4217."""
    status: Mapped[str] = mapped_column(String(12), default="active")
    zone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    """IANA zone for the party's business dates."""
    conversion_fee_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 8), default=None)
    """Platform only: share of the converted value the platform keeps."""
    default_fee_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 8), default=None)
    """Merchants only: fee on checkout value when no program-specific term exists."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Program(Base):
    """An issuer's points currency."""

    __tablename__ = "programs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    issuer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default="active")
    expiry_months: Mapped[int | None] = mapped_column(Integer, default=None)
    """Points expire this many months after earning; None: never."""
    expiry_policy: Mapped[str] = mapped_column(
        String(12), default="rolling", server_default="rolling"
    )
    """rolling: `expiry_months` after earning (issuers/expiry.py); year_end: points earned in
    year Y (issuer's zone) expire at the end of year Y+1."""
    expiry_notice_days: Mapped[int | None] = mapped_column(Integer, default=None)
    """The daily job records a notice for members whose points expire within this many days;
    None: no notices."""
    enrol_on_accrual: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """An accrual for an unknown external id enrols the member in the same transaction."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    spent_reversal: Mapped[str] = mapped_column(
        String(16), default="take_remaining", server_default="take_remaining"
    )
    """A reversal of points already spent: `debt` (the member owes the rest, recovered from
    later earnings) or `take_remaining` (the rest is written off); set by the issuer."""


class PointValue(Base):
    """The money value of one point from `effective_from` on; versions are never changed."""

    __tablename__ = "point_values"

    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[Decimal] = mapped_column(ExactDecimal(24, 12))
    """Major units of the issuer's currency per point (e.g. 0.005 CNY)."""
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MerchantTerm(Base):
    """A merchant's terms for one program's points at checkout: its fee rate (set by the
    operator) and whether the program's issuer lets it check out without a payment token."""

    __tablename__ = "merchant_terms"
    __table_args__ = (UniqueConstraint("merchant_id", "program_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    fee_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 8), default=None)
    """None: the merchant's default fee rate (a term may exist only to record the issuer's trust)."""
    checkout_without_token: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    """Set by the issuer only: the merchant may spend members' points without their consent."""


class Member(Base):
    """A customer of an issuer in one program, known by the issuer's own id."""

    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("program_id", "external_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    external_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(12), default="active")
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberLink(Base):
    """The target issuer's consent that its member may receive points converted from a source member."""

    __tablename__ = "member_links"
    __table_args__ = (UniqueConstraint("source_member_id", "target_member_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    source_member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    target_member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberToken(Base):
    """A one-time, short-lived token an issuer mints for its member: the member's consent to one
    checkout (purpose payment) or to one link of another issuer's member to it (purpose link)."""

    __tablename__ = "member_tokens"
    __table_args__ = (
        CheckConstraint("purpose IN ('payment', 'link')", name="purpose_known"),
        Index("ix_member_tokens_member_id", "member_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(12))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 (hex) of the token; the token itself is never stored."""
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    max_amount: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Payment only: the most a checkout may pay with points, minor units of the issuer's currency."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    used_by_org_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organisations.id"), default=None
    )
    """The merchant (payment) or target issuer (link) that used it."""


class Accrual(Base):
    """Points credited to a member, funded by the issuer or by a merchant."""

    __tablename__ = "accruals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    funding_org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    reversed_points: Mapped[int] = mapped_column(BigInteger, default=0)
    lot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("lots.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """An organisation's Ed25519 public key for the signed API; several may be active at once."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_org_id", "org_id"),)

    keyid: Mapped[str] = mapped_column(String(100), primary_key=True)
    """RFC 7638 JWK thumbprint of the public key: the same key always has the same id."""
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    public_key_pem: Mapped[str] = mapped_column(Text)
    """SubjectPublicKeyInfo PEM; the platform never sees a partner's private key."""
    status: Mapped[str] = mapped_column(String(12), default="active")
    """active, revoked (revocation is final)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


AGREEMENT_STATUSES = ("proposed", "active", "superseded", "ended")


class MerchantAgreement(Base):
    """What a merchant may do with a program's points: accept them at checkout, fund accruals
    into it; in force only once both sides agreed (one proposes, the other approves).

    Each change is a new version; approving one supersedes the version in force. The fee the
    merchant pays is its merchant term's (`MerchantTerm.fee_rate`), not written twice here.
    """

    __tablename__ = "merchant_agreements"
    __table_args__ = (
        UniqueConstraint("merchant_id", "program_id", "version"),
        CheckConstraint(
            "status IN ('proposed', 'active', 'superseded', 'ended')", name="status_known"
        ),
        Index("ix_merchant_agreements_in_force", "merchant_id", "program_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12))
    accept: Mapped[bool] = mapped_column(Boolean)
    fund: Mapped[bool] = mapped_column(Boolean)
    daily_accept_cap: Mapped[int | None] = mapped_column(BigInteger)
    """Money (minor units) of the program's points the merchant may capture per business day."""
    daily_fund_cap: Mapped[int | None] = mapped_column(BigInteger)
    """Money (minor units) of accruals the merchant may fund into the program per business day."""
    supply: Mapped[bool] = mapped_column(Boolean, default=False)
    """The merchant may offer items in the program's points mall."""
    wholesale_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 8))
    """Share of a supplied item's value the program's issuer pays the merchant per unit redeemed."""
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
    proposed_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organisations.id"))
    approved_key: Mapped[str | None] = mapped_column(String(200))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Interchange(Base):
    """An issuer's consent to exchange points with another issuer: value-based conversion
    between their programs needs both sides' consent; a bilateral rate into a program needs
    the consent of the program's issuer towards the rate's publisher."""

    __tablename__ = "interchange"
    __table_args__ = (UniqueConstraint("issuer_id", "counterparty_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    issuer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    counterparty_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    enabled: Mapped[bool] = mapped_column(Boolean)
    changed_by_key: Mapped[str | None] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProgramTier(Base):
    """A tier of a program (standard, silver, gold): its earning multiplier, what qualifies a
    member for it, and the privileges it gives (the mall reads them)."""

    __tablename__ = "program_tiers"
    __table_args__ = (
        UniqueConstraint("program_id", "code", name="uq_program_tiers_code"),
        UniqueConstraint("program_id", "rank", name="uq_program_tiers_rank"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    rank: Mapped[int] = mapped_column(Integer)
    """0 is the base tier every member starts in; higher ranks are better."""
    multiplier: Mapped[Decimal] = mapped_column(ExactDecimal(12, 6))
    """Earning multiplier applied to points earned by purchase rules (e.g. 1.5 for silver)."""
    qualify_points: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Qualifying points over a rolling 12 months that reach this tier; None: not by points."""
    qualify_spend: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Qualifying spend (minor units of the issuer's currency) over a rolling 12 months."""
    privileges: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberTier(Base):
    """The tier a member holds now (a member without a row holds the program's base tier)."""

    __tablename__ = "member_tiers"

    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("program_tiers.id"))
    since: Mapped[datetime] = mapped_column(UTCDateTime)


class ProgramEvent(Base):
    """A purchase or behaviour event posted to a program, with the points its rules earned and
    the explanation of how (every rule, multiplier and campaign that applied, in order)."""

    __tablename__ = "program_events"
    __table_args__ = (
        Index("ix_program_events_member", "member_id", "occurred_at"),
        Index("ix_program_events_program_kind", "program_id", "kind", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(40))
    """`purchase`, or a behaviour event's name (sign_up, check_in, referral, or the issuer's own)."""
    reference: Mapped[str | None] = mapped_column(String(100), default=None)
    """The partner's own reference for the event (an order or transaction id)."""
    posted_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    spend: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Purchases: the amount spent, minor units of `currency`."""
    currency: Mapped[str | None] = mapped_column(String(3), default=None)
    points: Mapped[int] = mapped_column(BigInteger)
    """All the points the event earned, campaign bonuses included (credited by `accrual_id`)."""
    accrual_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accruals.id"), default=None)
    """The one accrual that credited `points`; None when the event earned nothing."""
    explanation: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    refunded_spend: Mapped[int] = mapped_column(BigInteger, default=0)
    """Purchases: the part of `spend` refunded so far, minor units."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


SPENT_REVERSALS = ("debt", "take_remaining")
DEBT_MOVEMENTS = ("recorded", "written_off", "repaid")


class MemberDebt(Base):
    """Points a member owes its program: a reversal took more than the member had left."""

    __tablename__ = "member_debts"
    __table_args__ = (CheckConstraint("points >= 0", name="points_not_negative"),)

    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)
    """Whole points still owed; later accruals of the member repay them first."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberDebtMovement(Base):
    """A step of a member's debt, or a part of a reversal written off, by the entry that made it."""

    __tablename__ = "member_debt_movements"
    __table_args__ = (
        CheckConstraint("kind IN ('recorded', 'written_off', 'repaid')", name="kind_known"),
        CheckConstraint("points > 0", name="points_positive"),
        Index("ix_member_debt_movements_member", "member_id", "entry_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"))
    kind: Mapped[str] = mapped_column(String(12))
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Adjustment(Base):
    """A manual credit or debit of a member's points, proposed by one key of the issuer and
    approved (posted) or rejected by another."""

    __tablename__ = "adjustments"
    __table_args__ = (
        CheckConstraint("direction IN ('credit', 'debit')", name="direction_known"),
        CheckConstraint("status IN ('proposed', 'approved', 'rejected')", name="status_known"),
        CheckConstraint("points > 0", name="points_positive"),
        Index("ix_adjustments_program", "program_id", "proposed_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    direction: Mapped[str] = mapped_column(String(6))
    points: Mapped[int] = mapped_column(BigInteger)
    reason_code: Mapped[str] = mapped_column(String(40))
    note: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(12))
    proposed_key: Mapped[str] = mapped_column(String(100))
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    entry_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("journal_entries.id"), default=None
    )


class AdjustmentStep(Base):
    """One step of an adjustment (proposed, approved, rejected): who, with which key, when."""

    __tablename__ = "adjustment_steps"
    __table_args__ = (
        CheckConstraint("step IN ('proposed', 'approved', 'rejected')", name="step_known"),
        Index("ix_adjustment_steps_adjustment", "adjustment_id", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    adjustment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("adjustments.id"))
    step: Mapped[str] = mapped_column(String(12))
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    key_id: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class TransferRule(Base):
    """Whether members of a program may give each other points, at what fee and within what
    bounds per transfer (no row: transfers are not allowed)."""

    __tablename__ = "program_transfer_rules"
    __table_args__ = (
        CheckConstraint("fee_points >= 0", name="fee_not_negative"),
        CheckConstraint("min_points >= 1", name="min_positive"),
        CheckConstraint("max_points IS NULL OR max_points >= min_points", name="max_not_below_min"),
    )

    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    allowed: Mapped[bool] = mapped_column(Boolean)
    fee_points: Mapped[int] = mapped_column(BigInteger)
    """Whole points the sender pays per transfer on top of what it sends, to the program."""
    min_points: Mapped[int] = mapped_column(BigInteger)
    max_points: Mapped[int | None] = mapped_column(BigInteger, default=None)
    changed_key: Mapped[str | None] = mapped_column(String(100), default=None)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


TIER_CHANGE_REASONS = ("upgrade", "downgrade", "manual")


class TierChange(Base):
    """A move of a member from one tier to another, with what the member qualified on then."""

    __tablename__ = "tier_changes"
    __table_args__ = (
        CheckConstraint("reason IN ('upgrade', 'downgrade', 'manual')", name="reason_known"),
        Index("ix_tier_changes_member", "member_id", "changed_at"),
        Index("ix_tier_changes_program", "program_id", "changed_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    from_tier_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("program_tiers.id"))
    """None only if the program had no base tier when the member moved."""
    to_tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("program_tiers.id"))
    reason: Mapped[str] = mapped_column(String(12))
    """upgrade (at once, or by an anniversary review that found one missed), downgrade (only
    by the anniversary review), manual (the issuer placed the member)."""
    qualifying_points: Mapped[int] = mapped_column(BigInteger)
    """Qualifying points of the trailing 12 months at the move (see issuers/qualification.py)."""
    qualifying_spend: Mapped[int] = mapped_column(BigInteger)
    """Qualifying spend of the trailing 12 months at the move, minor units."""
    changed_by_key: Mapped[str | None] = mapped_column(String(200), default=None)
    """Manual moves: the issuer's signing key."""
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProgramTierVersion(Base):
    """Every definition a tier had: version 1 at creation, one more per change."""

    __tablename__ = "program_tier_versions"

    tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("program_tiers.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    multiplier: Mapped[Decimal] = mapped_column(ExactDecimal(12, 6))
    qualify_points: Mapped[int | None] = mapped_column(BigInteger)
    qualify_spend: Mapped[int | None] = mapped_column(BigInteger)
    privileges: Mapped[list[str]] = mapped_column(JSON)
    changed_by_key: Mapped[str | None] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Qualification sums a member's accruals of the trailing 12 months on every tiered accrual, and
# the anniversary review finds a program's members by their enrolment instant.
Index("ix_accruals_member_created", Accrual.member_id, Accrual.created_at)
Index("ix_members_program_created", Member.program_id, Member.created_at)


class ExpiryNotice(Base):
    """A member's points expiring on one day (issuer's zone), recorded once by the daily job
    for the issuer to read (and, later, for outbound events to deliver)."""

    __tablename__ = "expiry_notices"
    __table_args__ = (
        UniqueConstraint("member_id", "expires_on"),
        Index("ix_expiry_notices_program_id", "program_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    expires_on: Mapped[date] = mapped_column(Date)
    """The day the points expire, in the issuer's zone."""
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """The first instant that day at which some of them expire."""
    points: Mapped[int] = mapped_column(BigInteger)
    """Whole points of the program due that day when the notice was recorded."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EarningBook(Base):
    """One version of a program's earning rules (its spend rules, behaviour events, minimum
    spend and caps), in force from `effective_from` until the next version's; never changed."""

    __tablename__ = "earning_books"
    __table_args__ = (UniqueConstraint("program_id", "version", name="uq_earning_books_version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    min_spend: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Minor units of the issuer's currency a purchase must reach to earn by spend rules."""
    day_cap: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Most points the rules pay one member per business day (issuer's zone); None: no cap."""
    month_cap: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Most points the rules pay one member per calendar month (issuer's zone); None: no cap."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EarningRule(Base):
    """A rule of an earning book: a spend rule (points per major currency unit, for purchases
    matching its selectors) or a behaviour event (fixed points, with a frequency limit)."""

    __tablename__ = "earning_rules"
    __table_args__ = (
        CheckConstraint("kind IN ('spend', 'behaviour')", name="kind_known"),
        UniqueConstraint("book_id", "position", name="uq_earning_rules_position"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    book_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("earning_books.id"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(12))
    code: Mapped[str] = mapped_column(String(40))
    """Spend rules: the rule's name; behaviours: the event's name (sign_up, check_in, ...)."""
    rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(18, 6), default=None)
    """Spend rules: points per major unit of the issuer's currency spent."""
    product_line: Mapped[str | None] = mapped_column(String(40), default=None)
    merchant_category: Mapped[str | None] = mapped_column(String(40), default=None)
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organisations.id"), default=None
    )
    channel: Mapped[str | None] = mapped_column(String(40), default=None)
    points: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Behaviours: the points the event earns."""
    frequency: Mapped[str | None] = mapped_column(String(8), default=None)
    """Behaviours: once, day, month, year (business periods of the issuer's zone) or None."""
    max_per_period: Mapped[int | None] = mapped_column(Integer, default=None)
    streak_days: Mapped[int | None] = mapped_column(Integer, default=None)
    """Behaviours: every `streak_days`-th consecutive day of the event pays `streak_points`."""
    streak_points: Mapped[int | None] = mapped_column(BigInteger, default=None)
    referee_points: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Referral: the points the referred member earns (once per member)."""


class Campaign(Base):
    """A campaign of a program: when it runs (a window, optionally recurring days in the
    issuer's zone), whom it targets (tiers, membership age), what it pays (a multiplier of the
    rules' base points or fixed bonus points) on which events, and its points budget."""

    __tablename__ = "campaigns"
    __table_args__ = (
        UniqueConstraint("program_id", "code", name="uq_campaigns_code"),
        CheckConstraint(
            "kind IN ('multiplier', 'first_purchase', 'spend_bonus')", name="kind_known"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    """Campaigns are considered (and their budgets drawn) by priority, then code."""
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    days_of_month: Mapped[list[int]] = mapped_column(JSON, default=list)
    """Recurring: only on these days of the month (issuer's zone); empty: every day."""
    weekdays: Mapped[list[int]] = mapped_column(JSON, default=list)
    """Recurring: only on these ISO weekdays (1 Monday .. 7 Sunday); empty: every day."""
    multiplier: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 6), default=None)
    bonus_points: Mapped[int | None] = mapped_column(BigInteger, default=None)
    min_spend: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Spend X get Y (and any kind): minor units a purchase must reach."""
    tiers: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Targeted tier codes; empty: every member."""
    min_member_days: Mapped[int | None] = mapped_column(Integer, default=None)
    max_member_days: Mapped[int | None] = mapped_column(Integer, default=None)
    """Membership age in days at the event, bounds inclusive."""
    budget: Mapped[int] = mapped_column(BigInteger)
    """Most points the campaign pays in all."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignBudget(Base):
    """One slot of a campaign's budget and what it has paid: the rows paying events lock. A
    budget is split into slots so that concurrent events lock different rows; no slot pays past
    its share, so the campaign never pays past its budget."""

    __tablename__ = "campaign_budgets"
    __table_args__ = (CheckConstraint("paid >= 0 AND paid <= budget", name="within_budget"),)

    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    budget: Mapped[int] = mapped_column(BigInteger)
    paid: Mapped[int] = mapped_column(BigInteger, default=0)


class CampaignAward(Base):
    """Points a campaign paid on one event (campaign figures: points paid, members reached)."""

    __tablename__ = "campaign_awards"
    __table_args__ = (Index("ix_campaign_awards_campaign", "campaign_id", "member_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id"))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("program_events.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EarningCounter(Base):
    """What one member has earned under one key (a cap's day or month, a behaviour's period,
    a streak, a referral, first purchase): the row that frequency limits and caps lock."""

    __tablename__ = "earning_counters"

    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    last_day: Mapped[date | None] = mapped_column(Date, default=None)
    """Streaks: the business day the event last counted."""
