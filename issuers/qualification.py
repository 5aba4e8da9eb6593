"""Tier qualification: what a member qualifies on over a rolling 12 months, the upgrade at once
after an accrual, and the anniversary review that moves members down (or up, if one was missed).

Definitions (README "### Tiers"):
- The window of `now` is (now - 12 months, now]: something that happened exactly 12 months
  before `now` has just left it, as a lot that expires after 12 months does.
- Qualifying points: the points credited by the member's accruals in the window (every accrual:
  the issuer's, a merchant's, a bulk file's line, an event's, behaviour events and campaign
  bonuses included), net of what has been reversed of them so far (`Accrual.reversed_points`).
  Conversions, transfers and adjustments are not accruals and do not qualify.
- Qualifying spend: the spend of the member's `purchase` events that occurred in the window, net
  of what has been refunded of them so far, in minor units of the program's currency.
- A member qualifies for the highest-ranked tier whose points threshold or spend threshold
  (either suffices) it reaches; the base tier (rank 0) needs nothing; a tier with neither
  threshold is reached only by manual placement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Select,
    Table,
    Uuid,
    and_,
    any_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from clearing.core.db import Sql, is_postgres
from clearing.core.ids import new_id
from clearing.core.models import UTCDateTime
from clearing.core.timeutil import add_months, aware
from issuers.models import (
    Accrual,
    Member,
    MemberTier,
    Organisation,
    Program,
    ProgramEvent,
    ProgramTier,
    TierChange,
)
from issuers.repository import MemberRef
from issuers.tiers import TIERED, TierRef

WINDOW_MONTHS = 12
SQLITE_CHUNK = 10_000
PURCHASE = "purchase"
UPGRADE, DOWNGRADE, MANUAL = "upgrade", "downgrade", "manual"


def window_start(now: datetime) -> datetime:
    """The exclusive start of the qualifying window ending at `now` (12 calendar months back,
    clamped to the month's end: 29 Feb 2028 looks back to 28 Feb 2027)."""
    return add_months(now, -WINDOW_MONTHS)


@dataclass(frozen=True, slots=True)
class Standing:
    """A member's qualifying figures and the tier it holds (None: the program's base tier)."""

    member_id: uuid.UUID
    program_id: uuid.UUID
    points: int
    spend: int
    held_tier_id: uuid.UUID | None
    since: datetime | None
    """When the member moved to the tier it holds (None: the base tier since enrolment)."""


@dataclass(frozen=True, slots=True)
class Move:
    """A member moving from one tier to another."""

    member_id: uuid.UUID
    program_id: uuid.UUID
    from_tier: TierRef | None
    to_tier: TierRef
    reason: str
    points: int
    spend: int
    had_row: bool


def qualified_tier(tiers: Sequence[TierRef], points: int, spend: int) -> TierRef | None:
    """The highest-ranked of `tiers` that `points` or `spend` reaches (the base tier if none)."""
    best: TierRef | None = None
    for tier in tiers:
        reached = tier.rank == 0 or (
            (tier.qualify_points is not None and points >= tier.qualify_points)
            or (tier.qualify_spend is not None and spend >= tier.qualify_spend)
        )
        if reached and (best is None or tier.rank > best.rank):
            best = tier
    return best


def held_tier(tiers: Sequence[TierRef], held_tier_id: uuid.UUID | None) -> TierRef | None:
    """The tier a member holds: its recorded one, else the base tier."""
    for tier in tiers:
        if (tier.id == held_tier_id) if held_tier_id is not None else tier.rank == 0:
            return tier
    return None


def _members_in(ids: Sequence[uuid.UUID]) -> Any:
    return Member.id == any_(bindparam("member_ids", list(ids), type_=postgresql.ARRAY(Uuid)))


_MEMBERS = cast(Table, Member.__table__)
_HELD = cast(Table, MemberTier.__table__)
_ACCRUALS = cast(Table, Accrual.__table__)
_EVENTS = cast(Table, ProgramEvent.__table__)


def _standing_query(members: Any) -> Select[Any]:
    # Core columns, not the ORM's: the statement runs through `Sql`, on the driver or in Core.
    since = bindparam("since", type_=UTCDateTime)
    now = bindparam("now", type_=UTCDateTime)
    a, e, m, held = _ACCRUALS.c, _EVENTS.c, _MEMBERS.c, _HELD.c
    points = (
        select(func.coalesce(func.sum(a.points - a.reversed_points), 0))
        .where(a.member_id == m.id, a.created_at > since, a.created_at <= now)
        .scalar_subquery()
    )
    spend = (
        select(func.coalesce(func.sum(e.spend - e.refunded_spend), 0))
        .where(
            e.member_id == m.id,
            e.kind == PURCHASE,
            e.spend.is_not(None),
            e.occurred_at > since,
            e.occurred_at <= now,
        )
        .scalar_subquery()
    )
    return (
        select(m.id, m.program_id, points, spend, held.tier_id, held.since)
        .select_from(_MEMBERS.outerjoin(_HELD, held.member_id == m.id))
        .where(members)
    )


# Built once: on the hot path SQLAlchemy's per-execution work would cost more than the query.
# PostgreSQL takes one array parameter however long the file (an IN list would hit the driver's
# limit); SQLite, which caps a statement's parameters, reads a large file in chunks.
_STANDINGS_PG = Sql(
    _standing_query(_MEMBERS.c.id == any_(bindparam("member_ids", type_=postgresql.ARRAY(Uuid))))
)
_STANDINGS_SQLITE = Sql(_standing_query(_MEMBERS.c.id.in_(bindparam("member_ids", expanding=True))))


def standings(session: Session, member_ids: Sequence[uuid.UUID], now: datetime) -> list[Standing]:
    """Qualifying points and spend as of `now` and the tier held, of each member: one statement."""
    if not member_ids:
        return []
    postgres = is_postgres(session)
    if not postgres and len(member_ids) > SQLITE_CHUNK:
        return [
            found
            for start in range(0, len(member_ids), SQLITE_CHUNK)
            for found in standings(session, member_ids[start : start + SQLITE_CHUNK], now)
        ]
    statement = _STANDINGS_PG if postgres else _STANDINGS_SQLITE
    rows = statement.rows(
        session, {"member_ids": list(member_ids), "since": window_start(now), "now": now}
    )
    return [
        Standing(
            member_id,
            program_id,
            int(points),
            int(spend),
            tier_id,
            aware(since) if since is not None else None,
        )
        for member_id, program_id, points, spend, tier_id, since in rows
    ]


def _moves(
    tiered: dict[uuid.UUID, tuple[TierRef, ...]],
    found: Iterable[Standing],
    *,
    down: bool,
) -> list[Move]:
    moves: list[Move] = []
    for s in found:
        tiers = tiered.get(s.program_id, ())
        held = held_tier(tiers, s.held_tier_id)
        target = qualified_tier(tiers, s.points, s.spend)
        if target is None or (held is None and s.held_tier_id is not None):
            continue  # no base tier, or a tier this process's copy does not know yet
        held_rank = held.rank if held is not None else 0
        if target.rank > held_rank:
            reason = UPGRADE
        elif down and target.rank < held_rank:
            reason = DOWNGRADE
        else:
            continue
        moves.append(
            Move(
                s.member_id,
                s.program_id,
                held,
                target,
                reason,
                s.points,
                s.spend,
                s.held_tier_id is not None,
            )
        )
    return moves


def apply_moves(
    session: Session, moves: Sequence[Move], now: datetime, key_id: str | None = None
) -> None:
    """Record the tiers of `moves` and their history rows (set-based: up to three statements)."""
    if not moves:
        return
    updated = [m for m in moves if m.had_row]
    added = [m for m in moves if not m.had_row]
    if updated:
        session.execute(
            update(MemberTier),
            [{"member_id": m.member_id, "tier_id": m.to_tier.id, "since": now} for m in updated],
        )
    if added:
        session.execute(
            insert(MemberTier),
            [{"member_id": m.member_id, "tier_id": m.to_tier.id, "since": now} for m in added],
        )
    session.execute(
        insert(cast(Table, TierChange.__table__)),
        [
            {
                "id": new_id(),
                "program_id": m.program_id,
                "member_id": m.member_id,
                "from_tier_id": m.from_tier.id if m.from_tier else None,
                "to_tier_id": m.to_tier.id,
                "reason": m.reason,
                "qualifying_points": m.points,
                "qualifying_spend": m.spend,
                "changed_by_key": key_id,
                "changed_at": now,
            }
            for m in moves
        ],
    )


def lock_members(session: Session, member_ids: Sequence[uuid.UUID]) -> None:
    """Lock members in id order, so that two moves of one member never both apply."""
    if is_postgres(session) and member_ids:
        session.execute(
            select(Member.id)
            .where(_members_in(sorted(member_ids)))
            .order_by(Member.id)
            .with_for_update()
        ).all()


def upgrade_at_once(session: Session, members: Iterable[MemberRef], now: datetime) -> list[Move]:
    """Upgrade the members who now qualify for a tier above the one they hold.

    A program without tiers costs nothing (the process copy says so); a tiered one costs one
    statement when nobody moves. A move locks the members and reads them again first, so that
    two concurrent accruals of one member upgrade it once.
    """
    tiered = TIERED.get(session)
    if not tiered:
        return []
    ids = [m.id for m in members if m.program_id in tiered]
    if not ids:
        return []
    moving = _moves(tiered, standings(session, ids, now), down=False)
    if not moving:
        return []
    lock_members(session, [m.member_id for m in moving])
    moves = _moves(tiered, standings(session, [m.member_id for m in moving], now), down=False)
    apply_moves(session, moves, now)
    return moves


# the anniversary review ---------------------------------------------------------------------


def anniversary_windows(day: date, zone: str, first_year: int) -> list[tuple[datetime, datetime]]:
    """The UTC windows of enrolment instants whose anniversary falls on `day` in `zone`: the
    local calendar day of the same month and day in every earlier year from `first_year`; on
    28 February of a common year, 29 February of leap years too."""
    tz = ZoneInfo(zone)

    def local_day(d: date) -> tuple[datetime, datetime]:
        start = datetime.combine(d, time(0), tzinfo=tz).astimezone(UTC)
        return start, datetime.combine(d + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)

    windows: list[tuple[datetime, datetime]] = []
    leap_day = day.month == 2 and day.day == 28 and not is_leap(day.year)
    for year in range(first_year, day.year):
        if day.month == 2 and day.day == 29 and not is_leap(year):
            continue
        windows.append(local_day(day.replace(year=year)))
        if leap_day and is_leap(year):
            windows.append(local_day(date(year, 2, 29)))
    return windows


def is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def local_today(now: datetime, zone: str) -> date:
    """The calendar date of `now` in `zone`."""
    return now.astimezone(ZoneInfo(zone)).date()


@dataclass(frozen=True, slots=True)
class TieredProgram:
    """A program with tiers, its issuer's zone and the first enrolment year of its members."""

    id: uuid.UUID
    code: str
    zone: str
    first_enrolled: datetime | None


def tiered_programs(session: Session, codes: Sequence[str] | None = None) -> list[TieredProgram]:
    """Programs that have tiers (all, or those of `codes`), with their issuer's zone."""
    first = (
        select(func.min(Member.created_at)).where(Member.program_id == Program.id).scalar_subquery()
    )
    query = (
        select(Program.id, Program.code, Organisation.zone, first)
        .join(Organisation, Organisation.id == Program.issuer_id)
        .where(Program.id.in_(select(ProgramTier.program_id)))
        .order_by(Program.code)
    )
    if codes is not None:
        query = query.where(Program.code.in_(list(codes)))
    return [
        TieredProgram(pid, code, zone, aware(first) if first is not None else None)
        for pid, code, zone, first in session.execute(query)
    ]


def anniversary_members(
    session: Session,
    program: TieredProgram,
    day: date,
    after: uuid.UUID | None,
    limit: int,
) -> list[uuid.UUID]:
    """A chunk (by id, after `after`) of the program's open members whose anniversary is `day`."""
    if program.first_enrolled is None:
        return []
    first_year = program.first_enrolled.astimezone(ZoneInfo(program.zone)).year
    windows = anniversary_windows(day, program.zone, first_year)
    if not windows:
        return []
    query = (
        select(Member.id)
        .where(
            Member.program_id == program.id,
            Member.status != "closed",
            or_(*(and_(Member.created_at >= a, Member.created_at < b) for a, b in windows)),
        )
        .order_by(Member.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Member.id > after)
    return list(session.scalars(query))


def review_chunk(session: Session, member_ids: Sequence[uuid.UUID], now: datetime) -> list[Move]:
    """Re-qualify members on their anniversary as of `now`: down to the tier they qualify for,
    or up if an upgrade was missed. Running it twice moves nobody the second time."""
    tiered = TIERED.get(session)
    lock_members(session, member_ids)
    moves = _moves(tiered, standings(session, member_ids, now), down=True)
    apply_moves(session, moves, now)
    return moves
