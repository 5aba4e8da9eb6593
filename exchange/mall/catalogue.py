"""The points mall's catalogue: items of issuers and supplier merchants, their stock, their
offers and effective-dated prices per program, and what one member may take now (no HTTP)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import OrgKind
from clearing.core.ledger import Ledger
from clearing.core.timeutil import BusinessCalendar, aware, within_horizon
from clearing.web.context import Caller
from exchange.mall import repository, rules
from exchange.mall.models import MallItem, MallOffer, MallPrice, MallStock
from exchange.mall.rules import OfferRef
from exchange.mall.schemas import (
    ItemCreate,
    ItemOut,
    ItemUpdate,
    ListingItem,
    OfferOut,
    OfferSet,
    PriceOut,
    StockChange,
)
from issuers import agreements
from issuers import repository as issuers_repository
from issuers.agreements import AgreementInForce
from issuers.members import member_of
from issuers.organisations import CurrencyMismatch, active_organisation
from issuers.programs import active_program, own_program
from issuers.tiers import TierRef, program_tiers, tiers_of

STATUS_MOVES = frozenset(
    {
        ("draft", "on_sale"),
        ("draft", "withdrawn"),
        ("on_sale", "withdrawn"),
        ("withdrawn", "on_sale"),
    }
)
"""The status moves of an item: once offered to members it never goes back to draft."""
LISTING_BATCH = 50
"""Offers a member's listing reads per query (at least a page and one more)."""
LIMIT_CUTOFF = "00:00"
"""Member limits count in calendar days of the program issuer's zone (midnight to midnight)."""


class SkuTaken(Conflict):
    code = "sku_taken"
    title = "The owner already has an item with this sku"


class ItemStatusMove(Conflict):
    code = "item_status_move"
    title = "The item cannot move to this status"


class ItemNotPriced(Conflict):
    code = "item_not_priced"
    title = "An item goes on sale once it has an offer with a price"


class StockUnlimited(Conflict):
    code = "stock_unlimited"
    title = "The item's stock is unlimited"


class StockInsufficient(Conflict):
    code = "stock_insufficient"
    title = "Fewer units are left than taken off"


class ForeignProgram(Conflict):
    code = "foreign_program"
    title = "An issuer offers its items in its own programs only"


class NoSupplyAgreement(Conflict):
    code = "no_supply_agreement"
    title = "The supplier has no agreement in force to supply this program's mall"


class PriceHistory(Conflict):
    code = "price_history"
    title = "Price history cannot change"


class TierUnknown(NotFound):
    code = "tier_unknown"
    title = "The program has no such tier"


# items ---------------------------------------------------------------------------------------


def create_item(session: Session, caller: Caller, req: ItemCreate, now: datetime) -> ItemOut:
    """Add an item of the calling issuer or supplier merchant, in its own currency."""
    if caller.kind not in (OrgKind.ISSUER, OrgKind.MERCHANT):
        raise Forbidden("only issuers and merchants offer items")
    owner = active_organisation(session, caller.org_id)
    sale_from, sale_to = _window(req.sale_from, req.sale_to)
    _check_limit(req.member_limit, req.limit_period)
    if req.status == "on_sale":
        # A new item has no offer yet: the same rule as a later move to on_sale.
        raise ItemNotPriced("offer the item in a program before it goes on sale")
    item_id = new_id()
    row: dict[str, Any] = {
        "id": item_id,
        "owner_org_id": owner.id,
        "sku": req.sku,
        "title": req.title,
        "description": req.description,
        "fulfilment": req.fulfilment,
        "currency": owner.currency,
        "value_amount": req.value_amount,
        "stock_limited": req.stock is not None,
        "sale_from": sale_from,
        "sale_to": sale_to,
        "member_limit": req.member_limit,
        "limit_period": req.limit_period,
        "status": req.status,
        "created_at": now,
        "updated_at": now,
    }
    if not repository.insert_item(session, row):
        raise SkuTaken(f"an item with sku {req.sku} exists", sku=req.sku)
    if req.stock is not None:
        session.add_all(MallStock(**slot) for slot in repository.stock_rows(item_id, req.stock))
    session.flush()
    return _item_out(session, _item(session, item_id), now, viewer=None)


