"""Points mall orders on both databases: every state move and every refusal, with the ledger,
the stock, the member limits and the settlement obligations they leave (or do not leave)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import Hold, Obligation
from clearing.core.policy import bind_policy
from clearing.web.context import Caller
from exchange.mall import orders, repository, vouchers
from exchange.mall.models import MallOrder
from exchange.mall.schemas import (
    CancelCreate,
    FulfilmentCreate,
    OrderCreate,
    OrderOut,
    ReturnCreate,
    VoucherRedeem,
)
from issuers import agreements, tiers
from risk import freezes
from risk.freezes import FreezeRule
from risk.policy import RiskPolicy
from risk.schemas import FreezeCreate
from tests.exchange.mall_factories import create_item_with_offer, program_id, supply_agreement
from tests.factories import T0, World, accrue, balance, build_world, key, member


def new_item(engine: Engine, owner: Caller, **fields: Any) -> uuid.UUID:
    """An item on sale in BANKA, made through the catalogue as its owner would."""
    return create_item_with_offer(engine, owner=owner, program="BANKA", **fields).id


def order(
    engine: Engine,
    issuer: Caller,
    item_id: uuid.UUID,
    external_id: str = "alice",
    quantity: int = 1,
    now: datetime = T0,
    idem: str | None = None,
    **extra: Any,
) -> OrderOut:
    with transaction(engine) as session:
        out, _ = orders.place_order(
            session,
            issuer,
            "BANKA",
            OrderCreate(external_id=external_id, item_id=item_id, quantity=quantity, **extra),
            now,
            idem or key(),
        )
        return out


def refused(call: Callable[[], object]) -> str:
    """The code a refusal gives (a risk decline: the code of its rule)."""
    with pytest.raises(ClearingError) as caught:
        call()
    return str(caught.value.problem()["code"])


def stock(engine: Engine, item_id: uuid.UUID) -> int:
    with transaction(engine) as session:
        return repository.stocks_left(session, [item_id]).get(item_id, 0)


def mall_obligations(engine: Engine) -> list[tuple[str, uuid.UUID, uuid.UUID, int]]:
    with transaction(engine) as session:
        rows = session.execute(
            select(Obligation).order_by(Obligation.booked_at, Obligation.entry_id, Obligation.seq)
        ).scalars()
        return [
            (o.event_type, o.payer_org_id, o.payee_org_id, o.amount)
            for o in rows
            if o.event_type.startswith("mall_")
        ]


def counts(engine: Engine) -> tuple[int, int]:
    """Orders written, and holds open, so far."""
    with transaction(engine) as session:
        placed = session.execute(select(func.count()).select_from(MallOrder)).scalar_one()
        held = session.execute(
            select(func.count()).select_from(Hold).where(Hold.status == "authorised")
        ).scalar_one()
        return placed, held


def clean(engine: Engine) -> None:
    with transaction(engine) as session:
        assert check_ledger(session) == []


@pytest.fixture
def w(engine: Engine) -> World:
    """The factories' world under the freeze rule; alice has 10,000 BANKA points, bob 100."""
    bind_policy(engine, RiskPolicy(rules=[FreezeRule()]))
    made = build_world(engine)
    for name in ("alice", "bob"):
        member(engine, made.bank_a, "BANKA", name)
    accrue(engine, made.bank_a, "BANKA", "alice", 10_000)
    accrue(engine, made.bank_a, "BANKA", "bob", 100)
    return made


def test_an_issuers_own_item_placed_fulfilled_and_returned_in_two_steps(
    engine: Engine, w: World
) -> None:
    item = new_item(engine, w.bank_a, points=1500, cash_amount=990, stock=5)
    placed = order(engine, w.bank_a, item, quantity=3, reference="APP-1")
    assert (placed.status, placed.points, placed.cash_amount, placed.quantity) == (
        "placed",
        4500,
        2970,
        3,
    )
    assert placed.wholesale_amount == 0
    assert balance(engine, w.bank_a, "BANKA", "alice") == (5500, 5500)
    assert stock(engine, item) == 2
    assert mall_obligations(engine) == []  # its own item: nobody to pay
    with transaction(engine) as session:
        done, _ = orders.fulfil(
            session, w.bank_a, placed.id, FulfilmentCreate(delivery_reference="SF123"), T0, key()
        )
    assert (done.status, done.delivery_reference) == ("fulfilled", "SF123")
    for units, points_back, status in ((1, 1500, "fulfilled"), (2, 3000, "returned")):
        with transaction(engine) as session:
            back, _ = orders.return_units(
                session, w.bank_a, placed.id, ReturnCreate(quantity=units), T0, key()
            )
        assert back.status == status
        assert back.returned_points - (0 if units == 1 else 1500) == points_back
    assert (back.returned_quantity, back.returned_points, back.returned_cash) == (3, 4500, 2970)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 10_000)
    assert stock(engine, item) == 2  # returned goods are not put back on sale unless asked
    clean(engine)


