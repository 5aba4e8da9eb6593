"""Agreements between parties: merchants under approved agreements and their daily caps,
issuers' interchange consent, and no rate that creates value."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from clearing.core.db import transaction
from clearing.core.errors import ClearingError, Forbidden, NotFound
from clearing.core.policy import Declined, bind_policy
from clearing.web.context import Caller
from exchange import service as exchange
from exchange.rates import rate_graph
from exchange.schemas import BilateralRateCreate
from issuers import agreements, programs
from issuers.schemas import AgreementCreate, InterchangeSet, PointValueCreate
from risk.agreements import AgreementRule, ArbitrageRule, InterchangeRule
from risk.policy import RiskPolicy
from tests.factories import (
    T0,
    World,
    accrue,
    authorise,
    balance,
    build_world,
    capture,
    convert,
    link,
    member,
)

ZONE, CUTOFF = "Asia/Shanghai", "00:00"


@pytest.fixture
def world(engine: Engine) -> World:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.bank_b, "BANKB", "alice-b")
    link(engine, w.bank_b, ("BANKA", "alice"), ("BANKB", "alice-b"))
    accrue(engine, w.bank_a, "BANKA", "alice", 100_000)
    bind_policy(
        engine,
        RiskPolicy(
            rules=[InterchangeRule(), ArbitrageRule(rate_graph), AgreementRule(ZONE, CUTOFF)]
        ),
    )
    return w


def agree(
    engine: Engine,
    proposer: Caller,
    approver: Caller,
    program: str,
    merchant: Caller,
    **terms: object,
) -> uuid.UUID:
    """One side proposes, the other approves; the agreement's id."""
    fields = {"accept": True, "fund": True, **terms}
    with transaction(engine) as session:
        proposed = agreements.propose(
            session,
            proposer,
            AgreementCreate.model_validate(
                {"program": program, "merchant_id": str(merchant.org_id), **fields}
            ),
            T0,
        )
    with transaction(engine) as session:
        agreements.approve(session, approver, proposed.id, T0)
    return proposed.id


def consent(engine: Engine, issuer: Caller, counterparty: Caller, enabled: bool = True) -> None:
    with transaction(engine) as session:
        agreements.set_interchange(
            session, issuer, counterparty.org_id, InterchangeSet(enabled=enabled), T0
        )


def code_of(error: pytest.ExceptionInfo[ClearingError]) -> str:
    return str(error.value.problem()["code"])


# merchants ------------------------------------------------------------------------------------


def test_a_merchant_without_an_agreement_neither_funds_nor_accepts_a_programs_points(
    engine: Engine, world: World
) -> None:
    with pytest.raises(Declined) as funded:
        accrue(engine, world.shop, "BANKA", "alice", 500)
    assert code_of(funded) == "no_agreement"
    with pytest.raises(Declined) as accepted:
        authorise(engine, world.shop, "BANKA", "alice", 100)
    assert code_of(accepted) == "no_agreement"
    assert balance(engine, world.bank_a, "BANKA", "alice") == (100_000, 100_000)


def test_only_an_approved_agreement_lets_a_merchant_act_and_only_as_its_terms_say(
    engine: Engine, world: World
) -> None:
    with transaction(engine) as session:
        proposed = agreements.propose(
            session,
            world.shop,
            AgreementCreate(program="BANKA", accept=True, fund=False),
            T0,
        )
    with pytest.raises(Declined):
        authorise(engine, world.shop, "BANKA", "alice", 100)
    with pytest.raises(Forbidden), transaction(engine) as session:
        agreements.approve(session, world.shop, proposed.id, T0)
    with pytest.raises(NotFound), transaction(engine) as session:
        agreements.approve(session, world.bank_b, proposed.id, T0)
    with transaction(engine) as session:
        approved = agreements.approve(session, world.bank_a, proposed.id, T0)
    assert (approved.status, approved.fee_rate) == ("active", Decimal("0.006"))
    checkout = authorise(engine, world.shop, "BANKA", "alice", 100)
    assert capture(engine, world.shop, checkout.id).status == "captured"
    with pytest.raises(Declined) as funding:
        accrue(engine, world.shop, "BANKA", "alice", 500)
    assert code_of(funding) == "no_agreement"
    # The cafe has no agreement of its own.
    with pytest.raises(Declined):
        authorise(engine, world.cafe, "BANKA", "alice", 100)


def test_an_ended_or_expired_agreement_allows_nothing(engine: Engine, world: World) -> None:
    agreement_id = agree(engine, world.bank_a, world.shop, "BANKA", world.shop)
    accrue(engine, world.shop, "BANKA", "alice", 500)
    with transaction(engine) as session:
        ended = agreements.end(session, world.shop, agreement_id, T0)
    assert ended.status == "ended"
    with pytest.raises(Declined):
        accrue(engine, world.shop, "BANKA", "alice", 500)
    agree(
        engine,
        world.bank_a,
        world.shop,
        "BANKA",
        world.shop,
        valid_to=(T0 + timedelta(hours=1)).isoformat(),
    )
    accrue(engine, world.shop, "BANKA", "alice", 500, now=T0 + timedelta(minutes=59))
    with pytest.raises(Declined):
        accrue(engine, world.shop, "BANKA", "alice", 500, now=T0 + timedelta(hours=1))


