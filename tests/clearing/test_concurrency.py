"""Real concurrent connections on PostgreSQL: no double spend, no lost update, keys applied once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import Balance, JournalEntry
from exchange import service as exchange
from exchange.schemas import CaptureCreate, CheckoutCreate, RefundCreate
from issuers import accruals
from issuers.schemas import AccrualCreate
from tests.factories import (
    T0,
    World,
    accrue,
    authorise,
    balance,
    build_world,
    key,
    member,
    payment_token,
)

# The ledger's rules hold whichever engine applies a posting on PostgreSQL.
pytestmark = pytest.mark.ledger_engines


T = TypeVar("T")
WORKERS = 16


def race(n: int, work: Callable[[int], T]) -> list[T | ClearingError]:
    """Run `work(i)` for i in range(n) on n threads released at the same instant."""
    gate = threading.Barrier(n)

    def run(i: int) -> T | ClearingError:
        gate.wait()
        try:
            return work(i)
        except ClearingError as error:
            return error

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def invariants(engine: Engine) -> None:
    with transaction(engine) as session:
        assert check_ledger(session) == []
        negative = session.execute(
            select(func.count())
            .select_from(Balance)
            .where(Balance.floor_zero, Balance.balance < Balance.held)
        ).scalar_one()
        assert negative == 0


def test_no_double_spend_when_many_checkouts_hit_one_member(pg_engine: Engine) -> None:
    w = build_world(pg_engine)
    member(pg_engine, w.bank_a, "BANKA", "alice")
    accrue(pg_engine, w.bank_a, "BANKA", "alice", 1000)
    tokens = [payment_token(pg_engine, w.bank_a, "BANKA", "alice") for _ in range(WORKERS)]

    def buy(i: int) -> str:
        with transaction(pg_engine) as session:
            out, _ = exchange.authorise(
                session,
                w.shop,
                CheckoutCreate(
                    program="BANKA",
                    external_id="alice",
                    order_total=100,
                    points_amount=100,
                    payment_token=tokens[i],
                ),
                T0,
                key(),
            )
        with transaction(pg_engine) as session:
            exchange.capture(session, w.shop, out.id, CaptureCreate(), T0, key())
        return "captured"

    results = race(WORKERS, buy)
    outcomes = Counter(r if isinstance(r, str) else r.code for r in results)
    # 1000 points pay for exactly five checkouts of 200 points
    assert outcomes == {"captured": 5, "insufficient_points": WORKERS - 5}
    assert balance(pg_engine, w.bank_a, "BANKA", "alice") == (0, 0)
    invariants(pg_engine)


def test_holds_captures_voids_and_refunds_interleaved_on_one_member(pg_engine: Engine) -> None:
    w = build_world(pg_engine)
    member(pg_engine, w.bank_b, "BANKB", "bob")
    accrue(pg_engine, w.bank_b, "BANKB", "bob", 10_000)
    checkouts = [authorise(pg_engine, w.cafe, "BANKB", "bob", 500).id for _ in range(8)]
    tokens = [payment_token(pg_engine, w.bank_b, "BANKB", "bob") for _ in range(WORKERS)]

    def act(i: int) -> str:
        checkout = checkouts[i % 8]
        with transaction(pg_engine) as session:
            if i < 8:
                exchange.capture(session, w.cafe, checkout, CaptureCreate(amount=400), T0, key())
                return "capture"
            if i < 12:
                exchange.void(session, w.cafe, checkout, T0, key())
                return "void"
            exchange.authorise(
                session,
                w.cafe,
                CheckoutCreate(
                    program="BANKB",
                    external_id="bob",
                    order_total=700,
                    points_amount=700,
                    payment_token=tokens[i],
                ),
                T0,
                key(),
            )
            return "authorise"

    results = race(WORKERS, act)
    captured = [checkouts[i] for i, r in enumerate(results[:8]) if r == "capture"]
    # each hold ends in exactly one state: captured or voided, never both
    voided = [checkouts[i % 8] for i, r in enumerate(results[8:12], start=8) if r == "void"]
    assert not set(captured) & set(voided)
    assert len(captured) + len(voided) >= 8 - 4

    def refund(i: int) -> str:
        with transaction(pg_engine) as session:
            exchange.refund(session, w.cafe, captured[0], RefundCreate(amount=150), T0, key())
        return "refund"

    outcomes = Counter(r if isinstance(r, str) else r.code for r in race(8, refund))
    # 400 captured: two refunds of 150 fit, the third would exceed what was captured
    assert outcomes == {"refund": 2, "refund_exceeds_capture": 6}
    invariants(pg_engine)


def test_same_idempotency_key_concurrently_applies_once(pg_engine: Engine) -> None:
    w = build_world(pg_engine)
    member(pg_engine, w.bank_a, "BANKA", "alice")

    def send(i: int) -> object:
        with transaction(pg_engine) as session:
            out, _ = accruals.accrue(
                session,
                w.bank_a,
                AccrualCreate(program="BANKA", external_id="alice", points=250),
                T0,
                "same-key",
            )
            return out.id

    results = race(WORKERS, send)
    assert len(set(results)) == 1
    assert balance(pg_engine, w.bank_a, "BANKA", "alice") == (250, 250)
    with transaction(pg_engine) as session:
        assert session.execute(select(func.count()).select_from(JournalEntry)).scalar_one() == 1
    invariants(pg_engine)


def test_hot_merchant_account_takes_concurrent_checkouts(pg_engine: Engine) -> None:
    w: World = build_world(pg_engine)
    for i in range(WORKERS):
        member(pg_engine, w.bank_a, "BANKA", f"m{i}")
        accrue(pg_engine, w.bank_a, "BANKA", f"m{i}", 10_000)

    def shop(i: int) -> int:
        for _ in range(5):
            out = authorise(pg_engine, w.shop, "BANKA", f"m{i}", 1000)
            with transaction(pg_engine) as session:
                exchange.capture(session, w.shop, out.id, CaptureCreate(), T0, key())
        return 5

    results = race(WORKERS, shop)
    assert results == [5] * WORKERS
    with transaction(pg_engine) as session:
        from clearing.core.ledger import POSITION, Ledger, money_asset

        ledger = Ledger(session)
        shop_position = ledger.balance(
            ledger.account_id(money_asset("CNY"), POSITION, w.shop.org_id)
        )
    # 80 captures of 10.00 CNY, less 0.6% fee each (6 fen)
    assert shop_position == WORKERS * 5 * (1000 - 6)
    invariants(pg_engine)