def test_a_suppliers_item_is_paid_at_the_agreed_wholesale_rate_and_cancelled_back(
    engine: Engine, w: World
) -> None:
    rate = Decimal("0.85")
    agreement = supply_agreement(engine, merchant=w.cafe, program="BANKA", wholesale_rate=rate)
    item = new_item(
        engine,
        w.cafe,
        points=800,
        value_amount=3001,
        stock=10,
        member_limit=2,
        limit_period="month",
    )
    with transaction(engine) as session:
        agreements.end(session, w.bank_a, agreement, T0)
    # offered while the agreement was in force; ordered once it ended: refused
    assert refused(lambda: order(engine, w.bank_a, item)) == "no_supply_agreement"
    supply_agreement(engine, merchant=w.cafe, program="BANKA", wholesale_rate=rate)
    placed = order(engine, w.bank_a, item, quantity=2)
    # 30.01 CNY x 0.85 = 25.5085 CNY per unit: what is owed rounds up, 2551 fen, x 2 units
    assert placed.wholesale_amount == 5102
    assert mall_obligations(engine) == [("mall_redemption", w.bank_a.org_id, w.cafe.org_id, 5102)]
    assert refused(lambda: order(engine, w.bank_a, item)) == "member_limit_reached"
    with transaction(engine) as session:
        gone, _ = orders.cancel(
            session, w.cafe, placed.id, CancelCreate(reason="sold out"), T0, key()
        )
    assert gone.status == "cancelled"
    assert mall_obligations(engine)[-1] == ("mall_return", w.cafe.org_id, w.bank_a.org_id, 5102)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 10_000)
    assert stock(engine, item) == 10
    assert order(engine, w.bank_a, item, quantity=2).status == "placed"  # the limit came back
    clean(engine)


def test_vouchers_are_issued_unique_shown_to_the_issuer_and_redeemed_once(
    engine: Engine, w: World
) -> None:
    supply_agreement(engine, merchant=w.cafe, program="BANKA", wholesale_rate=Decimal("0.85"))
    item = new_item(engine, w.cafe, points=600, fulfilment="voucher")
    placed = order(engine, w.bank_a, item, quantity=3)
    assert placed.status == "fulfilled"
    codes = [v.code for v in placed.vouchers]
    assert len(set(codes)) == 3
    assert all(c is not None and len(c.replace("-", "")) == vouchers.CODE_CHARS for c in codes)
    with transaction(engine) as session:
        as_supplier = orders.get_order(session, w.cafe, placed.id)
        as_issuer = orders.get_order(session, w.bank_a, placed.id)
    assert [v.code for v in as_supplier.vouchers] == [None] * 3
    assert [v.code for v in as_issuer.vouchers] == codes
    first = codes[0]
    assert first is not None
    typed = first.replace("-", " ").lower().replace("1", "l").replace("0", "o")
    with transaction(engine) as session:
        done = vouchers.redeem(session, w.cafe, VoucherRedeem(code=typed), T0)
    assert (done.order_id, done.code_hint) == (placed.id, f"****{first[-4:]}")

    def again(caller: Caller, code: str) -> None:
        with transaction(engine) as session:
            vouchers.redeem(session, caller, VoucherRedeem(code=code), T0)

    assert refused(lambda: again(w.cafe, first)) == "voucher_redeemed"
    assert refused(lambda: again(w.shop, codes[1] or "")) == "unknown_voucher"
    assert refused(lambda: again(w.cafe, "AAAA-BBBB-CCCC-DDDD")) == "unknown_voucher"

    # two of three are unredeemed: a return of three is refused, of two voids them
    def give_back(units: int) -> OrderOut:
        with transaction(engine) as session:
            return orders.return_units(
                session, w.bank_a, placed.id, ReturnCreate(quantity=units), T0, key()
            )[0]

    assert refused(lambda: give_back(3)) == "vouchers_redeemed"
    back = give_back(2)
    assert (back.status, back.returned_points) == ("fulfilled", 1200)
    assert refused(lambda: again(w.cafe, codes[2] or "")) == "voucher_void"
    assert balance(engine, w.bank_a, "BANKA", "alice") == (9_400, 9_400)
    clean(engine)


