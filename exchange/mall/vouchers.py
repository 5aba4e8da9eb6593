"""Voucher codes: issued by the platform for each unit of a voucher item, redeemed once by the
item's owner at its till."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from clearing.core.db import Sql
from clearing.core.errors import Conflict, NotFound
from clearing.core.ids import new_id
from clearing.core.timeutil import aware
from clearing.web.context import Caller
from exchange.mall.models import MallItem, MallOrder, MallVoucher
from exchange.mall.schemas import VoucherOut, VoucherRedeem, VoucherRedeemed

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base 32: no I, L, O or U, so a code read aloud or typed is not mistaken."""
CODE_CHARS = 16
"""16 characters of 5 bits: 80 random bits, unguessable at any rate a till can try."""
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})


class UnknownVoucher(NotFound):
    code = "unknown_voucher"
    title = "No such voucher"


class VoucherRedeemedAlready(Conflict):
    code = "voucher_redeemed"
    title = "The voucher was already redeemed"


class VoucherVoid(Conflict):
    code = "voucher_void"
    title = "The voucher was given back and is void"


def new_code() -> str:
    """A fresh code, grouped in fours: XXXX-XXXX-XXXX-XXXX."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_CHARS, 4))


def normalised(typed: str) -> str:
    """A code as a person may type it (lower case, spaces, I/L for 1, O for 0), as issued."""
    raw = typed.upper().replace("-", "").replace(" ", "").translate(_READ_AS)
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def hint(code: str) -> str:
    """What a supplier or a log may see of a code: its last four characters."""
    return f"****{code[-4:]}"


_VOUCHERS = cast(Table, MallVoucher.__table__)
_NEW = Sql(
    insert(_VOUCHERS),
    ("id", "order_id", "owner_org_id", "code", "status", "issued_at"),
)


def issue(
    session: Session, order_id: uuid.UUID, owner_org_id: uuid.UUID, units: int, now: datetime
) -> list[str]:
    """Issue one code per unit of an order."""
    codes = [new_code() for _ in range(units)]
    _NEW.run_many(
        session,
        [
            {
                "id": new_id(),
                "order_id": order_id,
                "owner_org_id": owner_org_id,
                "code": code,
                "status": "issued",
                "issued_at": now,
            }
            for code in codes
        ],
    )
    return codes


def of_orders(session: Session, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """The vouchers of orders, in the order they were issued."""
    found: dict[uuid.UUID, list[Any]] = {o: [] for o in order_ids}
    if not order_ids:
        return found
    rows = session.execute(
        select(_VOUCHERS).where(_VOUCHERS.c.order_id.in_(order_ids)).order_by(_VOUCHERS.c.id)
    )
    for row in rows:
        found[row.order_id].append(row)
    return found


def shown(code: str, status: str, redeemed_at: datetime | None, to_issuer: bool) -> VoucherOut:
    """A voucher as one party sees it: the member's issuer sees the code, the supplier its hint."""
    return VoucherOut(
        code=code if to_issuer else None,
        code_hint=hint(code),
        status=status,
        redeemed_at=aware(redeemed_at) if redeemed_at is not None else None,
    )


def void_issued(session: Session, order_id: uuid.UUID, units: int) -> int:
    """Void up to `units` unredeemed vouchers of an order (oldest first): how many were."""
    ids = list(
        session.execute(
            select(_VOUCHERS.c.id)
            .where(_VOUCHERS.c.order_id == order_id, _VOUCHERS.c.status == "issued")
            .order_by(_VOUCHERS.c.id)
            .limit(units)
            .with_for_update()
        ).scalars()
    )
    if ids:
        session.execute(update(_VOUCHERS).where(_VOUCHERS.c.id.in_(ids)).values(status="void"))
    return len(ids)


_REDEEM = Sql(
    update(_VOUCHERS)
    .where(
        _VOUCHERS.c.code == bindparam("b_code"),
        _VOUCHERS.c.owner_org_id == bindparam("b_owner"),
        _VOUCHERS.c.status == "issued",
    )
    .values(
        status="redeemed",
        redeemed_at=bindparam("b_now", type_=_VOUCHERS.c.redeemed_at.type),
        redeemed_key=bindparam("b_key"),
    )
    .returning(_VOUCHERS.c.order_id, _VOUCHERS.c.code, _VOUCHERS.c.redeemed_at)
)


def redeem(session: Session, caller: Caller, req: VoucherRedeem, now: datetime) -> VoucherRedeemed:
    """The item's owner redeems a code at its till, once: one conditional update decides."""
    code = normalised(req.code)
    done = _REDEEM.first(
        session, {"b_code": code, "b_owner": caller.org_id, "b_now": now, "b_key": caller.key_id}
    )
    if done is None:
        row = session.execute(
            select(_VOUCHERS.c.status).where(
                _VOUCHERS.c.code == code, _VOUCHERS.c.owner_org_id == caller.org_id
            )
        ).first()
        if row is None:
            raise UnknownVoucher("no voucher of yours has this code")
        if row.status == "void":
            raise VoucherVoid("this voucher was given back: it is void")
        raise VoucherRedeemedAlready("this voucher was already redeemed")
    item = session.execute(
        select(MallItem.id, MallItem.sku, MallItem.title)
        .join(MallOrder, MallOrder.item_id == MallItem.id)
        .where(MallOrder.id == done.order_id)
    ).one()
    return VoucherRedeemed(
        order_id=done.order_id,
        item_id=item.id,
        sku=item.sku,
        title=item.title,
        code_hint=hint(done.code),
        redeemed_at=now,
    )
