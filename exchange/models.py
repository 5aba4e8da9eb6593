"""Bilateral rates, conversion quotes and conversions, checkouts and their refunds."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from clearing.core.db import Base, ExactDecimal
from clearing.core.models import UTCDateTime


class BilateralRate(Base):
    """Two issuers' agreed rate for one direction: `source_block` points of A give `target_block` of B."""

    __tablename__ = "bilateral_rates"

    source_program_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("programs.id"), primary_key=True
    )
    target_program_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("programs.id"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_block: Mapped[int] = mapped_column(BigInteger)
    target_block: Mapped[int] = mapped_column(BigInteger)
    min_source_points: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConversionQuote(Base):
    """A priced conversion offer, binding until `valid_until`, executed at most once."""

    __tablename__ = "conversion_quotes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    source_member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    target_member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    points_out: Mapped[int] = mapped_column(BigInteger)
    points_in: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    source_value: Mapped[Decimal] = mapped_column(ExactDecimal(24, 12))
    source_value_version: Mapped[int] = mapped_column(Integer)
    target_value: Mapped[Decimal] = mapped_column(ExactDecimal(24, 12))
    target_value_version: Mapped[int] = mapped_column(Integer)
    bilateral_version: Mapped[int | None] = mapped_column(Integer, default=None)
    fee_rate: Mapped[Decimal] = mapped_column(ExactDecimal(12, 8))
    fee_amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units the source issuer pays the platform."""
    settlement_amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units the source issuer owes the target issuer."""
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    entry_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("journal_entries.id"), default=None
    )
    """Set when executed; a quote executes once."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Checkout(Base):
    """A points payment at a merchant: authorised (hold), then captured or voided, then refunds."""

    __tablename__ = "checkouts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    hold_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("holds.id"))
    currency: Mapped[str] = mapped_column(String(3))
    order_total: Mapped[int] = mapped_column(BigInteger)
    """Minor units: the whole order."""
    points_amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units of the order paid with points; the rest is cash."""
    points: Mapped[int] = mapped_column(BigInteger)
    """Points held: ceil(points_amount / point value)."""
    point_value: Mapped[Decimal] = mapped_column(ExactDecimal(24, 12))
    point_value_version: Mapped[int] = mapped_column(Integer)
    fee_rate: Mapped[Decimal] = mapped_column(ExactDecimal(12, 8))
    status: Mapped[str] = mapped_column(String(12))
    """authorised, captured, voided, expired."""
    captured_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    captured_points: Mapped[int] = mapped_column(BigInteger, default=0)
    fee_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_points: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_fee: Mapped[int] = mapped_column(BigInteger, default=0)
    capture_entry_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("journal_entries.id"), default=None
    )
    reference: Mapped[str | None] = mapped_column(String(100), default=None)
    """The merchant's own order reference."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
