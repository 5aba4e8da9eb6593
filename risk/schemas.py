"""Requests and results of the risk domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from clearing.core.money import MAX_AMOUNT
from clearing.core.schemas import Code, Currency, ExternalId, Model, Points
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


# freezes, the blocklist and reviews -----------------------------------------------------------

Utc = Annotated[datetime, AfterValidator(aware)]
"""A stored time, timezone-aware (SQLite hands times back naive; all are UTC)."""
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
"""Why an operator acts, in words (recorded with who and when)."""


class FreezeCreate(Model):
    """Freeze a member (or `points` of its points), a program or an organisation."""

    subject: Literal["member", "program", "organisation"]
    program: Code | None = None
    """The program of a member, or the program frozen."""
    external_id: ExternalId | None = None
    """The issuer's id of the member frozen."""
    org_id: uuid.UUID | None = None
    """The organisation frozen."""
    points: Points | None = None
    """Freeze only this many of the member's points (they cannot be spent); else the member."""
    reason: Reason

    @model_validator(mode="after")
    def _names_its_subject(self) -> Self:
        wanted = {
            "member": {"program", "external_id"},
            "program": {"program"},
            "organisation": {"org_id"},
        }[self.subject] | ({"points"} if self.subject == "member" else set())
        given = {
            name
            for name in ("program", "external_id", "org_id", "points")
            if getattr(self, name) is not None
        }
        kind = f"{'an' if self.subject[0] in 'aeiou' else 'a'} {self.subject} freeze"
        missing = wanted - given - {"points"}
        if missing:
            raise ValueError(f"{kind} names its {', '.join(sorted(missing))}")
        extra = given - wanted
        if extra:
            raise ValueError(f"{kind} takes no {', '.join(sorted(extra))}")
        return self


class LiftCreate(Model):
    """Lift a freeze, or take a member id off a blocklist."""

    reason: Reason


class FreezeOut(Model):
    """A freeze, active or lifted."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    subject: str
    subject_id: uuid.UUID
    program_code: str | None
    external_id: str | None
    points: int | None
    hold_id: uuid.UUID | None
    reason: str
    frozen_by_org: uuid.UUID
    frozen_by_key: str | None
    frozen_at: Utc
    lifted_reason: str | None
    lifted_by_org: uuid.UUID | None
    lifted_by_key: str | None
    lifted_at: Utc | None


class BlocklistCreate(Model):
    """Refuse every operation of a program on a member id."""

    program: Code
    external_id: ExternalId
    reason: Reason


class BlocklistOut(Model):
    """A blocklist entry, in force or removed."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    program_id: uuid.UUID
    program_code: str
    external_id: str
    reason: str
    added_by_org: uuid.UUID
    added_by_key: str | None
    added_at: Utc
    removed_reason: str | None
    removed_by_org: uuid.UUID | None
    removed_by_key: str | None
    removed_at: Utc | None


class ReviewReject(Model):
    """Reject a reviewed operation."""

    reason: Reason


class ReviewOut(Model):
    """An operation in (or through) the review queue."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    operation: str
    status: str
    org_id: uuid.UUID
    key_id: str | None
    idempotency_key: str
    requested_at: Utc
    code: str | None
    rule_id: str | None
    rule_version: int | None
    reason: str
    request: dict[str, Any]
    inputs: dict[str, Any]
    member_id: uuid.UUID | None
    hold_id: uuid.UUID | None
    points_held: int
    decided_by_org: uuid.UUID | None
    decided_by_key: str | None
    decided_at: Utc | None


class ReviewDecided(Model):
    """A review an operator decided; an approval carries the completed operation's result (the
    answer a retry of the original request now gets)."""

    review: ReviewOut
    result: dict[str, Any] | None = None


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
