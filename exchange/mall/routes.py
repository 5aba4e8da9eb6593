"""Routes of the points mall (thin): the catalogue, orders and vouchers."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from clearing.core.errors import InvalidInput
from clearing.core.idempotency import Operation
from clearing.core.schemas import ExternalId
from clearing.core.timeutil import utcnow
from clearing.web.api import (
    After,
    IdempotencyKey,
    Limit,
    Page,
    SessionDep,
    decode_cursor,
    encode_cursor,
    json_response,
    once_response,
    respond_once,
)
from clearing.web.auth import CallerDep
from exchange.mall import catalogue, orders, vouchers
from exchange.mall.schemas import (
    CancelCreate,
    FulfilmentCreate,
    ItemCreate,
    ItemOut,
    ItemUpdate,
    ListingItem,
    OfferOut,
    OfferSet,
    OrderCreate,
    OrderOut,
    OrderStatus,
    ReturnCreate,
    StockChange,
    VoucherRedeem,
    VoucherRedeemed,
)
from issuers.routes import CodePath

router = APIRouter(prefix="/v1")


# catalogue -----------------------------------------------------------------------------------


def _item_cursor(after: str | None) -> uuid.UUID | None:
    if not after:
        return None
    try:
        return uuid.UUID(decode_cursor(after, 1)[0])
    except ValueError:
        raise InvalidInput("invalid cursor", field="after") from None


@router.post("/mall/items", tags=["mall"], status_code=201, response_model=ItemOut)
def create_item(
    caller: CallerDep, key: IdempotencyKey, req: ItemCreate, session: SessionDep
) -> Response:
    """Add an item of the calling issuer or supplier merchant to the mall (a draft by default)."""
    now = utcnow()
    operation = Operation(
        "mall_item", req, ItemOut, lambda _: catalogue.create_item(session, caller, req, now)
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/mall/items", tags=["mall"], response_model=Page[ItemOut])
def list_items(
    caller: CallerDep, session: SessionDep, after: After = None, limit: Limit = 50
) -> Response:
    """The caller's own items, by id."""
    rows = catalogue.list_items(session, caller, _item_cursor(after), limit + 1, utcnow())
    page = rows[:limit]
    cursor = encode_cursor(page[-1].id) if len(rows) > limit and page else None
    return json_response(Page[ItemOut](items=page, next=cursor))


@router.get("/mall/items/{item_id}", tags=["mall"], response_model=ItemOut)
def get_item(caller: CallerDep, item_id: uuid.UUID, session: SessionDep) -> Response:
    """An item, to its owner or to the issuer of a program it is offered in."""
    return json_response(catalogue.get_item(session, caller, item_id, utcnow()))


@router.patch("/mall/items/{item_id}", tags=["mall"], response_model=ItemOut)
def update_item(
    caller: CallerDep, item_id: uuid.UUID, req: ItemUpdate, session: SessionDep
) -> Response:
    """Change one of the caller's items: its text, sale window, member limit or status."""
    return json_response(catalogue.update_item(session, caller, item_id, req, utcnow()))


