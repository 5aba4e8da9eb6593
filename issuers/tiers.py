"""Tiers: a program's levels (standard, silver, gold) and the tier each member holds now."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.cache import ProcessCopy
from clearing.core.ids import new_id
from issuers.models import MemberTier, ProgramTier
from issuers.repository import MemberRef


@dataclass(frozen=True, slots=True)
class TierRef:
    """A tier as the rules read it."""

    id: uuid.UUID
    program_id: uuid.UUID
    code: str
    name: str
    rank: int
    multiplier: Decimal
    qualify_points: int | None
    qualify_spend: int | None
    privileges: tuple[str, ...]


def tier_ref(row: Any) -> TierRef:
    """A tier as the rules read it, from a `ProgramTier` or a row with its columns' names."""
    return TierRef(
        row.id,
        row.program_id,
        row.code,
        row.name,
        row.rank,
        row.multiplier,
        row.qualify_points,
        row.qualify_spend,
        tuple(row.privileges),
    )


def program_tiers(session: Session, program_id: uuid.UUID) -> list[TierRef]:
    """A program's tiers, base tier first."""
    rows = session.scalars(
        select(ProgramTier).where(ProgramTier.program_id == program_id).order_by(ProgramTier.rank)
    )
    return [tier_ref(row) for row in rows]


def tiers_of(session: Session, members: Sequence[MemberRef]) -> dict[uuid.UUID, TierRef | None]:
    """The tier each member holds now: its recorded tier, else its program's base tier (None when
    the program has no tiers)."""
    if not members:
        return {}
    held = {
        member_id: tier_ref(tier)
        for member_id, tier in session.execute(
            select(MemberTier.member_id, ProgramTier)
            .join(ProgramTier, ProgramTier.id == MemberTier.tier_id)
            .where(MemberTier.member_id.in_([m.id for m in members]))
        )
    }
    bases = {
        tier.program_id: tier_ref(tier)
        for tier in session.scalars(
            select(ProgramTier).where(
                ProgramTier.program_id.in_({m.program_id for m in members}), ProgramTier.rank == 0
            )
        )
    }
    return {m.id: held.get(m.id, bases.get(m.program_id)) for m in members}


def define_tier(
    session: Session,
    program_id: uuid.UUID,
    code: str,
    name: str,
    rank: int,
    multiplier: Decimal,
    now: datetime,
    qualify_points: int | None = None,
    qualify_spend: int | None = None,
    privileges: Sequence[str] = (),
) -> TierRef:
    """Add a tier to a program."""
    row = ProgramTier(
        id=new_id(),
        program_id=program_id,
        code=code,
        name=name,
        rank=rank,
        multiplier=multiplier,
        qualify_points=qualify_points,
        qualify_spend=qualify_spend,
        privileges=list(privileges),
        created_at=now,
    )
    session.add(row)
    session.flush()
    TIERED.changed(session)
    return tier_ref(row)


def place_member(session: Session, member_id: uuid.UUID, tier_id: uuid.UUID, now: datetime) -> None:
    """Record that a member holds a tier from `now` on."""
    row = session.get(MemberTier, member_id, with_for_update=True)
    if row is None:
        session.add(MemberTier(member_id=member_id, tier_id=tier_id, since=now))
    elif row.tier_id != tier_id:
        row.tier_id, row.since = tier_id, now
    session.flush()


def _load_tiered(session: Session) -> dict[uuid.UUID, tuple[TierRef, ...]]:
    found: dict[uuid.UUID, list[TierRef]] = {}
    for row in session.scalars(select(ProgramTier).order_by(ProgramTier.rank)):
        found.setdefault(row.program_id, []).append(tier_ref(row))
    return {program_id: tuple(tiers) for program_id, tiers in found.items()}


TIERED: ProcessCopy[dict[uuid.UUID, tuple[TierRef, ...]]] = ProcessCopy(_load_tiered)
"""Every tiered program's tiers, base first: an accrual into a program without tiers reads
nothing more. Another process sees a new or changed tier within the copy's seconds, the one
that made the change at once."""
