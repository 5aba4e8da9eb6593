"""The points mall's catalogue on both databases: items, status moves, stock, offers and price
versions, who sees an item, and the member's listing filtered by the one eligibility rule."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.web.context import Caller
from exchange.mall import catalogue, repository, rules
from exchange.mall.models import MallLimitUse, MallStock
from exchange.mall.schemas import ItemCreate, ItemOut, ItemUpdate, OfferSet, StockChange
from issuers import agreements, tiers
from issuers import repository as issuers_repository
from issuers.programs import program_by_code
from issuers.schemas import AgreementCreate
from tests.exchange.mall_factories import create_item_with_offer, supply_agreement
from tests.factories import T0, World, accrue, build_world, member, org, program

LATER = T0 + timedelta(days=3)


def refused(code: str, call: Callable[[], Any]) -> ClearingError:
    """`call` raises the platform error of `code`; the error."""
    with pytest.raises(ClearingError) as error:
        call()
    assert error.value.code == code, error.value.detail
    return error.value


def new_item(session: Session, owner: Caller, **fields: Any) -> ItemOut:
    body: dict[str, Any] = {"sku": f"sku-{uuid.uuid4().hex[:8]}", "title": "Mug"}
    body["value_amount"] = 1000
    return catalogue.create_item(session, owner, ItemCreate(**(body | fields)), T0)


def offer(points: int = 100, program: str = "BANKA", **fields: Any) -> OfferSet:
    return OfferSet(program=program, points=points, **fields)


def slots(session: Session, item_id: uuid.UUID) -> list[int]:
    return list(
        session.scalars(
            select(MallStock.remaining).where(MallStock.item_id == item_id).order_by(MallStock.slot)
        )
    )


# items ---------------------------------------------------------------------------------------


def test_an_item_takes_its_owners_currency_and_its_stock_in_slots(engine: Engine) -> None:
    w = build_world(engine)
    hkd = org(engine, "issuer", "HK Bank", currency="HKD")
    with transaction(engine) as session:
        limited = new_item(session, w.bank_a, stock=21, member_limit=2, limit_period="month")
        unlimited = new_item(session, hkd)
        assert (limited.currency, limited.stock, limited.status) == ("CNY", 21, "draft")
        assert slots(session, limited.id) == [3, 3, 3, 3, 3, 2, 2, 2]
        assert (limited.member_limit, limited.limit_period) == (2, "month")
        assert (unlimited.currency, unlimited.stock) == ("HKD", None)
        assert slots(session, unlimited.id) == []
        assert catalogue.get_item(session, w.bank_a, limited.id, T0) == limited


def test_item_creation_refusals(engine: Engine) -> None:
    w = build_world(engine)
    with transaction(engine) as session:
        new_item(session, w.shop, sku="MUG-1")
        new_item(session, w.cafe, sku="MUG-1")  # a sku is the owner's own code
        refused("sku_taken", lambda: new_item(session, w.shop, sku="MUG-1"))
        refused("forbidden", lambda: new_item(session, w.platform))
        error = refused(
            "invalid_input", lambda: new_item(session, w.shop, sale_from=T0, sale_to=T0)
        )
        assert error.extra["field"] == "sale_to"
        error = refused("invalid_input", lambda: new_item(session, w.shop, member_limit=1))
        assert error.extra["field"] == "limit_period"
        error = refused("invalid_input", lambda: new_item(session, w.shop, limit_period="day"))
        assert error.extra["field"] == "member_limit"
        refused("item_not_priced", lambda: new_item(session, w.shop, status="on_sale"))


def test_status_moves(engine: Engine) -> None:
    w = build_world(engine)
    with transaction(engine) as session:
        item = new_item(session, w.bank_a)

        def move(status: Any, by: Caller = w.bank_a) -> str:
            return catalogue.update_item(session, by, item.id, ItemUpdate(status=status), T0).status

        refused("item_not_priced", lambda: move("on_sale"))
        catalogue.set_offer(session, w.bank_a, item.id, offer(), T0)
        refused("not_found", lambda: move("withdrawn", by=w.bank_b))
        assert move("on_sale") == "on_sale"
        assert move("on_sale") == "on_sale"  # no move: a repeated request answers the same
        refused("item_status_move", lambda: move("draft"))
        assert move("withdrawn") == "withdrawn"
        refused("item_status_move", lambda: move("draft"))
        assert move("on_sale") == "on_sale"
        other = new_item(session, w.bank_a)
        assert (
            catalogue.update_item(session, w.bank_a, other.id, ItemUpdate(status="withdrawn"), T0)
        ).status == "withdrawn"


def test_update_changes_what_is_sent_and_clears_what_is_null(engine: Engine) -> None:
    w = build_world(engine)
    with transaction(engine) as session:
        item = new_item(session, w.bank_a, sale_from=T0, sale_to=LATER)
        changed = catalogue.update_item(
            session,
            w.bank_a,
            item.id,
            ItemUpdate.model_validate(
                {"title": "Cup", "sale_to": None, "member_limit": 3, "limit_period": "day"}
            ),
            LATER,
        )
        assert (changed.title, changed.sale_from, changed.sale_to) == ("Cup", T0, None)
        assert (changed.member_limit, changed.limit_period, changed.updated_at) == (3, "day", LATER)
        error = refused(
            "invalid_input",
            lambda: catalogue.update_item(
                session, w.bank_a, item.id, ItemUpdate(sale_from=T0, sale_to=T0), T0
            ),
        )
        assert error.extra["field"] == "sale_to"
        refused(
            "invalid_input",
            lambda: catalogue.update_item(
                session, w.bank_a, item.id, ItemUpdate.model_validate({"limit_period": None}), T0
            ),
        )
        assert catalogue.get_item(session, w.bank_a, item.id, T0).limit_period == "day"


# stock ---------------------------------------------------------------------------------------


def test_stock_is_added_and_taken_off_never_below_zero(engine: Engine) -> None:
    w = build_world(engine)
    with transaction(engine) as session:
        item = new_item(session, w.shop, stock=10)

        def change(units: int, by: Caller = w.shop, item_id: uuid.UUID = item.id) -> int | None:
            return catalogue.change_stock(session, by, item_id, StockChange(units=units), T0).stock

        assert change(5) == 15
        assert change(-13) == 2
        assert min(slots(session, item.id)) >= 0
        error = refused("stock_insufficient", lambda: change(-3))
        assert error.extra["stock"] == 2
        assert change(-2) == 0
        assert slots(session, item.id) == [0] * 8
        refused("invalid_input", lambda: change(0))
        refused("not_found", lambda: change(1, by=w.cafe))
        unlimited = new_item(session, w.shop)
        refused("stock_unlimited", lambda: change(1, item_id=unlimited.id))


# offers and prices ---------------------------------------------------------------------------


def test_price_versions_are_appended_and_read_at_the_order_instant(engine: Engine) -> None:
    w = build_world(engine)
    with transaction(engine) as session:
        item = new_item(session, w.bank_a)
        first = catalogue.set_offer(session, w.bank_a, item.id, offer(100, cash_amount=50), T0)
        assert first.price is not None
        assert first.price.version == 1
        second = catalogue.set_offer(
            session, w.bank_a, item.id, offer(80, min_balance=10, effective_from=LATER), T0
        )
        assert second.price == first.price  # the new version is not in force yet
        assert [(p.version, p.points, p.cash_amount) for p in second.prices] == [
            (1, 100, 50),
            (2, 80, 0),
        ]
        assert second.min_balance == 10  # the offer itself changes at once
        program_id = program_by_code(session, "BANKA").id
        before = repository.offer_at(session, item.id, program_id, LATER - timedelta(seconds=1))
        after = repository.offer_at(session, item.id, program_id, LATER)
        assert before is not None
        assert after is not None
        assert (before.price_version, before.points, before.cash_amount) == (1, 100, 50)
        assert (after.price_version, after.points, after.cash_amount) == (2, 80, 0)
        assert (
            catalogue.get_item(session, w.bank_a, item.id, LATER).offers[0].price
            == (second.prices[1])
        )

        def price(at: datetime | None, now: datetime = T0) -> Any:
            return catalogue.set_offer(
                session, w.bank_a, item.id, offer(90, effective_from=at), now
            )

        refused("price_history", lambda: price(LATER - timedelta(seconds=1)))  # before v2
        refused("price_history", lambda: price(T0 - timedelta(seconds=1)))  # in the past
        refused("invalid_input", lambda: price(T0 + timedelta(days=400)))  # beyond the horizon
        third = price(None, now=LATER)
        assert third.price is not None
        assert third.price.version == 3


def test_the_price_in_force_read_in_sql_and_in_python_agree(engine: Engine) -> None:
    """Twins: an order reads the price in force in SQL (`repository.offer_at`), the item's answer
    picks it in Python (`catalogue.get_item`); at every instant they name the same version, two
    versions from the same instant included (the later one wins)."""
    w = build_world(engine)
    with transaction(engine) as session:
        item = new_item(session, w.bank_a)
        catalogue.set_offer(session, w.bank_a, item.id, offer(100), T0)
        for points in (90, 80):  # two versions from the same instant
            catalogue.set_offer(session, w.bank_a, item.id, offer(points, effective_from=LATER), T0)
        catalogue.set_offer(
            session, w.bank_a, item.id, offer(70, effective_from=LATER + timedelta(days=1)), T0
        )
        program_id = program_by_code(session, "BANKA").id
        seen = []
        for at in (
            T0,
            LATER - timedelta(microseconds=1),
            LATER,
            LATER + timedelta(hours=23),
            LATER + timedelta(days=1),
            LATER + timedelta(days=30),
        ):
            in_sql = repository.offer_at(session, item.id, program_id, at)
            in_python = catalogue.get_item(session, w.bank_a, item.id, at).offers[0].price
            assert in_sql is not None
            assert in_python is not None
            assert (in_sql.price_version, in_sql.points) == (in_python.version, in_python.points)
            seen.append(in_python.version)
    assert seen == [1, 1, 3, 3, 4, 4]


def test_an_issuer_offers_its_items_in_its_own_programs_only(engine: Engine) -> None:
    w = build_world(engine)
    with transaction(engine) as session:
        banka = program_by_code(session, "BANKA").id
        tiers.define_tier(session, banka, "std", "Standard", 0, Decimal("1"), T0)
        tiers.define_tier(session, banka, "gold", "Gold", 2, Decimal("2"), T0)
        item = new_item(session, w.bank_a)
        refused(
            "foreign_program",
            lambda: catalogue.set_offer(session, w.bank_a, item.id, offer(program="BANKB"), T0),
        )
        refused(
            "not_found",
            lambda: catalogue.set_offer(session, w.bank_a, item.id, offer(program="NOPE"), T0),
        )
        refused(
            "tier_unknown",
            lambda: catalogue.set_offer(session, w.bank_a, item.id, offer(min_tier="platinum"), T0),
        )
        refused("not_found", lambda: catalogue.set_offer(session, w.bank_b, item.id, offer(), T0))
        out = catalogue.set_offer(session, w.bank_a, item.id, offer(min_tier="gold"), T0)
        assert (out.program, out.min_tier, out.listed) == ("BANKA", "gold", True)
        out = catalogue.set_offer(session, w.bank_a, item.id, offer(listed=False), T0)
        assert (out.min_tier, out.listed, len(out.prices)) == (None, False, 2)


def test_a_supplier_needs_an_agreement_to_supply_in_the_programs_currency(engine: Engine) -> None:
    w = build_world(engine)
    hkd_bank = org(engine, "issuer", "HK Bank", currency="HKD")
    program(engine, hkd_bank, "HKPTS", "0.01")
    with transaction(engine) as session:
        item = new_item(session, w.shop)

        def offer_in(code: str) -> Any:
            return catalogue.set_offer(session, w.shop, item.id, offer(program=code), T0)

        refused("no_supply_agreement", lambda: offer_in("BANKA"))
        # An agreement to accept and fund the points is not one to supply the mall.
        accepting = agreements.propose(
            session, w.shop, AgreementCreate(program="BANKA", accept=True, fund=True), T0
        )
        agreements.approve(session, w.bank_a, accepting.id, T0)
        refused("no_supply_agreement", lambda: offer_in("BANKA"))
        supply_agreement(session, merchant=w.shop, program="BANKA")
        supply_agreement(session, merchant=w.shop, program="HKPTS")
        refused("currency_mismatch", lambda: offer_in("HKPTS"))
        assert offer_in("BANKA").program == "BANKA"
        # An agreement not yet in force supplies nothing.
        later = agreements.propose(
            session,
            w.shop,
            AgreementCreate(
                program="BANKB",
                accept=True,
                fund=False,
                supply=True,
                wholesale_rate=Decimal("0.7"),
                valid_from=LATER,
            ),
            T0,
        )
        agreements.approve(session, w.bank_b, later.id, T0)
        refused("no_supply_agreement", lambda: offer_in("BANKB"))


def test_an_item_is_seen_by_its_owner_and_the_issuers_it_is_offered_to(engine: Engine) -> None:
    w = build_world(engine)
    supply_agreement(engine, merchant=w.shop, program="BANKA")
    supply_agreement(engine, merchant=w.shop, program="BANKB")
    item = create_item_with_offer(engine, owner=w.shop, program="BANKA", points=100)
    with transaction(engine) as session:
        catalogue.set_offer(session, w.shop, item.id, offer(program="BANKB"), T0)
        assert [o.program for o in catalogue.get_item(session, w.shop, item.id, T0).offers] == [
            "BANKA",
            "BANKB",
        ]
        # An issuer sees the item's offer in its own program, not its deal with another issuer.
        seen = catalogue.get_item(session, w.bank_a, item.id, T0)
        assert [o.program for o in seen.offers] == ["BANKA"]
        for stranger in (w.carrier, w.cafe, w.platform):
            with pytest.raises(ClearingError) as error:
                catalogue.get_item(session, stranger, item.id, T0)
            assert error.value.code == "not_found"
        refused("not_found", lambda: catalogue.get_item(session, w.shop, uuid.uuid4(), T0))


def test_own_items_come_a_page_at_a_time(engine: Engine) -> None:
    w = build_world(engine)
    with transaction(engine) as session:
        made = sorted(new_item(session, w.bank_a).id for _ in range(5))
        new_item(session, w.bank_b)
        seen: list[uuid.UUID] = []
        after = None
        while True:
            page = catalogue.list_items(session, w.bank_a, after, 2, T0)
            seen += [item.id for item in page]
            if len(page) < 2:
                break
            after = page[-1].id
        assert seen == made


# the member's listing ------------------------------------------------------------------------


def listing(
    engine: Engine, w: World, external_id: str = "alice", now: datetime = T0, **kw: Any
) -> list[uuid.UUID]:
    with transaction(engine) as session:
        items, _ = catalogue.member_listing(
            session, w.bank_a, "BANKA", external_id, kw.get("after"), kw.get("limit", 50), now
        )
        return [item.id for item in items]


def test_the_listing_shows_only_what_the_member_may_take_now(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.bank_a, "BANKA", "bob")
    accrue(engine, w.bank_a, "BANKA", "alice", 500)
    accrue(engine, w.bank_a, "BANKA", "bob", 5000)
    with transaction(engine) as session:
        banka = program_by_code(session, "BANKA").id
        tiers.define_tier(session, banka, "std", "Standard", 0, Decimal("1"), T0)
        gold = tiers.define_tier(session, banka, "gold", "Gold", 2, Decimal("2"), T0)
        bob = issuers_repository.member_by_external_id(session, banka, "bob")
        assert bob is not None
        tiers.place_member(session, bob.id, gold.id, T0)

    def make(**kw: Any) -> uuid.UUID:
        return create_item_with_offer(engine, owner=w.bank_a, program="BANKA", points=10, **kw).id

    plain = make(stock=3, member_limit=2, limit_period="day")
    gold_only = make(min_tier="gold")
    not_yet = make(sale_from=T0 + timedelta(hours=1))
    ended = make(sale_from=T0 - timedelta(days=1), sale_to=T0)
    limited = make(member_limit=1, limit_period="day")
    sold_out = make(stock=1)
    rich_only = make(min_balance=1000)
    unlisted = make(listed=False)
    withdrawn = make(status="withdrawn")
    draft = make(status="draft")
    other_program = create_item_with_offer(engine, owner=w.bank_b, program="BANKB", points=5).id
    with transaction(engine) as session:
        catalogue.change_stock(session, w.bank_a, sold_out, StockChange(units=-1), T0)
        alice = issuers_repository.member_by_external_id(session, banka, "alice")
        assert alice is not None
        # alice took her one unit today; yesterday's counter of the plain item is another period
        session.add(MallLimitUse(item_id=limited, member_id=alice.id, period="2026-11-20", taken=1))
        session.add(MallLimitUse(item_id=plain, member_id=alice.id, period="2026-11-19", taken=2))

    assert listing(engine, w) == [plain]
    assert listing(engine, w, "bob") == [plain, gold_only, limited, rich_only]
    # Later: not_yet has opened; a new business day in Shanghai gives alice her limit back.
    tomorrow = T0 + timedelta(days=1)
    assert listing(engine, w, now=tomorrow) == [plain, not_yet, limited]
    assert {withdrawn, draft, unlisted, ended, other_program}.isdisjoint(
        listing(engine, w, "bob", now=tomorrow)
    )
    with transaction(engine) as session:
        items, more = catalogue.member_listing(session, w.bank_a, "BANKA", "alice", None, 50, T0)
        assert not more
        (shown,) = items
        assert (shown.points, shown.cash_amount, shown.currency, shown.price_version) == (
            10,
            0,
            "CNY",
            1,
        )
        assert (shown.stock, shown.member_may_take) == (3, 2)
        refused(
            "not_found",
            lambda: catalogue.member_listing(session, w.bank_a, "BANKA", "nobody", None, 5, T0),
        )
        refused(
            "not_found",
            lambda: catalogue.member_listing(session, w.bank_b, "BANKA", "alice", None, 5, T0),
        )


@pytest.mark.parametrize("batch", [1, 50])
def test_listing_pages_cross_a_filtered_run_without_skipping(engine: Engine, batch: int) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    with transaction(engine) as session:
        banka = program_by_code(session, "BANKA").id
        tiers.define_tier(session, banka, "std", "Standard", 0, Decimal("1"), T0)
        tiers.define_tier(session, banka, "gold", "Gold", 2, Decimal("2"), T0)
    items = sorted(
        create_item_with_offer(engine, owner=w.bank_a, program="BANKA", points=1, stock=2).id
        for _ in range(12)
    )
    # A run of seven items alice may not take, for every reason the rule has, between the
    # second and the tenth.
    hidden = items[2:9]
    with transaction(engine) as session:
        for n, item_id in enumerate(hidden):
            reason = n % 4
            if reason == 0:
                catalogue.set_offer(session, w.bank_a, item_id, offer(1, min_tier="gold"), T0)
            elif reason == 1:
                catalogue.change_stock(session, w.bank_a, item_id, StockChange(units=-2), T0)
            elif reason == 2:
                catalogue.set_offer(session, w.bank_a, item_id, offer(1, min_balance=1), T0)
            else:
                catalogue.update_item(
                    session, w.bank_a, item_id, ItemUpdate(sale_to=T0 - timedelta(hours=1)), T0
                )
    shown = [i for i in items if i not in hidden]
    for limit in (1, 2, 3, 5):
        seen: list[uuid.UUID] = []
        after = None
        pages = 0
        while True:
            with transaction(engine) as session:
                page, more = catalogue.member_listing(
                    session, w.bank_a, "BANKA", "alice", after, limit, T0, batch=batch
                )
            pages += 1
            assert len(page) == limit or not more  # never a short page with more to come
            seen += [item.id for item in page]
            if not more:
                break
            after = page[-1].id
        assert seen == shown
        assert pages == -(-len(shown) // limit)


def test_member_limit_uses_fill_the_limit(engine: Engine) -> None:
    """The listing reads the counters orders keep: as many units taken as allowed hides the item."""
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    item = create_item_with_offer(
        engine, owner=w.bank_a, program="BANKA", points=1, member_limit=3, limit_period="ever"
    ).id
    with transaction(engine) as session:
        banka = program_by_code(session, "BANKA").id
        alice = issuers_repository.member_by_external_id(session, banka, "alice")
        assert alice is not None
        use = MallLimitUse(item_id=item, member_id=alice.id, period="ever", taken=2)
        session.add(use)
        session.flush()
        items, _ = catalogue.member_listing(session, w.bank_a, "BANKA", "alice", None, 5, T0)
        assert [(i.id, i.member_may_take) for i in items] == [(item, 1)]
        use.taken = 3
        session.flush()
        items, _ = catalogue.member_listing(session, w.bank_a, "BANKA", "alice", None, 5, T0)
        assert items == []


def test_refusals_render_as_409_problems(engine: Engine) -> None:
    """A refusal's own fields never overwrite the problem's `status` (an item's status is
    `item_status`)."""
    w = build_world(engine)
    item = create_item_with_offer(engine, owner=w.bank_a, program="BANKA", points=5, status="draft")
    with transaction(engine) as session:
        program_id = program_by_code(session, "BANKA").id
        found = repository.offer_at(session, item.id, program_id, T0)
        assert found is not None
        refusal = rules.refusal(found, T0, quantity=1, tier_rank=None, available=None, taken=0)
        assert refusal is not None
        assert (refusal.problem()["status"], refusal.problem()["item_status"]) == (409, "draft")
        catalogue.update_item(session, w.bank_a, item.id, ItemUpdate(status="withdrawn"), T0)
        error = refused(
            "item_status_move",
            lambda: catalogue.update_item(
                session, w.bank_a, item.id, ItemUpdate(status="draft"), T0
            ),
        )
        assert (error.problem()["status"], error.problem()["item_status"]) == (409, "withdrawn")
