"""Every query of the earning engine: the books and campaigns (read whole, kept as a process
copy), members' counters and campaign budgets (locked, in a fixed order), campaign figures."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.types.json import Json
from sqlalchemy import Table, and_, bindparam, func, insert, select, text, tuple_, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from clearing.core.cache import ProcessCopy
from clearing.core.db import COPY_THRESHOLD, Sql, bulk_insert, is_postgres, rows_together
from clearing.core.timeutil import aware
from issuers.earning import Behaviour, Book, CampaignRef, Counter, ProgramBook, SpendRule, State
from issuers.models import (
    Campaign,
    CampaignAward,
    CampaignBudget,
    EarningBook,
    EarningCounter,
    EarningRule,
    Member,
    MemberTier,
    Organisation,
    Program,
    ProgramEvent,
    ProgramTier,
)
from issuers.repository import MemberRef
from issuers.tiers import TierRef, tier_ref

_COUNTERS = cast(Table, EarningCounter.__table__)
_BUDGETS = cast(Table, CampaignBudget.__table__)
_CHUNK = 1000


def _load_books(session: Session) -> dict[uuid.UUID, ProgramBook]:
    zones = dict(
        session.execute(
            select(Program.id, Organisation.zone).join(
                Organisation, Organisation.id == Program.issuer_id
            )
        ).all()
    )
    rules: dict[uuid.UUID, list[EarningRule]] = defaultdict(list)
    for rule in session.scalars(select(EarningRule).order_by(EarningRule.position)):
        rules[rule.book_id].append(rule)
    books: dict[uuid.UUID, list[Book]] = defaultdict(list)
    for row in session.scalars(select(EarningBook).order_by(EarningBook.version.desc())):
        books[row.program_id].append(_book(row, rules[row.id]))
    campaigns: dict[uuid.UUID, list[CampaignRef]] = defaultdict(list)
    for c in session.scalars(select(Campaign).order_by(Campaign.priority, Campaign.code)):
        campaigns[c.program_id].append(campaign_ref(c))
    return {
        program_id: ProgramBook(
            program_id, zone, tuple(books[program_id]), tuple(campaigns[program_id])
        )
        for program_id, zone in zones.items()
    }


def _book(row: EarningBook, rules: list[EarningRule]) -> Book:
    spend = tuple(
        SpendRule(
            r.code,
            r.position,
            r.rate if r.rate is not None else 0,  # type: ignore[arg-type]
            r.product_line,
            r.merchant_category,
            r.merchant_id,
            r.channel,
        )
        for r in rules
        if r.kind == "spend"
    )
    behaviours = {
        r.code: Behaviour(
            r.code,
            r.position,
            r.points or 0,
            r.frequency,
            r.max_per_period or 1,
            r.streak_days,
            r.streak_points,
            r.referee_points,
        )
        for r in rules
        if r.kind == "behaviour"
    }
    return Book(
        row.version,
        aware(row.effective_from),
        row.min_spend,
        row.day_cap,
        row.month_cap,
        spend,
        behaviours,
    )


def campaign_ref(c: Campaign) -> CampaignRef:
    """A campaign row as the engine reads it."""
    return CampaignRef(
        c.id,
        c.code,
        c.kind,
        c.priority,
        aware(c.starts_at),
        aware(c.ends_at) if c.ends_at is not None else None,
        frozenset(c.days_of_month),
        frozenset(c.weekdays),
        c.multiplier,
        c.bonus_points,
        c.min_spend,
        frozenset(c.tiers),
        c.min_member_days,
        c.max_member_days,
        c.budget,
    )


BOOKS: ProcessCopy[dict[uuid.UUID, ProgramBook]] = ProcessCopy(_load_books)
"""Every program's books and campaigns, as this process's copy (see `clearing.core.cache`):
an event reads none of them from the database; a publication drops the copy."""


def program_book(session: Session, program_id: uuid.UUID, issuer_id: uuid.UUID) -> ProgramBook:
    """A program's books and campaigns (a program newer than the copy: none yet)."""
    found = BOOKS.get(session).get(program_id)
    if found is not None:
        return found
    issuer = session.get(Organisation, issuer_id)
    return ProgramBook(program_id, issuer.zone if issuer is not None else "UTC", (), ())


def latest_book(session: Session, program_id: uuid.UUID) -> EarningBook | None:
    """The latest version of a program's earning book."""
    return session.scalars(
        select(EarningBook)
        .where(EarningBook.program_id == program_id)
        .order_by(EarningBook.version.desc())
        .limit(1)
    ).first()


