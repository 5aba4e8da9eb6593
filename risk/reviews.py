"""The review queue: operations a control held for an operator, with their points held, and
the operator's decision: approve (the operation completes once, as its request would have, by
another key than the one that asked) or reject (the hold is released)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, Forbidden, NotFound
from clearing.core.idempotency import complete_reviewed, reject_reviewed
from clearing.core.ledger import Ledger
from clearing.core.policy import Decision, OperationContext, PendingOperation, Verdict, policy_of
from clearing.core.timeutil import aware
from clearing.web.context import Caller
from issuers.models import Organisation
from risk import decisions
from risk.freezes import must_operate, release_hold
from risk.models import Review
from risk.schemas import ReviewOut

REVIEW_HOLD = timedelta(days=7)
"""How long a review holds the member's points: an undecided review lapses with its hold."""


def hold_for_review(
    session: Session, operation: OperationContext, decision: Decision, pending: PendingOperation
) -> Review:
    """Queue `pending`; if the operation spends the member's points, hold them meanwhile."""
    hold_id = None
    held = 0
    if operation.spends and operation.member_account_id is not None and operation.points > 0:
        held = operation.points
        hold_id = Ledger(session).place_hold(
            operation.member_account_id,
            held,
            operation.caller_org_id,
            pending.requested_at,
            pending.requested_at + REVIEW_HOLD,
        )
    review = Review(
        id=pending.review_id,
        operation=pending.operation,
        request=dict(pending.request),
        org_id=pending.org_id,
        key_id=pending.key_id,
        idempotency_key=pending.idempotency_key,
        requested_at=pending.requested_at,
        status="pending",
        code=decision.code,
        rule_id=decision.rule_id,
        rule_version=decision.rule_version,
        reason=decision.reason,
        inputs=operation.inputs(),
        member_id=operation.member_id,
        hold_id=hold_id,
        points_held=held,
    )
    session.add(review)
    session.flush()
    return review


class ReviewDecidedAlready(Conflict):
    code = "review_decided"
    title = "Review already decided"


class ReviewLapsed(Conflict):
    code = "review_lapsed"
    title = "Review lapsed"


class ApproverIsRequester(Forbidden):
    code = "approver_is_requester"
    title = "The key that requested an operation cannot approve it"


class ReviewNotCompletable(Conflict):
    code = "review_not_completable"
    title = "No way to complete this operation is bound"


def list_reviews(
    session: Session, *, status: str | None = "pending", limit: int = 200
) -> list[ReviewOut]:
    """Reviews, oldest first (the queue's order): of one status (default pending) or all."""
    query = select(Review).order_by(Review.requested_at, Review.id).limit(limit)
    if status is not None:
        query = query.where(Review.status == status)
    return [ReviewOut.model_validate(row) for row in session.execute(query).scalars()]


def _pending(session: Session, operator: Caller, review_id: uuid.UUID) -> Review:
    """The review to decide, locked: it must exist and still be pending."""
    must_operate(operator)
    review = session.get(Review, review_id, with_for_update=True)
    if review is None:
        raise NotFound("unknown review")
    if review.status != "pending":
        raise ReviewDecidedAlready(
            f"this review was already {review.status}", review_status=review.status
        )
    return review


def _pending_operation(review: Review) -> PendingOperation:
    return PendingOperation(
        review_id=review.id,
        operation=review.operation,
        request=review.request,
        org_id=review.org_id,
        key_id=review.key_id,
        idempotency_key=review.idempotency_key,
        requested_at=aware(review.requested_at),
    )


def _decided(review: Review, status: str, operator: Caller, now: datetime) -> None:
    review.status = status
    review.decided_by_org = operator.org_id
    review.decided_by_key = operator.key_id
    review.decided_at = now


def approve(
    session: Session, operator: Caller, review_id: uuid.UUID, now: datetime
) -> tuple[ReviewOut, BaseModel]:
    """Complete a reviewed operation as its own request would have, once: the review and the
    operation's result (which a retry of the request now gets). A failure leaves it pending."""
    # Imported here: the policy module imports this one (to queue reviews).
    from risk.policy import RiskPolicy

    review = _pending(session, operator, review_id)
    if review.key_id == operator.key_id:
        raise ApproverIsRequester(
            "an operation is approved by another key than the one that requested it"
        )
    if now >= aware(review.requested_at) + REVIEW_HOLD:
        raise ReviewLapsed(
            "this review waited longer than its hold lasts; reject it",
            lapsed_after=str(REVIEW_HOLD),
        )
    policy = policy_of(session)
    build = policy.operations.get(review.operation) if isinstance(policy, RiskPolicy) else None
    requester = session.get(Organisation, review.org_id)
    if build is None or requester is None:
        raise ReviewNotCompletable(f"no way to complete a {review.operation} is bound")
    # The held points go back first, so that the operation can spend them.
    if review.hold_id is not None:
        release_hold(session, review.hold_id, now)
    pending = _pending_operation(review)
    caller = Caller(review.org_id, requester.kind, review.key_id)
    operation = build(session, caller, review.request, now, pending.requested_at)
    result = complete_reviewed(session, pending, operation)
    _decided(review, "approved", operator, now)
    session.flush()
    return ReviewOut.model_validate(review), result


def reject(
    session: Session, operator: Caller, review_id: uuid.UUID, reason: str, now: datetime
) -> ReviewOut:
    """Refuse a reviewed operation: its hold is released, the refusal logged, and a retry of
    its request answers 409 `review_rejected` (with `reason`, which the requester reads)."""
    review = _pending(session, operator, review_id)
    if review.hold_id is not None:
        release_hold(session, review.hold_id, now)
    _decided(review, "rejected", operator, now)
    inputs = dict(review.inputs)
    decisions.write(
        session,
        decided_at=now,
        action=str(inputs.get("action", review.operation)),
        verdict=Verdict.REVIEW,
        outcome=f"rejected:{review.id}",
        code=review.code,
        rule_id=review.rule_id,
        rule_version=review.rule_version,
        reason=reason,
        caller_org_id=review.org_id,
        caller_key_id=review.key_id,
        program_code=inputs.get("program_code"),
        member_id=review.member_id,
        merchant_org_id=_uuid_or_none(inputs.get("merchant_org_id")),
        issuer_org_id=_uuid_or_none(inputs.get("issuer_org_id")),
        inputs={
            **inputs,
            "decided_by_org": str(operator.org_id),
            "decided_by_key": operator.key_id,
        },
    )
    reject_reviewed(session, _pending_operation(review), reason)
    session.flush()
    return ReviewOut.model_validate(review)


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))