def update_item(
    session: Session, caller: Caller, item_id: uuid.UUID, req: ItemUpdate, now: datetime
) -> ItemOut:
    """Change an owned item; a field sent as null clears it, a field left out stays."""
    item = _own_item(session, caller, item_id)
    sent = req.model_fields_set
    if "title" in sent and req.title is not None:
        item.title = req.title
    if "description" in sent and req.description is not None:
        item.description = req.description
    item.sale_from, item.sale_to = _window(
        req.sale_from if "sale_from" in sent else item.sale_from,
        req.sale_to if "sale_to" in sent else item.sale_to,
    )
    member_limit = req.member_limit if "member_limit" in sent else item.member_limit
    limit_period = req.limit_period if "limit_period" in sent else item.limit_period
    _check_limit(member_limit, limit_period)
    item.member_limit, item.limit_period = member_limit, limit_period
    if req.status is not None and req.status != item.status:
        # The same status again is no move: a repeated PATCH answers as the first did.
        if (item.status, req.status) not in STATUS_MOVES:
            raise ItemStatusMove(
                f"an item cannot move from {item.status} to {req.status}",
                item_status=item.status,
                requested=req.status,
            )
        if req.status == "on_sale" and not repository.is_priced(session, item.id):
            raise ItemNotPriced("offer the item in a program before it goes on sale")
        item.status = req.status
    item.updated_at = now
    session.flush()
    return _item_out(session, item, now, viewer=None)


def change_stock(
    session: Session, caller: Caller, item_id: uuid.UUID, req: StockChange, now: datetime
) -> ItemOut:
    """Add units to an owned item's stock, or take units off it (never below zero)."""
    item = _own_item(session, caller, item_id)
    if not item.stock_limited:
        raise StockUnlimited("the item's stock is unlimited")
    if req.units == 0:
        raise InvalidInput("units must not be zero", field="units")
    if req.units > 0:
        repository.give_back_stock(session, item.id, req.units, slot=0)
    elif not repository.take_stock(session, item.id, -req.units):
        # take_stock refuses only once it has locked every slot: this figure is exact.
        left = repository.stocks_left(session, [item.id]).get(item.id, 0)
        raise StockInsufficient(
            f"{left} units are left, fewer than {-req.units}", stock=left, units=req.units
        )
    item.updated_at = now
    session.flush()
    return _item_out(session, item, now, viewer=None)


def supply_agreement(
    session: Session, supplier_id: uuid.UUID, program_id: uuid.UUID, code: str, now: datetime
) -> AgreementInForce:
    """The agreement in force that lets a merchant supply a program's mall (at the wholesale rate
    it sets), or `NoSupplyAgreement`: asked when an item is offered and again when it is ordered."""
    agreement = agreements.in_force(session, [(supplier_id, program_id)], now).get(
        (supplier_id, program_id)
    )
    if agreement is None or not agreement.supply or agreement.wholesale_rate is None:
        raise NoSupplyAgreement(
            f"no agreement in force to supply the mall of program {code}", program=code
        )
    return agreement


