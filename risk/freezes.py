"""Freezes and the blocklist: an operator stops a member, a program or an organisation, or part
of a member's points, or a member id of a program, with a reason, recorded with who and when.

A frozen subject declines every operation that touches it (`frozen`), a void excepted: releasing
a hold only gives points back. A frozen amount of points is a ledger hold of its own (placed by
the operator, far from expiry, voided when the freeze is lifted): the ledger already keeps held
points from being spent, on both engines, so no second mechanism guards them. A blocklisted
member id declines every operation of its program on it (`blocklisted`), a conversion from or
into it included. `FreezeRule` is the policy rule that says both.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, Text, Uuid, cast, column, literal_column, null, select, table
from sqlalchemy.orm import Session

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

_QUOTES = table("conversion_quotes", column("id", Uuid), column("target_member_id", Uuid))
"""Exchange's quotes, read as a plain table: a conversion names its quote, whose target member
the freeze and the blocklist must see too (risk never imports exchange)."""
_MEMBER_STATUS_ACTIONS = frozenset({Action.CAPTURE, Action.REFUND, Action.ACCRUAL_REVERSAL})
"""The operations whose services do not check the member is active (they act on a checkout or
an accrual made while it was): the rule checks it for them."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the rule read for a batch of operations, in one statement."""

    frozen: dict[uuid.UUID, tuple[uuid.UUID, str]]
    """Subject id -> (freeze id, subject kind), of whole-subject freezes in force."""
    blocked: dict[tuple[uuid.UUID, str], uuid.UUID]
    """(program id, member id) -> blocklist entry id, for the programs of the batch."""
    inactive: dict[uuid.UUID, str]
    """Member id -> status, of the members asked about that are not active."""
    targets: dict[str, tuple[uuid.UUID, str]]
    """Quote id (text) -> (target member id, external id), of the conversions of the batch."""


def _uuid(text: str | None) -> uuid.UUID | None:
    try:
        return None if text is None else uuid.UUID(text)
    except ValueError:
        return None


def _read(session: Session, operations: Sequence[OperationContext]) -> _Seen:
    """Everything the rule needs for `operations`, in one round trip (freezes are few: all
    those in force are read; the blocklist only for the programs at hand)."""
    programs = {
        p for op in operations for p in (op.program_id, op.target_program_id) if p is not None
    }
    members = {
        op.member_id
        for op in operations
        if op.action in _MEMBER_STATUS_ACTIONS and op.member_id is not None
    }
    quotes = {
        q
        for op in operations
        if op.action == Action.CONVERSION and (q := _uuid(op.reference)) is not None
    }
    no_uuid = cast(null(), Uuid)
    parts: list[Any] = [
        select(
            literal_column("'f'", String).label("k"),
            Freeze.subject_id.label("a"),
            Freeze.id.label("b"),
            cast(Freeze.subject, Text).label("t"),
        ).where(Freeze.lifted_at.is_(None), Freeze.points.is_(None))
    ]
    if programs:
        parts.append(
            select(
                literal_column("'b'", String),
                BlocklistEntry.program_id,
                BlocklistEntry.id,
                cast(BlocklistEntry.external_id, Text),
            ).where(BlocklistEntry.program_id.in_(programs), BlocklistEntry.removed_at.is_(None))
        )
    if members:
        parts.append(
            select(
                literal_column("'m'", String), Member.id, no_uuid, cast(Member.status, Text)
            ).where(Member.id.in_(members), Member.status != "active")
        )
    if quotes:
        parts.append(
            select(
                literal_column("'q'", String),
                _QUOTES.c.id,
                Member.id,
                cast(Member.external_id, Text),
            )
            .join(Member, Member.id == _QUOTES.c.target_member_id)
            .where(_QUOTES.c.id.in_(quotes))
        )
    query = parts[0] if len(parts) == 1 else parts[0].union_all(*parts[1:])
    seen = _Seen({}, {}, {}, {})
    for kind, a, b, text in session.execute(query):
        if kind == "f":
            seen.frozen[a] = (b, text)
        elif kind == "b":
            seen.blocked[(a, text)] = b
        elif kind == "m":
            seen.inactive[a] = text
        else:
            seen.targets[str(a)] = (b, text)
    return seen


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
        seen = _read(session, operations)
        return [None if op.action == Action.VOID else _decide(op, seen) for op in operations]


def _decide(op: OperationContext, seen: _Seen) -> Decision | None:
    target = seen.targets.get(op.reference or "") if op.action == Action.CONVERSION else None
    touched = [
        op.member_id,
        target[0] if target else None,
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
    listed = [(op.program_id, op.member_external_id)]
    if target is not None:
        listed.append((op.target_program_id, target[1]))
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
    status = seen.inactive.get(op.member_id) if op.member_id is not None else None
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
