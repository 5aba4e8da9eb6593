"""A member's tier standing: the tier held, its privileges, the qualifying figures so far and
what is missing to reach the next tier (the member view shows it)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from clearing.core.timeutil import aware
from issuers import qualification
from issuers.models import Member, Organisation, Program
from issuers.repository import MemberRef
from issuers.schemas import NextTierOut, TierStandingOut
from issuers.tiers import TIERED


def next_anniversary(enrolled: datetime, zone: str, today: date) -> date:
    """The first anniversary of enrolment (in `zone`) on or after `today`; 29 February falls on
    28 February in common years."""
    start = qualification.local_today(enrolled, zone)
    year = max(today.year, start.year + 1)
    while True:
        day = _anniversary_in(start, year)
        if day >= today:
            return day
        year += 1


def _anniversary_in(start: date, year: int) -> date:
    if start.month == 2 and start.day == 29 and not qualification.is_leap(year):
        return date(year, 2, 28)
    return start.replace(year=year)


def member_standing(
    session: Session, program_id: uuid.UUID, member: MemberRef, now: datetime
) -> TierStandingOut | None:
    """A member's tier, its privileges and progress to the next (None: the program has none)."""
    tiers = TIERED.get(session).get(program_id)
    if not tiers:
        return None
    standing = qualification.standings(session, [member.id], now)[0]
    held = qualification.held_tier(tiers, standing.held_tier_id)
    if held is None:
        # The tier was defined by another process since this one's copy: read them afresh.
        TIERED.changed(session)
        tiers = TIERED.get(session).get(program_id, ())
        held = qualification.held_tier(tiers, standing.held_tier_id)
    if held is None:
        return None
    enrolled, zone = session.execute(
        select(Member.created_at, Organisation.zone)
        .join(Program, Program.id == Member.program_id)
        .join(Organisation, Organisation.id == Program.issuer_id)
        .where(Member.id == member.id)
    ).one()
    reach = qualification.qualified_tier(tiers, standing.points, standing.spend)
    upper = [
        t
        for t in tiers
        if t.rank > held.rank and (t.qualify_points is not None or t.qualify_spend is not None)
    ]
    following = upper[0] if upper else None
    return TierStandingOut(
        code=held.code,
        name=held.name,
        rank=held.rank,
        multiplier=held.multiplier,
        privileges=list(held.privileges),
        since=standing.since,
        qualifying_points=standing.points,
        qualifying_spend=standing.spend,
        qualifies_for=(reach or held).code,
        next_review=next_anniversary(aware(enrolled), zone, qualification.local_today(now, zone)),
        next_tier=None
        if following is None
        else NextTierOut(
            code=following.code,
            name=following.name,
            qualify_points=following.qualify_points,
            qualify_spend=following.qualify_spend,
            points_missing=None
            if following.qualify_points is None
            else max(0, following.qualify_points - standing.points),
            spend_missing=None
            if following.qualify_spend is None
            else max(0, following.qualify_spend - standing.spend),
        ),
    )