def book_at(session: Session, program_id: uuid.UUID, at: datetime) -> EarningBook | None:
    """The version of a program's earning book in force at `at`."""
    return session.scalars(
        select(EarningBook)
        .where(EarningBook.program_id == program_id, EarningBook.effective_from <= at)
        .order_by(EarningBook.version.desc())
        .limit(1)
    ).first()


def book_rules(session: Session, book_id: uuid.UUID) -> list[EarningRule]:
    """The rules of one book, in order."""
    return list(
        session.scalars(
            select(EarningRule).where(EarningRule.book_id == book_id).order_by(EarningRule.position)
        )
    )


_KEYS = "unnest(CAST(:b_members AS uuid[]), CAST(:b_keys AS varchar[])) AS wanted(m, k)"
_LOCK_COUNTERS = Sql(
    text(
        "INSERT INTO earning_counters (member_id, key, count, points) "
        f"SELECT m, k, 0, 0 FROM {_KEYS} ORDER BY m, k "
        "ON CONFLICT (member_id, key) DO UPDATE SET count = earning_counters.count "
        "RETURNING member_id, key, count, points, last_day"
    )
)
_READ_COUNTERS = Sql(
    text(
        "SELECT member_id, key, count, points, last_day FROM earning_counters "
        f"JOIN {_KEYS} ON member_id = m AND key = k"
    )
)


def counters(
    session: Session, keys: Iterable[tuple[uuid.UUID, str]], lock: bool
) -> dict[tuple[uuid.UUID, str], Counter]:
    """Members' counters under `keys`. Locked: each row is created if missing and locked in one
    statement (an upsert that rewrites nothing), in (member, key) order so that two sets of
    events never wait on each other crosswise."""
    wanted = sorted(set(keys))
    found: dict[tuple[uuid.UUID, str], Counter] = {}
    if is_postgres(session):
        # One prepared statement whatever the number of keys (arrays, not a VALUES list).
        params = {"b_members": [m for m, _ in wanted], "b_keys": [k for _, k in wanted]}
        for row in (_LOCK_COUNTERS if lock else _READ_COUNTERS).rows(session, params):
            found[(row.member_id, row.key)] = Counter(row.count, row.points, row.last_day)
        return found
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        if lock:
            statement: Any = (
                sqlite_insert(_COUNTERS)
                .values([{"member_id": m, "key": k, "count": 0, "points": 0} for m, k in chunk])
                .on_conflict_do_update(
                    index_elements=[_COUNTERS.c.member_id, _COUNTERS.c.key],
                    set_={"count": _COUNTERS.c.count},
                )
                .returning(
                    _COUNTERS.c.member_id,
                    _COUNTERS.c.key,
                    _COUNTERS.c.count,
                    _COUNTERS.c.points,
                    _COUNTERS.c.last_day,
                )
            )
        else:
            statement = select(
                _COUNTERS.c.member_id,
                _COUNTERS.c.key,
                _COUNTERS.c.count,
                _COUNTERS.c.points,
                _COUNTERS.c.last_day,
            ).where(tuple_(_COUNTERS.c.member_id, _COUNTERS.c.key).in_(chunk))
        for member_id, key, count, points, last_day in session.execute(statement).all():
            found[(member_id, key)] = Counter(count, points, last_day)
    return found


_WRITE_COUNTER = (
    update(_COUNTERS)
    .where(
        and_(_COUNTERS.c.member_id == bindparam("b_member"), _COUNTERS.c.key == bindparam("b_key"))
    )
    .values(
        count=bindparam("b_count"), points=bindparam("b_points"), last_day=bindparam("b_last_day")
    )
)


BUDGET_SLOTS = 8
"""Rows a campaign's budget is split into (see `CampaignBudget`)."""
_TAKE_SLOT = Sql(
    text(
        "SELECT s.campaign_id, s.slot, s.budget - s.paid AS left_ FROM "
        "unnest(CAST(:b_campaigns AS uuid[])) AS wanted(c) CROSS JOIN LATERAL ("
        "SELECT campaign_id, slot, budget, paid FROM campaign_budgets "
        "WHERE campaign_id = wanted.c AND paid < budget "
        "ORDER BY slot FOR UPDATE SKIP LOCKED LIMIT 1) AS s"
    )
)
_MORE_SLOTS = Sql(
    text(
        "SELECT campaign_id, slot, budget - paid AS left_ FROM campaign_budgets "
        "WHERE campaign_id = ANY(CAST(:b_campaigns AS uuid[])) AND paid < budget "
        "ORDER BY campaign_id, slot FOR UPDATE SKIP LOCKED"
    )
)


