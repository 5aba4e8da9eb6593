"""Freezes and the blocklist: an operator stops a member, a program or an organisation, or part
of a member's points, or a member id of a program, with a reason, recorded with who and when.

A frozen subject declines every operation that touches it (`frozen`), a void excepted: releasing
a hold only gives points back. A frozen amount of points is a ledger hold of its own (placed by
the operator, far from expiry, voided when the freeze is lifted): the ledger already keeps held
points from being spent, on both engines, so no second mechanism guards them. A blocklisted
member id declines every operation of its program on it (`blocklisted`), a conversion from or
into it included. `FreezeRule` is the policy rule that says both.

The freezes and the blocklist in force are read once per `CACHE_SECONDS` per process, as limits
are (a change is seen at once by the process that made it, within seconds by the others): read
live they would cost every operation a statement. What an issuer did to its own member (frozen,
closed) is read live, and only for the captures, refunds and reversals whose services do not.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.cache import ProcessCopy
from clearing.core.errors import Conflict, NotFound
from clearing.core.ids import new_id
from clearing.core.kinds import HoldStatus, OrgKind
from clearing.core.ledger import Ledger, OpenHold
from clearing.core.models import Hold
from clearing.core.policy import Action, Decision, OperationContext, Verdict
from clearing.web.auth import OperatorOnly
from clearing.web.context import Caller
from issuers.members import member_of
from issuers.models import Member, Organisation
from issuers.programs import program_by_code
from risk.models import BlocklistEntry, Freeze
from risk.schemas import BlocklistCreate, BlocklistOut, FreezeCreate, FreezeOut

FREEZE_HOLD = timedelta(days=100 * 366)
"""How long the hold of a frozen amount lasts: until the freeze is lifted, in practice."""
FREEZE_RULE_VERSION = 1
"""Freezes and blocklist entries are not versioned: each row is the rule, lifted or not."""


class AlreadyFrozen(Conflict):
    code = "already_frozen"
    title = "Already frozen"


class FreezeLifted(Conflict):
    code = "freeze_lifted"
    title = "Freeze already lifted"


class PlatformNotFreezable(Conflict):
    code = "platform_not_freezable"
    title = "The platform cannot be frozen"


class AlreadyBlocklisted(Conflict):
    code = "already_blocklisted"
    title = "Member id already on the blocklist"


class BlocklistRemoved(Conflict):
    code = "blocklist_entry_removed"
    title = "Blocklist entry already removed"


def must_operate(caller: Caller) -> Caller:
    """`caller`, which must act for the platform."""
    if not caller.is_platform:
        raise OperatorOnly("only the platform's operators may do this")
    return caller


# freezes -------------------------------------------------------------------------------------


def freeze(session: Session, operator: Caller, req: FreezeCreate, now: datetime) -> FreezeOut:
    """Freeze a member, part of its points, a program or an organisation."""
    must_operate(operator)
    row = Freeze(
        id=new_id(),
        subject=req.subject,
        reason=req.reason,
        frozen_by_org=operator.org_id,
        frozen_by_key=operator.key_id,
        frozen_at=now,
    )
    if req.subject == "organisation":
        assert req.org_id is not None
        org = session.get(Organisation, req.org_id)
        if org is None:
            raise NotFound("unknown organisation")
        if org.kind == OrgKind.PLATFORM:
            raise PlatformNotFreezable("the platform's own organisation cannot be frozen")
        row.subject_id = org.id
    else:
        assert req.program is not None
        program = program_by_code(session, req.program)
        row.program_code = program.code
        row.subject_id = program.id
        if req.subject == "member":
            assert req.external_id is not None
            member = member_of(session, program, req.external_id)
            row.subject_id, row.external_id = member.id, member.external_id
            if req.points is not None:
                # InsufficientPoints (409) if the member has fewer points available.
                row.points = req.points
                row.hold_id = Ledger(session).place_hold(
                    member.account_id, req.points, operator.org_id, now, now + FREEZE_HOLD
                )
    if row.points is None:
        held = session.execute(
            select(Freeze.id).where(
                Freeze.subject_id == row.subject_id,
                Freeze.lifted_at.is_(None),
                Freeze.points.is_(None),
            )
        ).first()
        if held is not None:
            raise AlreadyFrozen(f"this {req.subject} is already frozen", freeze=str(held.id))
    session.add(row)
    session.flush()
    _IN_FORCE.changed(session)
    return FreezeOut.model_validate(row)


def unfreeze(
    session: Session, operator: Caller, freeze_id: uuid.UUID, reason: str, now: datetime
) -> FreezeOut:
    """Lift a freeze; the points of a frozen amount become spendable again."""
    must_operate(operator)
    row = session.get(Freeze, freeze_id, with_for_update=True)
    if row is None:
        raise NotFound("unknown freeze")
    if row.lifted_at is not None:
        raise FreezeLifted("this freeze was already lifted", lifted_at=row.lifted_at.isoformat())
    if row.hold_id is not None:
        release_hold(session, row.hold_id, now)
    row.lifted_reason = reason
    row.lifted_by_org = operator.org_id
    row.lifted_by_key = operator.key_id
    row.lifted_at = now
    session.flush()
    _IN_FORCE.changed(session)
    return FreezeOut.model_validate(row)


def list_freezes(session: Session, *, active: bool = True, limit: int = 200) -> list[FreezeOut]:
    """Freezes, newest first: those in force, or all."""
    query = select(Freeze).order_by(Freeze.frozen_at.desc(), Freeze.id).limit(limit)
    if active:
        query = query.where(Freeze.lifted_at.is_(None))
    return [FreezeOut.model_validate(row) for row in session.execute(query).scalars()]


def release_hold(session: Session, hold_id: uuid.UUID, now: datetime) -> bool:
    """Void a hold the risk domain placed (a frozen amount, a review's), if it still holds
    points; True if it did. One already released by its expiry is left as it is."""
    found = session.execute(
        select(Hold.id, Hold.account_id, Hold.points, Hold.status)
        .where(Hold.id == hold_id)
        .with_for_update()
    ).first()
    if found is None or found.status != HoldStatus.AUTHORISED:
        return False
    # Voided even past its expiry: until the expiry is swept, its points still count as held.
    Ledger(session).void_hold(OpenHold(found.id, found.account_id, found.points), now)
    return True


# blocklist -----------------------------------------------------------------------------------


def block(session: Session, operator: Caller, req: BlocklistCreate, now: datetime) -> BlocklistOut:
    """Put a member id of a program on the blocklist."""
    must_operate(operator)
    program = program_by_code(session, req.program)
    listed = session.execute(
        select(BlocklistEntry.id).where(
            BlocklistEntry.program_id == program.id,
            BlocklistEntry.external_id == req.external_id,
            BlocklistEntry.removed_at.is_(None),
        )
    ).first()
    if listed is not None:
        raise AlreadyBlocklisted(
            f"{req.external_id} is already on the blocklist of {program.code}",
            entry=str(listed.id),
        )
    row = BlocklistEntry(
        id=new_id(),
        program_id=program.id,
        program_code=program.code,
        external_id=req.external_id,
        reason=req.reason,
        added_by_org=operator.org_id,
        added_by_key=operator.key_id,
        added_at=now,
    )
    session.add(row)
    session.flush()
    _IN_FORCE.changed(session)
    return BlocklistOut.model_validate(row)


def unblock(
    session: Session, operator: Caller, entry_id: uuid.UUID, reason: str, now: datetime
) -> BlocklistOut:
    """Take a member id off the blocklist."""
    must_operate(operator)
    row = session.get(BlocklistEntry, entry_id, with_for_update=True)
    if row is None:
        raise NotFound("unknown blocklist entry")
    if row.removed_at is not None:
        raise BlocklistRemoved(
            "this entry was already removed", removed_at=row.removed_at.isoformat()
        )
    row.removed_reason = reason
    row.removed_by_org = operator.org_id
    row.removed_by_key = operator.key_id
    row.removed_at = now
    session.flush()
    _IN_FORCE.changed(session)
    return BlocklistOut.model_validate(row)


def list_blocklist(
    session: Session, *, program: str | None = None, active: bool = True, limit: int = 200
) -> list[BlocklistOut]:
    """Blocklist entries, newest first: of one program or all, in force or all."""
    query = select(BlocklistEntry).order_by(BlocklistEntry.added_at.desc()).limit(limit)
    if program is not None:
        query = query.where(BlocklistEntry.program_id == program_by_code(session, program).id)
    if active:
        query = query.where(BlocklistEntry.removed_at.is_(None))
    return [BlocklistOut.model_validate(row) for row in session.execute(query).scalars()]


# the rule ------------------------------------------------------------------------------------

CACHE_SECONDS = 5.0
"""How long a process trusts its copy of the freezes and the blocklist in force (as limits do:
a change is seen at once by the process that made it, within this time by the others)."""
_MEMBER_STATUS_ACTIONS = frozenset(
    {Action.CAPTURE, Action.REFUND, Action.ACCRUAL_REVERSAL, Action.REDEMPTION_RETURN}
)
"""The operations whose services do not check the member is active (they act on a checkout, an
accrual or a mall order made while it was): the rule reads the member's status for them
every time, from the operation's own read where it made one."""


@dataclass(frozen=True, slots=True)
class InForce:
    """The whole-subject freezes and the blocklist entries in force."""

    frozen: dict[uuid.UUID, tuple[uuid.UUID, str]]
    """Subject id -> (freeze id, subject kind)."""
    blocked: dict[tuple[uuid.UUID, str], uuid.UUID]
    """(program id, member id) -> blocklist entry id."""
    blocked_programs: frozenset[uuid.UUID]
    members_frozen: bool


def _load(session: Session) -> InForce:
    frozen = {
        row.subject_id: (row.id, row.subject)
        for row in session.execute(
            select(Freeze.subject_id, Freeze.id, Freeze.subject).where(
                Freeze.lifted_at.is_(None), Freeze.points.is_(None)
            )
        )
    }
    blocked = {
        (row.program_id, row.external_id): row.id
        for row in session.execute(
            select(BlocklistEntry.program_id, BlocklistEntry.external_id, BlocklistEntry.id).where(
                BlocklistEntry.removed_at.is_(None)
            )
        )
    }
    return InForce(
        frozen,
        blocked,
        frozenset(p for p, _ in blocked),
        any(subject == "member" for _, subject in frozen.values()),
    )


_IN_FORCE = ProcessCopy(_load, CACHE_SECONDS)


def in_force(session: Session) -> InForce:
    """The freezes and blocklist in force, from this process's copy (see `clearing.core.cache`)."""
    return _IN_FORCE.get(session)


def _inactive_members(
    session: Session, operations: Sequence[OperationContext]
) -> dict[uuid.UUID, str]:
    """Member id -> status, of the members of captures, refunds and reversals not active."""
    inactive: dict[uuid.UUID, str] = {}
    unread: set[uuid.UUID] = set()
    for op in operations:
        if op.action not in _MEMBER_STATUS_ACTIONS or op.member_id is None:
            continue
        if op.member_status is None:
            unread.add(op.member_id)
        elif op.member_status != "active":
            inactive[op.member_id] = op.member_status
    if unread:
        rows = session.execute(
            select(Member.id, Member.status).where(Member.id.in_(unread), Member.status != "active")
        )
        inactive.update({row.id: row.status for row in rows})
    return inactive


class FreezeRule:
    """Declines what touches a frozen member, program or organisation (`frozen`) or a
    blocklisted member id (`blocklisted`), a void excepted; and a capture, refund or reversal
    on a member its issuer froze or closed after the checkout or accrual (`member_inactive`)."""

    name = "freeze"

    def screen(
        self, session: Session, operations: Sequence[OperationContext]
    ) -> Sequence[Decision | None]:
        """One decision per operation, None where nothing is frozen."""
        if all(op.action == Action.VOID for op in operations):
            return [None] * len(operations)
        seen = in_force(session)
        inactive = _inactive_members(session, operations)
        if not (seen.frozen or seen.blocked or inactive):
            return [None] * len(operations)
        return [
            None if op.action == Action.VOID else _decide(op, seen, inactive) for op in operations
        ]


def _decide(
    op: OperationContext,
    seen: InForce,
    inactive: dict[uuid.UUID, str],
) -> Decision | None:
    touched = [
        op.member_id,
        op.target_member_id,
        op.program_id,
        op.target_program_id,
        op.caller_org_id,
        op.issuer_org_id,
        op.target_issuer_org_id,
        op.merchant_org_id,
    ]
    for subject_id in touched:
        found = seen.frozen.get(subject_id) if subject_id is not None else None
        if found is not None:
            freeze_id, subject = found
            return Decision(
                Verdict.DECLINE,
                code="frozen",
                rule_id=f"freeze:{freeze_id}",
                rule_version=FREEZE_RULE_VERSION,
                reason=f"the {subject} is frozen by the platform",
                detail={"frozen": subject},
            )
    listed = [
        (op.program_id, op.member_external_id),
        (op.target_program_id, op.target_member_external_id),
    ]
    for program_id, external_id in listed:
        entry = (
            seen.blocked.get((program_id, external_id))
            if program_id is not None and external_id is not None
            else None
        )
        if entry is not None:
            return Decision(
                Verdict.DECLINE,
                code="blocklisted",
                rule_id=f"blocklist:{entry}",
                rule_version=FREEZE_RULE_VERSION,
                reason=f"member {external_id} is on the platform's blocklist",
            )
    status = inactive.get(op.member_id) if op.member_id is not None else None
    if status is not None:
        return Decision(
            Verdict.DECLINE,
            code="member_inactive",
            rule_id="member_status",
            rule_version=FREEZE_RULE_VERSION,
            reason=f"member {op.member_external_id} is {status}",
            detail={"member_status": status},
        )
    return None
