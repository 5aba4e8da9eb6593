"""Requests and results of the points mall: items, offers and prices, orders, vouchers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from clearing.core.schemas import Code, ExternalId, Model, Name, Reference

Fulfilment = Literal["delivery", "voucher"]
ItemStatus = Literal["draft", "on_sale", "withdrawn"]
LimitPeriod = Literal["day", "month", "year", "ever"]
OrderStatus = Literal["placed", "fulfilled", "cancelled", "returned"]
Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Units = Annotated[int, Field(strict=True, gt=0, le=1_000_000_000, description="Units of an item")]
OrderUnits = Annotated[
    int, Field(strict=True, gt=0, le=100, description="Units of one order (a voucher each)")
]
MoneyOrZero = Annotated[
    int, Field(strict=True, ge=0, le=10**15 - 1, description="Money in minor units (fen)")
]
PointsOrZero = Annotated[int, Field(strict=True, ge=0, le=10**15 - 1, description="Whole points")]
ItemPoints = Annotated[int, Field(strict=True, gt=0, le=10**15 - 1, description="Whole points")]
VoucherCode = Annotated[str, Field(min_length=4, max_length=40, pattern=r"^[A-Za-z0-9 -]+$")]


# catalogue -----------------------------------------------------------------------------------


class ItemCreate(Model):
    """A new item of the calling organisation (an issuer, or a supplier merchant)."""

    sku: Sku
    title: Name
    description: str = Field(default="", max_length=4000)
    fulfilment: Fulfilment = "delivery"
    value_amount: MoneyOrZero = Field(
        description="The item's money value per unit, in the owner's currency (minor units)"
    )
    stock: PointsOrZero | None = Field(default=None, description="Units to sell; None: unlimited")
    sale_from: datetime | None = None
    sale_to: datetime | None = None
    member_limit: Units | None = Field(default=None, description="Units one member may take")
    limit_period: LimitPeriod | None = None
    status: ItemStatus = "draft"


class ItemUpdate(Model):
    """Changes to an item; fields left out stay as they are."""

    title: Name | None = None
    description: str | None = Field(default=None, max_length=4000)
    sale_from: datetime | None = None
    sale_to: datetime | None = None
    member_limit: Units | None = None
    limit_period: LimitPeriod | None = None
    status: ItemStatus | None = None


class StockChange(Model):
    """Units added to (positive) or taken off (negative) an item's stock."""

    units: int = Field(strict=True, ge=-1_000_000_000, le=1_000_000_000)


class OfferSet(Model):
    """An item's offer in one program: who may take it, and a new price from `effective_from`."""

    program: Code
    points: ItemPoints
    cash_amount: MoneyOrZero = 0
    min_tier: Code | None = None
    min_balance: PointsOrZero = 0
    listed: bool = True
    effective_from: datetime | None = None


class PriceOut(Model):
    version: int
    points: int
    cash_amount: int
    effective_from: datetime


class OfferOut(Model):
    program: str
    listed: bool
    min_tier: str | None
    min_balance: int
    price: PriceOut | None = Field(description="The price in force now (None: not yet in force)")
    prices: list[PriceOut] = Field(default_factory=list, description="Every version, oldest first")


class ItemOut(Model):
    id: uuid.UUID
    owner_org_id: uuid.UUID
    sku: str
    title: str
    description: str
    fulfilment: str
    currency: str
    value_amount: int
    stock: int | None = Field(description="Units left; None: unlimited")
    sale_from: datetime | None
    sale_to: datetime | None
    member_limit: int | None
    limit_period: str | None
    status: str
    offers: list[OfferOut]
    created_at: datetime
    updated_at: datetime


class ListingItem(Model):
    """An item as a member sees it in the mall: what it costs them, what is left for them."""

    id: uuid.UUID
    owner_org_id: uuid.UUID
    title: str
    description: str
    fulfilment: str
    points: int
    cash_amount: int
    currency: str
    price_version: int
    stock: int | None
    member_may_take: int | None = Field(description="Units the member may still take; None: any")
    sale_to: datetime | None


# orders --------------------------------------------------------------------------------------


class OrderCreate(Model):
    """A member's order, placed by the program's issuer."""

    external_id: ExternalId
    item_id: uuid.UUID
    quantity: OrderUnits = 1
    expected_points: ItemPoints | None = Field(
        default=None,
        description="Points per unit the member saw; a different price in force is refused",
    )
    reference: Reference | None = None


class FulfilmentCreate(Model):
    delivery_reference: Annotated[str, Field(min_length=1, max_length=200)]


class CancelCreate(Model):
    reason: str = Field(default="", max_length=200)


class ReturnCreate(Model):
    quantity: Units
    restock: bool = Field(default=False, description="Put the returned units back on sale")


class VoucherOut(Model):
    code: str | None = Field(description="Shown to the member's issuer; None to the supplier")
    code_hint: str
    status: str
    redeemed_at: datetime | None


class OrderOut(Model):
    id: uuid.UUID
    status: str
    program: str
    external_id: str
    item_id: uuid.UUID
    sku: str
    title: str
    owner_org_id: uuid.UUID
    quantity: int
    unit_points: int
    unit_cash: int
    points: int
    cash_amount: int
    currency: str
    price_version: int
    wholesale_amount: int = Field(description="What the issuer owes the supplier (minor units)")
    returned_quantity: int
    returned_points: int
    returned_cash: int
    delivery_reference: str | None
    vouchers: list[VoucherOut]
    reference: str | None
    created_at: datetime
    fulfilled_at: datetime | None
    closed_at: datetime | None


class VoucherRedeem(Model):
    code: VoucherCode


class VoucherRedeemed(Model):
    order_id: uuid.UUID
    item_id: uuid.UUID
    sku: str
    title: str
    code_hint: str
    redeemed_at: datetime
