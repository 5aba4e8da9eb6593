"""Reversals of points already spent: a member debt recovered from later accruals, or the rest
written off; the books balance and the statement says so."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import Obligation
from clearing.web.context import Caller
from issuers import accruals, debts, members, statements
from issuers.models import MemberDebt
from issuers.schemas import (
    AccrualBatchCreate,
    AccrualCreate,
    AccrualReversalCreate,
    AccrualReversalOut,
    ReturnPolicySet,
    StatementLine,
)
from tests.factories import (
    T0,
    World,
    accrue,
    agree_all,
    authorise,
    balance,
    build_world,
    capture,
    key,
    member,
)


def assert_clean(engine: Engine) -> None:
    with transaction(engine) as session:
        assert check_ledger(session) == []


def set_policy(engine: Engine, issuer: Caller, code: str, mode: str) -> None:
    with transaction(engine) as session:
        debts.set_return_policy(session, issuer, code, ReturnPolicySet(spent_reversal=mode))


def spend(engine: Engine, w: World, code: str, external_id: str, fen: int) -> None:
    """The member pays `fen` at the shop with points (BANKA: 2 points a fen)."""
    out = authorise(engine, w.shop, code, external_id, fen, now=T0 + timedelta(minutes=1))
    capture(engine, w.shop, out.id, now=T0 + timedelta(minutes=1))


def reverse(engine: Engine, caller: Caller, accrual_id: object, points: int) -> AccrualReversalOut:
    with transaction(engine) as session:
        out, _ = accruals.reverse_accrual(
            session,
            caller,
            accrual_id,  # type: ignore[arg-type]
            AccrualReversalCreate(points=points),
            T0 + timedelta(minutes=2),
            key(),
        )
        return out


def view_debt(engine: Engine, issuer: Caller, code: str, external_id: str) -> int:
    with transaction(engine) as session:
        return members.member_view(session, issuer, code, external_id, T0).debt


def statement(engine: Engine, issuer: Caller, code: str, external_id: str) -> list[StatementLine]:
    with transaction(engine) as session:
        return statements.statement(session, issuer, code, external_id, None, 100)


def spent_world(engine: Engine, mode: str) -> tuple[World, object]:
    """alice earns 1000 BANKA points (funded by the shop: 500 fen owed) and spends 600 of them."""
    w = build_world(engine)
    agree_all(engine, w)
    member(engine, w.bank_a, "BANKA", "alice")
    set_policy(engine, w.bank_a, "BANKA", mode)
    funded = accrue(engine, w.shop, "BANKA", "alice", 1000)
    assert funded.amount_owed == 500  # 1000 x 0.005 CNY = 5.00 CNY
    spend(engine, w, "BANKA", "alice", 300)  # 300 fen = 600 points
    assert balance(engine, w.bank_a, "BANKA", "alice") == (400, 400)
    return w, funded.id


def test_take_remaining_takes_what_is_left_and_writes_off_the_rest(engine: Engine) -> None:
    w, accrual_id = spent_world(engine, "take_remaining")
    out = reverse(engine, w.shop, accrual_id, 1000)
    # 400 left are taken; 600 spent are written off; the shop gets all its 500 fen back.
    assert (out.points_taken, out.debt_recorded, out.written_off) == (400, 0, 600)
    assert out.amount_returned == 500
    assert balance(engine, w.bank_a, "BANKA", "alice") == (0, 0)
    assert view_debt(engine, w.bank_a, "BANKA", "alice") == 0
    lines = statement(engine, w.bank_a, "BANKA", "alice")
    assert [(ln.kind, ln.points, ln.balance_after, ln.written_off) for ln in lines] == [
        ("accrual", 1000, 1000, 0),
        ("checkout_capture", -600, 400, 0),
        ("accrual_reversal", -400, 0, 600),
    ]
    # A later accrual is the member's in full: nothing is owed.
    accrue(engine, w.bank_a, "BANKA", "alice", 50, now=T0 + timedelta(minutes=3))
    assert balance(engine, w.bank_a, "BANKA", "alice") == (50, 50)
    assert_clean(engine)


def test_debt_is_recorded_shown_and_recovered_from_later_accruals(engine: Engine) -> None:
    w, accrual_id = spent_world(engine, "debt")
    out = reverse(engine, w.shop, accrual_id, 1000)
    assert (out.points_taken, out.debt_recorded, out.written_off) == (400, 600, 0)
    assert out.amount_returned == 500
    assert view_debt(engine, w.bank_a, "BANKA", "alice") == 600
    # 250 earned: all of it repays (600 - 250 = 350 still owed), the member keeps nothing.
    accrue(engine, w.bank_a, "BANKA", "alice", 250, now=T0 + timedelta(minutes=3))
    assert balance(engine, w.bank_a, "BANKA", "alice") == (0, 0)
    assert view_debt(engine, w.bank_a, "BANKA", "alice") == 350
    # 500 earned: 350 repays the rest, 150 stay with the member.
    accrue(engine, w.bank_a, "BANKA", "alice", 500, now=T0 + timedelta(minutes=4))
    assert balance(engine, w.bank_a, "BANKA", "alice") == (150, 150)
    assert view_debt(engine, w.bank_a, "BANKA", "alice") == 0
    # 70 more: no debt left, all credited.
    accrue(engine, w.bank_a, "BANKA", "alice", 70, now=T0 + timedelta(minutes=5))
    assert balance(engine, w.bank_a, "BANKA", "alice") == (220, 220)
    lines = statement(engine, w.bank_a, "BANKA", "alice")
    assert [
        (ln.kind, ln.points, ln.balance_after, ln.debt_recorded, ln.debt_repaid) for ln in lines
    ] == [
        ("accrual", 1000, 1000, 0, 0),
        ("checkout_capture", -600, 400, 0, 0),
        ("accrual_reversal", -400, 0, 600, 0),
        ("accrual", 250, 250, 0, 0),
        ("debt_recovery", -250, 0, 0, 250),
        ("accrual", 500, 500, 0, 0),
        ("debt_recovery", -350, 150, 0, 350),
        ("accrual", 70, 220, 0, 0),
    ]
    assert_clean(engine)


def test_money_returned_stays_exact_in_parts_whatever_was_spent(engine: Engine) -> None:
    w, accrual_id = spent_world(engine, "debt")
    # 1000 points for 500 fen: cumulative shares floor(500 x 333 / 1000) = 166, then
    # floor(500 x 666 / 1000) = 333 (167 more), then 500 (167 more).
    parts = [reverse(engine, w.shop, accrual_id, n) for n in (333, 333, 334)]
    assert [p.amount_returned for p in parts] == [166, 167, 167]
    # 400 were left: the first two parts are taken in full (333 + 67), the rest is owed.
    assert [(p.points_taken, p.debt_recorded) for p in parts] == [(333, 0), (67, 266), (0, 334)]
    assert view_debt(engine, w.bank_a, "BANKA", "alice") == 600
    with transaction(engine) as session:
        returned = session.execute(
            select(Obligation.amount).where(Obligation.event_type == "accrual_reversal")
        ).scalars()
        assert sum(returned) == 500
    # The last part moved none of alice's points but still has its statement line.
    lines = statement(engine, w.bank_a, "BANKA", "alice")
    assert [(ln.points, ln.balance_after, ln.debt_recorded) for ln in lines[-3:]] == [
        (-333, 67, 0),
        (-67, 0, 266),
        (0, 0, 334),
    ]
    assert_clean(engine)


def test_points_held_for_a_checkout_are_not_taken(engine: Engine) -> None:
    w = build_world(engine)
    agree_all(engine, w)
    member(engine, w.bank_a, "BANKA", "alice")
    set_policy(engine, w.bank_a, "BANKA", "take_remaining")
    earned = accrue(engine, w.bank_a, "BANKA", "alice", 1000)
    authorise(engine, w.shop, "BANKA", "alice", 100)  # holds 200 points
    out = reverse(engine, w.bank_a, earned.id, 1000)
    assert (out.points_taken, out.written_off) == (800, 200)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (200, 0)
    assert_clean(engine)


def test_a_bulk_file_repays_debts_line_by_line(engine: Engine) -> None:
    w, accrual_id = spent_world(engine, "debt")
    member(engine, w.bank_a, "BANKA", "bob")
    reverse(engine, w.shop, accrual_id, 1000)  # alice owes 600
    items = [
        AccrualCreate(program="BANKA", external_id="alice", points=400),
        AccrualCreate(program="BANKA", external_id="bob", points=90),
        AccrualCreate(program="BANKA", external_id="alice", points=300),
    ]
    with transaction(engine) as session:
        out, _ = accruals.accrue_batch(
            session, w.bank_a, AccrualBatchCreate(items=items), T0 + timedelta(minutes=3), key()
        )
    assert out.points == 790
    # alice: 400 repays 400 (200 owed), then 300 repays 200 and leaves her 100; bob owes nothing.
    assert balance(engine, w.bank_a, "BANKA", "alice") == (100, 100)
    assert balance(engine, w.bank_a, "BANKA", "bob") == (90, 90)
    assert view_debt(engine, w.bank_a, "BANKA", "alice") == 0
    repaid = [ln.debt_repaid for ln in statement(engine, w.bank_a, "BANKA", "alice")]
    assert sorted(r for r in repaid if r) == [200, 400]
    assert_clean(engine)


def test_debts_accumulate_and_reversal_checks_stay(engine: Engine) -> None:
    w, accrual_id = spent_world(engine, "debt")
    reverse(engine, w.shop, accrual_id, 500)  # takes 400, owes 100
    reverse(engine, w.bank_a, accrual_id, 500)  # takes 0, owes 500 more
    with transaction(engine) as session:
        assert session.execute(select(MemberDebt.points)).scalars().all() == [600]
    with pytest.raises(ClearingError) as err:
        reverse(engine, w.shop, accrual_id, 1)
    assert err.value.code == "reversal_exceeds_accrual"
    assert_clean(engine)


def test_concurrent_accruals_repay_a_debt_once(pg_engine: Engine) -> None:
    w, accrual_id = spent_world(pg_engine, "debt")
    reverse(pg_engine, w.shop, accrual_id, 1000)  # alice owes 600
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def one() -> None:
        barrier.wait()
        try:
            accrue(pg_engine, w.bank_a, "BANKA", "alice", 100, now=T0 + timedelta(minutes=3))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    # 800 earned: 600 repay the debt (no more, no less), 200 stay with alice.
    assert balance(pg_engine, w.bank_a, "BANKA", "alice") == (200, 200)
    assert view_debt(pg_engine, w.bank_a, "BANKA", "alice") == 0
    repaid = [ln.debt_repaid for ln in statement(pg_engine, w.bank_a, "BANKA", "alice")]
    assert sum(repaid) == 600
    assert_clean(pg_engine)
