"""The risk domain's tables: the decision log (and, per concept, the rules' own rows)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Index, Integer, SmallInteger, String, Text, Uuid
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
