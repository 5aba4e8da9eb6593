"""The ledger's words as enums: kinds of entries, obligations, lots and organisations; hold statuses.

Each is a StrEnum: a member is its own text, so it is stored, compared and serialised as the
string the database has always held. A new word is added here once; mypy then finds every place
that must know it (settlement's netting reads `ObligationEvent`, the ledger check `HoldStatus`).
"""

from __future__ import annotations

from enum import StrEnum


class OrgKind(StrEnum):
    """What an organisation is to the platform."""

    PLATFORM = "platform"
    ISSUER = "issuer"
    MERCHANT = "merchant"


class EntryKind(StrEnum):
    """Why a journal entry was posted."""

    ACCRUAL = "accrual"
    ACCRUAL_REVERSAL = "accrual_reversal"
    CONVERSION = "conversion"
    CHECKOUT_CAPTURE = "checkout_capture"
    CHECKOUT_REFUND = "checkout_refund"
    EXPIRY = "expiry"
    ADJUSTMENT = "adjustment"
    TRANSFER = "transfer"
    DEBT_RECOVERY = "debt_recovery"
    """Points of a later accrual given back to the program towards a member's debt."""
    MALL_REDEMPTION = "mall_redemption"
    """Points a member pays for a points mall order."""
    MALL_RETURN = "mall_return"
    """Points given back for a cancelled or returned points mall order."""


class ObligationEvent(StrEnum):
    """Why one party owes another money: the events settlement nets."""

    MERCHANT_FUNDED_ACCRUAL = "merchant_funded_accrual"
    ACCRUAL_REVERSAL = "accrual_reversal"
    CONVERSION = "conversion"
    CHECKOUT_CAPTURE = "checkout_capture"
    CHECKOUT_REFUND = "checkout_refund"
    FEE = "fee"
    FEE_REFUND = "fee_refund"
    MALL_REDEMPTION = "mall_redemption"
    """A program's issuer owes the supplier of a mall item its wholesale price."""
    MALL_RETURN = "mall_return"
    """The supplier gives back the wholesale price of a cancelled or returned mall order."""


FEE_EVENTS = frozenset({ObligationEvent.FEE, ObligationEvent.FEE_REFUND})
"""The platform's income: fees charged and given back."""


class LotSource(StrEnum):
    """Where credited points came from."""

    ACCRUAL = "accrual"
    CONVERSION = "conversion"
    ADJUSTMENT = "adjustment"
    TRANSFER = "transfer"


class HoldStatus(StrEnum):
    """A hold (and the checkout it reserves for): open until captured, voided or expired."""

    AUTHORISED = "authorised"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"
