"""Requests and results of the risk domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from clearing.core.money import MAX_AMOUNT
from clearing.core.schemas import Currency, Model
from clearing.core.timeutil import aware


class DecisionOut(Model):
    """A logged decision."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    decided_at: datetime
    action: str
    verdict: str
    outcome: str
    code: str | None
    rule_id: str | None
    rule_version: int | None
    reason: str
    caller_org_id: uuid.UUID
    program_code: str | None
    member_id: uuid.UUID | None
    merchant_org_id: uuid.UUID | None
    issuer_org_id: uuid.UUID | None
    inputs: dict[str, Any]


# settlement risk (risk/exposure.py) ---------------------------------------------------------

Stored = Annotated[datetime, AfterValidator(aware)]
"""A stored instant, aware UTC (SQLite hands them back naive)."""
Multiple = Annotated[Decimal, Field(gt=0, le=100, max_digits=12, decimal_places=4)]
Whole = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT, description="Minor units")]


class ExposureCapSet(Model):
    """A new version of a party's net debit cap in a currency: `limit`, or `collateral` (times
    `multiple`, default 1); `uncapped: true` with neither removes the cap."""

    org_id: uuid.UUID
    currency: Currency
    limit: Whole | None = None
    collateral: Whole | None = None
    multiple: Multiple | None = None
    uncapped: bool = False
    reason: str = Field(default="", max_length=500, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")

    @model_validator(mode="after")
    def _one_basis(self) -> ExposureCapSet:
        given = [name for name in ("limit", "collateral") if getattr(self, name) is not None]
        if self.uncapped and given:
            raise ValueError("uncapped takes neither limit nor collateral")
        if not self.uncapped and len(given) != 1:
            raise ValueError("give exactly one of limit and collateral (or uncapped: true)")
        if self.multiple is not None and self.collateral is None:
            raise ValueError("multiple applies to collateral only")
        return self


class ExposureCapOut(Model):
    """One version of a party's cap, with who set it and when."""

    model_config = ConfigDict(from_attributes=True)

    org_id: uuid.UUID
    currency: str
    version: int
    cap: int | None
    limit_amount: int | None
    collateral: int | None
    multiple: Decimal | None
    reason: str
    set_by_org: uuid.UUID
    set_by_key: str | None
    set_at: Stored


class CurrencyExposureOut(Model):
    """A party's open net debit in one currency against its cap."""

    currency: str
    open_net_debit: int
    """What the party owes less what it is owed over the open window (unpublished business
    days), minor units; negative: it is owed."""
    cap: int | None
    """None: uncapped."""
    cap_version: int | None
    headroom: int | None
    """cap - open_net_debit (negative once a lowered cap is passed); None: uncapped."""


class ExposureOut(Model):
    """A party's settlement exposure: per currency, and whether it is restricted as overdue."""

    org_id: uuid.UUID
    restricted: bool
    overdue_batches: list[str]
    currencies: list[CurrencyExposureOut]


class SettlementPaymentCreate(Model):
    """The operator's record that a party paid (or received) its net position of a batch."""

    batch_id: str = Field(pattern=r"^SB-[A-Z]{3}-[0-9]{8}$")
    org_id: uuid.UUID
    direction: Literal["paid", "received"]
    reference: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")


class PaymentOut(Model):
    """A recorded payment, with who recorded it and when."""

    model_config = ConfigDict(from_attributes=True)

    batch_id: str
    org_id: uuid.UUID
    direction: str
    reference: str
    recorded_by_org: uuid.UUID
    recorded_by_key: str | None
    recorded_at: Stored


class SettlementPaymentOut(PaymentOut):
    """A payment just recorded: its amount, and whether it lifted a restriction."""

    amount: int
    """The absolute net position of the party in the batch, minor units."""
    lifted_restriction: bool


class SettlementRestrictionOut(Model):
    """A restriction for an unpaid batch, with when it began and (once paid) ended."""

    model_config = ConfigDict(from_attributes=True)

    org_id: uuid.UUID
    batch_id: str
    due_at: Stored
    restricted_at: Stored
    restricted_by: str
    lifted_at: Stored | None
    lifted_by_org: uuid.UUID | None
    lifted_by_key: str | None
