"""The platform's risk policy: the rules every operation passes, composed in one order.

Each rule looks at a batch of operations and answers, per operation, a decision or nothing
(no opinion). The first decline wins; otherwise any review sends the operation to review.
Rules that only read come first; rules that count (limits, exposure) come last and take their
counter rows in a fixed order, so the lock order is: the policy's rows, then balance rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from clearing.core.idempotency import Operation
from clearing.core.policy import (
    ALLOW,
    Action,
    Decision,
    OperationContext,
    PendingOperation,
    Verdict,
)
from clearing.web.context import Caller
from risk import decisions, reviews


class Rule(Protocol):
    """One kind of control."""

    name: str

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> Sequence[Decision | None]:
        """A decision per operation, or None where the rule has nothing to say."""
        ...


REVIEWABLE_ACTIONS = frozenset({Action.ACCRUAL, Action.CONVERSION, Action.REFUND})
"""What may wait for an operator: a till's authorisation, capture or void cannot, and quotes,
rates and reversals are answered on the spot."""

OperationBuilder = Callable[
    [Session, Caller, Mapping[str, Any], datetime, datetime], Operation[Any]
]
"""Rebuilds an idempotent operation from its stored request, to complete it after a review:
(session, caller, request, now, requested_at) -> the operation."""


@dataclass
class RiskPolicy:
    """The `clearing.core.policy.Policy` the app binds: its rules, and how to complete a
    reviewed operation of each kind (given by the app, which knows every domain)."""

    rules: Sequence[Rule] = ()
    operations: Mapping[str, OperationBuilder] = field(default_factory=dict)
    reviewable: frozenset[Action] = REVIEWABLE_ACTIONS

    def screen(self, session: Session, operations: Sequence[OperationContext]) -> list[Decision]:
        """The first decline of any rule, else the first review, else allow; per operation.
        An operation that cannot wait for a review (a till's) is declined where a rule would
        send it to review."""
        answers: list[Decision] = [ALLOW] * len(operations)
        for rule in self.rules:
            pending = [i for i, a in enumerate(answers) if a.verdict != Verdict.DECLINE]
            if not pending:
                break
            said = rule.screen(session, [operations[i] for i in pending])
            for i, decision in zip(pending, said, strict=True):
                if decision is None or decision.verdict == Verdict.ALLOW:
                    continue
                if (
                    decision.verdict == Verdict.REVIEW
                    and operations[i].action not in self.reviewable
                ):
                    decision = replace(
                        decision,
                        verdict=Verdict.DECLINE,
                        reason=f"{decision.reason} (a {operations[i].action} cannot wait for a"
                        " review)",
                    )
                if decision.verdict == Verdict.DECLINE or answers[i].verdict == Verdict.ALLOW:
                    answers[i] = decision
        return answers

    def record(
        self, session: Session, operation: OperationContext, decision: Decision, outcome: str
    ) -> None:
        """Write the decision to the log."""
        decisions.record(session, operation, decision, outcome)

    def hold_for_review(
        self,
        session: Session,
        operation: OperationContext,
        decision: Decision,
        pending: PendingOperation,
    ) -> None:
        """Queue the operation for an operator (see `risk.reviews`)."""
        reviews.hold_for_review(session, operation, decision, pending)
        decisions.record(session, operation, decision, "pending_review")
