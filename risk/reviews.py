"""The review queue: operations a control held for an operator, with their points held."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from clearing.core.ledger import Ledger
from clearing.core.policy import Decision, OperationContext, PendingOperation
from risk.models import Review

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
