"""Limits as data: each kind allows, declines at one over the limit, reviews; the most specific
scope wins; versions stay readable; counters hold under real concurrent connections."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.db import transaction
from clearing.core.models import JournalEntry as Entry
from clearing.core.policy import Declined, PendingReview, bind_policy
from clearing.web.context import Caller
from issuers import accruals
from issuers.organisations import platform
from issuers.schemas import AccrualBatchCreate, AccrualCreate
from risk.limits import LimitRule, list_rules, rule_history, set_rule
from risk.models import RiskDecision
from risk.policy import RiskPolicy
from risk.schemas import LimitRuleSet
from tests.factories import (
    T0,
    accrue,
    authorise,
    balance,
    build_world,
    capture,
    key,
    member,
    trust,
)
from tests.factories import World as Parties


@pytest.fixture
def limited(engine: Engine) -> tuple[Engine, Parties]:
    """A world whose engine passes a policy of the limits alone."""
    world = build_world(engine)
    bind_policy(engine, RiskPolicy(rules=[LimitRule("UTC")]))
    member(engine, world.bank_a, "BANKA", "alice")
    member(engine, world.bank_a, "BANKA", "bob")
    return engine, world


def _set(engine: Engine, **fields: Any) -> Any:
    with transaction(engine) as session:
        operator = Caller(platform(session).id, "platform", "ops-key")
        return set_rule(session, operator, LimitRuleSet.model_validate(fields), T0)


def _decisions(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.execute(select(func.count()).select_from(RiskDecision)).scalar_one())


def _entries(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.execute(select(func.count()).select_from(Entry)).scalar_one())


def test_the_defaults_decline_ten_to_the_fifteen_points_and_write_only_the_decision(
    limited: tuple[Engine, Parties],
) -> None:
    engine, world = limited
    entries = _entries(engine)
    with pytest.raises(Declined) as refused:
        accrue(engine, world.bank_a, "BANKA", "alice", 10**15 - 1)
    problem = refused.value.problem()
    assert problem["code"] == "limit_exceeded"
    assert problem["rule"] == "limit:44136eb2-f1ce-5d55-bfcf-6dde2509dcde"
    assert problem["rule_version"] == 1
    assert balance(engine, world.bank_a, "BANKA", "alice") == (0, 0)
    assert _entries(engine) == entries
    assert _decisions(engine) == 1


def test_single_accrual_boundaries_of_the_defaults(limited: tuple[Engine, Parties]) -> None:
    engine, world = limited
    accrue(engine, world.bank_a, "BANKA", "alice", 1_000_000)  # at the review threshold
    with pytest.raises(PendingReview):
        accrue(engine, world.bank_a, "BANKA", "alice", 1_000_001)
    with pytest.raises(Declined):
        accrue(engine, world.bank_a, "BANKA", "alice", 10_000_001)
    assert balance(engine, world.bank_a, "BANKA", "alice")[0] == 1_000_000


def test_member_window_counts_roll_and_the_most_specific_scope_wins(
    limited: tuple[Engine, Parties],
) -> None:
    engine, world = limited
    _set(engine, kind="member_window", action="accrual", period="minute", max_count=3)
    for _ in range(3):
        accrue(engine, world.bank_a, "BANKA", "alice", 10)
    with pytest.raises(Declined) as refused:
        accrue(engine, world.bank_a, "BANKA", "alice", 10)
    assert refused.value.problem()["measure"] == "count"
    accrue(engine, world.bank_a, "BANKA", "bob", 10)  # another member's own window
    accrue(engine, world.bank_a, "BANKA", "alice", 10, now=T0 + timedelta(seconds=61))
    # A program rule is more specific than the platform's: alice gets five.
    with transaction(engine) as session:
        from issuers.models import Program

        program_id = session.execute(select(Program.id).where(Program.code == "BANKA")).scalar()
    _set(
        engine,
        kind="member_window",
        action="accrual",
        period="minute",
        scope="program",
        scope_id=str(program_id),
        max_count=5,
    )
    later = T0 + timedelta(minutes=5)
    for _ in range(5):
        accrue(engine, world.bank_a, "BANKA", "alice", 10, now=later)
    with pytest.raises(Declined):
        accrue(engine, world.bank_a, "BANKA", "alice", 10, now=later)


def test_member_window_points_review_then_decline(limited: tuple[Engine, Parties]) -> None:
    engine, world = limited
    _set(
        engine,
        kind="member_window",
        action="accrual",
        period="hour",
        max_points=1000,
        review_points=600,
    )
    accrue(engine, world.bank_a, "BANKA", "alice", 600)
    with pytest.raises(PendingReview):
        accrue(engine, world.bank_a, "BANKA", "alice", 1)
    assert _decisions(engine) == 1
    with pytest.raises(Declined):
        accrue(engine, world.bank_a, "BANKA", "alice", 401)


def test_program_issuance_per_day_boundary(limited: tuple[Engine, Parties]) -> None:
    engine, world = limited
    _set(engine, kind="program_issuance", max_points=1000)
    accrue(engine, world.bank_a, "BANKA", "alice", 600)
    accrue(engine, world.bank_a, "BANKA", "bob", 400)  # exactly the limit
    with pytest.raises(Declined) as refused:
        accrue(engine, world.bank_a, "BANKA", "bob", 1)
    assert refused.value.problem()["kind"] == "program_issuance"
    accrue(engine, world.bank_a, "BANKA", "bob", 1, now=T0 + timedelta(days=1))


def test_merchant_transaction_and_day_limits_decline_but_never_review(
    limited: tuple[Engine, Parties],
) -> None:
    engine, world = limited
    accrue(engine, world.bank_a, "BANKA", "alice", 100_000)
    trust(engine, world.bank_a, "BANKA", world.shop)
    _set(engine, kind="merchant_transaction", action="authorisation", max_amount=300)
    _set(engine, kind="merchant_day", action="authorisation", max_amount=500)
    with pytest.raises(Declined):
        authorise(engine, world.shop, "BANKA", "alice", 301, token=None)
    authorise(engine, world.shop, "BANKA", "alice", 300, token=None)
    authorise(engine, world.shop, "BANKA", "alice", 200, token=None)  # 500 today: at the limit
    with pytest.raises(Declined) as refused:
        authorise(engine, world.shop, "BANKA", "alice", 1, token=None)
    assert refused.value.problem()["kind"] == "merchant_day"
    with pytest.raises(Exception, match="cannot be sent to review"):
        _set(engine, kind="merchant_day", action="capture", review_amount=10)


def test_refunds_as_a_share_of_captures(limited: tuple[Engine, Parties]) -> None:
    engine, world = limited
    from exchange import service as exchange
    from exchange.schemas import RefundCreate
    from tests.factories import key

    accrue(engine, world.bank_a, "BANKA", "alice", 100_000)
    trust(engine, world.bank_a, "BANKA", world.shop)
    _set(engine, kind="refund_share", max_share="0.5", allowance=10, trailing_days=7)
    checkout = authorise(engine, world.shop, "BANKA", "alice", 200, token=None)
    capture(engine, world.shop, checkout.id)

    def refund(amount: int) -> None:
        with transaction(engine) as session:
            exchange.refund(
                session, world.shop, checkout.id, RefundCreate(amount=amount), T0, key()
            )

    refund(100)
    refund(10)  # 110 = half of 200 plus the allowance of 10
    with pytest.raises(Declined) as refused:
        refund(1)
    assert refused.value.problem()["kind"] == "refund_share"


def test_versions_stay_readable_and_bad_rules_are_refused(limited: tuple[Engine, Parties]) -> None:
    engine, _ = limited
    first = _set(engine, kind="program_issuance", max_points=1000)
    second = _set(engine, kind="program_issuance", max_points=2000, note="raised")
    assert second.rule_id == first.rule_id
    assert second.version == 2
    with transaction(engine) as session:
        history = rule_history(session, first.rule_id)
        in_force = [r for r in list_rules(session) if r.rule_id == first.rule_id]
    assert [(r.version, r.max_points, r.created_by_key) for r in history] == [
        (1, 1000, "ops-key"),
        (2, 2000, "ops-key"),
    ]
    assert [r.version for r in in_force] == [2]
    from risk.limits import InvalidLimit

    with pytest.raises(InvalidLimit):
        _set(engine, kind="single_operation", action="accrual", max_share=Decimal("0.1"))
    with pytest.raises(InvalidLimit):
        _set(engine, kind="member_window", action="accrual", period="", max_count=1)


def test_concurrent_accruals_never_pass_a_member_limit_together(pg_engine: Engine) -> None:
    world = build_world(pg_engine)
    bind_policy(pg_engine, RiskPolicy(rules=[LimitRule("UTC")]))
    member(pg_engine, world.bank_a, "BANKA", "alice")
    _set(pg_engine, kind="member_window", action="accrual", period="day", max_points=3000)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def one() -> None:
        barrier.wait()
        try:
            accrue(pg_engine, world.bank_a, "BANKA", "alice", 1000)
            outcomes.append("ok")
        except Declined:
            outcomes.append("declined")

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["declined"] * 5 + ["ok"] * 3
    assert balance(pg_engine, world.bank_a, "BANKA", "alice")[0] == 3000


def test_concurrent_accruals_either_side_of_a_bucket_boundary_never_pass_together(
    pg_engine: Engine,
) -> None:
    """Half the requests fall in the hour bucket before T0 + 1 h, half in the one from it (a
    rolling day counts hourly buckets): each sums the window only after it holds the key's lock row, with
    a fresh snapshot, so it sees what the others committed in the other bucket."""
    world = build_world(pg_engine)
    bind_policy(pg_engine, RiskPolicy(rules=[LimitRule("UTC")]))
    member(pg_engine, world.bank_a, "BANKA", "alice")
    _set(pg_engine, kind="member_window", action="accrual", period="day", max_points=3000)
    assert T0.timestamp() % 3600 == 0
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def one(n: int) -> None:
        boundary = T0 + timedelta(hours=1)
        at = boundary - timedelta(seconds=1) if n % 2 else boundary
        barrier.wait()
        try:
            accrue(pg_engine, world.bank_a, "BANKA", "alice", 1000, now=at)
            outcomes.append("ok")
        except Declined:
            outcomes.append("declined")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["declined"] * 5 + ["ok"] * 3
    assert balance(pg_engine, world.bank_a, "BANKA", "alice")[0] == 3000


def test_a_bulk_file_counts_every_line_and_is_declined_at_the_line_that_passes_a_limit(
    limited: tuple[Engine, Parties],
) -> None:
    engine, world = limited
    _set(engine, kind="member_window", action="accrual", period="day", max_points=100)
    accrue(engine, world.bank_a, "BANKA", "alice", 40)

    def file(*lines: tuple[str, int]) -> None:
        items = [AccrualCreate(program="BANKA", external_id=m, points=p) for m, p in lines]
        with transaction(engine) as session:
            accruals.accrue_batch(session, world.bank_a, AccrualBatchCreate(items=items), T0, key())

    # alice's lines, bob's between them: alice reaches 100 exactly, bob is his own.
    file(("alice", 20), ("bob", 90), ("alice", 30), ("alice", 10))
    assert balance(engine, world.bank_a, "BANKA", "alice")[0] == 100
    entries = _entries(engine)
    with pytest.raises(Declined) as refused:
        file(("bob", 5), ("alice", 1), ("bob", 5))
    problem = refused.value.problem()
    assert (problem["measure"], problem["used"], problem["limit"]) == ("points", 101, 100)
    assert _entries(engine) == entries
    assert balance(engine, world.bank_a, "BANKA", "bob")[0] == 90
    # One line over the limit among many of the same member: the file is declined at it.
    with pytest.raises(Declined) as at_line:
        file(*[("bob", 1)] * 12)
    assert at_line.value.problem()["used"] == 101
