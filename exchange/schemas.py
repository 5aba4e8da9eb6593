"""Requests and results of conversions and checkouts."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import Field

from clearing.core.schemas import (
    Code,
    ExternalId,
    MemberToken,
    MinorUnits,
    Model,
    Points,
    Reference,
)


class BilateralRateCreate(Model):
    source_program: Code
    target_program: Code
    source_block: Points
    target_block: Points
    min_source_points: Points
    effective_from: datetime | None = None


class BilateralRateOut(Model):
    source_program: str
    target_program: str
    version: int
    source_block: int
    target_block: int
    min_source_points: int
    effective_from: datetime


class QuoteCreate(Model):
    source_program: Code
    source_external_id: ExternalId
    target_program: Code
    target_external_id: ExternalId
    points: Points


class QuoteOut(Model):
    id: uuid.UUID
    source_program: str
    target_program: str
    points_out: int
    points_in: int
    currency: str
    source_value: Decimal
    source_value_version: int
    target_value: Decimal
    target_value_version: int
    bilateral_version: int | None
    fee_rate: Decimal
    fee_amount: int
    settlement_amount: int
    valid_until: datetime


class ConversionCreate(Model):
    quote_id: uuid.UUID


class ConversionOut(Model):
    quote_id: uuid.UUID
    entry_id: uuid.UUID
    points_out: int
    points_in: int
    fee_amount: int
    settlement_amount: int
    currency: str


class CheckoutCreate(Model):
    program: Code
    external_id: ExternalId
    order_total: MinorUnits
    points_amount: MinorUnits
    """The part of the order paid with points; the rest is paid in cash."""
    reference: Reference | None = None
    ttl_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    payment_token: MemberToken | None = None
    """The member's consent: a payment token minted by the program's issuer for this member.
    Required unless the issuer trusts the merchant to check out without one."""


class CaptureCreate(Model):
    amount: MinorUnits | None = None
    """Minor units to capture; default the whole authorised points amount."""


class RefundCreate(Model):
    amount: MinorUnits


class CheckoutOut(Model):
    id: uuid.UUID
    status: str
    program: str
    external_id: str
    currency: str
    order_total: int
    points_amount: int
    cash_amount: int
    points: int
    point_value: Decimal
    point_value_version: int
    fee_rate: Decimal
    captured_amount: int
    captured_points: int
    fee_amount: int
    refunded_amount: int
    refunded_points: int
    expires_at: datetime
    reference: str | None


class RefundOut(Model):
    checkout_id: uuid.UUID
    entry_id: uuid.UUID
    amount: int
    points: int
    fee_returned: int
    refunded_amount_total: int