def budget_slots(
    session: Session, campaign_ids: Iterable[uuid.UUID], lock: bool, one: bool
) -> dict[tuple[uuid.UUID, int], int]:
    """Budget slots of campaigns and what each has left. One event on PostgreSQL takes one slot
    with budget left per campaign that no other event holds (SKIP LOCKED: it never waits for a
    budget, so concurrent events pay from different rows); a file (and SQLite, which has one
    writer) locks every slot, in (campaign, slot) order."""
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}
    if one and lock and is_postgres(session):
        rows = _TAKE_SLOT.rows(session, {"b_campaigns": ids})
        return {(r.campaign_id, r.slot): r.left_ for r in rows}
    statement = (
        select(_BUDGETS.c.campaign_id, _BUDGETS.c.slot, _BUDGETS.c.budget, _BUDGETS.c.paid)
        .where(_BUDGETS.c.campaign_id.in_(ids))
        .order_by(_BUDGETS.c.campaign_id, _BUDGETS.c.slot)
    )
    if lock:
        statement = statement.with_for_update()
    return {(c, slot): budget - paid for c, slot, budget, paid in session.execute(statement).all()}


def more_slots(
    session: Session, campaign_ids: Iterable[uuid.UUID], held: Mapping[tuple[uuid.UUID, int], int]
) -> dict[tuple[uuid.UUID, int], int]:
    """Every other slot with budget left of these campaigns that no concurrent event holds
    (SKIP LOCKED: never waits, so no two events wait on each other's slots)."""
    if not is_postgres(session):
        return {}
    rows = _MORE_SLOTS.rows(session, {"b_campaigns": sorted(set(campaign_ids))})
    return {(r.campaign_id, r.slot): r.left_ for r in rows if (r.campaign_id, r.slot) not in held}


def _slot_pays(state: State) -> list[dict[str, Any]]:
    """What each held slot pays: a campaign's total, from its slots in order, each up to what
    it had left (they sum to at least the total: evaluation paid no more than they held)."""
    rows: list[dict[str, Any]] = []
    for campaign_id, total in sorted(state.paid.items()):
        left = total
        for (cid, slot), room in sorted(state.slots.items()):
            if cid != campaign_id or left <= 0:
                continue
            pay = min(room, left)
            if pay > 0:
                rows.append({"b_campaign": cid, "b_slot": slot, "b_paid": pay})
            left -= pay
        assert left <= 0, "a campaign paid more than the budget it held"
    return rows


_PAY = (
    update(_BUDGETS)
    .where(
        _BUDGETS.c.campaign_id == bindparam("b_campaign"), _BUDGETS.c.slot == bindparam("b_slot")
    )
    .values(paid=_BUDGETS.c.paid + bindparam("b_paid"))
)


_EVENT_COLUMNS = (
    "id",
    "program_id",
    "member_id",
    "kind",
    "reference",
    "posted_by",
    "occurred_at",
    "spend",
    "currency",
    "points",
    "accrual_id",
    "explanation",
    "refunded_spend",
    "created_at",
)
_AWARD_COLUMNS = ("id", "campaign_id", "event_id", "member_id", "points", "created_at")
_EVENTS = cast(Table, ProgramEvent.__table__)
_AWARDS = cast(Table, CampaignAward.__table__)
_WRITES = (
    Sql(_WRITE_COUNTER),
    Sql(_PAY),
    Sql(insert(_EVENTS), _EVENT_COLUMNS),
    Sql(insert(_AWARDS), _AWARD_COLUMNS),
)


def write_events(
    session: Session,
    state: State,
    events: list[dict[str, Any]],
    awards: list[dict[str, Any]],
) -> None:
    """Write what evaluation changed and produced: the counters it touched (locked and present:
    see `counters`), what campaigns paid (rows locked by `budgets_left`), the events and their
    campaign awards. On PostgreSQL a few events' writes travel in one round trip (a pipeline);
    a file's events and awards go by COPY."""
    found = state.counters
    counter_rows = [
        {
            "b_member": member_id,
            "b_key": key,
            "b_count": found[(member_id, key)].count,
            "b_points": found[(member_id, key)].points,
            "b_last_day": found[(member_id, key)].last_day,
        }
        for member_id, key in sorted(state.touched)
    ]
    pay_rows = _slot_pays(state)
    write_counter, pay, insert_event, insert_award = _WRITES
    if not is_postgres(session):
        for statement, rows in (
            (write_counter, counter_rows),
            (pay, pay_rows),
            (insert_event, events),
            (insert_award, awards),
        ):
            statement.run_many(session, rows)
        return
    if len(events) >= COPY_THRESHOLD or len(awards) >= COPY_THRESHOLD:
        write_counter.run_many(session, counter_rows)
        pay.run_many(session, pay_rows)
        bulk_insert(session, _EVENTS, events)
        bulk_insert(session, _AWARDS, awards)
        return
    driver = cast(psycopg.Connection[Any], session.connection().connection.driver_connection)
    with driver.pipeline():
        write_counter.run_many(session, counter_rows)
        pay.run_many(session, pay_rows)
        insert_event.run_many(
            session, [{**e, "explanation": Json(e["explanation"])} for e in events]
        )
        insert_award.run_many(session, awards)


