"""Tables of the points mall: items, their offers and prices per program, stock, per-member
limits, orders and vouchers."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from clearing.core.db import Base, ExactDecimal
from clearing.core.models import UTCDateTime

ITEM_STATUSES = ("draft", "on_sale", "withdrawn")
FULFILMENTS = ("delivery", "voucher")
LIMIT_PERIODS = ("day", "month", "year", "ever")
ORDER_STATUSES = ("placed", "fulfilled", "cancelled", "returned")
VOUCHER_STATUSES = ("issued", "redeemed", "void")


class MallItem(Base):
    """Something members may redeem points for, offered by its owner: a program's issuer (for its
    own program) or a supplier merchant (in programs whose issuer agreed to it)."""

    __tablename__ = "mall_items"
    __table_args__ = (
        UniqueConstraint("owner_org_id", "sku"),
        CheckConstraint("status IN ('draft', 'on_sale', 'withdrawn')", name="status_known"),
        CheckConstraint("fulfilment IN ('delivery', 'voucher')", name="fulfilment_known"),
        CheckConstraint(
            "limit_period IS NULL OR limit_period IN ('day', 'month', 'year', 'ever')",
            name="limit_period_known",
        ),
        CheckConstraint("value_amount >= 0", name="value_not_negative"),
        CheckConstraint(
            "(member_limit IS NULL AND limit_period IS NULL)"
            " OR (member_limit > 0 AND limit_period IS NOT NULL)",
            name="member_limit_has_period",
        ),
        Index("ix_mall_items_owner", "owner_org_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner_org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    sku: Mapped[str] = mapped_column(String(64))
    """The owner's own code of the item."""
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    fulfilment: Mapped[str] = mapped_column(String(12))
    """delivery (the owner ships and gives a reference) or voucher (the platform issues a code)."""
    currency: Mapped[str] = mapped_column(String(3))
    value_amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units: the item's money value per unit (its wholesale price is a share of it)."""
    stock_limited: Mapped[bool] = mapped_column(Boolean)
    """False: unlimited stock (no `mall_stock` rows)."""
    sale_from: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    sale_to: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    """The sale window [sale_from, sale_to) of a flash sale; open-ended where None."""
    member_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    """Units one member may take per `limit_period` (in the program issuer's business dates)."""
    limit_period: Mapped[str | None] = mapped_column(String(8), default=None)
    status: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MallOffer(Base):
    """An item offered to one program's members: who may take it there."""

    __tablename__ = "mall_offers"
    __table_args__ = (
        CheckConstraint("min_balance >= 0", name="min_balance_not_negative"),
        Index("ix_mall_offers_program", "program_id", "item_id"),
    )

    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("mall_items.id"), primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"), primary_key=True)
    listed: Mapped[bool] = mapped_column(Boolean, default=True)
    min_tier_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("program_tiers.id"), default=None
    )
    """Only members in this tier or a higher one may take the item."""
    min_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    """Whole points of the program a member must hold (available) to redeem."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MallPrice(Base):
    """An item's price in one program, effective-dated like a point value: never changed, a new
    version supersedes it from its `effective_from`."""

    __tablename__ = "mall_prices"
    __table_args__ = (
        ForeignKeyConstraint(
            ["item_id", "program_id"], ["mall_offers.item_id", "mall_offers.program_id"]
        ),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("cash_amount >= 0", name="cash_not_negative"),
    )

    item_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)
    """Whole points of the program per unit."""
    cash_amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units (the program issuer's currency) the member also pays per unit; 0: points only."""
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


STOCK_SLOTS = 8
"""Rows an item's stock is split into: concurrent orders take units from different rows."""


class MallStock(Base):
    """Units of an item left to sell, in slots; the item's stock is their sum, never below zero."""

    __tablename__ = "mall_stock"
    __table_args__ = (CheckConstraint("remaining >= 0", name="remaining_not_negative"),)

    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("mall_items.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    remaining: Mapped[int] = mapped_column(BigInteger)


class MallLimitUse(Base):
    """Units of an item a member has taken in one limit period (cancellations give them back)."""

    __tablename__ = "mall_limit_uses"
    __table_args__ = (CheckConstraint("taken >= 0", name="taken_not_negative"),)

    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("mall_items.id"), primary_key=True)
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    """The period's key: a business date, a month (2026-11), a year (2026) or 'ever'."""
    taken: Mapped[int] = mapped_column(Integer)


class MallOrder(Base):
    """A member's order of an item: its points redeemed and stock taken when placed, at the
    price in force then; fulfilled, cancelled or returned afterwards."""

    __tablename__ = "mall_orders"
    __table_args__ = (
        CheckConstraint(
            "status IN ('placed', 'fulfilled', 'cancelled', 'returned')", name="status_known"
        ),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "returned_quantity >= 0 AND returned_quantity <= quantity", name="returned_within"
        ),
        Index("ix_mall_orders_owner", "owner_org_id", "status", "created_at"),
        Index("ix_mall_orders_member", "member_id", "created_at"),
        Index("ix_mall_orders_program", "program_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    item_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("mall_items.id"))
    program_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programs.id"))
    member_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("members.id"))
    issuer_org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    owner_org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    price_version: Mapped[int] = mapped_column(Integer)
    unit_points: Mapped[int] = mapped_column(BigInteger)
    unit_cash: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)
    """Whole points redeemed: unit_points x quantity."""
    cash_amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units the member pays the issuer besides the points: unit_cash x quantity."""
    currency: Mapped[str] = mapped_column(String(3))
    wholesale_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(12, 8), default=None)
    wholesale_unit: Mapped[int] = mapped_column(BigInteger, default=0)
    wholesale_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    """Minor units the issuer owes the supplier: wholesale_unit x quantity (0 for its own item)."""
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    status: Mapped[str] = mapped_column(String(12))
    limit_period: Mapped[str | None] = mapped_column(String(10), default=None)
    """The member-limit period the order counted in (given back on cancellation)."""
    redemption_entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"))
    returned_quantity: Mapped[int] = mapped_column(Integer, default=0)
    returned_points: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_cash: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_wholesale: Mapped[int] = mapped_column(BigInteger, default=0)
    delivery_reference: Mapped[str | None] = mapped_column(String(200), default=None)
    reference: Mapped[str | None] = mapped_column(String(100), default=None)
    """The issuer's own order reference."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class MallVoucher(Base):
    """A code the platform issues for one unit of a voucher item: unguessable, unique, redeemed
    once by the item's owner."""

    __tablename__ = "mall_vouchers"
    __table_args__ = (
        CheckConstraint("status IN ('issued', 'redeemed', 'void')", name="status_known"),
        Index("ix_mall_vouchers_order", "order_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("mall_orders.id"))
    owner_org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    code: Mapped[str] = mapped_column(String(24), unique=True)
    status: Mapped[str] = mapped_column(String(10))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    redeemed_key: Mapped[str | None] = mapped_column(String(200), default=None)
