"""Routes of the points mall (thin): the catalogue, orders and vouchers."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Path, Response

from clearing.core.errors import InvalidInput
from clearing.core.idempotency import Operation
from clearing.core.schemas import Code
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
from exchange.mall import orders, vouchers
from exchange.mall.schemas import (
    CancelCreate,
    FulfilmentCreate,
    OrderCreate,
    OrderOut,
    OrderStatus,
    ReturnCreate,
    VoucherRedeem,
    VoucherRedeemed,
)

router = APIRouter(prefix="/v1")


# orders --------------------------------------------------------------------------------------


@router.post(
    "/programs/{code}/mall/orders", tags=["mall"], status_code=201, response_model=OrderOut
)
def place_order(
    caller: CallerDep,
    key: IdempotencyKey,
    code: Annotated[Code, Path()],
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
