"""Shared field types of requests and results."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from clearing.core.money import MAX_AMOUNT

Points = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="Whole points")]
MinorUnits = Annotated[
    int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="Money in minor units (fen)")
]
Rate = Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=12)]
FeeRate = Annotated[Decimal, Field(ge=0, lt=1, max_digits=12, decimal_places=8)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
# A partner's own id of its member: readable back by path (no "/", no leading "."), printable
# ASCII only, so that it never needs escaping in a URL, a file or a log line.
ExternalId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+=~-]{0,99}$",
        description="The issuer's own id of its member: letters, digits and . _ : @ + = ~ -",
    ),
]
# Free text (names, references): any script, but no control characters (NUL among them), which
# PostgreSQL cannot store and which forge lines in logs and files.
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
MemberToken = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_-]{1,200}$",
        description="A payment or link token as the member hands it over (checked by its hash)",
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=_PRINTABLE)]
Reference = Annotated[str, Field(min_length=1, max_length=100, pattern=_PRINTABLE)]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _known_zone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"unknown IANA time zone {value!r}")
    return value


Zone = Annotated[
    str,
    Field(max_length=64, description="IANA time zone of the party's business dates and cut-offs"),
    AfterValidator(_known_zone),
]


class Model(BaseModel):
    """Base of every request and result: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")
