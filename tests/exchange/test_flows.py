"""The core flows on both databases: accrual, conversion, checkout; obligations and ledger check."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.ledger import Ledger, expire_due_lots
from clearing.core.models import Obligation
from exchange import service as exchange
from exchange.schemas import BilateralRateCreate, CaptureCreate, RefundCreate
from tests.factories import (
    T0,
    accrue,
    authorise,
    balance,
    build_world,
    capture,
    convert,
    key,
    link,
    member,
)


def obligations(engine: Engine) -> list[tuple[str, int]]:
    with transaction(engine) as session:
        return [
            (row.event_type, row.amount)
            for row in session.execute(
                select(Obligation).order_by(
                    Obligation.booked_at, Obligation.entry_id, Obligation.seq
                )
            ).scalars()
        ]


def assert_clean(engine: Engine) -> None:
    with transaction(engine) as session:
        assert check_ledger(session) == []


def test_issuer_accrual_credits_member_and_owes_nothing(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    out = accrue(engine, w.bank_a, "BANKA", "alice", 1000)
    assert out.amount_owed == 0
    assert out.expires_at == T0.replace(year=2027)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (1000, 1000)
    assert obligations(engine) == []
    assert_clean(engine)


def test_merchant_funded_accrual_owes_issuer_value(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    out = accrue(engine, w.shop, "BANKA", "alice", 333)
    # 333 points x 0.005 CNY = 1.665 CNY = 166.5 fen; the funder's debt rounds up -> 167
    assert out.amount_owed == 167
    assert obligations(engine) == [("merchant_funded_accrual", 167)]
    assert_clean(engine)


def test_checkout_points_plus_cash_capture_and_partial_refund(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 10_000)
    # order 100.00 CNY, 30.01 CNY of it with points at 0.005: ceil(3001 / 0.5) = 6002 points
    auth = authorise(engine, w.shop, "BANKA", "alice", 3001, total=10_000)
    assert (auth.points, auth.cash_amount, auth.status) == (6002, 6999, "authorised")
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 3998)
    done = capture(engine, w.shop, auth.id)
    # 0.6% of 3001 fen = 18.006 fen; the fee rounds up against its payer -> 19
    assert (done.status, done.captured_points, done.fee_amount) == ("captured", 6002, 19)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (3998, 3998)
    with transaction(engine) as session:
        first, _ = exchange.refund(session, w.shop, auth.id, RefundCreate(amount=1000), T0, key())
        second, _ = exchange.refund(session, w.shop, auth.id, RefundCreate(amount=2001), T0, key())
    # cumulative shares: refunds add back to exactly what was captured
    assert first.points + second.points == 6002
    assert first.fee_returned + second.fee_returned == 19
    assert balance(engine, w.bank_a, "BANKA", "alice") == (10_000, 10_000)
    with transaction(engine) as session, pytest.raises(ClearingError) as err:
        exchange.refund(session, w.shop, auth.id, RefundCreate(amount=1), T0, key())
    assert err.value.code == "refund_exceeds_capture"
    assert obligations(engine) == [
        ("checkout_capture", 3001),
        ("fee", 19),
        ("checkout_refund", 1000),
        ("fee_refund", 6),  # floor(19 x 1000 / 3001): what is given back rounds down
        ("checkout_refund", 2001),
        ("fee_refund", 13),
    ]
    assert_clean(engine)


def test_partial_capture_releases_the_rest_and_void_releases_all(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_b, "BANKB", "bob")
    accrue(engine, w.bank_b, "BANKB", "bob", 5000)
    auth = authorise(engine, w.cafe, "BANKB", "bob", 2000)
    assert auth.points == 2000
    done = capture(engine, w.cafe, auth.id, amount=1500)
    assert done.captured_points == 1500
    assert done.fee_amount == 15  # the cafe's BANKB term is 1%
    assert balance(engine, w.bank_b, "BANKB", "bob") == (3500, 3500)
    second = authorise(engine, w.cafe, "BANKB", "bob", 3500)
    assert balance(engine, w.bank_b, "BANKB", "bob") == (3500, 0)
    with transaction(engine) as session:
        exchange.void(session, w.cafe, second.id, T0, key())
    assert balance(engine, w.bank_b, "BANKB", "bob") == (3500, 3500)
    actions: tuple[tuple[Callable[[Session], object], str], ...] = (
        (lambda s: exchange.void(s, w.cafe, second.id, T0, key()), "hold_not_open"),
        (
            lambda s: exchange.capture(s, w.cafe, auth.id, CaptureCreate(), T0, key()),
            "hold_not_open",
        ),
    )
    for action, code in actions:
        with transaction(engine) as session, pytest.raises(ClearingError) as err:
            action(session)
        assert err.value.code == code
    assert_clean(engine)


def test_expired_hold_cannot_be_captured_and_is_released(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_b, "BANKB", "bob")
    accrue(engine, w.bank_b, "BANKB", "bob", 100)
    auth = authorise(engine, w.cafe, "BANKB", "bob", 100)
    later = T0 + timedelta(minutes=16)
    with transaction(engine) as session, pytest.raises(ClearingError) as err:
        exchange.capture(session, w.cafe, auth.id, CaptureCreate(), later, key())
    assert err.value.code == "hold_expired"
    assert balance(engine, w.bank_b, "BANKB", "bob", now=later) == (100, 100)
    with transaction(engine) as session:
        assert Ledger(session).release_expired_holds(later) == 1
    # the released points can be held again
    again = authorise(engine, w.cafe, "BANKB", "bob", 100, now=later)
    assert again.points == 100
    assert_clean(engine)


def test_conversion_value_based_and_bilateral(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.carrier, "MOBILE", "13800000000")
    member(engine, w.bank_b, "BANKB", "alice-b")
    accrue(engine, w.bank_a, "BANKA", "alice", 10_000)
    link(engine, w.carrier, ("BANKA", "alice"), ("MOBILE", "13800000000"))
    out = convert(engine, w.bank_a, ("BANKA", "alice"), ("MOBILE", "13800000000"), 1001)
    # floor(1001 x 0.005 x 0.99 / 0.002) = floor(2477.475) = 2477
    assert out.points_in == 2477
    assert out.settlement_amount == 496  # 2477 x 0.2 fen = 495.4, owed by A: up -> 496
    assert out.fee_amount == 6  # 1% of 500.5 fen = 5.005, owed to the platform: up -> 6
    assert balance(engine, w.carrier, "MOBILE", "13800000000") == (2477, 2477)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (8999, 8999)

    accrue(engine, w.carrier, "MOBILE", "13800000000", 10_000)
    link(engine, w.bank_b, ("MOBILE", "13800000000"), ("BANKB", "alice-b"))
    with transaction(engine) as session:
        exchange.set_bilateral_rate(
            session,
            w.carrier,
            BilateralRateCreate(
                source_program="MOBILE",
                target_program="BANKB",
                source_block=5000,
                target_block=2500,
                min_source_points=5000,
            ),
            T0,
        )
    out = convert(engine, w.carrier, ("MOBILE", "13800000000"), ("BANKB", "alice-b"), 10_000)
    assert out.points_in == 5000
    assert out.settlement_amount == 5000  # 5000 x 1 fen
    with pytest.raises(ClearingError) as err:
        convert(engine, w.carrier, ("MOBILE", "13800000000"), ("BANKB", "alice-b"), 2477)
    assert err.value.code == "not_whole_blocks"
    assert_clean(engine)


def test_conversion_needs_link_and_same_currency(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.bank_b, "BANKB", "bob")
    accrue(engine, w.bank_a, "BANKA", "alice", 1000)
    with pytest.raises(ClearingError) as err:
        convert(engine, w.bank_a, ("BANKA", "alice"), ("BANKB", "bob"), 1000)
    assert err.value.code == "member_not_linked"
    from tests.factories import org, program

    hk = org(engine, "issuer", "HK Bank", currency="HKD")
    program(engine, hk, "HKB", "0.01")
    member(engine, hk, "HKB", "carol")
    link(engine, hk, ("BANKA", "alice"), ("HKB", "carol"))
    with pytest.raises(ClearingError) as err:
        convert(engine, w.bank_a, ("BANKA", "alice"), ("HKB", "carol"), 1000)
    assert err.value.code == "currency_mismatch"
    assert "no currency rate" in err.value.detail
    assert balance(engine, w.bank_a, "BANKA", "alice") == (1000, 1000)


def test_spending_takes_earliest_expiring_lots_and_expiry_posts_the_rest(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 100, now=T0)
    accrue(engine, w.bank_a, "BANKA", "alice", 100, now=T0 + timedelta(days=40))
    auth = authorise(
        engine, w.shop, "BANKA", "alice", 60, now=T0 + timedelta(days=41)
    )  # 120 points
    capture(engine, w.shop, auth.id, now=T0 + timedelta(days=41))
    # the first lot (100) is used up and 20 come from the second
    with transaction(engine) as session:
        assert expire_due_lots(session, T0.replace(year=2027) + timedelta(days=1)) == 0
        assert expire_due_lots(session, T0.replace(year=2027) + timedelta(days=41)) == 80
        assert expire_due_lots(session, T0.replace(year=2027) + timedelta(days=41)) == 0
    assert balance(engine, w.bank_a, "BANKA", "alice", now=T0.replace(year=2028)) == (0, 0)
    with transaction(engine) as session:
        liability = -sum(  # the issuer's outstanding points, from the ledger alone
            Ledger(session).balance(Ledger(session).account_id("points:BANKA", role, program_id))
            for role, program_id in _program_roles(session, "BANKA")
        )
    assert liability == 0
    assert_clean(engine)


def _program_roles(session: Session, code: str) -> list[tuple[str, uuid.UUID]]:
    from issuers.models import Program
    from issuers.programs import PROGRAM_ACCOUNTS

    program_id = session.execute(select(Program.id).where(Program.code == code)).scalar_one()
    return [(role, program_id) for role in PROGRAM_ACCOUNTS]


def test_accrual_reversal_returns_merchant_funding(engine: Engine) -> None:
    from issuers import accruals
    from issuers.schemas import AccrualReversalCreate

    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    out = accrue(
        engine, w.shop, "BANKA", "alice", 1001
    )  # 500.5 fen -> 501 (the funder's debt rounds up)
    with transaction(engine) as session:
        r1, _ = accruals.reverse_accrual(
            session, w.shop, out.id, AccrualReversalCreate(points=500), T0, key()
        )
        r2, _ = accruals.reverse_accrual(
            session, w.bank_a, out.id, AccrualReversalCreate(points=501), T0, key()
        )
    assert r1.amount_returned + r2.amount_returned == out.amount_owed
    with transaction(engine) as session, pytest.raises(ClearingError) as err:
        accruals.reverse_accrual(
            session, w.shop, out.id, AccrualReversalCreate(points=1), T0, key()
        )
    assert err.value.code == "reversal_exceeds_accrual"
    with transaction(engine) as session, pytest.raises(ClearingError) as err:
        accruals.reverse_accrual(
            session, w.cafe, out.id, AccrualReversalCreate(points=1), T0, key()
        )
    assert err.value.code == "not_found"
    assert balance(engine, w.bank_a, "BANKA", "alice") == (0, 0)
    assert_clean(engine)


def test_point_value_versions_are_effective_dated(engine: Engine) -> None:
    from issuers import programs
    from issuers.schemas import PointValueCreate

    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 10_000)
    later = T0 + timedelta(hours=2)
    with transaction(engine) as session:
        out = programs.add_point_value(
            session,
            w.bank_a,
            "BANKA",
            PointValueCreate(value=Decimal("0.01"), effective_from=later),
            T0,
        )
    assert out.version == 2
    before = authorise(engine, w.shop, "BANKA", "alice", 100, now=T0 + timedelta(hours=1))
    after = authorise(engine, w.shop, "BANKA", "alice", 100, now=later)
    assert (before.points, before.point_value_version) == (200, 1)
    assert (after.points, after.point_value_version) == (100, 2)
    with transaction(engine) as session, pytest.raises(ClearingError) as err:
        programs.add_point_value(
            session,
            w.bank_a,
            "BANKA",
            PointValueCreate(value=Decimal("0.02"), effective_from=T0),
            later,
        )
    assert err.value.code == "point_value_history"


def test_idempotent_replay_writes_nothing_and_conflict_names_field(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    first = accrue(engine, w.bank_a, "BANKA", "alice", 100, idem="k1")
    again = accrue(engine, w.bank_a, "BANKA", "alice", 100, idem="k1")
    assert again == first
    assert balance(engine, w.bank_a, "BANKA", "alice") == (100, 100)
    with pytest.raises(ClearingError) as err:
        accrue(engine, w.bank_a, "BANKA", "alice", 101, idem="k1")
    assert err.value.code == "idempotency_conflict"
    # the same key from another organisation is another key
    accrue(engine, w.shop, "BANKA", "alice", 100, idem="k1")
    assert balance(engine, w.bank_a, "BANKA", "alice") == (200, 200)
    with transaction(engine) as session:
        assert session.execute(select(func.count()).select_from(Obligation)).scalar_one() == 1
