"""Settlement of a business day of points mall orders, on both databases: the supplier is paid
the wholesale price of what stayed sold, the issuer pays it, the positions sum to zero, and the
files verify and carry the mall's lines under their own event types."""

from __future__ import annotations

import csv
import io
import math
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.kinds import ObligationEvent
from clearing.core.models import Obligation
from clearing.core.money import parse_minor, wholesale_price
from clearing.web.context import Caller
from clearing.web.platform_key import load_or_create
from exchange.mall import orders
from exchange.mall.models import MallOrder
from exchange.mall.schemas import CancelCreate, FulfilmentCreate, OrderCreate, ReturnCreate
from settlement.camt053 import NAMESPACE
from settlement.files import CAMT_NAME, CSV_NAME
from settlement.schemas import BatchOut
from settlement.service import run_batch, verify_tree
from settlement.verify import verify_directory
from tests.exchange.mall_factories import create_item_with_offer, supply_agreement
from tests.factories import (
    T0,
    World,
    accrue,
    agree_all,
    authorise,
    build_world,
    capture,
    key,
    member,
)
from tests.settlement.settlement_world import AFTER_DAY2, DAY1, settlement_settings

RATE = Decimal("0.85")
DELIVERY_VALUE = 3001
"""30.01 CNY x 0.85 = 25.5085 CNY: the supplier is owed 2551 fen a unit (rounded up)."""
VOUCHER_VALUE = 1999
"""19.99 CNY x 0.85 = 16.9915 CNY: 1700 fen a unit."""
CHECKOUT = 5_000
REDEMPTION = ObligationEvent.MALL_REDEMPTION.value
RETURN = ObligationEvent.MALL_RETURN.value
_NS = f"{{{NAMESPACE}}}"


def unit_owed(value: int) -> int:
    """ceil(value x RATE), in exact fractions: the rule itself, not the code under test."""
    return math.ceil(Fraction(value) * Fraction(RATE))


@dataclass
class SupplierOrder:
    """A supplier's item ordered on the day, and what became of it."""

    entry: str
    """The order's redemption journal entry: the reference of its settlement line."""
    value: int
    unit_points: int
    quantity: int
    given_back: int = 0
    """Units cancelled or returned the same day."""
    back_entry: str | None = None
    """The journal entry of the cancellation or return."""


@dataclass
class MallDay:
    world: World
    supplier_orders: list[SupplierOrder]
    own_item_entry: str


def redemption_entry(engine: Engine, order_id: uuid.UUID) -> str:
    with transaction(engine) as session:
        entry = session.execute(
            select(MallOrder.redemption_entry_id).where(MallOrder.id == order_id)
        ).scalar_one()
    return str(entry)


def book_mall_day(engine: Engine) -> MallDay:
    """DAY1: three BANKA members order the cafe's delivery and voucher items (one order is
    cancelled, one partly returned) and BANKA's own item; a MOBILE member checks out at the shop."""
    before = T0 - timedelta(hours=1)
    w = build_world(engine, before)
    agree_all(engine, w, before)
    supply_agreement(engine, merchant=w.cafe, program="BANKA", wholesale_rate=RATE, now=before)
    for name in ("alice", "bob", "carol"):
        member(engine, w.bank_a, "BANKA", name, before)
        accrue(engine, w.bank_a, "BANKA", name, 10_000, before)
    member(engine, w.carrier, "MOBILE", "dave", before)
    accrue(engine, w.carrier, "MOBILE", "dave", 5_000_000, before)

    def on_sale(owner: Caller, **fields: Any) -> uuid.UUID:
        made = create_item_with_offer(engine, owner=owner, program="BANKA", now=before, **fields)
        return made.id

    delivery = on_sale(w.cafe, points=800, value_amount=DELIVERY_VALUE, stock=20)
    voucher = on_sale(w.cafe, points=500, value_amount=VOUCHER_VALUE, fulfilment="voucher")
    own = on_sale(w.bank_a, points=300, value_amount=1000)
    t = T0

    def place(item: uuid.UUID, name: str, quantity: int, unit_points: int) -> tuple[uuid.UUID, str]:
        nonlocal t
        t += timedelta(minutes=1)
        with transaction(engine) as session:
            out, _ = orders.place_order(
                session,
                w.bank_a,
                "BANKA",
                OrderCreate(external_id=name, item_id=item, quantity=quantity),
                t,
                key(),
            )
        assert out.points == unit_points * quantity
        return out.id, redemption_entry(engine, out.id)

    placed: dict[str, tuple[uuid.UUID, SupplierOrder]] = {}
    for label, item, value, unit_points, name, quantity in (
        ("alice-delivery", delivery, DELIVERY_VALUE, 800, "alice", 3),
        ("bob-delivery", delivery, DELIVERY_VALUE, 800, "bob", 2),
        ("carol-delivery", delivery, DELIVERY_VALUE, 800, "carol", 4),
        ("alice-voucher", voucher, VOUCHER_VALUE, 500, "alice", 2),
        ("carol-voucher", voucher, VOUCHER_VALUE, 500, "carol", 5),
    ):
        order_id, entry = place(item, name, quantity, unit_points)
        placed[label] = (order_id, SupplierOrder(entry, value, unit_points, quantity))
    _, own_entry = place(own, "bob", 2, 300)
    checkout = authorise(engine, w.shop, "MOBILE", "dave", CHECKOUT, t + timedelta(minutes=1))
    capture(engine, w.shop, checkout.id, now=t + timedelta(minutes=2))
    t += timedelta(minutes=2)
    for label in ("alice-delivery", "carol-delivery"):
        t += timedelta(minutes=1)
        with transaction(engine) as session:
            orders.fulfil(
                session,
                w.cafe,
                placed[label][0],
                FulfilmentCreate(delivery_reference=f"SF-{label}"),
                t,
                key(),
            )
    cancelled_id, cancelled = placed["bob-delivery"]
    t += timedelta(minutes=1)
    with transaction(engine) as session:
        out, _ = orders.cancel(
            session, w.bank_a, cancelled_id, CancelCreate(reason="changed mind"), t, key()
        )
    assert (out.status, out.returned_quantity) == ("cancelled", 2)
    cancelled.given_back = 2
    returned_id, returned = placed["alice-delivery"]
    t += timedelta(minutes=1)
    with transaction(engine) as session:
        out, _ = orders.return_units(
            session, w.cafe, returned_id, ReturnCreate(quantity=1), t, key()
        )
    assert (out.status, out.returned_quantity) == ("fulfilled", 1)  # a partial return
    returned.given_back = 1
    for back in (cancelled, returned):
        with transaction(engine) as session:
            back.back_entry = str(
                session.execute(
                    select(Obligation.entry_id).where(
                        Obligation.event_type == RETURN,
                        Obligation.original_entry_id == uuid.UUID(back.entry),
                    )
                ).scalar_one()
            )
    return MallDay(w, [o for _, o in placed.values()], own_entry)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return settlement_settings(db_url, tmp_path)


