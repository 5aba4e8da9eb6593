"""The risk policy every operation passes, inside the operation's own transaction.

The core says what an operation looks like to a policy (`OperationContext`, in the field's words)
and what a policy answers (`Decision`: allow, decline with the rule, or review). `risk/`
implements `Policy`; the app binds it to the engine (`bind_policy`), as it binds the ledger's
options, so that every service finds it through its session. The core never imports `risk`.

Lock order (README "Risk controls"): an operation is screened before it writes anything, so the
policy's rows (limit counters, exposure) are locked before any balance row; every operation takes
the same order, so two requests never wait on each other crosswise, and two that each fit a limit
only alone are serialised on the counter row: the second sees the first's use.

A decline leaves only the decision: the operation's transaction rolls back and the decision is
written in a transaction of its own (`ClearingError.kept`). A review leaves the decision, the
pending operation (with its points held) and the 202 answer under the request's idempotency key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from clearing.core.errors import ClearingError, Conflict, Kind
from clearing.core.ledger.model import ObligationDraft


class Action(StrEnum):
    """What an operation does, as a policy sees it."""

    ACCRUAL = "accrual"
    ACCRUAL_REVERSAL = "accrual_reversal"
    QUOTE = "quote"
    CONVERSION = "conversion"
    AUTHORISATION = "authorisation"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    RATE = "rate"
    """Publishing a bilateral rate or a point value: the rate graph changes."""
    MEMBER_STATUS = "member_status"
    ADJUSTMENT = "adjustment"
    TRANSFER = "transfer"
    REDEMPTION = "redemption"
    """A points mall order: the member's points pay for an item."""
    REDEMPTION_RETURN = "redemption_return"
    """A mall order cancelled or returned: its points go back to the member."""


class Verdict(StrEnum):
    """A policy's answer to one operation."""

    ALLOW = "allow"
    DECLINE = "decline"
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class Debit:
    """Money one party comes to owe another through an operation: the payer's settlement
    exposure grows by it, the payee's shrinks."""

    org_id: uuid.UUID
    """The payer."""
    payee_org_id: uuid.UUID
    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class OperationContext:
    """One operation as a policy sees it: who asks, on whose points, for how much, when."""

    action: Action
    caller_org_id: uuid.UUID
    at: datetime
    caller_key_id: str | None = None
    program_id: uuid.UUID | None = None
    program_code: str | None = None
    issuer_org_id: uuid.UUID | None = None
    member_id: uuid.UUID | None = None
    member_external_id: str | None = None
    member_account_id: uuid.UUID | None = None
    member_status: str | None = None
    """The member's status as the operation read it (None where it did not read it)."""
    merchant_org_id: uuid.UUID | None = None
    """The merchant at whose checkout the points are spent, or who funds an accrual."""
    target_program_id: uuid.UUID | None = None
    target_program_code: str | None = None
    target_issuer_org_id: uuid.UUID | None = None
    target_member_id: uuid.UUID | None = None
    target_member_external_id: str | None = None
    points: int = 0
    amount: int = 0
    """The money value of the operation, in minor units of `currency`."""
    currency: str | None = None
    debits: tuple[Debit, ...] = ()
    spends: bool = False
    """Whether the member's points leave (so a review holds them while it waits)."""
    point_value: Decimal | None = None
    """For `RATE`: a point value `program_code` would publish."""
    block_rate: tuple[int, int] | None = None
    """For `RATE`: a bilateral rate (source block, target block) from `program_code` into
    `target_program_code` would publish."""
    reference: str | None = None

    def inputs(self) -> dict[str, Any]:
        """What the policy saw, as JSON, for the decision log."""
        seen: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None or value == ():
                continue
            if name == "debits":
                value = [
                    {
                        "org_id": str(d.org_id),
                        "payee_org_id": str(d.payee_org_id),
                        "currency": d.currency,
                        "amount": d.amount,
                    }
                    for d in value
                ]
            elif isinstance(value, uuid.UUID | Decimal | datetime):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            seen[name] = value
        return seen


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer; a decline or review names the rule (and its version) that gave it."""

    verdict: Verdict
    code: str | None = None
    rule_id: str | None = None
    rule_version: int | None = None
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


ALLOW = Decision(Verdict.ALLOW)


@dataclass(frozen=True, slots=True)
class PendingOperation:
    """An operation waiting for an operator: enough to complete it later exactly once."""

    review_id: uuid.UUID
    operation: str
    request: Mapping[str, Any]
    org_id: uuid.UUID
    key_id: str | None
    idempotency_key: str
    requested_at: datetime


class Policy(Protocol):
    """What the risk domain implements; the app binds one to the engine."""

    def screen(self, session: Session, operations: Sequence[OperationContext]) -> list[Decision]:
        """One decision per operation; a limit it allows is counted as used (in this transaction)."""
        ...

    def record(
        self, session: Session, operation: OperationContext, decision: Decision, outcome: str
    ) -> None:
        """Write a decision to the log (a decline, a review, the allow that follows a review)."""
        ...

    def hold_for_review(
        self,
        session: Session,
        operation: OperationContext,
        decision: Decision,
        pending: PendingOperation,
    ) -> None:
        """Queue the operation for an operator, its points held until the review ends."""
        ...


def debits_of(obligations: Iterable[ObligationDraft]) -> tuple[Debit, ...]:
    """What each payer comes to owe through an entry's obligations."""
    return tuple(Debit(o.payer_org_id, o.payee_org_id, o.currency, o.amount) for o in obligations)


