"""The decision log: every decline, review and post-review allow, with the rule that gave it."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from clearing.core.ids import new_id
from clearing.core.policy import Decision, OperationContext
from risk.models import RiskDecision
from risk.schemas import DecisionOut


def record(session: Session, operation: OperationContext, decision: Decision, outcome: str) -> None:
    """Write one decision with what the rule saw."""
    write(
        session,
        decided_at=operation.at,
        action=operation.action,
        verdict=decision.verdict,
        outcome=outcome,
        code=decision.code,
        rule_id=decision.rule_id,
        rule_version=decision.rule_version,
        reason=decision.reason,
        caller_org_id=operation.caller_org_id,
        caller_key_id=operation.caller_key_id,
        program_code=operation.program_code,
        member_id=operation.member_id,
        merchant_org_id=operation.merchant_org_id,
        issuer_org_id=operation.issuer_org_id,
        inputs={**operation.inputs(), **{k: str(v) for k, v in decision.detail.items()}},
    )


def write(session: Session, **row: Any) -> None:
    """The one insert of the log: a decision's row (its columns, without the id)."""
    session.execute(insert(RiskDecision).values(id=new_id(), **row))


def list_decisions(
    session: Session,
    *,
    member_id: uuid.UUID | None = None,
    org_id: uuid.UUID | None = None,
    day: date | None = None,
    zone: str = "UTC",
    limit: int = 200,
) -> list[DecisionOut]:
    """Decisions, newest first, for a member, an organisation (as caller, merchant or issuer)
    and/or a business day in `zone`."""
    query = select(RiskDecision).order_by(RiskDecision.decided_at.desc()).limit(limit)
    if member_id is not None:
        query = query.where(RiskDecision.member_id == member_id)
    if org_id is not None:
        query = query.where(
            or_(
                RiskDecision.caller_org_id == org_id,
                RiskDecision.merchant_org_id == org_id,
                RiskDecision.issuer_org_id == org_id,
            )
        )
    if day is not None:
        start = datetime.combine(day, time(0), ZoneInfo(zone))
        query = query.where(
            RiskDecision.decided_at >= start, RiskDecision.decided_at < start + timedelta(days=1)
        )
    return [DecisionOut.model_validate(row) for row in session.execute(query).scalars()]
