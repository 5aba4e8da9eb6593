"""Manual adjustments: an issuer credits or debits a member's points with a reason code, by
maker-checker. One API key of the issuer proposes; a different key of the same issuer approves
(the entry is posted then, screened by the risk policy) or rejects. Every step is recorded with
the organisation, the key and the time."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, Forbidden, InsufficientPoints, NotFound
from clearing.core.idempotency import Operation, Outcome, run_once
from clearing.core.ids import new_id
from clearing.core.kinds import EntryKind, LotSource
from clearing.core.ledger import ISSUED, EntryDraft, Ledger, Leg, LotSpec, points_asset
from clearing.core.policy import Action, OperationContext, screen
from clearing.core.timeutil import add_months, aware
from clearing.web.context import Caller
from issuers.members import MemberClosed
from issuers.models import Adjustment, AdjustmentStep, Member, Program
from issuers.programs import own_program
from issuers.repository import member_by_external_id
from issuers.schemas import AdjustmentCreate, AdjustmentOut, AdjustmentStepOut


class KeyRequired(Forbidden):
    code = "key_required"
    title = "A signing key must act"


class SameKeyDecision(Forbidden):
    code = "maker_checker"
    title = "The key that proposed an adjustment cannot decide it"


class AdjustmentDecided(Conflict):
    code = "adjustment_decided"
    title = "Adjustment already decided"


class AdjustmentExceedsAvailable(InsufficientPoints):
    title = "Debit exceeds the member's available points"


def propose(
    session: Session,
    caller: Caller,
    code: str,
    req: AdjustmentCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[AdjustmentOut]:
    """One key of the issuer proposes a credit or debit of a member's points."""
    operation = Operation(
        "adjustment",
        {"program": code, **req.model_dump(mode="json")},
        AdjustmentOut,
        lambda _: _propose(session, caller, code, req, now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def decide(
    session: Session,
    caller: Caller,
    code: str,
    adjustment_id: uuid.UUID,
    approve: bool,
    now: datetime,
    idempotency_key: str,
) -> Outcome[AdjustmentOut]:
    """Another key of the issuer approves (posts) or rejects a proposed adjustment."""
    operation = Operation(
        "adjustment_approval" if approve else "adjustment_rejection",
        {"program": code, "adjustment": str(adjustment_id)},
        AdjustmentOut,
        lambda _: _decide(session, caller, code, adjustment_id, approve, now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def list_adjustments(
    session: Session, caller: Caller, code: str, status: str | None, limit: int
) -> list[AdjustmentOut]:
    """The program's adjustments, latest proposed first, optionally of one status."""
    program = own_program(session, caller, code)
    query = (
        select(Adjustment, Member.external_id)
        .join(Member, Member.id == Adjustment.member_id)
        .where(Adjustment.program_id == program.id)
        .order_by(Adjustment.proposed_at.desc(), Adjustment.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(Adjustment.status == status)
    rows = session.execute(query).all()
    steps = _steps(session, [adjustment.id for adjustment, _ in rows])
    return [_out(program, a, external_id, steps[a.id]) for a, external_id in rows]


def _propose(
    session: Session, caller: Caller, code: str, req: AdjustmentCreate, now: datetime
) -> AdjustmentOut:
    program = own_program(session, caller, code)
    key_id = _key(caller)
    member = member_by_external_id(session, program.id, req.external_id)
    if member is None:
        raise NotFound(f"unknown member {req.external_id}")
    adjustment = Adjustment(
        id=new_id(),
        program_id=program.id,
        member_id=member.id,
        direction=req.direction,
        points=req.points,
        reason_code=req.reason_code,
        note=req.note,
        status="proposed",
        proposed_key=key_id,
        proposed_at=now,
    )
    session.add(adjustment)
    session.flush()
    _step(session, adjustment, "proposed", caller, key_id, now)
    return _view(session, program, adjustment)


def _decide(
    session: Session,
    caller: Caller,
    code: str,
    adjustment_id: uuid.UUID,
    approve: bool,
    now: datetime,
) -> AdjustmentOut:
    program = own_program(session, caller, code)
    key_id = _key(caller)
    # Locked: of two concurrent decisions, the second waits and then sees the first's status.
    adjustment = session.get(Adjustment, adjustment_id, with_for_update=True)
    if adjustment is None or adjustment.program_id != program.id:
        raise NotFound("unknown adjustment")
    if adjustment.status != "proposed":
        raise AdjustmentDecided(
            f"adjustment is {adjustment.status} already", adjustment_status=adjustment.status
        )
    if key_id == adjustment.proposed_key:
        raise SameKeyDecision("a different key of the issuer must approve or reject")
    if approve:
        adjustment.entry_id = _post(session, caller, program, adjustment, now)
    adjustment.status = "approved" if approve else "rejected"
    session.flush()
    _step(session, adjustment, adjustment.status, caller, key_id, now)
    return _view(session, program, adjustment)


def _post(
    session: Session, caller: Caller, program: Program, adjustment: Adjustment, now: datetime
) -> uuid.UUID:
    """The adjustment's entry, screened first; a debit takes only available points."""
    member = session.get(Member, adjustment.member_id)
    assert member is not None
    if member.status == "closed":
        raise MemberClosed(f"member {member.external_id} is closed", member_status="closed")
    ledger = Ledger(session)
    points = adjustment.points
    debit = adjustment.direction == "debit"
    if debit:
        balance, held = ledger.member_balance(member.account_id, now)
        if points > balance - held:
            # Checked here for a clear answer; the ledger's floor refuses a debit that a
            # concurrent spend made too large all the same.
            raise AdjustmentExceedsAvailable(
                f"a debit of {points} points exceeds the member's {balance - held} available",
                needed=points,
                available=balance - held,
            )
    screen(
        session,
        [
            OperationContext(
                action=Action.ADJUSTMENT,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=now,
                program_id=program.id,
                program_code=program.code,
                issuer_org_id=program.issuer_id,
                member_id=member.id,
                member_external_id=member.external_id,
                member_account_id=member.account_id,
                member_status=member.status,
                points=points,
                spends=debit,
                reference=adjustment.reason_code,
            )
        ],
    )
    issued = ledger.account_id(points_asset(program.code), ISSUED, program.id)
    expires_at = add_months(now, program.expiry_months) if program.expiry_months else None
    legs = (
        [Leg(member.account_id, -points), Leg(issued, points)]
        if debit
        else [
            Leg(issued, -points),
            Leg(
                member.account_id,
                points,
                lot=LotSpec(LotSource.ADJUSTMENT, expires_at, funding_org_id=program.issuer_id),
            ),
        ]
    )
    posted = ledger.post(
        EntryDraft(
            kind=EntryKind.ADJUSTMENT,
            org_id=caller.org_id,
            booked_at=now,
            legs=legs,
            memo={"adjustment": str(adjustment.id), "reason_code": adjustment.reason_code},
        )
    )
    return posted.id


def _key(caller: Caller) -> str:
    if caller.key_id is None:
        raise KeyRequired("adjustments are proposed and decided with an API key of the issuer")
    return caller.key_id


def _step(
    session: Session,
    adjustment: Adjustment,
    step: str,
    caller: Caller,
    key_id: str,
    now: datetime,
) -> None:
    session.add(
        AdjustmentStep(
            id=new_id(),
            adjustment_id=adjustment.id,
            step=step,
            org_id=caller.org_id,
            key_id=key_id,
            at=now,
        )
    )
    session.flush()


def _steps(
    session: Session, adjustment_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[AdjustmentStepOut]]:
    found: dict[uuid.UUID, list[AdjustmentStepOut]] = defaultdict(list)
    if not adjustment_ids:
        return found
    rows = session.execute(
        select(AdjustmentStep).where(AdjustmentStep.adjustment_id.in_(adjustment_ids))
    ).scalars()
    # A proposal and its decision may share a timestamp: the proposal comes first.
    for row in sorted(rows, key=lambda r: (r.at, r.step != "proposed")):
        found[row.adjustment_id].append(
            AdjustmentStepOut(step=row.step, org_id=row.org_id, key_id=row.key_id, at=aware(row.at))
        )
    return found


def _view(session: Session, program: Program, adjustment: Adjustment) -> AdjustmentOut:
    member = session.get(Member, adjustment.member_id)
    assert member is not None
    return _out(
        program, adjustment, member.external_id, _steps(session, [adjustment.id])[adjustment.id]
    )


def _out(
    program: Program, a: Adjustment, external_id: str, steps: list[AdjustmentStepOut]
) -> AdjustmentOut:
    return AdjustmentOut(
        id=a.id,
        program=program.code,
        external_id=external_id,
        direction=a.direction,
        points=a.points,
        reason_code=a.reason_code,
        note=a.note,
        status=a.status,
        entry_id=a.entry_id,
        steps=steps,
    )
