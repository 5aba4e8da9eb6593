"""The risk domain's tables: the decision log (and, per concept, the rules' own rows)."""

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
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from clearing.core.db import Base, ExactDecimal
from clearing.core.models import UTCDateTime


class RiskDecision(Base):
    """One decision of a risk control: a decline, a review, or the allow that follows a review;
    with the rule and version that gave it and the inputs it saw."""

    __tablename__ = "risk_decisions"
    __table_args__ = (
        Index("ix_risk_decisions_member", "member_id", "decided_at"),
        Index("ix_risk_decisions_org", "caller_org_id", "decided_at"),
        Index("ix_risk_decisions_day", "decided_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(24))
    verdict: Mapped[str] = mapped_column(String(12))
    outcome: Mapped[str] = mapped_column(String(64))
    """`declined`, `pending_review`, `approved:<review>`, `rejected:<review>`."""
    code: Mapped[str | None] = mapped_column(String(64))
    rule_id: Mapped[str | None] = mapped_column(String(120))
    rule_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    caller_org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    caller_key_id: Mapped[str | None] = mapped_column(String(200))
    program_code: Mapped[str | None] = mapped_column(String(64))
    member_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    merchant_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    issuer_org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)


class Review(Base):
    """An operation a risk control sent to an operator: its request (to complete it exactly
    once if approved), who asked, and the hold on the member's points while it waits."""

    __tablename__ = "risk_reviews"
    __table_args__ = (Index("ix_risk_reviews_status", "status", "requested_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    operation: Mapped[str] = mapped_column(String(40))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    key_id: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(12))
    """`pending`, `approved`, `rejected`."""
    code: Mapped[str | None] = mapped_column(String(64))
    rule_id: Mapped[str | None] = mapped_column(String(120))
    rule_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    member_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    hold_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    points_held: Mapped[int] = mapped_column(BigInteger, default=0)
    decided_by_org: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    decided_by_key: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AgreementUsage(Base):
    """How much of an agreement's daily caps a business day has used (money, minor units);
    its row is locked while an operation counts against it."""

    __tablename__ = "risk_agreement_usage"

    agreement_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    funded: Mapped[int] = mapped_column(BigInteger, default=0)


# limits (rules as data) ------------------------------------------------------------------------


class LimitVersion(Base):
    """One version of a limit rule: a kind of control at a scope, with its decline and review
    thresholds; every change is a new version (who and when), the latest one is in force."""

    __tablename__ = "risk_limit_rules"
    __table_args__ = (
        PrimaryKeyConstraint("rule_id", "version"),
        Index("ix_risk_limit_rules_slot", "kind", "action", "period", "scope", "scope_id"),
    )

    rule_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    version: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(16))
    """`platform`, `organisation` or `program`."""
    scope_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """The organisation or program; null at platform scope."""
    kind: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(24))
    period: Mapped[str] = mapped_column(String(8))
    """`minute`, `hour` or `day` for a member's rolling window; `day` for the daily kinds;
    empty for the kinds that look at one operation."""
    enabled: Mapped[bool] = mapped_column(Boolean)
    max_count: Mapped[int | None] = mapped_column(BigInteger)
    max_points: Mapped[int | None] = mapped_column(BigInteger)
    """Whole points of the program."""
    max_amount: Mapped[int | None] = mapped_column(BigInteger)
    """Minor units of the operation's currency."""
    max_share: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    review_count: Mapped[int | None] = mapped_column(BigInteger)
    review_points: Mapped[int | None] = mapped_column(BigInteger)
    review_amount: Mapped[int | None] = mapped_column(BigInteger)
    review_share: Mapped[Decimal | None] = mapped_column(ExactDecimal())
    allowance: Mapped[int | None] = mapped_column(BigInteger)
    """Refund share: minor units a merchant may refund in a day whatever its captures."""
    trailing_days: Mapped[int | None] = mapped_column(Integer)
    """Refund share: the days of captures the share is taken of."""
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by_org: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_by_key: Mapped[str | None] = mapped_column(String(200))


class LimitCounter(Base):
    """What a limit has counted in one bucket of time (bucket 0: the key's lock row)."""

    __tablename__ = "risk_limit_counters"
    __table_args__ = (PrimaryKeyConstraint("key", "bucket"),)

    key: Mapped[str] = mapped_column(String(120))
    bucket: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)


# the daily anomaly scan -----------------------------------------------------------------------

ANOMALY_STATUSES = ("open", "cleared")


