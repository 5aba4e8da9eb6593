"""The core's policy hook: every operation passes it before writing; a decline leaves only the
decision, on both ledger engines."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from clearing.core.db import transaction
from clearing.core.models import Balance, Hold, JournalEntry, Obligation
from clearing.core.policy import (
    Action,
    Decision,
    Declined,
    OperationContext,
    PendingReview,
    Verdict,
    bind_policy,
)
from exchange import service as exchange
from exchange.schemas import BilateralRateCreate, RefundCreate
from issuers import accruals, programs
from issuers.schemas import AccrualBatchCreate, AccrualCreate, PointValueCreate
from risk.models import RiskDecision
from risk.policy import RiskPolicy
from tests.factories import (
    T0,
    World,
    accrue,
    authorise,
    build_world,
    capture,
    convert,
    key,
    link,
    member,
)

pytestmark = pytest.mark.ledger_engines


@dataclass
class Refuse:
    """A real rule that declines every operation of the given actions, and notes what the
    ledger held at the moment it was asked (to show it is asked before any write)."""

    actions: set[Action]
    name: str = "refuse"
    seen: list[tuple[Action, tuple[int, ...]]] = field(default_factory=list)

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> list[Decision | None]:
        state = ledger_state(session)
        answers: list[Decision | None] = []
        for op in operations:
            self.seen.append((op.action, state))
            refused = op.action in self.actions
            answers.append(
                Decision(Verdict.DECLINE, "test_refusal", "refuse", 7, "refused by the test")
                if refused
                else None
            )
        return answers


def ledger_state(session: Session) -> tuple[int, ...]:
    """What any write of an operation would change: entries, obligations, holds, balances."""
    return (
        session.execute(select(func.count()).select_from(JournalEntry)).scalar_one(),
        session.execute(select(func.count()).select_from(Obligation)).scalar_one(),
        session.execute(select(func.count()).select_from(Hold)).scalar_one(),
        int(session.execute(select(func.coalesce(func.sum(Balance.held), 0))).scalar_one()),
        int(
            session.execute(
                select(func.coalesce(func.sum(func.abs(Balance.balance)), 0))
            ).scalar_one()
        ),
    )


def state(engine: Engine) -> tuple[int, ...]:
    with transaction(engine) as session:
        return ledger_state(session)


def decisions(engine: Engine) -> list[tuple[str, str, str | None, int | None]]:
    with transaction(engine) as session:
        rows = session.execute(
            select(
                RiskDecision.action,
                RiskDecision.outcome,
                RiskDecision.rule_id,
                RiskDecision.rule_version,
            ).order_by(RiskDecision.decided_at)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.fixture
def world(engine: Engine) -> World:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.bank_b, "BANKB", "alice-b")
    link(engine, w.bank_b, ("BANKA", "alice"), ("BANKB", "alice-b"))
    accrue(engine, w.bank_a, "BANKA", "alice", 100_000)
    return w


def refusing(engine: Engine, *actions: Action) -> Refuse:
    rule = Refuse(set(actions))
    bind_policy(engine, RiskPolicy(rules=[rule]))
    return rule


OPERATIONS: dict[Action, Callable[[Engine, World], object]] = {}


def operation(action: Action) -> Callable[[Callable[[Engine, World], object]], object]:
    def register(run: Callable[[Engine, World], object]) -> object:
        OPERATIONS[action] = run
        return run

    return register


@operation(Action.ACCRUAL)
def _accrual(engine: Engine, w: World) -> object:
    return accrue(engine, w.shop, "BANKA", "alice", 500)


@operation(Action.QUOTE)
def _quote(engine: Engine, w: World) -> object:
    return convert(engine, w.bank_a, ("BANKA", "alice"), ("BANKB", "alice-b"), 1000)


@operation(Action.CONVERSION)
def _conversion(engine: Engine, w: World) -> object:
    return convert(engine, w.bank_a, ("BANKA", "alice"), ("BANKB", "alice-b"), 1000)


@operation(Action.AUTHORISATION)
def _authorisation(engine: Engine, w: World) -> object:
    return authorise(engine, w.shop, "BANKA", "alice", 100)


@operation(Action.RATE)
def _rate(engine: Engine, w: World) -> object:
    with transaction(engine) as session:
        return exchange.set_bilateral_rate(
            session,
            w.bank_a,
            BilateralRateCreate(
                source_program="BANKA",
                target_program="BANKB",
                source_block=100,
                target_block=40,
                min_source_points=100,
            ),
            T0,
        )


@pytest.mark.parametrize("action", sorted(OPERATIONS), ids=str)
def test_a_declined_operation_writes_only_its_decision(
    engine: Engine, world: World, action: Action
) -> None:
    before = state(engine)
    rule = refusing(engine, action)
    with pytest.raises(Declined) as refused:
        OPERATIONS[action](engine, world)
    problem = refused.value.problem()
    assert (problem["status"], problem["code"], problem["rule"], problem["rule_version"]) == (
        409,
        "test_refusal",
        "refuse",
        7,
    )
    assert state(engine) == before
    assert decisions(engine) == [(str(action), "declined", "refuse", 7)]
    # Asked before anything of the operation was written.
    assert rule.seen[-1] == (action, before)


def test_capture_void_and_refund_pass_the_policy_too(engine: Engine, world: World) -> None:
    checkout = authorise(engine, world.shop, "BANKA", "alice", 300)
    before = state(engine)
    rule = refusing(engine, Action.CAPTURE, Action.VOID)
    with pytest.raises(Declined):
        capture(engine, world.shop, checkout.id)
    with pytest.raises(Declined), transaction(engine) as session:
        exchange.void(session, world.shop, checkout.id, T0, key())
    assert state(engine) == before
    assert [s[0] for s in rule.seen] == [Action.CAPTURE, Action.VOID]

    refusing(engine, Action.REFUND)
    captured = capture(engine, world.shop, checkout.id)
    assert captured.status == "captured"
    after_capture = state(engine)
    with pytest.raises(Declined), transaction(engine) as session:
        exchange.refund(session, world.shop, checkout.id, RefundCreate(amount=100), T0, key())
    assert state(engine) == after_capture
    assert [d[:2] for d in decisions(engine)] == [
        ("capture", "declined"),
        ("void", "declined"),
        ("refund", "declined"),
    ]


def test_every_line_of_a_bulk_file_is_screened_and_one_refusal_refuses_the_file(
    engine: Engine, world: World
) -> None:
    member(engine, world.bank_a, "BANKA", "bob")
    before = state(engine)

    @dataclass
    class RefuseBob:
        name: str = "no-bob"
        lines: int = 0

        def screen(
            self, session: Session, operations: Sequence[OperationContext]
        ) -> list[Decision | None]:
            self.lines += len(operations)
            return [
                Decision(Verdict.DECLINE, "test_refusal", "no-bob", 1, "not bob")
                if op.member_external_id == "bob"
                else None
                for op in operations
            ]

    rule = RefuseBob()
    bind_policy(engine, RiskPolicy(rules=[rule]))
    items = [
        AccrualCreate(program="BANKA", external_id=name, points=10)
        for name in ("alice", "bob", "alice")
    ]
    with pytest.raises(Declined), transaction(engine) as session:
        accruals.accrue_batch(session, world.bank_a, AccrualBatchCreate(items=items), T0, key())
    assert rule.lines == 3
    assert state(engine) == before
    assert len(decisions(engine)) == 1


def test_a_point_value_publication_is_screened_with_the_value_it_would_publish(
    engine: Engine, world: World
) -> None:
    rule = refusing(engine, Action.RATE)
    with pytest.raises(Declined), transaction(engine) as session:
        programs.add_point_value(
            session,
            world.bank_a,
            "BANKA",
            PointValueCreate(value=Decimal("0.02"), effective_from=T0 + timedelta(days=1)),
            T0,
        )
    assert rule.seen[-1][0] == Action.RATE
    with transaction(engine) as session:
        program_id = programs.program_by_code(session, "BANKA").id
        later = programs.point_value_at(session, program_id, T0 + timedelta(days=2))
    assert later.value == Decimal("0.005")


def test_what_cannot_wait_for_a_review_is_declined_where_a_rule_would_review_it(
    engine: Engine, world: World
) -> None:
    @dataclass
    class ReviewAll:
        name: str = "review-all"

        def screen(
            self, session: Session, operations: Sequence[OperationContext]
        ) -> list[Decision | None]:
            return [
                Decision(Verdict.REVIEW, "test_review", "review-all", 1, "looks odd")
                for _ in operations
            ]

    bind_policy(engine, RiskPolicy(rules=[ReviewAll()]))
    before = state(engine)
    with pytest.raises(Declined) as at_the_till:
        authorise(engine, world.shop, "BANKA", "alice", 100)
    problem = at_the_till.value.problem()
    assert (problem["code"], problem["rule"]) == ("test_review", "review-all")
    assert "cannot wait for a review" in str(problem["detail"])
    with pytest.raises(PendingReview) as held:
        accrue(engine, world.bank_a, "BANKA", "alice", 10)
    assert held.value.problem()["status"] == "pending_review"
    assert state(engine) == before
    assert [d[1] for d in decisions(engine)] == ["declined", "pending_review"]