@pytest.fixture
def settled(engine: Engine, settings: Settings) -> tuple[MallDay, BatchOut]:
    day = book_mall_day(engine)
    return day, run_batch(engine, DAY1, "CNY", AFTER_DAY2, settings)


@dataclass(frozen=True)
class Line:
    line_no: int
    reference: str
    original: str
    event_type: str
    counterparty: str
    points: int
    gross: int
    fee: int
    net: int


def details(folder: Path) -> list[Line]:
    """The `D` records of a party's statement.csv."""
    text = (folder / CSV_NAME).read_text(encoding="utf-8")
    return [
        Line(
            int(r[1]),
            r[2],
            r[3],
            r[4],
            r[5],
            int(r[7]),
            parse_minor(r[10], "CNY"),
            parse_minor(r[11], "CNY"),
            parse_minor(r[12], "CNY"),
        )
        for r in csv.reader(io.StringIO(text, newline=""))
        if r and r[0] == "D"
    ]


@dataclass(frozen=True)
class Entry:
    ref: str
    event_type: str
    net: int
    gross: int
    info: str


def camt_entries(folder: Path) -> list[Entry]:
    """Every `Ntry` of a party's camt053.xml, amounts signed by their CdtDbtInd."""

    def signed(parent: ET.Element, path: str) -> int:
        amount = parse_minor(parent.findtext(f"{path}{_NS}Amt") or "", "CNY")
        return -amount if parent.findtext(f"{path}{_NS}CdtDbtInd") == "DBIT" else amount

    root = ET.parse(folder / CAMT_NAME).getroot()
    return [
        Entry(
            ntry.findtext(f"{_NS}NtryRef") or "",
            ntry.findtext(f"{_NS}BkTxCd/{_NS}Prtry/{_NS}Cd") or "",
            signed(ntry, ""),
            signed(ntry, f"{_NS}NtryDtls/{_NS}TxDtls/"),
            ntry.findtext(f"{_NS}NtryDtls/{_NS}TxDtls/{_NS}AddtlTxInf") or "",
        )
        for ntry in root.iter(f"{_NS}Ntry")
    ]


def expected_mall_lines(day: MallDay) -> list[tuple[str, str, str, int, int]]:
    """(event type, reference, original, points, amount owed to the supplier) of every mall
    obligation, from the orders' quantities and the agreed rate alone."""
    lines = []
    for o in day.supplier_orders:
        unit = unit_owed(o.value)
        lines.append((REDEMPTION, o.entry, "", o.unit_points * o.quantity, unit * o.quantity))
        if o.given_back:
            assert o.back_entry is not None
            back = o.unit_points * o.given_back
            lines.append((RETURN, o.back_entry, o.entry, back, -unit * o.given_back))
    return sorted(lines)


