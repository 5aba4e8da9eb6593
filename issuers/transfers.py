"""Member-to-member transfers within a program, by the program's rules: whether they are
allowed, a flat fee in points the sender pays the program, and the least and most one transfer
may send; each transfer passes the risk policy (action `transfer`: member-window and
single-operation limits count it like any other action)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clearing.core.errors import Conflict, InsufficientPoints, InvalidInput
from clearing.core.idempotency import Operation, Outcome, run_once
from clearing.core.kinds import EntryKind, LotSource
from clearing.core.ledger import ISSUED, EntryDraft, Ledger, Leg, LotSpec, points_asset
from clearing.core.models import Lot
from clearing.core.policy import Action, OperationContext, screen
from clearing.core.timeutil import aware
from clearing.web.context import Caller
from issuers.members import active_member
from issuers.models import Program, TransferRule
from issuers.programs import ProgramInactive, own_program
from issuers.schemas import TransferCreate, TransferOut, TransferRuleOut, TransferRuleSet


class TransfersNotAllowed(Conflict):
    code = "transfers_not_allowed"
    title = "The program does not allow transfers"


class TransferOutOfBounds(Conflict):
    code = "transfer_out_of_bounds"
    title = "Transfer outside the program's bounds"


def set_rules(
    session: Session, caller: Caller, code: str, req: TransferRuleSet, now: datetime
) -> TransferRuleOut:
    """The issuer sets whether its members may transfer points, the fee and the bounds."""
    program = own_program(session, caller, code)
    if req.max_points is not None and req.max_points < req.min_points:
        raise InvalidInput("max_points must be at least min_points", field="max_points")
    rule = session.get(TransferRule, program.id)
    if rule is None:
        rule = TransferRule(program_id=program.id)
        session.add(rule)
    rule.allowed = req.allowed
    rule.fee_points = req.fee_points
    rule.min_points = req.min_points
    rule.max_points = req.max_points
    rule.changed_key = caller.key_id
    rule.changed_at = now
    session.flush()
    return _rule_out(program, rule)


def rules(session: Session, caller: Caller, code: str) -> TransferRuleOut:
    """The program's transfer rules (none set: not allowed)."""
    program = own_program(session, caller, code)
    rule = session.get(TransferRule, program.id)
    if rule is None:
        return TransferRuleOut(
            program=program.code, allowed=False, fee_points=0, min_points=1, max_points=None
        )
    return _rule_out(program, rule)


def transfer(
    session: Session,
    caller: Caller,
    code: str,
    req: TransferCreate,
    now: datetime,
    idempotency_key: str,
) -> Outcome[TransferOut]:
    """Move points from one member of the issuer's program to another, the fee to the program."""
    operation = Operation(
        "transfer",
        {"program": code, **req.model_dump(mode="json")},
        TransferOut,
        lambda _: _transfer(session, caller, code, req, now),
    )
    return run_once(session, caller.org_id, idempotency_key, operation, now)


def _transfer(
    session: Session, caller: Caller, code: str, req: TransferCreate, now: datetime
) -> TransferOut:
    program = own_program(session, caller, code)
    if program.status != "active":
        raise ProgramInactive(f"program {code} is {program.status}")
    rule = session.get(TransferRule, program.id)
    if rule is None or not rule.allowed:
        raise TransfersNotAllowed(f"program {code} does not allow transfers")
    if req.points < rule.min_points or (
        rule.max_points is not None and req.points > rule.max_points
    ):
        raise TransferOutOfBounds(
            f"a transfer sends between {rule.min_points} and {rule.max_points or 'any'} points",
            min_points=rule.min_points,
            max_points=rule.max_points,
        )
    if req.from_external_id == req.to_external_id:
        raise InvalidInput("a member cannot transfer to itself", field="to_external_id")
    sender = active_member(session, program, req.from_external_id)
    receiver = active_member(session, program, req.to_external_id)
    fee = rule.fee_points
    ledger = Ledger(session)
    balance, held = ledger.member_balance(sender.account_id, now)
    if req.points + fee > balance - held:
        # Checked here for a clear answer; the ledger's floor refuses a transfer that a
        # concurrent one made too large all the same.
        raise InsufficientPoints(
            f"the transfer needs {req.points + fee} points (fee {fee} included);"
            f" {balance - held} are available",
            needed=req.points + fee,
            available=balance - held,
        )
    screen(
        session,
        [
            OperationContext(
                action=Action.TRANSFER,
                caller_org_id=caller.org_id,
                caller_key_id=caller.key_id,
                at=now,
                program_id=program.id,
                program_code=program.code,
                issuer_org_id=program.issuer_id,
                member_id=sender.id,
                member_external_id=sender.external_id,
                member_account_id=sender.account_id,
                member_status=sender.status,
                target_program_id=program.id,
                target_program_code=program.code,
                target_issuer_org_id=program.issuer_id,
                target_member_id=receiver.id,
                target_member_external_id=receiver.external_id,
                points=req.points + fee,
                spends=True,
                reference=req.reference,
            )
        ],
    )
    legs = [Leg(sender.account_id, -(req.points + fee))]
    legs += [
        Leg(
            receiver.account_id,
            n,
            lot=LotSpec(LotSource.TRANSFER, expires_at, funding_org_id=program.issuer_id),
        )
        for expires_at, n in _expiries(session, sender.account_id, req.points)
    ]
    if fee:
        legs.append(Leg(ledger.account_id(points_asset(program.code), ISSUED, program.id), fee))
    memo: dict[str, object] = {
        "from": sender.external_id,
        "to": receiver.external_id,
        "fee": fee,
    }
    if req.reference:
        memo["reference"] = req.reference
    posted = ledger.post(
        EntryDraft(
            kind=EntryKind.TRANSFER, org_id=caller.org_id, booked_at=now, legs=legs, memo=memo
        )
    )
    return TransferOut(
        entry_id=posted.id,
        program=program.code,
        from_external_id=sender.external_id,
        to_external_id=receiver.external_id,
        points=req.points,
        fee=fee,
    )


def _expiries(
    session: Session, account_id: object, points: int
) -> list[tuple[datetime | None, int]]:
    """The expiry dates of the `points` the sender's debit takes first (earliest-expiring lots
    first, as the ledger takes them), grouped: the receiver's lots keep them, so that passing
    points around never makes them last longer."""
    order = (Lot.expires_at.is_(None), Lot.expires_at, Lot.id)
    running = (
        select(
            Lot.expires_at,
            Lot.remaining,
            (func.sum(Lot.remaining).over(order_by=order) - Lot.remaining).label("before"),
        )
        .where(Lot.account_id == account_id, Lot.remaining > 0)
        .subquery()
    )
    rows = session.execute(
        select(running.c.expires_at, running.c.remaining, running.c.before)
        .where(running.c.before < points)
        .order_by(running.c.expires_at.is_(None), running.c.expires_at, running.c.before)
    ).all()
    groups: dict[datetime | None, int] = {}
    left = points
    for expiry, remaining, _ in rows:
        expires_at = aware(expiry) if expiry is not None else None
        n = min(int(remaining), left)
        groups[expires_at] = groups.get(expires_at, 0) + n
        left -= n
    if left:
        # Lots changed since the balance was read; the ledger decides (it refuses an overdraw).
        groups[None] = groups.get(None, 0) + left
    return list(groups.items())


def _rule_out(program: Program, rule: TransferRule) -> TransferRuleOut:
    return TransferRuleOut(
        program=program.code,
        allowed=rule.allowed,
        fee_points=rule.fee_points,
        min_points=rule.min_points,
        max_points=rule.max_points,
    )