def test_a_daily_fund_cap_allows_up_to_the_cap_and_not_a_fen_more(
    engine: Engine, world: World
) -> None:
    # 500 points of BANKA (0.005) are worth 2.50 CNY = 250 fen.
    agree(engine, world.bank_a, world.shop, "BANKA", world.shop, daily_fund_cap=1000)
    for _ in range(4):
        accrue(engine, world.shop, "BANKA", "alice", 500)
    with pytest.raises(Declined) as over:
        accrue(engine, world.shop, "BANKA", "alice", 2)
    assert code_of(over) == "agreement_cap_exceeded"
    # The next business day (Shanghai midnight is 16:00 UTC) starts afresh.
    accrue(engine, world.shop, "BANKA", "alice", 500, now=T0 + timedelta(days=1))


def test_a_daily_accept_cap_counts_captures_and_refuses_an_authorisation_beyond_it(
    engine: Engine, world: World
) -> None:
    agree(engine, world.bank_a, world.shop, "BANKA", world.shop, daily_accept_cap=300)
    first = authorise(engine, world.shop, "BANKA", "alice", 200)
    capture(engine, world.shop, first.id)
    with pytest.raises(Declined) as beyond:
        authorise(engine, world.shop, "BANKA", "alice", 101)
    assert code_of(beyond) == "agreement_cap_exceeded"
    exactly = authorise(engine, world.shop, "BANKA", "alice", 100)
    assert capture(engine, world.shop, exactly.id).captured_amount == 100


def test_concurrent_funded_accruals_never_pass_an_agreement_cap_together(
    pg_engine: Engine,
) -> None:
    engine = pg_engine
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    bind_policy(engine, RiskPolicy(rules=[AgreementRule(ZONE, CUTOFF)]))
    # Each accrual is worth 250 fen; the cap fits three of eight.
    agree(engine, w.bank_a, w.shop, "BANKA", w.shop, daily_fund_cap=750)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            accrue(engine, w.shop, "BANKA", "alice", 500)
            result = "ok"
        except Declined:
            result = "declined"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["declined"] * 5 + ["ok"] * 3
    assert balance(engine, w.bank_a, "BANKA", "alice")[0] == 1500


# interchange and rates ------------------------------------------------------------------------


def test_conversion_needs_both_issuers_consent(engine: Engine, world: World) -> None:
    with pytest.raises(Declined) as none:
        convert(engine, world.bank_a, ("BANKA", "alice"), ("BANKB", "alice-b"), 1000)
    assert code_of(none) == "no_interchange"
    consent(engine, world.bank_a, world.bank_b)
    with pytest.raises(Declined):
        convert(engine, world.bank_a, ("BANKA", "alice"), ("BANKB", "alice-b"), 1000)
    consent(engine, world.bank_b, world.bank_a)
    done = convert(engine, world.bank_a, ("BANKA", "alice"), ("BANKB", "alice-b"), 1000)
    assert done.points_in == 495
    consent(engine, world.bank_b, world.bank_a, enabled=False)
    with pytest.raises(Declined):
        convert(engine, world.bank_a, ("BANKA", "alice"), ("BANKB", "alice-b"), 1000)


def publish(
    engine: Engine, issuer: Caller, source: str, target: str, blocks: tuple[int, int]
) -> None:
    with transaction(engine) as session:
        exchange.set_bilateral_rate(
            session,
            issuer,
            BilateralRateCreate(
                source_program=source,
                target_program=target,
                source_block=blocks[0],
                target_block=blocks[1],
                min_source_points=blocks[0],
            ),
            T0,
        )


def test_a_bilateral_rate_into_a_program_needs_its_issuers_consent(
    engine: Engine, world: World
) -> None:
    with pytest.raises(Declined) as refused:
        publish(engine, world.bank_a, "BANKA", "BANKB", (100, 40))
    assert code_of(refused) == "no_consent"
    consent(engine, world.bank_b, world.bank_a)
    publish(engine, world.bank_a, "BANKA", "BANKB", (100, 40))


def test_a_rate_that_would_create_value_is_refused_with_its_cycle(
    engine: Engine, world: World
) -> None:
    consent(engine, world.bank_b, world.bank_a)
    # A is worth 0.005 and B 0.01: one A point for one B point, then back at value (less the
    # 1% fee) gives 1.98 A points per A point.
    with pytest.raises(Declined) as refused:
        publish(engine, world.bank_a, "BANKA", "BANKB", (1, 1))
    problem = refused.value.problem()
    assert problem["code"] == "arbitrage_cycle"
    assert problem["cycle"] == ["BANKA", "BANKB", "BANKA"]
    assert problem["gain"] == "99/50"
    # 100 A for 49 B returns 0.9702 after the round trip: allowed.
    publish(engine, world.bank_a, "BANKA", "BANKB", (100, 49))


def test_a_point_value_that_would_close_a_value_creating_cycle_is_refused(
    engine: Engine, world: World
) -> None:
    consent(engine, world.bank_b, world.bank_a)
    publish(engine, world.bank_a, "BANKA", "BANKB", (100, 49))
    later = T0 + timedelta(days=1)

    def value(v: str) -> None:
        with transaction(engine) as session:
            programs.add_point_value(
                session,
                world.bank_b,
                "BANKB",
                PointValueCreate(value=Decimal(v), effective_from=later),
                T0,
            )

    # B at 0.0103: 0.49 x 0.0103 x 0.99 / 0.005 = 0.9993, still a loss.
    value("0.0103")
    with pytest.raises(Declined) as refused:
        value("0.0104")  # 1.0092: refused
    assert refused.value.problem()["code"] == "arbitrage_cycle"