def test_every_refusal_leaves_no_order_no_points_no_stock_and_no_hold_taken(
    engine: Engine, w: World
) -> None:
    bank = program_id(engine, "BANKA")
    with transaction(engine) as session:
        tiers.define_tier(session, bank, "base", "Base", 0, Decimal("1"), T0)
        tiers.define_tier(session, bank, "gold", "Gold", 1, Decimal("2"), T0)
    later = T0 + timedelta(days=2)
    items = {
        "out_of_stock": new_item(engine, w.bank_a, points=10, stock=1),
        "member_limit_reached": new_item(
            engine, w.bank_a, points=10, member_limit=1, limit_period="ever"
        ),
        "tier_required": new_item(engine, w.bank_a, points=10, min_tier="gold"),
        "outside_sale_window": new_item(engine, w.bank_a, points=10, sale_from=later),
        "insufficient_points": new_item(engine, w.bank_a, points=20_000),
        "below_min_balance": new_item(engine, w.bank_a, points=10, min_balance=50_000),
        "item_not_on_sale": new_item(engine, w.bank_a, points=10, status="withdrawn"),
        "price_changed": new_item(engine, w.bank_a, points=10),
    }
    before = (balance(engine, w.bank_a, "BANKA", "alice"), counts(engine))
    attempts: dict[str, Callable[[], object]] = {
        "out_of_stock": lambda: order(engine, w.bank_a, items["out_of_stock"], quantity=2),
        "member_limit_reached": lambda: order(
            engine, w.bank_a, items["member_limit_reached"], quantity=2
        ),
        "price_changed": lambda: order(engine, w.bank_a, items["price_changed"], expected_points=9),
    }
    for code, item in items.items():
        attempt = attempts.get(code, lambda item=item: order(engine, w.bank_a, item))
        assert refused(attempt) == code
    assert refused(lambda: order(engine, w.bank_a, uuid.uuid4())) == "unknown_item"
    assert refused(lambda: order(engine, w.bank_b, items["price_changed"])) == "not_found"
    with transaction(engine) as session:
        freezes.freeze(
            session,
            Caller(w.platform.org_id, "platform", "operator-key"),
            FreezeCreate(subject="member", program="BANKA", external_id="alice", reason="fraud"),
            T0,
        )
    assert refused(lambda: order(engine, w.bank_a, items["price_changed"])) == "frozen"
    assert (balance(engine, w.bank_a, "BANKA", "alice"), counts(engine)) == before
    assert stock(engine, items["out_of_stock"]) == 1
    with transaction(engine) as session:
        assert (
            repository.taken(session, items["member_limit_reached"], _id(engine, "alice"), "ever")
            == 0
        )
    clean(engine)


def _id(engine: Engine, external_id: str) -> uuid.UUID:
    from issuers.models import Member

    with transaction(engine) as session:
        return session.execute(
            select(Member.id).where(Member.external_id == external_id)
        ).scalar_one()


def test_state_moves_a_status_does_not_allow_are_refused(engine: Engine, w: World) -> None:
    item = new_item(engine, w.bank_a, points=100, stock=3)
    placed = order(engine, w.bank_a, item)

    def move(name: str, caller: Caller) -> OrderOut:
        with transaction(engine) as session:
            if name == "fulfil":
                req: Any = FulfilmentCreate(delivery_reference="X")
                return orders.fulfil(session, caller, placed.id, req, T0, key())[0]
            if name == "cancel":
                return orders.cancel(session, caller, placed.id, CancelCreate(), T0, key())[0]
            return orders.return_units(
                session, caller, placed.id, ReturnCreate(quantity=1), T0, key()
            )[0]

    assert refused(lambda: move("return", w.bank_a)) == "order_status_move"
    assert refused(lambda: move("fulfil", w.shop)) == "unknown_order"  # not a party to it
    assert move("fulfil", w.bank_a).status == "fulfilled"
    assert refused(lambda: move("cancel", w.bank_a)) == "order_status_move"
    assert refused(lambda: move("fulfil", w.bank_a)) == "order_status_move"


