"""Tiers as the issuer manages them: definitions and their versions, manual placement, the
history of members' moves, and a member's standing (tier, privileges, progress to the next)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, func, insert, or_, select
from sqlalchemy.orm import Session, aliased

from clearing.core.errors import Conflict, InvalidInput, NotFound
from clearing.core.timeutil import aware
from clearing.web.context import Caller
from issuers import qualification, standing
from issuers.members import member_of
from issuers.models import (
    Member,
    Program,
    ProgramTier,
    ProgramTierVersion,
    TierChange,
)
from issuers.programs import own_program
from issuers.schemas import (
    MemberTierSet,
    TierChangeSet,
    TierCreate,
    TierMoveOut,
    TierOut,
    TierStandingOut,
)
from issuers.tiers import TIERED, TierRef, define_tier, program_tiers, tier_ref


class TierExists(Conflict):
    code = "tier_exists"
    title = "A tier with this code or rank exists"


class BaseTierMissing(Conflict):
    code = "base_tier_missing"
    title = "The program has no base tier (rank 0) yet"


class TierInvalid(InvalidInput):
    code = "tier_invalid"
    title = "Invalid tier"


_VERSIONS = cast(Table, ProgramTierVersion.__table__)


def create_tier(
    session: Session, caller: Caller, code: str, req: TierCreate, now: datetime
) -> TierOut:
    """Add a tier to one of the caller's programs (the base tier, rank 0, first)."""
    program = own_program(session, caller, code)
    existing = program_tiers(session, program.id)
    if any(t.code == req.code or t.rank == req.rank for t in existing):
        raise TierExists(f"program {code} has a tier {req.code} or of rank {req.rank}")
    if req.rank == 0 and (req.qualify_points is not None or req.qualify_spend is not None):
        raise TierInvalid("the base tier needs no qualification", field="rank")
    if req.rank > 0 and not any(t.rank == 0 for t in existing):
        raise BaseTierMissing(f"define the base tier (rank 0) of {code} first")
    tier = define_tier(
        session,
        program.id,
        req.code,
        req.name,
        req.rank,
        req.multiplier,
        now,
        qualify_points=req.qualify_points,
        qualify_spend=req.qualify_spend,
        privileges=req.privileges,
    )
    return _version(session, tier, 1, caller.key_id, now)


def _version(
    session: Session, tier: TierRef, version: int, key_id: str | None, now: datetime
) -> TierOut:
    session.execute(
        insert(_VERSIONS).values(
            tier_id=tier.id,
            version=version,
            name=tier.name,
            multiplier=tier.multiplier,
            qualify_points=tier.qualify_points,
            qualify_spend=tier.qualify_spend,
            privileges=list(tier.privileges),
            changed_by_key=key_id,
            changed_at=now,
        )
    )
    return _out(tier, version, now)


def _out(tier: TierRef, version: int, changed_at: datetime) -> TierOut:
    return TierOut(
        code=tier.code,
        name=tier.name,
        rank=tier.rank,
        multiplier=tier.multiplier,
        qualify_points=tier.qualify_points,
        qualify_spend=tier.qualify_spend,
        privileges=list(tier.privileges),
        version=version,
        changed_at=changed_at,
    )


def list_tiers(session: Session, caller: Caller | None, code: str) -> list[TierOut]:
    """A program's tiers, base first, each at its current version (caller None: any program)."""
    program = _program(session, caller, code)
    latest = (
        select(
            ProgramTierVersion.tier_id,
            func.max(ProgramTierVersion.version).label("version"),
            func.max(ProgramTierVersion.changed_at).label("changed_at"),
        )
        .group_by(ProgramTierVersion.tier_id)
        .subquery()
    )
    rows = session.execute(
        select(ProgramTier, latest.c.version, latest.c.changed_at)
        .outerjoin(latest, latest.c.tier_id == ProgramTier.id)
        .where(ProgramTier.program_id == program.id)
        .order_by(ProgramTier.rank)
    )
    return [
        _out(tier_ref(row), version or 1, aware(changed or row.created_at))
        for row, version, changed in rows
    ]


def _program(session: Session, caller: Caller | None, code: str) -> Program:
    if caller is not None:
        return own_program(session, caller, code)
    program = session.scalar(select(Program).where(Program.code == code))
    if program is None:
        raise NotFound(f"unknown program {code}")
    return program