def set_offer(
    session: Session, caller: Caller, item_id: uuid.UUID, req: OfferSet, now: datetime
) -> OfferOut:
    """Offer an owned item in a program, or change its offer there, with a new price version
    from `effective_from` (now when left out); a price version never changes."""
    item = _own_item(session, caller, item_id)
    program, issuer = active_program(session, req.program)
    if program.issuer_id != item.owner_org_id:
        if caller.kind != OrgKind.MERCHANT:
            raise ForeignProgram(f"program {program.code} is another issuer's")
        supply_agreement(session, item.owner_org_id, program.id, program.code, now)
    if issuer.currency != item.currency:
        raise CurrencyMismatch(
            f"the item is priced in {item.currency}, program {program.code} in {issuer.currency}"
        )
    min_tier_id = None
    if req.min_tier is not None:
        tier = next((t for t in program_tiers(session, program.id) if t.code == req.min_tier), None)
        if tier is None:
            raise TierUnknown(f"program {program.code} has no tier {req.min_tier}")
        min_tier_id = tier.id
    effective = within_horizon(aware(req.effective_from) if req.effective_from else now, now)
    if effective < now:
        raise PriceHistory("a price cannot take effect in the past")
    latest = repository.latest_price(session, item.id, program.id)
    if latest is not None and effective < aware(latest.effective_from):
        raise PriceHistory("a price cannot take effect before the latest version")
    offer = session.get(MallOffer, (item.id, program.id))
    if offer is None:
        offer = MallOffer(item_id=item.id, program_id=program.id, created_at=now)
        session.add(offer)
    offer.listed, offer.min_tier_id, offer.min_balance = req.listed, min_tier_id, req.min_balance
    offer.updated_at = now
    session.flush()
    session.add(
        MallPrice(
            item_id=item.id,
            program_id=program.id,
            version=(latest.version if latest else 0) + 1,
            points=req.points,
            cash_amount=req.cash_amount,
            effective_from=effective,
            created_at=now,
        )
    )
    item.updated_at = now
    session.flush()
    out = _item_out(session, item, now, viewer=None)
    return next(o for o in out.offers if o.program == program.code)


def get_item(session: Session, caller: Caller, item_id: uuid.UUID, now: datetime) -> ItemOut:
    """An item as its owner sees it, or as the issuer of a program it is offered in (who sees
    its offers in its own programs only)."""
    item = session.get(MallItem, item_id)
    if item is None:
        raise NotFound("unknown item")
    if item.owner_org_id == caller.org_id:
        return _item_out(session, item, now, viewer=None)
    if caller.kind == OrgKind.ISSUER and repository.offered_by(session, item.id, caller.org_id):
        return _item_out(session, item, now, viewer=caller.org_id)
    raise NotFound("unknown item")


def list_items(
    session: Session, caller: Caller, after: uuid.UUID | None, limit: int, now: datetime
) -> list[ItemOut]:
    """The caller's own items by id, a page at a time."""
    items = repository.items_after(session, caller.org_id, after, limit)
    return _items_out(session, items, now, viewer=None)


# the member's mall ---------------------------------------------------------------------------


def member_listing(
    session: Session,
    caller: Caller,
    code: str,
    external_id: str,
    after: uuid.UUID | None,
    limit: int,
    now: datetime,
    batch: int = LISTING_BATCH,
) -> tuple[list[ListingItem], bool]:
    """Items of one of the caller's programs that its member may take now, by item id after
    `after`, and whether more follow. Each offer is judged by `rules.refusal`, the one rule an
    order also obeys."""
    program = own_program(session, caller, code)
    member = member_of(session, program, external_id)
    tier = tiers_of(session, [member]).get(member.id)
    balance, held = Ledger(session).member_balance(member.account_id, now)
    issuer = issuers_repository.party_by_id(session, program.issuer_id)
    assert issuer is not None  # a program's issuer is a foreign key
    day = BusinessCalendar(issuer.zone, LIMIT_CUTOFF).date_of(now)
    found: list[ListingItem] = []
    cursor = after
    # Offers the rule refuses are skipped, so a page of rows may give fewer items: read on
    # until the page (and one more, to know whether more follow) is full or the rows end.
    batch = max(limit + 1, batch)
    while len(found) <= limit:
        offers = repository.offers_after(session, program.id, now, cursor, batch)
        found += _may_take(session, offers, member.id, day, now, tier, balance - held)
        if len(offers) < batch:
            break
        cursor = offers[-1].item_id
    return found[:limit], len(found) > limit


