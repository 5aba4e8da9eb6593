"""Requests and results of the risk domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from clearing.core.money import MAX_AMOUNT
from clearing.core.schemas import Model


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


# limits ------------------------------------------------------------------------------------------

LimitScope = Literal["platform", "organisation", "program"]
LimitKind = Literal[
    "member_window",
    "single_operation",
    "program_issuance",
    "merchant_transaction",
    "merchant_day",
    "refund_share",
    "conversion_day",
]
LimitPeriod = Literal["", "minute", "hour", "day"]
Threshold = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
Share = Annotated[Decimal, Field(ge=0, le=100, max_digits=12, decimal_places=6)]


class LimitRuleSet(Model):
    """A new version of a limit rule: the slot it fills (kind, action, period at a scope) and
    its thresholds; a threshold left out is no limit on that measure."""

    scope: LimitScope = "platform"
    scope_id: uuid.UUID | None = None
    """The organisation or program of the scope; none at platform scope."""
    kind: LimitKind
    action: str = Field(default="", max_length=24)
    """The operation the rule counts (the kinds that name one imply it when left empty)."""
    period: LimitPeriod = ""
    max_count: Threshold | None = None
    max_points: Threshold | None = None
    max_amount: Threshold | None = None
    max_share: Share | None = None
    review_count: Threshold | None = None
    review_points: Threshold | None = None
    review_amount: Threshold | None = None
    review_share: Share | None = None
    allowance: Threshold | None = None
    trailing_days: Annotated[int, Field(strict=True, ge=1, le=366)] | None = None
    note: str = Field(default="", max_length=500, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")


class LimitRuleOut(Model):
    """One version of a limit rule, with who set it and when."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    rule_id: uuid.UUID
    version: int
    scope: str
    scope_id: uuid.UUID | None
    kind: str
    action: str
    period: str
    enabled: bool
    max_count: int | None
    max_points: int | None
    max_amount: int | None
    max_share: Decimal | None
    review_count: int | None
    review_points: int | None
    review_amount: int | None
    review_share: Decimal | None
    allowance: int | None
    trailing_days: int | None
    note: str
    created_at: datetime
    created_by_org: uuid.UUID | None
    created_by_key: str | None