class AllowAll:
    """The policy of an engine the app bound none to (tools and tests that want none)."""

    def screen(self, session: Session, operations: Sequence[OperationContext]) -> list[Decision]:
        """Allow everything."""
        return [ALLOW] * len(operations)

    def record(
        self, session: Session, operation: OperationContext, decision: Decision, outcome: str
    ) -> None:
        """Nothing is ever declined, so nothing is written."""

    def hold_for_review(
        self,
        session: Session,
        operation: OperationContext,
        decision: Decision,
        pending: PendingOperation,
    ) -> None:
        """Never asked: nothing goes to review."""
        raise AssertionError("AllowAll never sends an operation to review")


_OPTION = "clearing_policy"
_APPROVED = "clearing.approved_review"


def bind_policy(engine: Engine, policy: Policy) -> Engine:
    """Make every operation on sessions of `engine` pass `policy`; returns the engine."""
    engine.update_execution_options(**{_OPTION: policy})
    return engine


def policy_of(session: Session) -> Policy:
    """The policy bound to the session's engine, else one that allows everything."""
    found = session.get_bind().get_execution_options().get(_OPTION)
    return found if found is not None else _ALLOW_ALL


_ALLOW_ALL = AllowAll()


class Declined(Conflict):
    """A policy refused the operation: 409 with the rule's code and id; only the decision stays."""

    code = "declined"
    title = "Declined by a risk control"

    def __init__(self, operation: OperationContext, decision: Decision, policy: Policy) -> None:
        super().__init__(
            decision.reason or f"declined by rule {decision.rule_id}",
            rule=decision.rule_id,
            rule_version=decision.rule_version,
            **decision.detail,
        )
        self.decision = decision
        self.kept = lambda session: policy.record(session, operation, decision, "declined")

    def problem(self) -> dict[str, Any]:
        """The decline's problem document, under the code its rule gives."""
        body = super().problem()
        code = self.decision.code or self.code
        return {**body, "code": code, "type": f"https://clearing.example/problems/{code}"}


class ReviewRequired(Exception):
    """Raised by `screen` inside an operation; the idempotency layer turns it into a 202."""

    def __init__(self, operation: OperationContext, decision: Decision, policy: Policy) -> None:
        super().__init__(decision.reason)
        self.operation = operation
        self.decision = decision
        self.policy = policy


class ReviewRejected(Conflict):
    """An operator rejected the operation after its review: a retry of its key answers this."""

    code = "review_rejected"
    title = "Rejected after review"


class PendingReview(ClearingError):
    """Not a refusal: the operation waits for an operator (202, `pending_review`)."""

    kind = Kind.ACCEPTED
    code = "pending_review"
    title = "Held for review"

    def __init__(self, body: dict[str, Any], kept: Callable[[Session], None] | None) -> None:
        super().__init__(str(body.get("reason", "held for review")))
        self.body = body
        self.kept = kept

    def problem(self) -> dict[str, Any]:
        """Not a problem: the pending operation, as the body of the 202."""
        return self.body


def screen(session: Session, operations: Sequence[OperationContext]) -> None:
    """Pass operations through the bound policy before they write: a decline raises `Declined`,
    a review `ReviewRequired`; an operator's approval lets the reviewed operation through."""
    policy = policy_of(session)
    approved = session.info.get(_APPROVED)
    decisions = policy.screen(session, operations)
    for operation, decision in zip(operations, decisions, strict=True):
        if decision.verdict == Verdict.DECLINE:
            raise Declined(operation, decision, policy)
    for operation, decision in zip(operations, decisions, strict=True):
        if decision.verdict == Verdict.REVIEW:
            if approved is not None:
                policy.record(session, operation, decision, f"approved:{approved}")
                continue
            raise ReviewRequired(operation, decision, policy)


def approving(session: Session, review_id: uuid.UUID) -> None:
    """Mark the session as completing an approved review: its review answers become allows."""
    session.info[_APPROVED] = str(review_id)
