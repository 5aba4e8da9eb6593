"""Points mall orders (no HTTP here): placed, fulfilled, cancelled, returned.

Placing an order is one transaction, in the platform's lock order (README "Risk controls"): the
risk screen, the member's limit counter, the ledger (the member's points debited at once: the
hold and its capture are one entry, since nothing may happen between them), then the item's
stock, last, so that the hottest row is held for the shortest time. Any refusal rolls the whole
order back: no points, stock, limit or hold is left taken.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from clearing.core import money
from clearing.core.db import Sql
from clearing.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from clearing.core.idempotency import FirstRead, Operation, Outcome, run_once
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind, ObligationEvent, OrgKind
from clearing.core.ledger import REDEEMED, EntryDraft, Ledger, Leg, ObligationDraft, points_asset
from clearing.core.policy import Action, OperationContext, debits_of, screen
from clearing.core.timeutil import BusinessCalendar, aware
from clearing.web.context import Caller
from exchange.mall import repository, rules, vouchers
from exchange.mall.catalogue import supply_agreement
from exchange.mall.models import MallItem, MallOrder
from exchange.mall.schemas import (
    CancelCreate,
    FulfilmentCreate,
    OrderCreate,
    OrderOut,
    ReturnCreate,
)
from issuers.contexts import MemberContext, member_context_of
from issuers.models import Member, Program
from issuers.repository import member_context_read
from issuers.tiers import tiers_of


class UnknownItem(NotFound):
    code = "unknown_item"
    title = "No such item in this program's mall"


class UnknownOrder(NotFound):
    code = "unknown_order"
    title = "No such order"


class OrderStatusMove(Conflict):
    code = "order_status_move"
    title = "The order cannot make this move from its status"


class VouchersRedeemed(Conflict):
    code = "vouchers_redeemed"
    title = "Redeemed vouchers cannot be returned"


_ORDERS = cast(Table, MallOrder.__table__)
_ITEMS = cast(Table, MallItem.__table__)
_MEMBERS = cast(Table, Member.__table__)
_PROGRAMS = cast(Table, Program.__table__)
_ORDER_COLUMNS = tuple(c.name for c in _ORDERS.c)
_NEW_ORDER = Sql(insert(_ORDERS), _ORDER_COLUMNS)
_ORDER_ROWS = (
    select(
        _ORDERS,
        _ITEMS.c.sku,
        _ITEMS.c.title,
        _ITEMS.c.fulfilment,
        _ITEMS.c.stock_limited,
        _MEMBERS.c.external_id,
        _MEMBERS.c.account_id,
        _MEMBERS.c.status.label("member_status"),
        _PROGRAMS.c.code.label("program_code"),
    )
    .join(_ITEMS, _ITEMS.c.id == _ORDERS.c.item_id)
    .join(_MEMBERS, _MEMBERS.c.id == _ORDERS.c.member_id)
    .join(_PROGRAMS, _PROGRAMS.c.id == _ORDERS.c.program_id)
)
_ORDER_QUERY = _ORDER_ROWS.where(_ORDERS.c.id == bindparam("b_id")).where(
    or_(
        _ORDERS.c.issuer_org_id == bindparam("b_caller"),
        _ORDERS.c.owner_org_id == bindparam("b_caller"),
    )
)
_ORDER = Sql(_ORDER_QUERY)
_LOCK_ORDER = Sql(_ORDER_QUERY.with_for_update(of=_ORDERS))
_CHANGING = (
    "status",
    "returned_quantity",
    "returned_points",
    "returned_cash",
    "returned_wholesale",
    "delivery_reference",
    "fulfilled_at",
    "closed_at",
)
_SAVE = Sql(
    update(_ORDERS)
    .where(_ORDERS.c.id == bindparam("b_id"))
    .values({c: bindparam(f"b_{c}", type_=_ORDERS.c[c].type) for c in _CHANGING})
)


# placing -------------------------------------------------------------------------------------


def place_order(
    session: Session,
    caller: Caller,
    program: str,
    req: OrderCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[OrderOut]:
    """Redeem a member's points for an item, once per key: points, limit and stock or nothing."""
    operation = Operation(
        "mall_order",
        {"program": program, **req.model_dump(mode="json")},
        OrderOut,
        lambda row: _place(
            session, caller, member_context_of(row, program, req.external_id), req, now
        ),
        member_context_read(caller.org_id, program, req.external_id, now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


@dataclass(frozen=True, slots=True)
class _Supply:
    agreement_id: uuid.UUID | None
    rate: Decimal | None
    unit: int


def _supply(
    session: Session, offer: rules.OfferRef, context: MemberContext, now: datetime
) -> _Supply:
    """What the issuer owes the item's owner per unit: nothing for its own item, else the
    wholesale price the supply agreement in force sets."""
    if offer.owner_org_id == context.program.issuer_id:
        return _Supply(None, None, 0)
    agreement = supply_agreement(
        session, offer.owner_org_id, context.program.id, context.program.code, now
    )
    assert agreement.wholesale_rate is not None
    return _Supply(
        agreement.id,
        agreement.wholesale_rate,
        money.wholesale_price(offer.value_amount, agreement.wholesale_rate),
    )


def _place(
    session: Session, caller: Caller, context: MemberContext, req: OrderCreate, now: datetime
) -> OrderOut:
    program = context.program
    if caller.kind != OrgKind.ISSUER or program.issuer_id != caller.org_id:
        raise NotFound(f"unknown program {program.code}")
    member = context.active_member()
    offer = repository.offer_at(session, req.item_id, program.id, now)
    if offer is None:
        raise UnknownItem("no such item in this program's mall")
    tier_rank = None
    if offer.min_tier_rank is not None:
        tier = tiers_of(session, [member])[member.id]
        tier_rank = tier.rank if tier is not None else None
    available = None
    if offer.min_balance > 0:
        balance, held = Ledger(session).member_balance(member.account_id, now)
        available = balance - held
    refused = rules.refusal(
        offer, now, quantity=req.quantity, tier_rank=tier_rank, available=available, taken=0
    )
    if refused is not None:
        raise refused
    assert offer.points is not None
    assert offer.cash_amount is not None
    assert offer.price_version is not None
    if req.expected_points is not None and req.expected_points != offer.points:
        raise rules.PriceChanged(
            "the item's price has changed", points=offer.points, price_version=offer.price_version
        )
    supply = _supply(session, offer, context, now)
    points = money.bounded(offer.points * req.quantity, "points")
    wholesale = money.bounded(supply.unit * req.quantity, "amount")
    currency = context.issuer.currency
    order_id = new_id()
    obligations = (
        [
            ObligationDraft(
                event_type=ObligationEvent.MALL_REDEMPTION,
                payer_org_id=program.issuer_id,
                payee_org_id=offer.owner_org_id,
                currency=currency,
                amount=wholesale,
                program_code=program.code,
                points=points,
            )
        ]
        if wholesale > 0
        else []
    )
    screen(
        session,
        [
            OperationContext(
                action=Action.REDEMPTION,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=now,
                program_id=program.id,
                program_code=program.code,
                issuer_org_id=program.issuer_id,
                member_id=member.id,
                member_external_id=member.external_id,
                member_account_id=member.account_id,
                member_status=member.status,
                merchant_org_id=offer.owner_org_id,
                points=points,
                amount=offer.value_amount * req.quantity,
                currency=currency,
                debits=debits_of(obligations),
                spends=True,
                reference=req.reference or str(order_id),
            )
        ],
    )
    period = rules.limit_period_key(
        offer.limit_period, BusinessCalendar(context.issuer.zone, "00:00").date_of(now)
    )
    if offer.member_limit is not None and period is not None:
        counted = repository.count_use(
            session, offer.item_id, member.id, period, req.quantity, offer.member_limit
        )
        if counted is None:
            taken = repository.taken(session, offer.item_id, member.id, period)
            raise rules.MemberLimitReached(
                f"a member may take {offer.member_limit} per {offer.limit_period}",
                member_limit=offer.member_limit,
                taken=taken,
            )
    ledger = Ledger(session)
    posted = ledger.post(
        EntryDraft(
            kind=EntryKind.MALL_REDEMPTION,
            org_id=caller.org_id,
            booked_at=now,
            legs=[
                Leg(member.account_id, -points),
                Leg(ledger.account_id(points_asset(program.code), REDEEMED, program.id), points),
            ],
            obligations=obligations,
            memo={"mall_order": str(order_id)},
        )
    )
    if offer.stock_limited and not repository.take_stock(session, offer.item_id, req.quantity):
        left = repository.stocks_left(session, [offer.item_id]).get(offer.item_id, 0)
        raise rules.OutOfStock("not enough of the item is left", stock=left)
    voucher_item = offer.fulfilment == "voucher"
    row = {
        "id": order_id,
        "item_id": offer.item_id,
        "program_id": program.id,
        "member_id": member.id,
        "issuer_org_id": program.issuer_id,
        "owner_org_id": offer.owner_org_id,
        "quantity": req.quantity,
        "price_version": offer.price_version,
        "unit_points": offer.points,
        "unit_cash": offer.cash_amount,
        "points": points,
        "cash_amount": money.bounded(offer.cash_amount * req.quantity, "amount"),
        "currency": currency,
        "wholesale_rate": supply.rate,
        "wholesale_unit": supply.unit,
        "wholesale_amount": wholesale,
        "agreement_id": supply.agreement_id,
        "status": "fulfilled" if voucher_item else "placed",
        "limit_period": period if offer.member_limit is not None else None,
        "redemption_entry_id": posted.id,
        "returned_quantity": 0,
        "returned_points": 0,
        "returned_cash": 0,
        "returned_wholesale": 0,
        "delivery_reference": None,
        "reference": req.reference,
        "created_at": now,
        "fulfilled_at": now if voucher_item else None,
        "closed_at": None,
    }
    _NEW_ORDER.rows(session, row)
    codes = (
        vouchers.issue(session, order_id, offer.owner_org_id, req.quantity, now)
        if voucher_item
        else []
    )
    shown = [vouchers.shown(code, "issued", None, to_issuer=True) for code in codes]
    return _out(
        row,
        program=program.code,
        external_id=member.external_id,
        sku=offer.sku,
        title=offer.title,
        shown=shown,
    )


def _out(
    row: dict[str, Any], *, program: str, external_id: str, sku: str, title: str, shown: list[Any]
) -> OrderOut:
    def at(name: str) -> datetime | None:
        value = row[name]
        return aware(value) if value is not None else None

    return OrderOut(
        id=row["id"],
        status=row["status"],
        program=program,
        external_id=external_id,
        item_id=row["item_id"],
        sku=sku,
        title=title,
        owner_org_id=row["owner_org_id"],
        quantity=row["quantity"],
        unit_points=row["unit_points"],
        unit_cash=row["unit_cash"],
        points=row["points"],
        cash_amount=row["cash_amount"],
        currency=row["currency"],
        price_version=row["price_version"],
        wholesale_amount=row["wholesale_amount"],
        returned_quantity=row["returned_quantity"],
        returned_points=row["returned_points"],
        returned_cash=row["returned_cash"],
        delivery_reference=row["delivery_reference"],
        vouchers=shown,
        reference=row["reference"],
        created_at=aware(row["created_at"]),
        fulfilled_at=at("fulfilled_at"),
        closed_at=at("closed_at"),
    )


# reading -------------------------------------------------------------------------------------


def _key(caller: Caller, order_id: uuid.UUID) -> dict[str, Any]:
    return {"b_id": order_id, "b_caller": caller.org_id}


def _order_of(row: Any | None) -> dict[str, Any]:
    """An order row (with its item, member and program) as a dict, or UnknownOrder."""
    if row is None:
        raise UnknownOrder("no such order")
    return dict(row._asdict())


def _order_out(session: Session, caller: Caller, row: dict[str, Any]) -> OrderOut:
    return _orders_out(session, caller, [row])[0]


def _orders_out(session: Session, caller: Caller, rows: list[dict[str, Any]]) -> list[OrderOut]:
    """Orders as the caller sees them, their vouchers read in one query."""
    issued = vouchers.of_orders(session, [row["id"] for row in rows])
    return [
        _out(
            row,
            program=row["program_code"],
            external_id=row["external_id"],
            sku=row["sku"],
            title=row["title"],
            shown=[
                vouchers.shown(
                    v.code, v.status, v.redeemed_at, caller.org_id == row["issuer_org_id"]
                )
                for v in issued[row["id"]]
            ],
        )
        for row in rows
    ]


def get_order(session: Session, caller: Caller, order_id: uuid.UUID) -> OrderOut:
    """An order, to the member's issuer or to the item's owner."""
    return _order_out(session, caller, _order_of(_ORDER.first(session, _key(caller, order_id))))


def list_orders(
    session: Session,
    caller: Caller,
    *,
    status: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[OrderOut]:
    """Orders of the caller's members or of its items, oldest first (ids sort by time)."""
    query = (
        _ORDER_ROWS.where(
            or_(_ORDERS.c.issuer_org_id == caller.org_id, _ORDERS.c.owner_org_id == caller.org_id),
            _ORDERS.c.id > (after or uuid.UUID(int=0)),
        )
        .order_by(_ORDERS.c.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(_ORDERS.c.status == status)
    rows = [dict(row._asdict()) for row in session.execute(query)]
    return _orders_out(session, caller, rows)


# moves ---------------------------------------------------------------------------------------


def _move(
    session: Session,
    caller: Caller,
    name: str,
    order_id: uuid.UUID,
    request: Any,
    now: datetime,
    idempotency_key: str,
    act: Callable[[dict[str, Any]], OrderOut],
) -> Outcome[OrderOut]:
    operation = Operation(
        name,
        {"order": str(order_id), **request.model_dump(mode="json")},
        OrderOut,
        lambda row: act(_order_of(row)),
        FirstRead(_LOCK_ORDER, _key(caller, order_id)),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def _save(session: Session, row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Write an order's changed columns; the order as it now is."""
    saved = {**row, **changes}
    _SAVE.rows(session, {f"b_{c}": saved[c] for c in _CHANGING} | {"b_id": row["id"]})
    return saved


def fulfil(
    session: Session,
    caller: Caller,
    order_id: uuid.UUID,
    req: FulfilmentCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[OrderOut]:
    """The item's owner says it shipped a placed order, with its delivery reference."""

    def act(row: dict[str, Any]) -> OrderOut:
        if caller.org_id != row["owner_org_id"]:
            raise Forbidden("only the item's owner fulfils its orders")
        if row["status"] != "placed":
            raise OrderStatusMove(f"the order is {row['status']}: only a placed order is fulfilled")
        saved = _save(
            session,
            row,
            status="fulfilled",
            delivery_reference=req.delivery_reference,
            fulfilled_at=now,
        )
        return _order_out(session, caller, saved)

    return _move(session, caller, "mall_fulfil", order_id, req, now, idempotency_key, act)


def cancel(
    session: Session,
    caller: Caller,
    order_id: uuid.UUID,
    req: CancelCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[OrderOut]:
    """Cancel a placed order (the member's issuer or the item's owner): the points, the stock
    and the member's limit all come back."""

    def act(row: dict[str, Any]) -> OrderOut:
        if row["status"] != "placed":
            raise OrderStatusMove(f"the order is {row['status']}: only a placed order is cancelled")
        changes = _give_back(
            session,
            caller,
            row,
            row["quantity"],
            now,
            release=True,
            restock=True,
            reason=req.reason,
        )
        saved = _save(session, row, status="cancelled", closed_at=now, **changes)
        return _order_out(session, caller, saved)

    return _move(session, caller, "mall_cancel", order_id, req, now, idempotency_key, act)


def return_units(
    session: Session,
    caller: Caller,
    order_id: uuid.UUID,
    req: ReturnCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[OrderOut]:
    """After-sales return of fulfilled units, in full or in part, as a checkout refund gives
    back: the points and the supplier's price of what is returned so far, never more."""

    def act(row: dict[str, Any]) -> OrderOut:
        if row["status"] != "fulfilled":
            raise OrderStatusMove(
                f"the order is {row['status']}: only a fulfilled order is returned"
            )
        voucher_item = row["fulfilment"] == "voucher"
        if not voucher_item and caller.org_id != row["owner_org_id"]:
            raise Forbidden("the item's owner takes goods back")
        left = row["quantity"] - row["returned_quantity"]
        if req.quantity > left:
            raise InvalidInput(
                f"only {left} units of the order are left to return", field="quantity"
            )
        if voucher_item and vouchers.void_issued(session, row["id"], req.quantity) < req.quantity:
            raise VouchersRedeemed("fewer unredeemed vouchers are left than units to return")
        changes = _give_back(
            session, caller, row, req.quantity, now, release=False, restock=req.restock
        )
        done = changes["returned_quantity"] == row["quantity"]
        saved = _save(
            session,
            row,
            status="returned" if done else "fulfilled",
            closed_at=now if done else None,
            **changes,
        )
        return _order_out(session, caller, saved)

    return _move(session, caller, "mall_return", order_id, req, now, idempotency_key, act)


def _give_back(
    session: Session,
    caller: Caller,
    row: dict[str, Any],
    units: int,
    now: datetime,
    *,
    release: bool,
    restock: bool,
    reason: str = "",
) -> dict[str, int]:
    """Give back `units` more units of an order: their points and the supplier's price, as
    cumulative shares of the order (a full return, in however many steps, gives back exactly
    what was taken); with `release` their count under the member's limit, with `restock` their
    stock. In the lock order of placing an order: screen, limit counter, ledger, stock last."""
    so_far = row["returned_quantity"] + units
    points = money.cumulative_share(row["points"], so_far, row["quantity"]) - row["returned_points"]
    cash = (
        money.cumulative_share(row["cash_amount"], so_far, row["quantity"]) - row["returned_cash"]
    )
    wholesale = (
        money.cumulative_share(row["wholesale_amount"], so_far, row["quantity"])
        - row["returned_wholesale"]
    )
    obligations = (
        [
            ObligationDraft(
                event_type=ObligationEvent.MALL_RETURN,
                payer_org_id=row["owner_org_id"],
                payee_org_id=row["issuer_org_id"],
                currency=row["currency"],
                amount=wholesale,
                program_code=row["program_code"],
                points=points,
            )
        ]
        if wholesale > 0
        else []
    )
    screen(
        session,
        [
            OperationContext(
                action=Action.REDEMPTION_RETURN,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=now,
                program_id=row["program_id"],
                program_code=row["program_code"],
                issuer_org_id=row["issuer_org_id"],
                member_id=row["member_id"],
                member_external_id=row["external_id"],
                member_account_id=row["account_id"],
                member_status=row["member_status"],
                merchant_org_id=row["owner_org_id"],
                points=points,
                currency=row["currency"],
                debits=debits_of(obligations),
                reference=str(row["id"]),
            )
        ],
    )
    if release and row["limit_period"] is not None:
        repository.uncount_use(
            session, row["item_id"], row["member_id"], row["limit_period"], units
        )
    ledger = Ledger(session)
    redeemed = ledger.account_id(points_asset(row["program_code"]), REDEEMED, row["program_id"])
    ledger.post(
        EntryDraft(
            kind=EntryKind.MALL_RETURN,
            org_id=caller.org_id,
            booked_at=now,
            reverses_id=row["redemption_entry_id"],
            legs=[
                Leg(redeemed, -points),
                Leg(row["account_id"], points, restore_from=row["redemption_entry_id"]),
            ],
            obligations=obligations,
            memo={"mall_order": str(row["id"]), **({"reason": reason} if reason else {})},
        )
    )
    if restock and row["stock_limited"]:
        repository.give_back_stock(session, row["item_id"], units, row["id"].int)
    return {
        "returned_quantity": so_far,
        "returned_points": row["returned_points"] + points,
        "returned_cash": row["returned_cash"] + cash,
        "returned_wholesale": row["returned_wholesale"] + wholesale,
    }
