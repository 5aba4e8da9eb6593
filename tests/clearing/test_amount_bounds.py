"""No amount can overflow a ledger column: out of range is a clear 4xx and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import JournalEntry, Obligation
from clearing.core.money import BALANCE_LIMIT, MAX_AMOUNT
from issuers import accruals, programs
from issuers.schemas import AccrualBatchCreate, AccrualCreate, PointValueCreate
from tests.factories import T0, accrue, build_world, key, member

# The ledger's rules hold whichever engine applies a posting on PostgreSQL.
pytestmark = pytest.mark.ledger_engines


def entries(engine: Engine) -> tuple[int, int]:
    with transaction(engine) as session:
        return (
            session.execute(select(func.count()).select_from(JournalEntry)).scalar_one(),
            session.execute(select(func.count()).select_from(Obligation)).scalar_one(),
        )


def refused(engine: Engine, action: Callable[[Session], object]) -> None:
    """`action` is refused as amount_out_of_range and leaves the books as they were."""
    before = entries(engine)
    with pytest.raises(ClearingError) as err, transaction(engine) as session:
        action(session)
    assert (err.value.code, err.value.status) == ("amount_out_of_range", 422)
    assert entries(engine) == before


def test_a_merchant_accrual_owing_more_than_one_operation_may_is_refused(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_b, "BANKB", "bob")
    # MAX_AMOUNT points at 0.01 CNY owe exactly MAX_AMOUNT fen: the largest accrual that fits
    assert accrue(engine, w.shop, "BANKB", "bob", MAX_AMOUNT).amount_owed == MAX_AMOUNT
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 1)
    # ... while at 0.02 (a new program's value) it would owe twice that
    with transaction(engine) as session:
        programs.add_point_value(
            session, w.bank_a, "BANKA", PointValueCreate(value=Decimal("0.02")), T0
        )
    refused(
        engine,
        lambda s: accruals.accrue(
            s,
            w.shop,
            AccrualCreate(program="BANKA", external_id="alice", points=MAX_AMOUNT),
            T0,
            key(),
        ),
    )


def test_a_posting_that_would_take_a_balance_out_of_range_is_refused(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 10)
    with transaction(engine) as session:
        # As if years of accruals had brought the member near the limit (the check is on the
        # row the posting produces, not only on each leg).
        session.execute(
            text(
                "UPDATE balances SET balance = :b WHERE account_id IN"
                " (SELECT id FROM accounts WHERE kind = 'member')"
            ),
            {"b": BALANCE_LIMIT - 5},
        )
    refused(
        engine,
        lambda s: accruals.accrue(
            s, w.bank_a, AccrualCreate(program="BANKA", external_id="alice", points=6), T0, key()
        ),
    )
    assert accrue(engine, w.bank_a, "BANKA", "alice", 5).points == 5


def test_a_bulk_file_summing_beyond_a_balance_is_refused_before_the_database(
    engine: Engine,
) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    lines = BALANCE_LIMIT // MAX_AMOUNT + 1
    refused(
        engine,
        lambda s: accruals.accrue_batch(
            s,
            w.bank_a,
            AccrualBatchCreate(
                items=[AccrualCreate(program="BANKA", external_id="alice", points=MAX_AMOUNT)]
                * lines
            ),
            T0,
            key(),
        ),
    )
