"""The risk domain's tables: the decision log (and, per concept, the rules' own rows)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clearing.core.db import Base
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
