"""Bad input: a clear error with a stable code, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import Hold, IdempotencyRecord, JournalEntry
from clearing.core.money import MAX_AMOUNT
from exchange import service as exchange
from exchange.schemas import CaptureCreate, CheckoutCreate
from issuers import accruals, members, organisations, programs, tokens
from issuers.schemas import (
    AccrualCreate,
    OrganisationUpdate,
    PaymentTokenCreate,
    PointValueCreate,
    ProgramCreate,
)
from tests.factories import (
    T0,
    TOKEN_SECRET,
    World,
    accrue,
    authorise,
    build_world,
    key,
    member,
    org,
    payment_token,
)


def counts(engine: Engine) -> tuple[int, int, int]:
    with transaction(engine) as session:
        return tuple(  # type: ignore[return-value]
            session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (JournalEntry, Hold, IdempotencyRecord)
        )


def accrual(program: str, external_id: str, points: int = 10) -> AccrualCreate:
    return AccrualCreate(program=program, external_id=external_id, points=points)


def token(session: Session, w: World, external_id: str = "alice") -> str:
    """A payment token Bank A mints for its member, in the transaction that is refused."""
    out, _ = tokens.mint_payment_token(
        session, w.bank_a, "BANKA", external_id, PaymentTokenCreate(), T0, key(), TOKEN_SECRET
    )
    return out.token


CASES: dict[str, tuple[str, Callable[[Session, World], object]]] = {
    "unknown program": (
        "not_found",
        lambda s, w: accruals.accrue(s, w.bank_a, accrual("NOPE", "alice"), T0, key()),
    ),
    "another issuer's program": (
        "not_found",
        lambda s, w: accruals.accrue(s, w.bank_b, accrual("BANKA", "alice"), T0, key()),
    ),
    "unknown member": (
        "not_found",
        lambda s, w: accruals.accrue(s, w.bank_a, accrual("BANKA", "ghost"), T0, key()),
    ),
    "frozen member": (
        "member_inactive",
        lambda s, w: accruals.accrue(s, w.bank_a, accrual("BANKA", "frozen"), T0, key()),
    ),
    "suspended merchant": (
        "organisation_inactive",
        lambda s, w: accruals.accrue(s, w.cafe, accrual("BANKA", "alice"), T0, key()),
    ),
    "insufficient points": (
        "insufficient_points",
        lambda s, w: exchange.authorise(
            s,
            w.shop,
            CheckoutCreate(
                program="BANKA",
                external_id="alice",
                order_total=10_000,
                points_amount=10_000,
                payment_token=token(s, w),
            ),
            T0,
            key(),
        ),
    ),
    "no payment token": (
        "consent_required",
        lambda s, w: exchange.authorise(
            s,
            w.shop,
            CheckoutCreate(program="BANKA", external_id="alice", order_total=10, points_amount=10),
            T0,
            key(),
        ),
    ),
    "frozen member's token": (
        "member_inactive",
        lambda s, w: exchange.authorise(
            s,
            w.shop,
            CheckoutCreate(
                program="BANKA",
                external_id="frozen",
                order_total=10,
                points_amount=10,
                payment_token=w.programs["frozen_token"].kind,
            ),
            T0,
            key(),
        ),
    ),
    "points above order total": (
        "invalid_input",
        lambda s, w: exchange.authorise(
            s,
            w.shop,
            CheckoutCreate(program="BANKA", external_id="alice", order_total=10, points_amount=11),
            T0,
            key(),
        ),
    ),
    "currency mismatch": (
        "currency_mismatch",
        lambda s, w: exchange.authorise(
            s,
            w.programs["HKSHOP"],
            CheckoutCreate(program="BANKA", external_id="alice", order_total=10, points_amount=10),
            T0,
            key(),
        ),
    ),
    "capture above the hold": (
        "capture_exceeds_hold",
        lambda s, w: exchange.capture(
            s, w.shop, w.programs["checkout"].org_id, CaptureCreate(amount=51), T0, key()
        ),
    ),
    "another merchant's checkout": (
        "not_found",
        lambda s, w: exchange.capture(
            s, w.cafe, w.programs["checkout"].org_id, CaptureCreate(), T0, key()
        ),
    ),
    "point value of zero": (
        "invalid_input",
        lambda s, w: programs.add_point_value(
            s, w.bank_a, "BANKA", PointValueCreate.model_construct(value=Decimal(0)), T0
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_writes_nothing(engine: Engine, case: str) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.bank_a, "BANKA", "frozen")
    accrue(engine, w.bank_a, "BANKA", "alice", 100)
    frozen_token = payment_token(engine, w.bank_a, "BANKA", "frozen")
    w.programs["frozen_token"] = type(w.shop)(w.bank_a.org_id, frozen_token)
    with transaction(engine) as session:
        members.set_member_status(session, w.bank_a, "BANKA", "frozen", "frozen")
        organisations.update_organisation(
            session, w.cafe.org_id, OrganisationUpdate(status="suspended")
        )
    w.programs["HKSHOP"] = org(engine, "merchant", "HK shop", currency="HKD")
    checkout = authorise(engine, w.shop, "BANKA", "alice", 50)
    w.programs["checkout"] = type(w.shop)(checkout.id, "checkout")
    before = counts(engine)
    code, action = CASES[case]
    with pytest.raises(ClearingError) as err, transaction(engine) as session:
        action(session, w)
    assert err.value.code == code
    assert err.value.detail
    assert counts(engine) == before


@pytest.mark.parametrize("points", [0, -1, 10**15, 2**63, "10", 1.5, True])
def test_points_must_be_positive_and_below_10_to_the_15(points: object) -> None:
    with pytest.raises(ValidationError):
        AccrualCreate(program="BANKA", external_id="alice", points=points)
    assert (
        AccrualCreate(program="BANKA", external_id="alice", points=MAX_AMOUNT).points == 10**15 - 1
    )


@pytest.mark.parametrize("value", ["0", "-0.005", "NaN", "Infinity"])
def test_point_values_must_be_above_zero(value: str) -> None:
    with pytest.raises(ValidationError):
        ProgramCreate(code="X", name="X", point_value=Decimal(value))