def test_a_retried_order_is_placed_once(engine: Engine, w: World) -> None:
    item = new_item(engine, w.bank_a, points=100, stock=3)
    idem = key()
    first = order(engine, w.bank_a, item, idem=idem)
    again = order(engine, w.bank_a, item, idem=idem)
    assert again == first
    assert stock(engine, item) == 2
    assert counts(engine) == (1, 0)


def test_concurrent_orders_for_the_last_units_confirm_exactly_the_stock(pg_engine: Engine) -> None:
    """N orders for the last K units, from real concurrent connections: K confirmed, N - K refused
    as out of stock, no hold left; and one member's concurrent orders never pass its limit."""
    w = build_world(pg_engine)
    buyers = [f"m{n}" for n in range(24)]
    for name in buyers:
        member(pg_engine, w.bank_a, "BANKA", name)
        accrue(pg_engine, w.bank_a, "BANKA", name, 1_000)
    hot = new_item(pg_engine, w.bank_a, points=100, stock=5)
    limited = new_item(pg_engine, w.bank_a, points=10, member_limit=3, limit_period="day")
    results: list[str] = []
    barrier = threading.Barrier(32)

    def one(external_id: str, item: uuid.UUID) -> None:
        barrier.wait()
        try:
            order(pg_engine, w.bank_a, item, external_id=external_id)
            results.append(f"{item}:placed")
        except ClearingError as error:
            results.append(f"{item}:{error.code}")

    threads = [threading.Thread(target=one, args=(name, hot)) for name in buyers]
    threads += [threading.Thread(target=one, args=("m0", limited)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(
        [f"{hot}:placed"] * 5
        + [f"{hot}:out_of_stock"] * 19
        + [f"{limited}:placed"] * 3
        + [f"{limited}:member_limit_reached"] * 5
    )
    assert stock(pg_engine, hot) == 0
    assert counts(pg_engine) == (8, 0)
    spent = sum(1_000 - balance(pg_engine, w.bank_a, "BANKA", n)[0] for n in buyers)
    assert spent == 5 * 100 + 3 * 10
    clean(pg_engine)


def test_cancellations_racing_new_orders_never_deadlock_nor_lose_a_unit(pg_engine: Engine) -> None:
    """Cancellations give stock and limit back while other orders take them, in the same lock
    order: no deadlock, and the stock always equals what was put in less what stays sold."""
    w = build_world(pg_engine)
    buyers = [f"m{n}" for n in range(6)]
    for name in buyers:
        member(pg_engine, w.bank_a, "BANKA", name)
        accrue(pg_engine, w.bank_a, "BANKA", name, 10_000)
    # enough stock and limit for every new order whether the cancellations come first or last
    item = new_item(pg_engine, w.bank_a, points=100, stock=18, member_limit=3, limit_period="day")
    first = [order(pg_engine, w.bank_a, item, external_id=name) for name in buyers]
    barrier = threading.Barrier(len(buyers) * 2)
    errors: list[BaseException] = []
    placed: list[OrderOut] = []

    def cancel_one(out: OrderOut) -> None:
        barrier.wait()
        try:
            with transaction(pg_engine) as session:
                orders.cancel(session, w.bank_a, out.id, CancelCreate(), T0, key())
        except BaseException as error:  # shown by the assertion below
            errors.append(error)

    def order_one(name: str) -> None:
        barrier.wait()
        try:
            placed.append(order(pg_engine, w.bank_a, item, external_id=name, quantity=2))
        except BaseException as error:  # shown by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=cancel_one, args=(out,)) for out in first]
    threads += [threading.Thread(target=order_one, args=(name,)) for name in buyers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(placed) == 6
    assert stock(pg_engine, item) == 18 - 2 * 6
    with transaction(pg_engine) as session:
        for name in buyers:
            assert repository.taken(session, item, _id(pg_engine, name), "2026-11-20") == 2
    clean(pg_engine)
