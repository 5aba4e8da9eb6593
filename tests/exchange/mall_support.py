"""Mall items written as the catalogue writes them, for tests of orders and settlement."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Engine, select

from clearing.core.db import transaction
from clearing.core.ids import new_id
from clearing.web.context import Caller
from exchange.mall import repository
from exchange.mall.models import MallItem, MallOffer, MallPrice, MallStock
from issuers.models import Program
from tests.factories import T0


def add_item(
    engine: Engine,
    owner: Caller,
    program_id: uuid.UUID,
    *,
    points: int,
    cash: int = 0,
    stock: int | None = None,
    fulfilment: str = "delivery",
    value: int = 3000,
    member_limit: int | None = None,
    limit_period: str | None = None,
    min_tier_id: uuid.UUID | None = None,
    min_balance: int = 0,
    sale_from: datetime | None = None,
    sale_to: datetime | None = None,
    status: str = "on_sale",
) -> uuid.UUID:
    """An item on sale in one program, written as the catalogue writes it."""
    item_id = new_id()
    with transaction(engine) as session:
        session.add(
            MallItem(
                id=item_id,
                owner_org_id=owner.org_id,
                sku=f"SKU-{item_id.hex[-8:]}",
                title="Latte voucher" if fulfilment == "voucher" else "Headphones",
                description="",
                fulfilment=fulfilment,
                currency="CNY",
                value_amount=value,
                stock_limited=stock is not None,
                sale_from=sale_from,
                sale_to=sale_to,
                member_limit=member_limit,
                limit_period=limit_period,
                status=status,
                created_at=T0,
                updated_at=T0,
            )
        )
        session.flush()
        session.add(
            MallOffer(
                item_id=item_id,
                program_id=program_id,
                listed=True,
                min_tier_id=min_tier_id,
                min_balance=min_balance,
                created_at=T0,
                updated_at=T0,
            )
        )
        session.flush()
        session.add(
            MallPrice(
                item_id=item_id,
                program_id=program_id,
                version=1,
                points=points,
                cash_amount=cash,
                effective_from=T0,
                created_at=T0,
            )
        )
        if stock is not None:
            session.add_all(MallStock(**row) for row in repository.stock_rows(item_id, stock))
    return item_id


def program_id(engine: Engine, code: str) -> uuid.UUID:
    """A program's id by its code."""
    with transaction(engine) as session:
        return session.execute(select(Program.id).where(Program.code == code)).scalar_one()
