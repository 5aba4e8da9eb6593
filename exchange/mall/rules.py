"""Who may take a mall item, in one place: the listing filters with it, an order refuses with it.

Pure functions over what the repository read (`OfferRef`): no queries, no clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

from clearing.core.errors import ClearingError, Conflict
from clearing.core.timeutil import aware


class ItemNotOnSale(Conflict):
    code = "item_not_on_sale"
    title = "The item is not on sale in this program"


class OutsideSaleWindow(Conflict):
    code = "outside_sale_window"
    title = "The item's sale has not opened or has ended"


class TierRequired(Conflict):
    code = "tier_required"
    title = "The item is for members of a higher tier"


class OutOfStock(Conflict):
    code = "out_of_stock"
    title = "Not enough of the item is left"


class MemberLimitReached(Conflict):
    code = "member_limit_reached"
    title = "The member has taken as many of the item as allowed"


class BelowMinBalance(Conflict):
    code = "below_min_balance"
    title = "The member holds fewer points than the item asks"


class PriceChanged(Conflict):
    code = "price_changed"
    title = "The item's price in force differs from the one the member saw"


@dataclass(frozen=True, slots=True)
class OfferRef:
    """An item as offered in one program at one instant, with its price in force and stock."""

    item_id: uuid.UUID
    owner_org_id: uuid.UUID
    sku: str
    title: str
    description: str
    fulfilment: str
    currency: str
    value_amount: int
    stock_limited: bool
    sale_from: datetime | None
    sale_to: datetime | None
    member_limit: int | None
    limit_period: str | None
    status: str
    program_id: uuid.UUID
    listed: bool
    min_tier_code: str | None
    min_tier_rank: int | None
    min_balance: int
    price_version: int | None
    points: int | None
    cash_amount: int | None
    stock: int | None
    """Units left (the sum of the stock slots, as read); None: unlimited."""


def limit_period_key(period: str | None, day: date) -> str | None:
    """The key of the member-limit period holding business day `day`."""
    if period is None:
        return None
    return {
        "day": day.isoformat(),
        "month": f"{day.year:04d}-{day.month:02d}",
        "year": f"{day.year:04d}",
        "ever": "ever",
    }[period]


def refusal(
    offer: OfferRef,
    at: datetime,
    *,
    quantity: int,
    tier_rank: int | None,
    available: int | None,
    taken: int,
) -> ClearingError | None:
    """Why the member may not take `quantity` units of the offer at `at`, or None.

    `tier_rank`: the member's tier's rank (None: the program has no tiers); `available`: the
    member's available points (None: not read, the ledger checks them); `taken`: units the member
    has taken in the current limit period. Stock is checked as read; an order takes it for sure
    when it writes (`repository.take_stock`)."""
    if offer.status != "on_sale" or not offer.listed or offer.price_version is None:
        return ItemNotOnSale("the item is not on sale in this program", item_status=offer.status)
    if (offer.sale_from is not None and at < aware(offer.sale_from)) or (
        offer.sale_to is not None and at >= aware(offer.sale_to)
    ):
        return OutsideSaleWindow(
            "the item is not on sale at this time",
            sale_from=offer.sale_from.isoformat() if offer.sale_from else None,
            sale_to=offer.sale_to.isoformat() if offer.sale_to else None,
        )
    if offer.min_tier_rank is not None and (tier_rank or 0) < offer.min_tier_rank:
        return TierRequired(
            f"the item is for members of tier {offer.min_tier_code} or higher",
            min_tier=offer.min_tier_code,
        )
    if offer.member_limit is not None and taken + quantity > offer.member_limit:
        return MemberLimitReached(
            f"a member may take {offer.member_limit} per {offer.limit_period}",
            member_limit=offer.member_limit,
            taken=taken,
        )
    if offer.stock is not None and offer.stock < quantity:
        return OutOfStock("not enough of the item is left", stock=offer.stock)
    if available is not None and available < offer.min_balance:
        return BelowMinBalance(
            f"the item asks for at least {offer.min_balance} points held",
            min_balance=offer.min_balance,
        )
    return None


def may_still_take(offer: OfferRef, taken: int) -> int | None:
    """Units the member may still take under the item's limit (None: no limit)."""
    if offer.member_limit is None:
        return None
    return max(offer.member_limit - taken, 0)