def test_the_supplier_is_paid_what_stayed_sold_and_positions_sum_to_zero(
    engine: Engine, settled: tuple[MallDay, BatchOut]
) -> None:
    day, batch = settled
    w = day.world
    assert batch.state == "published"
    assert batch.error is None
    # the rule the test computes with is the one the platform applies
    for value in (DELIVERY_VALUE, VOUCHER_VALUE):
        assert unit_owed(value) == wholesale_price(value, RATE)
    assert (unit_owed(DELIVERY_VALUE), unit_owed(VOUCHER_VALUE)) == (2551, 1700)
    stayed = sum(unit_owed(o.value) * (o.quantity - o.given_back) for o in day.supplier_orders)
    # delivery 3 - 1 returned + 2 - 2 cancelled + 4 = 6 units, vouchers 2 + 5 = 7 units
    assert stayed == 6 * 2551 + 7 * 1700
    positions = {p.org_id: p.net for p in batch.positions}
    assert positions[w.cafe.org_id] == stayed
    assert positions[w.bank_a.org_id] == -stayed
    fee = positions[w.platform.org_id]
    assert fee == batch.fee_income
    assert fee == 30  # the shop's 0.6% on its checkout: the batch has lines besides the mall's
    assert positions[w.shop.org_id] == CHECKOUT - fee
    assert positions[w.carrier.org_id] == -CHECKOUT
    assert sum(positions.values()) == 0
    with transaction(engine) as session:
        by_currency = session.execute(
            select(Obligation.currency, func.count(), func.sum(Obligation.amount)).group_by(
                Obligation.currency
            )
        ).all()
    assert [(c, int(n), int(s)) for c, n, s in by_currency] == [
        ("CNY", batch.line_count, batch.amount_total)
    ]
    assert {p.org_id for p in batch.positions} == {
        w.platform.org_id,
        w.bank_a.org_id,
        w.cafe.org_id,
        w.shop.org_id,
        w.carrier.org_id,
    }


def test_the_files_verify_and_show_the_mall_lines_under_their_own_event_types(
    settings: Settings, settled: tuple[MallDay, BatchOut]
) -> None:
    day, batch = settled
    w = day.world
    folder = Path(batch.directory)
    public = load_or_create(settings.platform_key_path).public_key
    checked, errors = verify_tree(folder, public)
    assert (checked, errors) == (len(batch.positions), [])
    expected = expected_mall_lines(day)
    assert Counter(e[0] for e in expected) == {REDEMPTION: 5, RETURN: 2}
    supplier, issuer = str(w.cafe.org_id), str(w.bank_a.org_id)
    for owner, other, sign in ((supplier, issuer, 1), (issuer, supplier, -1)):
        party = folder / owner
        assert verify_directory(party, public) == []
        lines = details(party)
        mall = [ln for ln in lines if ln.event_type.startswith("mall_")]
        assert sorted(
            (ln.event_type, ln.reference, ln.original, ln.points, ln.gross) for ln in mall
        ) == [(e, ref, orig, pts, sign * amount) for e, ref, orig, pts, amount in expected]
        assert all((ln.counterparty, ln.fee, ln.net) == (other, 0, ln.gross) for ln in mall)
        assert len(mall) == len(lines)  # the supplier and the issuer have no other lines
        assert day.own_item_entry not in {ln.reference for ln in lines}
        # camt.053: one entry per detail, in the same order, the event type as BkTxCd
        entries = camt_entries(party)
        assert [(x.ref, x.event_type, x.net, x.gross) for x in entries] == [
            (str(ln.line_no), ln.event_type, ln.net, ln.gross) for ln in lines
        ]
        assert all(
            x.info.startswith(f"reference={ln.reference};")
            for x, ln in zip(entries, lines, strict=True)
        )
        totals = Counter[str]()
        for x in entries:
            totals[x.event_type] += x.net
        stayed = sum(unit_owed(o.value) * (o.quantity - o.given_back) for o in day.supplier_orders)
        assert totals[REDEMPTION] + totals[RETURN] == sign * stayed
        assert totals[RETURN] == -sign * sum(
            unit_owed(o.value) * o.given_back for o in day.supplier_orders
        )
    # the platform, central counterparty, shows each mall line twice with opposite signs, and
    # the checkout under its own type
    platform = folder / str(w.platform.org_id)
    lines = details(platform)
    mall = [ln for ln in lines if ln.event_type.startswith("mall_")]
    assert sorted(
        (ln.event_type, ln.reference, ln.counterparty, ln.gross) for ln in mall
    ) == sorted(
        [(e, ref, supplier, -amount) for e, ref, _o, _p, amount in expected]
        + [(e, ref, issuer, amount) for e, ref, _o, _p, amount in expected]
    )
    assert Counter(ln.event_type for ln in lines) == {
        REDEMPTION: 10,
        RETURN: 4,
        ObligationEvent.CHECKOUT_CAPTURE.value: 2,
    }
    assert [(x.event_type, x.net) for x in camt_entries(platform)] == [
        (ln.event_type, ln.net) for ln in lines
    ]
    assert day.own_item_entry not in {ln.reference for ln in lines}
