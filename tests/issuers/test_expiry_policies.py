"""Expiry policies (rolling months, year-end clear-down in the issuer's zone), points expiring
soon, and the daily expiry notices: arithmetic worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.db import transaction
from clearing.core.errors import InvalidInput
from clearing.core.models import Lot
from clearing.web.context import Caller
from issuers import expiring, members, organisations, programs
from issuers.expiry import lot_expiry
from issuers.models import ExpiryNotice
from issuers.schemas import (
    OrganisationCreate,
    ProgramCreate,
    ProgramExpirySet,
)
from issuers.tasks import run_notices
from tests.factories import T0, accrue, build_world, convert, link, member


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# the rule, by hand ---------------------------------------------------------------------------


def test_rolling_months_keep_the_day_and_clamp_to_the_months_end() -> None:
    assert lot_expiry("rolling", 12, "Asia/Shanghai", utc(2026, 3, 15, 9, 30)) == utc(
        2027, 3, 15, 9, 30
    )
    # 31 January + 1 month: 28 February (2027 is no leap year); + 13 months in 2027: 29 Feb 2028.
    assert lot_expiry("rolling", 1, "UTC", utc(2027, 1, 31, 8)) == utc(2027, 2, 28, 8)
    assert lot_expiry("rolling", 13, "UTC", utc(2027, 1, 31, 8)) == utc(2028, 2, 29, 8)
    assert lot_expiry("rolling", None, "UTC", utc(2027, 1, 31, 8)) is None


def test_year_end_expires_at_the_end_of_the_next_year_in_the_issuers_zone() -> None:
    # Shanghai (UTC+8): 2026-06-01 local is year 2026; it expires at 2028-01-01 00:00 local,
    # which is 2027-12-31 16:00 UTC.
    assert lot_expiry("year_end", None, "Asia/Shanghai", utc(2026, 6, 1, 4)) == utc(
        2027, 12, 31, 16
    )
    # 2026-12-31 15:30 UTC is 23:30 on 31 December in Shanghai: still year 2026.
    assert lot_expiry("year_end", None, "Asia/Shanghai", utc(2026, 12, 31, 15, 30)) == utc(
        2027, 12, 31, 16
    )
    # An hour later UTC still says 2026, but Shanghai is in 2027: it expires a year later.
    assert lot_expiry("year_end", None, "Asia/Shanghai", utc(2026, 12, 31, 16, 30)) == utc(
        2028, 12, 31, 16
    )
    # New York (UTC-5 in winter): 31 December 23:30 local is 2027-01-01 04:30 UTC, which UTC
    # counts as 2027; locally it is 2026, so it expires at 2028-01-01 00:00 EST = 05:00 UTC.
    assert lot_expiry("year_end", None, "America/New_York", utc(2027, 1, 1, 4, 30)) == utc(
        2028, 1, 1, 5
    )


def test_year_end_takes_no_months_and_unknown_policies_are_refused(engine: Engine) -> None:
    w = build_world(engine)
    with pytest.raises(InvalidInput, match="rolling policy only"), transaction(engine) as s:
        programs.create_program(
            s,
            w.bank_a,
            ProgramCreate(
                code="YE",
                name="YE",
                point_value=Decimal("0.01"),
                expiry_policy="year_end",
                expiry_months=12,
            ),
            T0,
        )
    with pytest.raises(InvalidInput):
        lot_expiry("someday", None, "UTC", T0)


# through the services ------------------------------------------------------------------------


def _new_york_issuer(engine: Engine) -> Caller:
    with transaction(engine) as session:
        created = organisations.create_organisation(
            session,
            OrganisationCreate(
                kind="issuer", name="NY Bank", currency="USD", zone="America/New_York"
            ),
            T0,
        )
    return Caller(created.id, created.kind)


def test_accruals_and_conversions_take_their_lots_expiry_from_the_policy(engine: Engine) -> None:
    w = build_world(engine)
    ny = _new_york_issuer(engine)
    with transaction(engine) as session:
        out = programs.create_program(
            session,
            ny,
            ProgramCreate(
                code="NYB", name="NYB", point_value=Decimal("0.01"), expiry_policy="year_end"
            ),
            T0,
        )
    assert (out.expiry_policy, out.expiry_months) == ("year_end", None)
    member(engine, ny, "NYB", "ann")
    # 31 December 23:30 in New York (2027-01-01 04:30 UTC): earned in 2026 there.
    earned = accrue(engine, ny, "NYB", "ann", 100, now=utc(2027, 1, 1, 4, 30))
    assert earned.expires_at == utc(2028, 1, 1, 5)
    # BANKB turns to year-end clear-down; points converted into it (Shanghai, 2026-12-31 17:00
    # local) expire at the end of 2027 there: 2027-12-31 16:00 UTC.
    with transaction(engine) as session:
        changed = expiring.set_expiry_policy(
            session, w.bank_b, "BANKB", ProgramExpirySet(expiry_policy="year_end")
        )
    assert changed.expiry_policy == "year_end"
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.bank_b, "BANKB", "bob")
    accrue(engine, w.bank_a, "BANKA", "alice", 5000)
    link(engine, w.bank_b, ("BANKA", "alice"), ("BANKB", "bob"))
    at = utc(2026, 12, 31, 9)
    convert(engine, w.bank_a, ("BANKA", "alice"), ("BANKB", "bob"), 1000, at)
    with engine.connect() as c:
        (expires,) = c.execute(select(Lot.expires_at).where(Lot.source == "conversion")).scalars()
    assert expires is not None
    assert expires.replace(tzinfo=UTC) == utc(2027, 12, 31, 16)
    # BANKA (rolling 12 months) gives the lot of T0 its expiry a year on.
    assert accrue(engine, w.bank_a, "BANKA", "alice", 1).expires_at == T0.replace(year=2027)


V = utc(2027, 3, 1)
"""The day the member view and the notices are read, in the tests below."""


def _expiring_world(engine: Engine) -> Caller:
    """BANKA on rolling 3 months with a 30-day notice window; alice's lots expire 1 day before
    V (100), and 20 (200), 50 (400), 80 (800) and 100 (1,600) days after V."""
    w = build_world(engine)
    with transaction(engine) as session:
        expiring.set_expiry_policy(
            session,
            w.bank_a,
            "BANKA",
            ProgramExpirySet(expiry_policy="rolling", expiry_months=3, expiry_notice_days=30),
        )
    member(engine, w.bank_a, "BANKA", "alice")
    for points, earned in (
        (100, utc(2026, 11, 28)),  # expires 2027-02-28: already due at V
        (200, utc(2026, 12, 21)),  # 2027-03-21: V + 20 days
        (400, utc(2027, 1, 20)),  # 2027-04-20: V + 50 days
        (800, utc(2027, 2, 20)),  # 2027-05-20: V + 80 days
        (1600, utc(2027, 3, 9)),  # 2027-06-09: V + 100 days
    ):
        accrue(engine, w.bank_a, "BANKA", "alice", points, now=earned)
    return w.bank_a


def test_the_member_view_shows_points_expiring_within_30_60_and_90_days(engine: Engine) -> None:
    bank_a = _expiring_world(engine)
    with transaction(engine) as session:
        view = members.member_view(session, bank_a, "BANKA", "alice", V)
        mine = expiring.member_expiring(session, bank_a, "BANKA", "alice", V, 30)
        program = expiring.program_expiring(session, bank_a, "BANKA", V, 60)
    assert view.balance == 3100
    assert view.expiring is not None
    # Each window counts the shorter ones, and the 100 points already due.
    assert view.expiring.within_30_days == 100 + 200
    assert view.expiring.within_60_days == 100 + 200 + 400
    assert view.expiring.within_90_days == 100 + 200 + 400 + 800
    assert [(lot.expires_at, lot.points) for lot in mine.lots] == [
        (utc(2027, 2, 28), 100),
        (utc(2027, 3, 21), 200),
    ]
    assert mine.points == 300
    assert (program.members, program.points) == (1, 700)
    assert [(i.external_id, i.points) for i in program.items] == [("alice", 700)]


def test_the_daily_notices_are_recorded_once_per_member_and_local_day(engine: Engine) -> None:
    bank_a = _expiring_world(engine)
    member(engine, bank_a, "BANKA", "carol")
    # carol's two lots expire on 2027-03-10 in Shanghai (02:00 and 15:00 UTC: 10:00 and 23:00
    # local) and a third at 2027-03-10 17:00 UTC, which is 01:00 on 11 March in Shanghai.
    for points, earned in (
        (10, utc(2026, 12, 10, 2)),
        (20, utc(2026, 12, 10, 15)),
        (40, utc(2026, 12, 10, 17)),
    ):
        accrue(engine, bank_a, "BANKA", "carol", points, now=earned)
    assert run_notices(engine, V) == 3
    assert run_notices(engine, V) == 0  # a second run records nothing new
    with transaction(engine) as session:
        notices = expiring.list_notices(session, bank_a, "BANKA", None, 10)
    found = sorted((n.external_id, n.expires_on, n.points) for n in notices)
    assert found == [
        ("alice", date(2027, 3, 21), 200),  # the 100 already due: no notice, expiry takes them
        ("carol", date(2027, 3, 10), 30),
        ("carol", date(2027, 3, 11), 40),
    ]
    # A day later alice's 2027-03-21 points are still noticed once; nothing new in the window.
    assert run_notices(engine, V + timedelta(days=1)) == 0
    # Twenty days on, the lot of 2027-04-20 enters the window: one more notice.
    assert run_notices(engine, V + timedelta(days=21)) == 1
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(ExpiryNotice)).scalar_one() == 4