def change_tier(
    session: Session,
    caller: Caller,
    code: str,
    tier_code: str,
    req: TierChangeSet,
    now: datetime,
) -> TierOut:
    """A new version of a tier's definition; members move by it at their next accrual
    (upgrades) or anniversary (downgrades), never at once on the change itself."""
    program = own_program(session, caller, code)
    row = session.scalar(
        select(ProgramTier)
        .where(ProgramTier.program_id == program.id, ProgramTier.code == tier_code)
        .with_for_update()
    )
    if row is None:
        raise NotFound(f"unknown tier {tier_code}")
    given = req.model_fields_set
    for name in ("name", "multiplier", "privileges"):
        if name in given and getattr(req, name) is None:
            raise TierInvalid(f"{name} cannot be cleared", field=name)
    if row.rank == 0 and (req.qualify_points is not None or req.qualify_spend is not None):
        raise TierInvalid("the base tier needs no qualification", field="qualify_points")
    for name in given:
        setattr(row, name, getattr(req, name))
    session.flush()
    version = (
        session.scalar(
            select(func.max(ProgramTierVersion.version)).where(ProgramTierVersion.tier_id == row.id)
        )
        or 0
    ) + 1
    TIERED.changed(session)
    return _version(session, tier_ref(row), version, caller.key_id, now)


def tier_versions(session: Session, caller: Caller, code: str, tier_code: str) -> list[TierOut]:
    """Every definition a tier had, oldest first."""
    program = own_program(session, caller, code)
    tier = session.scalar(
        select(ProgramTier).where(
            ProgramTier.program_id == program.id, ProgramTier.code == tier_code
        )
    )
    if tier is None:
        raise NotFound(f"unknown tier {tier_code}")
    rows = session.scalars(
        select(ProgramTierVersion)
        .where(ProgramTierVersion.tier_id == tier.id)
        .order_by(ProgramTierVersion.version)
    )
    return [
        TierOut(
            code=tier.code,
            name=v.name,
            rank=tier.rank,
            multiplier=v.multiplier,
            qualify_points=v.qualify_points,
            qualify_spend=v.qualify_spend,
            privileges=list(v.privileges),
            version=v.version,
            changed_at=aware(v.changed_at),
        )
        for v in rows
    ]


def place_member(
    session: Session,
    caller: Caller,
    code: str,
    external_id: str,
    req: MemberTierSet,
    now: datetime,
) -> TierStandingOut:
    """Put a member in a tier by hand (reason manual). A member placed above what it qualifies
    for keeps the tier until its anniversary; placed below, its next accrual moves it up."""
    program = own_program(session, caller, code)
    member = member_of(session, program, external_id)
    tiers = program_tiers(session, program.id)
    target = next((t for t in tiers if t.code == req.tier), None)
    if target is None:
        raise NotFound(f"unknown tier {req.tier}")
    qualification.lock_members(session, [member.id])
    current = qualification.standings(session, [member.id], now)[0]
    held = qualification.held_tier(tiers, current.held_tier_id)
    if held is None or held.id != target.id:
        qualification.apply_moves(
            session,
            [
                qualification.Move(
                    member.id,
                    program.id,
                    held,
                    target,
                    qualification.MANUAL,
                    current.points,
                    current.spend,
                    current.held_tier_id is not None,
                )
            ],
            now,
            caller.key_id,
        )
    view = standing.member_standing(session, program.id, member, now)
    assert view is not None
    return view


def tier_moves(
    session: Session,
    caller: Caller,
    code: str,
    external_id: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[TierMoveOut]:
    """The tier moves of a program (or of one of its members), oldest first, after a cursor."""
    program = own_program(session, caller, code)
    source, target = aliased(ProgramTier), aliased(ProgramTier)
    query = (
        select(TierChange, Member.external_id, source.code, target.code)
        .join(Member, Member.id == TierChange.member_id)
        .outerjoin(source, source.id == TierChange.from_tier_id)
        .join(target, target.id == TierChange.to_tier_id)
        .where(TierChange.program_id == program.id)
        .order_by(TierChange.changed_at, TierChange.id)
        .limit(limit)
    )
    if external_id is not None:
        query = query.where(TierChange.member_id == member_of(session, program, external_id).id)
    if after is not None:
        at, change_id = after
        query = query.where(
            or_(
                TierChange.changed_at > at,
                and_(TierChange.changed_at == at, TierChange.id > change_id),
            )
        )
    return [
        TierMoveOut(
            id=change.id,
            program=code,
            external_id=ext,
            from_tier=from_code,
            to_tier=to_code,
            reason=change.reason,
            qualifying_points=change.qualifying_points,
            qualifying_spend=change.qualifying_spend,
            changed_by_key=change.changed_by_key,
            changed_at=aware(change.changed_at),
        )
        for change, ext, from_code, to_code in session.execute(query)
    ]
