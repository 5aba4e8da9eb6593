"""Shared field types of requests and results."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from clearing.money import MAX_AMOUNT

Points = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="Whole points")]
MinorUnits = Annotated[
    int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="Money in minor units (fen)")
]
Rate = Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=12)]
FeeRate = Annotated[Decimal, Field(ge=0, lt=1, max_digits=12, decimal_places=8)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
ExternalId = Annotated[str, Field(min_length=1, max_length=100)]


class Model(BaseModel):
    """Base of every request and result: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")