def _may_take(
    session: Session,
    offers: Sequence[OfferRef],
    member_id: uuid.UUID,
    day: date,
    now: datetime,
    tier: TierRef | None,
    available: int,
) -> list[ListingItem]:
    periods = {o.item_id: rules.limit_period_key(o.limit_period, day) for o in offers}
    taken = repository.taken_many(
        session,
        [item_id for item_id, period in periods.items() if period is not None],
        member_id,
        sorted({p for p in periods.values() if p is not None}),
    )
    listed = []
    for offer in offers:
        period = periods[offer.item_id]
        used = taken.get((offer.item_id, period), 0) if period is not None else 0
        refused = rules.refusal(
            offer,
            now,
            quantity=1,
            tier_rank=tier.rank if tier is not None else None,
            available=available,
            taken=used,
        )
        if refused is not None:
            continue
        assert offer.points is not None
        assert offer.cash_amount is not None
        assert offer.price_version is not None  # refusal() refuses an offer without a price
        listed.append(
            ListingItem(
                id=offer.item_id,
                owner_org_id=offer.owner_org_id,
                title=offer.title,
                description=offer.description,
                fulfilment=offer.fulfilment,
                points=offer.points,
                cash_amount=offer.cash_amount,
                currency=offer.currency,
                price_version=offer.price_version,
                stock=offer.stock,
                member_may_take=rules.may_still_take(offer, used),
                sale_to=aware(offer.sale_to) if offer.sale_to else None,
            )
        )
    return listed


# helpers -------------------------------------------------------------------------------------


def _item(session: Session, item_id: uuid.UUID) -> MallItem:
    item = session.get(MallItem, item_id)
    assert item is not None
    return item


def _own_item(session: Session, caller: Caller, item_id: uuid.UUID) -> MallItem:
    # Locked: an owner's changes of one item (status, stock, offers, price versions) run one
    # after another, so two price versions never claim the same number.
    item = session.get(MallItem, item_id, with_for_update=True)
    if item is None or item.owner_org_id != caller.org_id:
        raise NotFound("unknown item")
    return item


def _window(
    sale_from: datetime | None, sale_to: datetime | None
) -> tuple[datetime | None, datetime | None]:
    start = aware(sale_from) if sale_from is not None else None
    end = aware(sale_to) if sale_to is not None else None
    if start is not None and end is not None and end <= start:
        raise InvalidInput("sale_to must be after sale_from", field="sale_to")
    return start, end


def _check_limit(member_limit: int | None, limit_period: str | None) -> None:
    if member_limit is not None and limit_period is None:
        raise InvalidInput("a member_limit needs a limit_period", field="limit_period")
    if member_limit is None and limit_period is not None:
        raise InvalidInput("a limit_period needs a member_limit", field="member_limit")


def _item_out(session: Session, item: MallItem, now: datetime, viewer: uuid.UUID | None) -> ItemOut:
    return _items_out(session, [item], now, viewer)[0]


def _items_out(
    session: Session, items: Sequence[MallItem], now: datetime, viewer: uuid.UUID | None
) -> list[ItemOut]:
    """Items with their stock and offers (in `viewer`'s programs only, when given)."""
    ids = [item.id for item in items]
    stock = repository.stocks_left(session, ids)
    prices: dict[tuple[uuid.UUID, uuid.UUID], list[PriceOut]] = defaultdict(list)
    for price in repository.prices_of(session, ids):
        prices[(price.item_id, price.program_id)].append(
            PriceOut(
                version=price.version,
                points=price.points,
                cash_amount=price.cash_amount,
                effective_from=aware(price.effective_from),
            )
        )
    offers: dict[uuid.UUID, list[OfferOut]] = defaultdict(list)
    for row in repository.offers_of(session, ids, viewer):
        versions = prices.get((row.item_id, row.program_id), [])
        in_force = [p for p in versions if p.effective_from <= now]
        offers[row.item_id].append(
            OfferOut(
                program=row.program_code,
                listed=row.listed,
                min_tier=row.min_tier_code,
                min_balance=row.min_balance,
                price=in_force[-1] if in_force else None,
                prices=versions,
            )
        )
    return [
        ItemOut(
            id=item.id,
            owner_org_id=item.owner_org_id,
            sku=item.sku,
            title=item.title,
            description=item.description,
            fulfilment=item.fulfilment,
            currency=item.currency,
            value_amount=item.value_amount,
            stock=stock.get(item.id, 0) if item.stock_limited else None,
            sale_from=aware(item.sale_from) if item.sale_from else None,
            sale_to=aware(item.sale_to) if item.sale_to else None,
            member_limit=item.member_limit,
            limit_period=item.limit_period,
            status=item.status,
            offers=offers.get(item.id, []),
            created_at=aware(item.created_at),
            updated_at=aware(item.updated_at),
        )
        for item in items
    ]
