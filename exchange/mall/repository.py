"""Every query of the points mall: offers with their price in force and stock, stock slots,
member-limit counters, orders and vouchers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Table, and_, bindparam, func, select, text
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clearing.core.db import Sql, is_postgres, row_to
from exchange.mall.models import (
    STOCK_SLOTS,
    MallItem,
    MallLimitUse,
    MallOffer,
    MallPrice,
    MallStock,
)
from exchange.mall.rules import OfferRef
from issuers.models import Program, ProgramTier

_ITEMS = cast(Table, MallItem.__table__)
_OFFERS = cast(Table, MallOffer.__table__)
_PRICES = cast(Table, MallPrice.__table__)
_STOCK = cast(Table, MallStock.__table__)
_USES = cast(Table, MallLimitUse.__table__)
_TIERS = cast(Table, ProgramTier.__table__)
_PROGRAMS = cast(Table, Program.__table__)
_VERSIONS = _PRICES.alias("versions")

_PRICE_IN_FORCE = (
    select(func.max(_VERSIONS.c.version))
    .where(
        _VERSIONS.c.item_id == _OFFERS.c.item_id,
        _VERSIONS.c.program_id == _OFFERS.c.program_id,
        _VERSIONS.c.effective_from <= bindparam("b_at", type_=_PRICES.c.effective_from.type),
    )
    .correlate(_OFFERS)
    .scalar_subquery()
)
_STOCK_LEFT = (
    select(sql_cast(func.coalesce(func.sum(_STOCK.c.remaining), 0), BigInteger))
    .where(_STOCK.c.item_id == _ITEMS.c.id)
    .correlate(_ITEMS)
    .scalar_subquery()
)
_OFFER_QUERY = (
    select(
        _ITEMS.c.id.label("item_id"),
        _ITEMS.c.owner_org_id,
        _ITEMS.c.sku,
        _ITEMS.c.title,
        _ITEMS.c.description,
        _ITEMS.c.fulfilment,
        _ITEMS.c.currency,
        _ITEMS.c.value_amount,
        _ITEMS.c.stock_limited,
        _ITEMS.c.sale_from,
        _ITEMS.c.sale_to,
        _ITEMS.c.member_limit,
        _ITEMS.c.limit_period,
        _ITEMS.c.status,
        _OFFERS.c.program_id,
        _OFFERS.c.listed,
        _TIERS.c.code.label("min_tier_code"),
        _TIERS.c.rank.label("min_tier_rank"),
        _OFFERS.c.min_balance,
        _PRICES.c.version.label("price_version"),
        _PRICES.c.points,
        _PRICES.c.cash_amount,
        _STOCK_LEFT.label("stock"),
    )
    .join(_OFFERS, _OFFERS.c.item_id == _ITEMS.c.id)
    .outerjoin(_TIERS, _TIERS.c.id == _OFFERS.c.min_tier_id)
    .outerjoin(
        _PRICES,
        and_(
            _PRICES.c.item_id == _OFFERS.c.item_id,
            _PRICES.c.program_id == _OFFERS.c.program_id,
            _PRICES.c.version == _PRICE_IN_FORCE,
        ),
    )
    .where(_OFFERS.c.program_id == bindparam("b_program"))
)
_OFFER = Sql(_OFFER_QUERY.where(_ITEMS.c.id == bindparam("b_item")))
_OFFERS_AFTER = Sql(
    _OFFER_QUERY.where(
        _ITEMS.c.id > bindparam("b_after"),
        _ITEMS.c.status == "on_sale",
        _OFFERS.c.listed.is_(True),
    )
    .order_by(_ITEMS.c.id)
    .limit(bindparam("b_limit"))
)


def _offer(row: Any) -> OfferRef:
    ref = row_to(OfferRef, row)
    return ref if ref.stock_limited else replace(ref, stock=None)


def offer_at(
    session: Session, item_id: uuid.UUID, program_id: uuid.UUID, at: datetime
) -> OfferRef | None:
    """An item as offered in a program at `at` (None: not offered there)."""
    row = _OFFER.first(session, {"b_item": item_id, "b_program": program_id, "b_at": at})
    return None if row is None else _offer(row)


def offers_after(
    session: Session, program_id: uuid.UUID, at: datetime, after: uuid.UUID | None, limit: int
) -> list[OfferRef]:
    """Items on sale and listed in a program, by item id after `after` (a page's cursor)."""
    rows = _OFFERS_AFTER.rows(
        session,
        {
            "b_program": program_id,
            "b_at": at,
            "b_after": after or uuid.UUID(int=0),
            "b_limit": limit,
        },
    )
    return [_offer(row) for row in rows]


OFFER_FIELDS = tuple(f.name for f in fields(OfferRef))


# catalogue -----------------------------------------------------------------------------------


def insert_item(session: Session, row: dict[str, Any]) -> bool:
    """Insert an item; False (nothing written) when its owner already has an item of its sku.

    ON CONFLICT rather than a read first: two concurrent creations of one sku cannot both pass."""
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    statement = insert(_ITEMS).values(row).on_conflict_do_nothing().returning(_ITEMS.c.id)
    return session.execute(statement).first() is not None


def items_after(
    session: Session, owner_id: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[MallItem]:
    """An owner's items by id, after `after` (a page's cursor)."""
    query = select(MallItem).where(MallItem.owner_org_id == owner_id)
    if after is not None:
        query = query.where(MallItem.id > after)
    return list(session.scalars(query.order_by(MallItem.id).limit(limit)))


def stocks_left(session: Session, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Item id -> units left (the sum of its slots), for items with limited stock."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(_STOCK.c.item_id, func.sum(_STOCK.c.remaining))
        .where(_STOCK.c.item_id.in_(list(item_ids)))
        .group_by(_STOCK.c.item_id)
    )
    return {item_id: int(units) for item_id, units in rows}


def offers_of(
    session: Session, item_ids: Sequence[uuid.UUID], issuer_id: uuid.UUID | None = None
) -> list[Any]:
    """The offers of items, with their program's code and issuer and their tier's code, by
    item and program code; only in programs of `issuer_id` when given."""
    if not item_ids:
        return []
    query = (
        select(
            _OFFERS.c.item_id,
            _OFFERS.c.program_id,
            _OFFERS.c.listed,
            _OFFERS.c.min_balance,
            _PROGRAMS.c.code.label("program_code"),
            _PROGRAMS.c.issuer_id,
            _TIERS.c.code.label("min_tier_code"),
        )
        .join(_PROGRAMS, _PROGRAMS.c.id == _OFFERS.c.program_id)
        .outerjoin(_TIERS, _TIERS.c.id == _OFFERS.c.min_tier_id)
        .where(_OFFERS.c.item_id.in_(list(item_ids)))
        .order_by(_OFFERS.c.item_id, _PROGRAMS.c.code)
    )
    if issuer_id is not None:
        query = query.where(_PROGRAMS.c.issuer_id == issuer_id)
    return list(session.execute(query))


def prices_of(session: Session, item_ids: Sequence[uuid.UUID]) -> list[MallPrice]:
    """Every price version of items, oldest first per item and program."""
    if not item_ids:
        return []
    return list(
        session.scalars(
            select(MallPrice)
            .where(MallPrice.item_id.in_(list(item_ids)))
            .order_by(MallPrice.item_id, MallPrice.program_id, MallPrice.version)
        )
    )


def latest_price(session: Session, item_id: uuid.UUID, program_id: uuid.UUID) -> MallPrice | None:
    """An item's latest price version in a program (None: never priced there)."""
    return session.scalars(
        select(MallPrice)
        .where(MallPrice.item_id == item_id, MallPrice.program_id == program_id)
        .order_by(MallPrice.version.desc())
        .limit(1)
    ).first()


def is_priced(session: Session, item_id: uuid.UUID) -> bool:
    """Whether an item has a price in any program."""
    found = select(_PRICES.c.version).where(_PRICES.c.item_id == item_id).limit(1)
    return session.execute(found).first() is not None


def offered_by(session: Session, item_id: uuid.UUID, issuer_id: uuid.UUID) -> bool:
    """Whether an item is offered in a program of `issuer_id`."""
    found = (
        select(_OFFERS.c.item_id)
        .join(_PROGRAMS, _PROGRAMS.c.id == _OFFERS.c.program_id)
        .where(_OFFERS.c.item_id == item_id, _PROGRAMS.c.issuer_id == issuer_id)
        .limit(1)
    )
    return session.execute(found).first() is not None


# stock ---------------------------------------------------------------------------------------


def slot_shares(units: int) -> list[int]:
    """`units` spread over the stock slots as evenly as whole units go."""
    return [
        units // STOCK_SLOTS + (1 if s < units % STOCK_SLOTS else 0) for s in range(STOCK_SLOTS)
    ]


_TAKE_ONE_SLOT = Sql(
    text(
        "UPDATE mall_stock SET remaining = remaining - :b_units "
        "WHERE (item_id, slot) = (SELECT item_id, slot FROM mall_stock "
        "WHERE item_id = :b_item AND remaining >= :b_units "
        "ORDER BY remaining DESC, slot LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "RETURNING slot"
    )
)
_ALL_SLOTS = Sql(
    select(_STOCK.c.slot, _STOCK.c.remaining)
    .where(_STOCK.c.item_id == bindparam("b_item"))
    .order_by(_STOCK.c.slot)
    .with_for_update()
)
_TAKE_FROM_SLOT = Sql(
    _STOCK.update()
    .where(_STOCK.c.item_id == bindparam("b_item"), _STOCK.c.slot == bindparam("b_slot"))
    .values(remaining=_STOCK.c.remaining - bindparam("b_units"))
)


def take_stock(session: Session, item_id: uuid.UUID, units: int) -> bool:
    """Take `units` of an item's stock, or nothing (False: fewer are left).

    On PostgreSQL an order first takes its units from one slot that has them and that no other
    order holds (SKIP LOCKED: it never waits). Only when none is free does it lock every slot in
    slot order and wait, so a refusal is exact: it is given only once every slot was seen, each
    as its last holder left it."""
    if (
        is_postgres(session)
        and _TAKE_ONE_SLOT.first(session, {"b_item": item_id, "b_units": units}) is not None
    ):
        return True
    slots = _ALL_SLOTS.rows(session, {"b_item": item_id})
    if sum(row.remaining for row in slots) < units:
        return False
    left = units
    for row in slots:
        take = min(row.remaining, left)
        if take > 0:
            _TAKE_FROM_SLOT.rows(session, {"b_item": item_id, "b_slot": row.slot, "b_units": take})
            left -= take
    return True


_GIVE_BACK = Sql(
    _STOCK.update()
    .where(_STOCK.c.item_id == bindparam("b_item"), _STOCK.c.slot == bindparam("b_slot"))
    .values(remaining=_STOCK.c.remaining + bindparam("b_units"))
)


def give_back_stock(session: Session, item_id: uuid.UUID, units: int, slot: int) -> None:
    """Put `units` back into one slot of an item's stock."""
    _GIVE_BACK.rows(session, {"b_item": item_id, "b_slot": slot % STOCK_SLOTS, "b_units": units})


def stock_rows(item_id: uuid.UUID, units: int) -> list[dict[str, Any]]:
    """The stock slot rows of a new item with `units` to sell."""
    return [
        {"item_id": item_id, "slot": slot, "remaining": share}
        for slot, share in enumerate(slot_shares(units))
    ]


# member limits -------------------------------------------------------------------------------


def taken(session: Session, item_id: uuid.UUID, member_id: uuid.UUID, period: str | None) -> int:
    """Units of an item the member took in the limit period (0 without a limit)."""
    if period is None:
        return 0
    return taken_many(session, [item_id], member_id, [period]).get((item_id, period), 0)


def taken_many(
    session: Session, item_ids: Sequence[uuid.UUID], member_id: uuid.UUID, periods: Sequence[str]
) -> dict[tuple[uuid.UUID, str], int]:
    """(item id, period) -> units the member took, for a listing's page."""
    if not item_ids:
        return {}
    rows = session.execute(
        select(_USES.c.item_id, _USES.c.period, _USES.c.taken).where(
            _USES.c.member_id == member_id,
            _USES.c.item_id.in_(list(item_ids)),
            _USES.c.period.in_(list(periods)),
        )
    )
    return {(row.item_id, row.period): int(row.taken) for row in rows}


def _count_use(dialect: Any) -> Sql:
    new = dialect.insert(_USES).values(
        item_id=bindparam("b_item"),
        member_id=bindparam("b_member"),
        period=bindparam("b_period"),
        taken=bindparam("b_units"),
    )
    return Sql(
        new.on_conflict_do_update(
            index_elements=["item_id", "member_id", "period"],
            set_={"taken": _USES.c.taken + new.excluded.taken},
            where=_USES.c.taken + new.excluded.taken <= bindparam("b_limit"),
        ).returning(_USES.c.taken)
    )


_COUNT_USE_PG = _count_use(postgresql)
_COUNT_USE_SQLITE = _count_use(sqlite)


def count_use(
    session: Session,
    item_id: uuid.UUID,
    member_id: uuid.UUID,
    period: str,
    units: int,
    limit: int,
) -> int | None:
    """Count `units` more of the item against the member's limit: the new total, or None when it
    would pass `limit` (nothing counted). One statement: concurrent orders of one member wait on
    the counter row and each sees the one before."""
    if units > limit:
        return None
    statement = _COUNT_USE_PG if is_postgres(session) else _COUNT_USE_SQLITE
    row = statement.first(
        session,
        {
            "b_item": item_id,
            "b_member": member_id,
            "b_period": period,
            "b_units": units,
            "b_limit": limit,
        },
    )
    return None if row is None else int(row.taken)


_UNCOUNT = Sql(
    _USES.update()
    .where(
        _USES.c.item_id == bindparam("b_item"),
        _USES.c.member_id == bindparam("b_member"),
        _USES.c.period == bindparam("b_period"),
    )
    .values(taken=_USES.c.taken - bindparam("b_units"))
)


def uncount_use(
    session: Session, item_id: uuid.UUID, member_id: uuid.UUID, period: str, units: int
) -> None:
    """Give `units` back to the member's limit in `period` (a cancelled order)."""
    _UNCOUNT.rows(
        session, {"b_item": item_id, "b_member": member_id, "b_period": period, "b_units": units}
    )