class Anomaly(Base):
    """An outlier the daily scan found: the scan's part of the review queue, cleared by an operator."""

    __tablename__ = "risk_anomalies"
    __table_args__ = (
        # A second run of the same day finds the same flags and writes none of them twice.
        UniqueConstraint(
            "business_date",
            "subject_kind",
            "subject_id",
            "feature",
            name="uq_risk_anomalies_day_subject_feature",
        ),
        CheckConstraint("status IN ('open', 'cleared')", name="status_known"),
        CheckConstraint("subject_kind IN ('member', 'organisation')", name="subject_kind_known"),
        Index("ix_risk_anomalies_status_date", "status", "business_date"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    business_date: Mapped[date] = mapped_column(Date)
    subject_kind: Mapped[str] = mapped_column(String(12))
    """'member' or 'organisation'."""
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """members.id or organisations.id."""
    program_code: Mapped[str | None] = mapped_column(String(40), default=None)
    feature: Mapped[str] = mapped_column(String(40))
    """risk.anomalies.Feature."""
    observed: Mapped[Decimal] = mapped_column(ExactDecimal(24, 6))
    """The feature's value that day (points, a share or minutes, as the feature measures)."""
    baseline: Mapped[Decimal] = mapped_column(ExactDecimal(24, 6))
    """What the subject (or its peers) usually shows, in the same unit."""
    score: Mapped[Decimal] = mapped_column(ExactDecimal(24, 6))
    """How far out: a modified z-score, or the feature's own ratio (see the feature)."""
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="open")
    cleared_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    """The operator organisation that cleared it."""
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# freezes and the blocklist (risk/freezes.py) -------------------------------------------------


class Freeze(Base):
    """An operator's freeze of a member, a program or an organisation (every operation touching
    it is declined, a void excepted), or of part of a member's points (held by a ledger hold
    until the freeze is lifted); with who froze and lifted it, when and why."""

    __tablename__ = "risk_freezes"
    __table_args__ = (
        Index("ix_risk_freezes_active", "lifted_at", "subject_id"),
        Index("ix_risk_freezes_subject", "subject_id", "frozen_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    subject: Mapped[str] = mapped_column(String(16))
    """`member`, `program` or `organisation`."""
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    program_code: Mapped[str | None] = mapped_column(String(64))
    """The program of a frozen member or program (for people reading the list)."""
    external_id: Mapped[str | None] = mapped_column(String(100))
    """The issuer's id of a frozen member."""
    points: Mapped[int | None] = mapped_column(BigInteger)
    """Whole points of the member's program frozen; None: the whole subject is frozen."""
    hold_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """The ledger hold that keeps the frozen points from being spent."""
    reason: Mapped[str] = mapped_column(Text)
    frozen_by_org: Mapped[uuid.UUID] = mapped_column(Uuid)
    frozen_by_key: Mapped[str | None] = mapped_column(String(200))
    frozen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lifted_reason: Mapped[str | None] = mapped_column(Text)
    lifted_by_org: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    lifted_by_key: Mapped[str | None] = mapped_column(String(200))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BlocklistEntry(Base):
    """A member id a program's operations refuse (`blocklisted`), whether or not the member
    exists yet; with who added and removed it, when and why."""

    __tablename__ = "risk_blocklist"
    __table_args__ = (Index("ix_risk_blocklist_program", "program_id", "external_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    program_code: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    added_by_org: Mapped[uuid.UUID] = mapped_column(Uuid)
    added_by_key: Mapped[str | None] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    removed_reason: Mapped[str | None] = mapped_column(Text)
    removed_by_org: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    removed_by_key: Mapped[str | None] = mapped_column(String(200))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# settlement risk (risk/exposure.py) ---------------------------------------------------------


class ExposureCap(Base):
    """One version of a party's net debit cap in a currency: an explicit limit, or collateral
    (prefunding) times a multiple; each change is a new version, with who and when."""

    __tablename__ = "risk_exposure_caps"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    """1, 2, 3... per party and currency; the highest is in force."""
    cap: Mapped[int | None] = mapped_column(BigInteger)
    """The net debit the party may run up in the open window, minor units; None: uncapped."""
    limit_amount: Mapped[int | None] = mapped_column(BigInteger)
    """An explicit cap, minor units (else the cap comes from collateral)."""
    collateral: Mapped[int | None] = mapped_column(BigInteger)
    """Collateral or prefunding the operator recorded, minor units."""
    multiple: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 4))
    """Cap = floor(collateral x multiple)."""
    reason: Mapped[str] = mapped_column(Text, default="")
    set_by_org: Mapped[uuid.UUID] = mapped_column(Uuid)
    set_by_key: Mapped[str | None] = mapped_column(String(200))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ExposurePosition(Base):
    """A running share of a party's net debit in a currency over one business day: debits the
    party takes on add, debits owed to it subtract. A capped party's increases go to slot 0
    (locked, so concurrent operations serialise on its cap); everything else is spread over
    slots 1.. so that busy parties do not queue on one row."""

    __tablename__ = "risk_exposure_positions"

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    net: Mapped[int] = mapped_column(BigInteger)
    """Minor units of `currency`; > 0: the party owes."""


class SettlementPayment(Base):
    """The operator's record that a party paid (or received) its net position of a published
    settlement batch."""

    __tablename__ = "risk_settlement_payments"

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """A settlement batch (`SB-{currency}-{YYYYMMDD}`)."""
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))
    """`paid` (the party paid its debit) or `received` (the platform paid its credit)."""
    reference: Mapped[str] = mapped_column(Text, default="")
    """The bank transfer's reference, as the operator gave it."""
    recorded_by_org: Mapped[uuid.UUID] = mapped_column(Uuid)
    recorded_by_key: Mapped[str | None] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SettlementRestriction(Base):
    """A party restricted because it did not pay a batch's debit by the deadline: no operation
    that increases its debit passes until it has paid (then the restriction is lifted)."""

    __tablename__ = "risk_settlement_restrictions"
    __table_args__ = (Index("ix_risk_settlement_restrictions_open", "org_id", "lifted_at"),)

    org_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """The batch's publication plus the payment deadline."""
    restricted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    restricted_by: Mapped[str] = mapped_column(String(60))
    """`system:payment-deadline` (the scheduled job)."""
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lifted_by_org: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    lifted_by_key: Mapped[str | None] = mapped_column(String(200))