@router.post("/mall/items/{item_id}/stock", tags=["mall"], status_code=201, response_model=ItemOut)
def change_stock(
    caller: CallerDep,
    key: IdempotencyKey,
    item_id: uuid.UUID,
    req: StockChange,
    session: SessionDep,
) -> Response:
    """Add units to one of the caller's items' stock, or take units off it."""
    now = utcnow()
    operation = Operation(
        "mall_stock",
        {"item_id": str(item_id), **req.model_dump(mode="json")},
        ItemOut,
        lambda _: catalogue.change_stock(session, caller, item_id, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.post(
    "/mall/items/{item_id}/offers", tags=["mall"], status_code=201, response_model=OfferOut
)
def set_offer(
    caller: CallerDep,
    key: IdempotencyKey,
    item_id: uuid.UUID,
    req: OfferSet,
    session: SessionDep,
) -> Response:
    """Offer one of the caller's items in a program at a new price version."""
    now = utcnow()
    operation = Operation(
        "mall_offer",
        {"item_id": str(item_id), **req.model_dump(mode="json")},
        OfferOut,
        lambda _: catalogue.set_offer(session, caller, item_id, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)


@router.get("/programs/{code}/mall/items", tags=["mall"], response_model=Page[ListingItem])
def member_listing(
    caller: CallerDep,
    code: CodePath,
    external_id: Annotated[ExternalId, Query()],
    session: SessionDep,
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """The items of one of the caller's programs that its member may take now, by id."""
    items, more = catalogue.member_listing(
        session, caller, code, external_id, _item_cursor(after), limit, utcnow()
    )
    cursor = encode_cursor(items[-1].id) if more and items else None
    return json_response(Page[ListingItem](items=items, next=cursor))


# orders --------------------------------------------------------------------------------------


@router.post(
    "/programs/{code}/mall/orders", tags=["mall"], status_code=201, response_model=OrderOut
)
def place_order(
    caller: CallerDep,
    key: IdempotencyKey,
    code: CodePath,
    req: OrderCreate,
    session: SessionDep,
) -> Response:
    """Redeem a member's points for an item: points, stock and limit taken at once, or none."""
    outcome = orders.place_order(session, caller, code, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.get("/mall/orders", tags=["mall"], response_model=Page[OrderOut])
def list_orders(
    caller: CallerDep,
    session: SessionDep,
    status: OrderStatus | None = None,
    after: After = None,
    limit: Limit = 50,
) -> Response:
    """Orders of the caller's members, or of its items (a supplier's queue to fulfil)."""
    start = None
    if after:
        try:
            start = uuid.UUID(decode_cursor(after, 1)[0])
        except ValueError:
            raise InvalidInput("invalid cursor", field="after") from None
    rows = orders.list_orders(session, caller, status=status, after=start, limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return json_response(
        Page[OrderOut](items=page, next=encode_cursor(str(page[-1].id)) if more else None)
    )


@router.get("/mall/orders/{order_id}", tags=["mall"], response_model=OrderOut)
def get_order(caller: CallerDep, order_id: uuid.UUID, session: SessionDep) -> Response:
    """An order, to the member's issuer (with voucher codes) or to the item's owner."""
    return json_response(orders.get_order(session, caller, order_id))


@router.post(
    "/mall/orders/{order_id}/fulfil", tags=["mall"], status_code=201, response_model=OrderOut
)
def fulfil(
    caller: CallerDep,
    key: IdempotencyKey,
    order_id: uuid.UUID,
    req: FulfilmentCreate,
    session: SessionDep,
) -> Response:
    """The item's owner has shipped a placed order: its delivery reference."""
    outcome = orders.fulfil(session, caller, order_id, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/mall/orders/{order_id}/cancel", tags=["mall"], status_code=201, response_model=OrderOut
)
def cancel(
    caller: CallerDep,
    key: IdempotencyKey,
    order_id: uuid.UUID,
    session: SessionDep,
    req: Annotated[CancelCreate | None, Body()] = None,
) -> Response:
    """Cancel a placed order: points, stock and the member's limit come back."""
    outcome = orders.cancel(session, caller, order_id, req or CancelCreate(), utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/mall/orders/{order_id}/returns", tags=["mall"], status_code=201, response_model=OrderOut
)
def return_units(
    caller: CallerDep,
    key: IdempotencyKey,
    order_id: uuid.UUID,
    req: ReturnCreate,
    session: SessionDep,
) -> Response:
    """After-sales return of fulfilled units: their points go back to the member."""
    outcome = orders.return_units(session, caller, order_id, req, utcnow(), key)
    return once_response(session, caller.org_id, key, outcome)


@router.post(
    "/mall/vouchers/redeem", tags=["mall"], status_code=201, response_model=VoucherRedeemed
)
def redeem_voucher(
    caller: CallerDep, key: IdempotencyKey, req: VoucherRedeem, session: SessionDep
) -> Response:
    """The item's owner redeems a voucher code at its till, once."""
    now = utcnow()
    operation = Operation(
        "voucher_redeem",
        req,
        VoucherRedeemed,
        lambda _: vouchers.redeem(session, caller, req, now),
    )
    return respond_once(session, caller.org_id, key, operation, now)
