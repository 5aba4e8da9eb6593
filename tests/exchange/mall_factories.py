"""Plain factory functions of the points mall for tests: an item with its offer, a supplier's
agreement to supply a program's mall."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.core.db import transaction
from clearing.web.context import Caller
from exchange.mall import catalogue
from exchange.mall.schemas import (
    Fulfilment,
    ItemCreate,
    ItemOut,
    ItemStatus,
    ItemUpdate,
    LimitPeriod,
    OfferSet,
)
from issuers import agreements
from issuers.programs import program_by_code
from issuers.schemas import AgreementCreate
from tests.factories import T0


@contextmanager
def _session(db: Engine | Session) -> Iterator[Session]:
    """A session of its own committed at the end (an engine), or the caller's (a session)."""
    if isinstance(db, Session):
        yield db
    else:
        with transaction(db) as session:
            yield session


def create_item_with_offer(
    db: Engine | Session,
    *,
    owner: Caller,
    program: str,
    points: int,
    cash_amount: int = 0,
    stock: int | None = None,
    fulfilment: Fulfilment = "delivery",
    member_limit: int | None = None,
    limit_period: LimitPeriod | None = None,
    min_tier: str | None = None,
    min_balance: int = 0,
    sale_from: datetime | None = None,
    sale_to: datetime | None = None,
    status: ItemStatus = "on_sale",
    value_amount: int = 1000,
    listed: bool = True,
    sku: str | None = None,
    title: str = "An item",
    now: datetime = T0,
) -> ItemOut:
    """An item of `owner` (an issuer, or a merchant with a supply agreement in force) offered
    in `program` at `points` (+ `cash_amount`) from `now`, then moved to `status`.

    `db`: an engine (committed here) or a session (the caller's transaction)."""
    with _session(db) as session:
        item = catalogue.create_item(
            session,
            owner,
            ItemCreate(
                sku=sku or f"sku-{uuid.uuid4().hex[:12]}",
                title=title,
                fulfilment=fulfilment,
                value_amount=value_amount,
                stock=stock,
                sale_from=sale_from,
                sale_to=sale_to,
                member_limit=member_limit,
                limit_period=limit_period,
            ),
            now,
        )
        catalogue.set_offer(
            session,
            owner,
            item.id,
            OfferSet(
                program=program,
                points=points,
                cash_amount=cash_amount,
                min_tier=min_tier,
                min_balance=min_balance,
                listed=listed,
            ),
            now,
        )
        if status != "draft":
            catalogue.update_item(session, owner, item.id, ItemUpdate(status=status), now)
        return catalogue.get_item(session, owner, item.id, now)


def supply_agreement(
    db: Engine | Session,
    *,
    merchant: Caller,
    program: str,
    wholesale_rate: Decimal = Decimal("0.8"),
    accept: bool = True,
    fund: bool = True,
    now: datetime = T0,
) -> uuid.UUID:
    """A supplier merchant proposes to supply `program`'s mall and the program's issuer approves:
    the agreement's id. It supersedes the merchant's agreement before in that program, so it
    also says whether the merchant accepts and funds the program's points."""
    with _session(db) as session:
        issuer = Caller(program_by_code(session, program).issuer_id, "issuer")
        proposal = agreements.propose(
            session,
            merchant,
            AgreementCreate(
                program=program,
                accept=accept,
                fund=fund,
                supply=True,
                wholesale_rate=wholesale_rate,
            ),
            now,
        )
        return agreements.approve(session, issuer, proposal.id, now).id


def program_id(engine: Engine, code: str) -> uuid.UUID:
    """A program's id by its code."""
    with transaction(engine) as session:
        return program_by_code(session, code).id