_TIERS = cast(Table, ProgramTier.__table__)
_HELD = cast(Table, MemberTier.__table__)
_BASE = _TIERS.alias("base")
_TIER_OF = Sql(
    select(
        _TIERS.c.id,
        _TIERS.c.program_id,
        _TIERS.c.code,
        _TIERS.c.name,
        _TIERS.c.rank,
        _TIERS.c.multiplier,
        _TIERS.c.qualify_points,
        _TIERS.c.qualify_spend,
        _TIERS.c.privileges,
    ).where(
        _TIERS.c.id
        == func.coalesce(
            select(_HELD.c.tier_id)
            .where(_HELD.c.member_id == bindparam("b_member"))
            .scalar_subquery(),
            select(_BASE.c.id)
            .where(_BASE.c.program_id == bindparam("b_program"), _BASE.c.rank == 0)
            .scalar_subquery(),
        )
    )
)


def single_event_reads(
    session: Session,
    member: MemberRef | None,
    keys: Iterable[tuple[uuid.UUID, str]],
    campaign_ids: Iterable[uuid.UUID],
) -> tuple[TierRef | None, dict[tuple[uuid.UUID, str], Counter], dict[tuple[uuid.UUID, int], int]]:
    """PostgreSQL: what one event reads, sent together (one round trip): its purchaser's tier
    (as `tier_of`), its counters locked (as `counters`), a budget slot per running campaign
    taken (as `budget_slots`)."""
    wanted = sorted(set(keys))
    ids = sorted(set(campaign_ids))
    queries: list[tuple[Sql, dict[str, Any]]] = []
    if member is not None:
        queries.append((_TIER_OF, {"b_member": member.id, "b_program": member.program_id}))
    if wanted:
        queries.append(
            (
                _LOCK_COUNTERS,
                {"b_members": [m for m, _ in wanted], "b_keys": [k for _, k in wanted]},
            )
        )
    if ids:
        queries.append((_TAKE_SLOT, {"b_campaigns": ids}))
    results = iter(rows_together(session, queries))
    tier = _tier(next(iter(next(results)), None)) if member is not None else None
    found = (
        {(r.member_id, r.key): Counter(r.count, r.points, r.last_day) for r in next(results)}
        if wanted
        else {}
    )
    held = {(r.campaign_id, r.slot): r.left_ for r in next(results)} if ids else {}
    return tier, found, held


def tier_of(session: Session, member: MemberRef) -> TierRef | None:
    """The tier one member holds now, in one prepared statement: the same answer as
    `issuers.tiers.tiers_of` (its recorded tier, else its program's base tier; a test compares
    them), for the single event's hot path."""
    return _tier(_TIER_OF.first(session, {"b_member": member.id, "b_program": member.program_id}))


def _tier(row: Any | None) -> TierRef | None:
    return None if row is None else tier_ref(row)


def members_since(session: Session, member_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """When each member enrolled."""
    ids = list(set(member_ids))
    if not ids:
        return {}
    return {
        mid: aware(at)
        for mid, at in session.execute(
            select(Member.id, Member.created_at).where(Member.id.in_(ids))
        ).all()
    }


def campaigns_of(session: Session, program_id: uuid.UUID) -> list[tuple[Campaign, int, int]]:
    """A program's campaigns with the points each paid and the members it reached."""
    reached = (
        select(
            CampaignAward.campaign_id,
            func.count(func.distinct(CampaignAward.member_id)).label("members"),
        )
        .group_by(CampaignAward.campaign_id)
        .subquery()
    )
    paid = (
        select(CampaignBudget.campaign_id, func.sum(CampaignBudget.paid).label("paid"))
        .group_by(CampaignBudget.campaign_id)
        .subquery()
    )
    rows = session.execute(
        select(Campaign, paid.c.paid, func.coalesce(reached.c.members, 0))
        .join(paid, paid.c.campaign_id == Campaign.id)
        .outerjoin(reached, reached.c.campaign_id == Campaign.id)
        .where(Campaign.program_id == program_id)
        .order_by(Campaign.priority, Campaign.code)
    ).all()
    return [(c, int(paid), int(members)) for c, paid, members in rows]


def campaign_by_code(session: Session, program_id: uuid.UUID, code: str) -> Campaign | None:
    """A program's campaign by its code."""
    return session.scalars(
        select(Campaign).where(Campaign.program_id == program_id, Campaign.code == code)
    ).first()
