"""The input contract of settlement: obligation lines from the ledger and the parties they name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

EVENT_TYPES = (
    "merchant_funded_accrual",
    "accrual_reversal",
    "conversion",
    "checkout_capture",
    "checkout_refund",
    "fee",
    "fee_refund",
)
# Fee lines belong to the transaction booked under the same reference; statements fold them in.
FEE_EVENT_TYPES = frozenset({"fee", "fee_refund"})

PartyKind = Literal["issuer", "merchant", "platform"]


@dataclass(frozen=True, slots=True)
class ObligationLine:
    """One money obligation between two parties, as booked by one journal entry."""

    reference: str
    seq: int
    original_reference: str | None
    event_type: str
    payer: str
    payee: str
    currency: str
    amount: int
    """Minor units of `currency` (fen for CNY), > 0."""
    program: str | None
    points: int | None
    """Whole points of `program` behind the obligation."""
    point_value: Decimal | None
    """Money per point in major units, e.g. Decimal("0.005")."""
    point_value_version: int | None
    booked_at: datetime
    """Timezone-aware, UTC."""


@dataclass(frozen=True, slots=True)
class Party:
    """Display descriptor of an organisation taking part in a settlement batch."""

    id: str
    name: str
    kind: PartyKind
    currency: str
