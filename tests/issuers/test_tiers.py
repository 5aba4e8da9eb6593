"""Tiers: qualification over a rolling 12 months, upgrade at once, downgrade only on the
anniversary, the history of moves, and the member's standing; arithmetic worked out by hand.

Tiers of BANKB in every test: standard (rank 0, x1), silver (rank 1, x1.5, 1,000 qualifying
points or 50,000 fen of qualifying spend, privilege "lounge"), gold (rank 2, x2, 5,000 points).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, select

from clearing.core.db import transaction
from clearing.core.ids import new_id
from clearing.web.context import Caller
from issuers import accruals, members, qualification, repository, tiering
from issuers.models import Member, MemberTier, ProgramEvent, ProgramTier
from issuers.schemas import (
    AccrualBatchCreate,
    AccrualCreate,
    AccrualReversalCreate,
    MemberTierSet,
    TierChangeSet,
    TierCreate,
)
from issuers.tasks import ReviewTooEarly, run_review
from issuers.tiers import TIERED
from tests.factories import World, accrue, build_world, key, member

W = datetime(2026, 1, 1, tzinfo=UTC)
"""When the world (and BANKB) begins."""


def _tiers(engine: Engine, world: World) -> None:
    with transaction(engine) as session:
        for req in (
            TierCreate(code="standard", name="Standard", rank=0),
            TierCreate(
                code="silver",
                name="Silver",
                rank=1,
                multiplier=Decimal("1.5"),
                qualify_points=1_000,
                qualify_spend=50_000,
                privileges=["lounge"],
            ),
            TierCreate(
                code="gold", name="Gold", rank=2, multiplier=Decimal(2), qualify_points=5_000
            ),
        ):
            tiering.create_tier(session, world.bank_b, "BANKB", req, W)


def _world(engine: Engine) -> World:
    world = build_world(engine, now=W)
    _tiers(engine, world)
    return world


def _held(engine: Engine, external_id: str) -> str:
    with transaction(engine) as session:
        program = repository.program_by_code(session, "BANKB")
        assert program is not None
        found = session.scalar(
            select(ProgramTier.code)
            .join(MemberTier, MemberTier.tier_id == ProgramTier.id)
            .join(Member, Member.id == MemberTier.member_id)
            .where(Member.program_id == program.id, Member.external_id == external_id)
        )
    return found or "standard"


def _history(engine: Engine, world: World, external_id: str | None = None) -> list[Any]:
    with transaction(engine) as session:
        moves = tiering.tier_moves(session, world.bank_b, "BANKB", external_id, None, 100)
    return [
        (m.external_id, m.from_tier, m.to_tier, m.reason, m.qualifying_points, m.qualifying_spend)
        for m in moves
    ]


def _reverse(
    engine: Engine, issuer: Caller, accrual_id: uuid.UUID, points: int, now: datetime
) -> None:
    with transaction(engine) as session:
        accruals.reverse_accrual(
            session, issuer, accrual_id, AccrualReversalCreate(points=points), now, key()
        )


def _purchase(
    engine: Engine,
    world: World,
    external_id: str,
    spend: int,
    at: datetime,
    refunded: int = 0,
    kind: str = "purchase",
) -> None:
    """A purchase event as the event engine writes it (the spend qualifies, not its points)."""
    with transaction(engine) as session:
        program = repository.program_by_code(session, "BANKB")
        assert program is not None
        found = repository.member_by_external_id(session, program.id, external_id)
        assert found is not None
        session.add(
            ProgramEvent(
                id=new_id(),
                program_id=program.id,
                member_id=found.id,
                kind=kind,
                posted_by=world.bank_b.org_id,
                occurred_at=at,
                spend=spend if kind == "purchase" else None,
                currency="CNY",
                points=0,
                explanation=[],
                refunded_spend=refunded,
                created_at=at,
            )
        )


def test_upgrade_at_once_by_points_never_down_at_once(engine: Engine) -> None:
    world = _world(engine)
    member(engine, world.bank_b, "BANKB", "m1", now=W)
    accrue(engine, world.bank_b, "BANKB", "m1", 600, now=W + timedelta(days=1))
    assert _held(engine, "m1") == "standard"  # 600 < 1,000
    second = accrue(engine, world.bank_b, "BANKB", "m1", 400, now=W + timedelta(days=2))
    assert _held(engine, "m1") == "silver"  # 600 + 400 = 1,000: silver's threshold, at once
    _reverse(engine, world.bank_b, second.id, 300, W + timedelta(days=3))
    assert _held(engine, "m1") == "silver"  # 700 now, but a downgrade waits for the anniversary
    accrue(engine, world.bank_b, "BANKB", "m1", 4_299, now=W + timedelta(days=4))
    assert _held(engine, "m1") == "silver"  # 700 + 4,299 = 4,999 < 5,000
    accrue(engine, world.bank_b, "BANKB", "m1", 1, now=W + timedelta(days=5))
    assert _held(engine, "m1") == "gold"  # 5,000
    assert _history(engine, world) == [
        ("m1", "standard", "silver", "upgrade", 1_000, 0),
        ("m1", "silver", "gold", "upgrade", 5_000, 0),
    ]


def test_a_bulk_file_upgrades_each_member_that_reaches_a_tier(engine: Engine) -> None:
    world = _world(engine)
    for name in ("a", "b", "c"):
        member(engine, world.bank_b, "BANKB", name, now=W)
    with transaction(engine) as session:
        accruals.accrue_batch(
            session,
            world.bank_b,
            AccrualBatchCreate(
                items=[
                    AccrualCreate(program="BANKB", external_id="a", points=999),
                    AccrualCreate(program="BANKB", external_id="b", points=600),
                    AccrualCreate(program="BANKB", external_id="b", points=400),
                    AccrualCreate(program="BANKB", external_id="c", points=5_000),
                ]
            ),
            W + timedelta(days=1),
            key(),
        )
    # a: 999 stays; b: 600 + 400 = 1,000 silver; c: 5,000 straight to gold (one move).
    assert [_held(engine, n) for n in ("a", "b", "c")] == ["standard", "silver", "gold"]
    assert sorted(_history(engine, world)) == [
        ("b", "standard", "silver", "upgrade", 1_000, 0),
        ("c", "standard", "gold", "upgrade", 5_000, 0),
    ]


def test_upgrade_by_spend_net_of_refunds_purchases_only(engine: Engine) -> None:
    world = _world(engine)
    member(engine, world.bank_b, "BANKB", "m1", now=W)
    day = W + timedelta(days=40)
    _purchase(engine, world, "m1", 30_000, W + timedelta(days=10))
    _purchase(engine, world, "m1", 25_000, W + timedelta(days=20), refunded=5_001)
    _purchase(engine, world, "m1", 90_000, W + timedelta(days=30), kind="check_in")
    accrue(engine, world.bank_b, "BANKB", "m1", 10, now=day)
    # 30,000 + (25,000 - 5,001) = 49,999 fen: one fen short; the check-in has no spend.
    assert _held(engine, "m1") == "standard"
    _purchase(engine, world, "m1", 1, day + timedelta(hours=1))
    accrue(engine, world.bank_b, "BANKB", "m1", 10, now=day + timedelta(hours=2))
    assert _held(engine, "m1") == "silver"  # 50,000 fen, 20 points
    assert _history(engine, world) == [("m1", "standard", "silver", "upgrade", 20, 50_000)]


def test_the_window_is_the_trailing_twelve_months_exclusive_of_its_start(engine: Engine) -> None:
    world = _world(engine)
    member(engine, world.bank_b, "BANKB", "m1", now=W)
    member(engine, world.bank_b, "BANKB", "m2", now=W)
    earned = datetime(2026, 1, 10, 8, 30, tzinfo=UTC)
    accrue(engine, world.bank_b, "BANKB", "m1", 600, now=earned)
    accrue(engine, world.bank_b, "BANKB", "m2", 600, now=earned)
    year_on = datetime(2027, 1, 10, 8, 30, tzinfo=UTC)
    # m1 earns 400 a second before the 600 turn 12 months old: 1,000, silver.
    accrue(engine, world.bank_b, "BANKB", "m1", 400, now=year_on - timedelta(seconds=1))
    # m2 earns 400 exactly 12 months after the 600: those have left the window, 400 only.
    accrue(engine, world.bank_b, "BANKB", "m2", 400, now=year_on)
    assert (_held(engine, "m1"), _held(engine, "m2")) == ("silver", "standard")
    with transaction(engine) as session:
        ids = [
            session.scalar(select(Member.id).where(Member.external_id == n)) for n in ("m1", "m2")
        ]
        before = qualification.standings(
            session, [i for i in ids if i], year_on - timedelta(microseconds=1)
        )
        at = qualification.standings(session, [i for i in ids if i], year_on)
    assert sorted(s.points for s in before) == [600, 1_000]
    assert sorted(s.points for s in at) == [400, 400]
    # 29 February looks back to 28 February of the year before.
    leap = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert qualification.window_start(leap) == datetime(2027, 2, 28, 12, tzinfo=UTC)


def _review(engine: Engine, now: datetime, day: date | None = None) -> tuple[int, int, int]:
    done = run_review(engine, now, day, ["BANKB"], chunk=2)
    return done.reviewed["BANKB"], done.upgraded["BANKB"], done.downgraded["BANKB"]


def test_downgrade_only_on_the_anniversary_in_the_issuers_zone(engine: Engine) -> None:
    world = _world(engine)
    # Enrolled 2026-03-10 02:00 UTC = 10:00 in Shanghai (Bank B's zone): the anniversary is
    # 10 March in Shanghai, which begins at 2027-03-09 16:00 UTC.
    enrolled = datetime(2026, 3, 10, 2, tzinfo=UTC)
    member(engine, world.bank_b, "BANKB", "m1", now=enrolled)
    member(engine, world.bank_b, "BANKB", "m2", now=enrolled + timedelta(hours=1))
    member(engine, world.bank_b, "BANKB", "m3", now=enrolled + timedelta(days=1))
    first = accrue(engine, world.bank_b, "BANKB", "m1", 1_000, now=enrolled + timedelta(hours=1))
    accrue(engine, world.bank_b, "BANKB", "m2", 1_000, now=enrolled + timedelta(hours=2))
    accrue(engine, world.bank_b, "BANKB", "m3", 1_000, now=enrolled + timedelta(days=1))
    _reverse(engine, world.bank_b, first.id, 500, datetime(2026, 6, 1, tzinfo=UTC))
    accrue(engine, world.bank_b, "BANKB", "m2", 1_000, now=datetime(2027, 1, 5, tzinfo=UTC))
    assert [_held(engine, n) for n in ("m1", "m2", "m3")] == ["silver"] * 3
    eve = datetime(2027, 3, 9, 15, 59, tzinfo=UTC)  # 23:59 on 9 March in Shanghai
    assert _review(engine, eve) == (0, 0, 0)
    assert _held(engine, "m1") == "silver"
    with pytest.raises(ReviewTooEarly):
        _review(engine, eve, date(2027, 3, 10))
    midnight = datetime(2027, 3, 9, 16, 0, tzinfo=UTC)  # 00:00 on 10 March in Shanghai
    # m1: 1,000 - 500 reversed = 500 < 1,000: down to standard. m2: the 2026 accrual is still
    # inside the window (10 March 2026 04:00 UTC > 9 March 2026 16:00 UTC) plus 1,000 of January:
    # 2,000, stays silver. m3 (enrolled on the 11th) is not reviewed today.
    assert _review(engine, midnight) == (2, 0, 1)
    assert [_held(engine, n) for n in ("m1", "m2", "m3")] == ["standard", "silver", "silver"]
    assert _review(engine, midnight + timedelta(hours=1)) == (2, 0, 0)  # twice: nothing more
    assert _history(engine, world, "m1") == [
        ("m1", "standard", "silver", "upgrade", 1_000, 0),
        ("m1", "silver", "standard", "downgrade", 500, 0),
    ]


def test_the_review_also_makes_up_a_missed_upgrade(engine: Engine) -> None:
    world = _world(engine)
    enrolled = datetime(2026, 2, 1, 4, tzinfo=UTC)  # 12:00 in Shanghai
    member(engine, world.bank_b, "BANKB", "m1", now=enrolled)
    _purchase(engine, world, "m1", 60_000, datetime(2026, 12, 1, tzinfo=UTC))  # no accrual since
    assert _review(engine, datetime(2027, 2, 1, 1, tzinfo=UTC)) == (1, 1, 0)
    assert _history(engine, world) == [("m1", "standard", "silver", "upgrade", 0, 60_000)]


def test_anniversaries_of_29_february() -> None:
    windows = qualification.anniversary_windows(date(2027, 2, 28), "UTC", 2024)
    starts = [a.date() for a, _ in windows]
    assert starts == [date(2024, 2, 28), date(2024, 2, 29), date(2025, 2, 28), date(2026, 2, 28)]
    assert qualification.anniversary_windows(date(2028, 2, 29), "UTC", 2024)[0][0] == datetime(
        2024, 2, 29, tzinfo=UTC
    )
    shanghai = qualification.anniversary_windows(date(2027, 3, 10), "Asia/Shanghai", 2026)
    assert shanghai == [
        (datetime(2026, 3, 9, 16, tzinfo=UTC), datetime(2026, 3, 10, 16, tzinfo=UTC))
    ]


def test_member_view_shows_tier_privileges_and_progress(engine: Engine) -> None:
    world = _world(engine)
    member(engine, world.bank_b, "BANKB", "m1", now=W)
    accrue(engine, world.bank_b, "BANKB", "m1", 700, now=W + timedelta(days=1))
    _purchase(engine, world, "m1", 20_000, W + timedelta(days=2))
    now = W + timedelta(days=3)
    with transaction(engine) as session:
        view = members.member_view(session, world.bank_b, "BANKB", "m1", now)
    assert view.tier is not None
    assert (view.tier.code, view.tier.privileges, view.tier.multiplier) == (
        "standard",
        [],
        Decimal(1),
    )
    assert (view.tier.qualifying_points, view.tier.qualifying_spend) == (700, 20_000)
    assert view.tier.next_review == date(2027, 1, 1)  # enrolled 1 January 08:00 in Shanghai
    nxt = view.tier.next_tier
    assert nxt is not None
    assert (nxt.code, nxt.points_missing, nxt.spend_missing) == ("silver", 300, 30_000)
    accrue(engine, world.bank_b, "BANKB", "m1", 300, now=now)
    with transaction(engine) as session:
        view = members.member_view(session, world.bank_b, "BANKB", "m1", now)
    assert view.tier is not None
    assert (view.tier.code, view.tier.privileges, view.tier.since) == ("silver", ["lounge"], now)
    nxt = view.tier.next_tier
    assert nxt is not None
    # Gold has no spend threshold: 5,000 - 1,000 = 4,000 points to go.
    assert (nxt.code, nxt.points_missing, nxt.spend_missing) == ("gold", 4_000, None)
    member(engine, world.carrier, "MOBILE", "c1", now=W)
    with transaction(engine) as session:
        untiered = members.member_view(session, world.carrier, "MOBILE", "c1", now)
    assert untiered.tier is None  # MOBILE has no tiers


def test_manual_placement_versions_and_errors(engine: Engine) -> None:
    world = _world(engine)
    member(engine, world.bank_b, "BANKB", "m1", now=W)
    now = W + timedelta(days=1)
    with transaction(engine) as session:
        placed = tiering.place_member(
            session, world.bank_b, "BANKB", "m1", MemberTierSet(tier="gold"), now
        )
    assert (placed.code, placed.qualifies_for) == ("gold", "standard")
    # An accrual never moves a member down, even one placed above what it qualifies for.
    accrue(engine, world.bank_b, "BANKB", "m1", 10, now=now)
    assert _held(engine, "m1") == "gold"
    assert _history(engine, world) == [("m1", "standard", "gold", "manual", 0, 0)]
    with transaction(engine) as session:
        changed = tiering.change_tier(
            session,
            world.bank_b,
            "BANKB",
            "silver",
            TierChangeSet(multiplier=Decimal("1.25"), qualify_spend=None),
            now,
        )
        versions = tiering.tier_versions(session, world.bank_b, "BANKB", "silver")
    assert (changed.version, changed.multiplier, changed.qualify_spend) == (
        2,
        Decimal("1.25"),
        None,
    )
    assert [(v.version, v.multiplier, v.qualify_spend) for v in versions] == [
        (1, Decimal("1.5"), 50_000),
        (2, Decimal("1.25"), None),
    ]
    with pytest.raises(tiering.TierExists), transaction(engine) as session:
        tiering.create_tier(
            session, world.bank_b, "BANKB", TierCreate(code="x", name="X", rank=1), now
        )
    with pytest.raises(tiering.BaseTierMissing), transaction(engine) as session:
        tiering.create_tier(
            session, world.carrier, "MOBILE", TierCreate(code="vip", name="VIP", rank=1), now
        )
    with pytest.raises(tiering.TierInvalid), transaction(engine) as session:
        tiering.create_tier(
            session,
            world.carrier,
            "MOBILE",
            TierCreate(code="base", name="Base", rank=0, qualify_points=5),
            now,
        )


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement sent: on PostgreSQL at the driver (the hot path's prepared statements
    bypass SQLAlchemy), on SQLite through SQLAlchemy's cursor events."""
    seen: list[str] = []
    if engine.dialect.name == "postgresql":
        execute = psycopg.Cursor.execute

        def counted(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(query))
            return execute(cursor, query, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(psycopg.Cursor, "execute", counted)
            yield seen
        return

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_an_untiered_program_pays_no_statement_and_a_tiered_one_one(engine: Engine) -> None:
    world = _world(engine)
    member(engine, world.carrier, "MOBILE", "c1", now=W)
    member(engine, world.bank_b, "BANKB", "m1", now=W)
    kept = TIERED.seconds
    TIERED.seconds = 3600.0  # the copy must not age out between the accruals of a slow run
    try:
        accrue(engine, world.bank_b, "BANKB", "m1", 1, now=W)  # the process copy is read here
        with _statements(engine) as seen:
            accrue(engine, world.carrier, "MOBILE", "c1", 5, now=W)
        assert not [s for s in seen if "member_tiers" in s or "program_tiers" in s]
        with _statements(engine) as seen:
            accrue(engine, world.bank_b, "BANKB", "m1", 5, now=W)
    finally:
        TIERED.seconds = kept
    assert len([s for s in seen if "member_tiers" in s or "program_tiers" in s]) == 1


def test_concurrent_accruals_upgrade_a_member_once(pg_engine: Engine) -> None:
    world = build_world(pg_engine, now=W)
    _tiers(pg_engine, world)
    member(pg_engine, world.bank_b, "BANKB", "m1", now=W)
    accrue(pg_engine, world.bank_b, "BANKB", "m1", 990, now=W)
    barrier = threading.Barrier(6)
    failures: list[BaseException] = []

    def one() -> None:
        barrier.wait()
        try:
            accrue(pg_engine, world.bank_b, "BANKB", "m1", 10, now=W + timedelta(minutes=1))
        except BaseException as error:  # the assertion below shows it
            failures.append(error)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    # Every one of the six reaches 1,000 or more once it commits: one move, from standard.
    assert _held(pg_engine, "m1") == "silver"
    moves = _history(pg_engine, world)
    assert [(m[1], m[2], m[3]) for m in moves] == [("standard", "silver", "upgrade")]
    assert 1_000 <= moves[0][4] <= 1_050
