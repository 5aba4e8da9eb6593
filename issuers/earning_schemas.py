"""Requests and results of earning rules, campaigns and program events."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from clearing.core.money import MAX_AMOUNT
from clearing.core.schemas import Code, Currency, ExternalId, MinorUnits, Model, Name, Points

Frequency = Literal["once", "day", "month", "year"]
Multiplier = Annotated[Decimal, Field(gt=1, le=100, max_digits=12, decimal_places=6)]
EarnRate = Annotated[Decimal, Field(ge=0, le=1_000_000, max_digits=18, decimal_places=6)]
Count = Annotated[int, Field(strict=True, ge=1, le=1_000_000)]
Days = Annotated[int, Field(strict=True, ge=0, le=36_600)]
Budget = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]


class SpendRuleIn(Model):
    code: Code
    rate: EarnRate
    """Points per major unit of the issuer's currency spent."""
    product_line: Code | None = None
    merchant_category: Code | None = None
    merchant_id: uuid.UUID | None = None
    channel: Code | None = None


class BehaviourIn(Model):
    event: Code
    """sign_up, check_in, referral, birthday, profile_completed, review, survey, or any name."""
    points: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
    frequency: Frequency | None = None
    """once (ever), or at most `max_per_period` times per business day, month or year."""
    max_per_period: Count = 1
    streak_days: Annotated[int, Field(strict=True, ge=2, le=366)] | None = None
    streak_points: Points | None = None
    referee_points: Points | None = None


class EarningBookCreate(Model):
    effective_from: datetime | None = None
    min_spend: MinorUnits | None = None
    day_cap: Points | None = None
    month_cap: Points | None = None
    spend_rules: list[SpendRuleIn] = Field(default_factory=list, max_length=1000)
    behaviours: list[BehaviourIn] = Field(default_factory=list, max_length=1000)


class EarningBookOut(EarningBookCreate):
    program: str
    version: int
    effective_from: datetime | None = None


class CampaignCreate(Model):
    code: Code
    name: Name
    kind: Literal["multiplier", "first_purchase", "spend_bonus"]
    priority: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 100
    starts_at: datetime
    ends_at: datetime | None = None
    days_of_month: list[Annotated[int, Field(strict=True, ge=1, le=31)]] = Field(
        default_factory=list, max_length=31
    )
    weekdays: list[Annotated[int, Field(strict=True, ge=1, le=7)]] = Field(
        default_factory=list, max_length=7
    )
    multiplier: Multiplier | None = None
    bonus_points: Points | None = None
    min_spend: MinorUnits | None = None
    tiers: list[Code] = Field(default_factory=list, max_length=50)
    min_member_days: Days | None = None
    max_member_days: Days | None = None
    budget: Budget


class CampaignOut(CampaignCreate):
    program: str
    paid: int
    """Points paid so far, against `budget`."""
    remaining: int
    members_reached: int
    exhausted: bool


class EventCreate(Model):
    external_id: ExternalId
    kind: Code
    """`purchase`, or a behaviour event's name."""
    occurred_at: datetime | None = None
    """When the event happened (default: now); never later than now, at most 30 days before."""
    reference: (
        Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
        | None
    ) = None
    spend: MinorUnits | None = None
    currency: Currency | None = None
    merchant_id: uuid.UUID | None = None
    """Purchases posted by the issuer: the merchant where the member spent (a merchant posting
    is itself the merchant)."""
    merchant_category: Code | None = None
    product_line: Code | None = None
    channel: Code | None = None
    referred_external_id: ExternalId | None = None
    """Referral: the member referred (both sides earn, once per referred member)."""


class Step(Model):
    step: str
    """rule, min_spend, streak, frequency, tier, day_cap, month_cap, campaign."""
    ref: str | None = None
    points: int
    note: str | None = None


class Earning(Model):
    event_id: uuid.UUID
    external_id: str
    kind: str
    points: int
    accrual_id: uuid.UUID | None
    explanation: list[Step]


class EventOut(Model):
    program: str
    kind: str
    reference: str | None
    occurred_at: datetime
    points: int
    """Every point the event earned, both sides of a referral included."""
    earnings: list[Earning]
    """The member's earning first; a referral's referred member second."""
    preview: bool = False


class EventBatchCreate(Model):
    items: list[EventCreate] = Field(min_length=1, max_length=100_000)


class EventBatchOut(Model):
    count: int
    points: int
    event_ids: list[uuid.UUID]
    accrual_ids: list[uuid.UUID]
