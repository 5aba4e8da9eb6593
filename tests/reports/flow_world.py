"""Two days of flows booked through the real services, with what each operation answered: the
figures the flow reports must give back, computed from those answers alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import Engine

from clearing.core.db import transaction
from exchange import service as exchange
from exchange.schemas import CheckoutOut, ConversionOut, RefundCreate, RefundOut
from issuers.schemas import AccrualOut
from tests.factories import (
    T0,
    World,
    accrue,
    agree_all,
    authorise,
    build_world,
    capture,
    convert,
    key,
    link,
    member,
)

DAY1 = date(2026, 11, 20)
"""T0 is 09:00 on 2026-11-20 in Asia/Shanghai, every party's zone in `build_world`."""
DAY2 = DAY1 + timedelta(days=1)


@dataclass
class Flows:
    """The world and the answers of every operation booked, by business date."""

    world: World
    accruals: dict[date, list[AccrualOut]] = field(default_factory=dict)
    conversions: dict[date, list[tuple[str, str, ConversionOut]]] = field(default_factory=dict)
    captures: dict[date, list[tuple[str, CheckoutOut]]] = field(default_factory=dict)
    """(merchant org id, the checkout as captured)."""
    refunds: dict[date, list[tuple[str, str, RefundOut]]] = field(default_factory=dict)
    """(merchant org id, program, the refund)."""


def book_flows(engine: Engine) -> Flows:
    """Day 1: own and merchant-funded accruals, a conversion, two captures (one partial).
    Day 2: a partial refund of a day-1 capture, a funded accrual, the opposite conversion, a
    capture refunded in full."""
    w = build_world(engine, T0 - timedelta(hours=1))
    agree_all(engine, w, T0 - timedelta(hours=1))
    for code, issuer in w.programs.items():
        for name in ("alice", "bob"):
            member(engine, issuer, code, f"{code}-{name}", T0 - timedelta(hours=1))
    flows = Flows(w)
    shop, cafe = str(w.shop.org_id), str(w.cafe.org_id)
    t = T0
    flows.accruals[DAY1] = [
        accrue(engine, w.bank_a, "BANKA", "BANKA-alice", 200_000, t),
        accrue(engine, w.shop, "BANKA", "BANKA-alice", 30_000, t + timedelta(minutes=1)),
        accrue(engine, w.cafe, "BANKB", "BANKB-bob", 7_777, t + timedelta(minutes=2)),
        accrue(engine, w.carrier, "MOBILE", "MOBILE-alice", 50_000, t + timedelta(minutes=3)),
    ]
    link(engine, w.bank_b, ("BANKA", "BANKA-alice"), ("BANKB", "BANKB-alice"), t)
    out = convert(engine, w.bank_a, ("BANKA", "BANKA-alice"), ("BANKB", "BANKB-alice"), 10_000, t)
    flows.conversions[DAY1] = [("BANKA", "BANKB", out)]
    first = authorise(engine, w.shop, "BANKA", "BANKA-alice", 5_000, t + timedelta(minutes=6))
    second = authorise(engine, w.cafe, "MOBILE", "MOBILE-alice", 3_000, t + timedelta(minutes=8))
    flows.captures[DAY1] = [
        (shop, capture(engine, w.shop, first.id, now=t + timedelta(minutes=7))),
        (cafe, capture(engine, w.cafe, second.id, 2_500, t + timedelta(minutes=9))),
    ]
    t2 = T0 + timedelta(days=1)
    with transaction(engine) as session:
        partial, _ = exchange.refund(
            session, w.shop, first.id, RefundCreate(amount=1_234), t2, key()
        )
    flows.accruals[DAY2] = [
        accrue(engine, w.shop, "BANKB", "BANKB-alice", 12_345, t2 + timedelta(minutes=1))
    ]
    link(engine, w.bank_a, ("BANKB", "BANKB-alice"), ("BANKA", "BANKA-bob"), t2)
    back = convert(
        engine,
        w.bank_b,
        ("BANKB", "BANKB-alice"),
        ("BANKA", "BANKA-bob"),
        1_000,
        t2 + timedelta(minutes=2),
    )
    flows.conversions[DAY2] = [("BANKB", "BANKA", back)]
    third = authorise(engine, w.cafe, "BANKB", "BANKB-bob", 4_000, t2 + timedelta(minutes=3))
    flows.captures[DAY2] = [
        (cafe, capture(engine, w.cafe, third.id, now=t2 + timedelta(minutes=4)))
    ]
    with transaction(engine) as session:
        full, _ = exchange.refund(
            session, w.cafe, third.id, RefundCreate(amount=4_000), t2 + timedelta(minutes=5), key()
        )
    flows.refunds[DAY2] = [(shop, "BANKA", partial), (cafe, "BANKB", full)]
    return flows
