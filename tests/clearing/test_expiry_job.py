"""The scheduled expiry job: holds past their time-to-live are released, due lots expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.models import Lot
from clearing.core.tasks import run_expiry
from clearing.core.timeutil import aware
from tests.factories import T0, accrue, authorise, balance, build_world, member, org, program

# The ledger's rules hold whichever engine applies a posting on PostgreSQL.
pytestmark = pytest.mark.ledger_engines


def test_run_expiry_releases_holds_then_expires_the_points(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 300)
    authorise(engine, w.shop, "BANKA", "alice", 100)  # holds 200 points for 15 minutes
    assert run_expiry(engine, T0 + timedelta(minutes=5)) == (0, 0)
    assert balance(engine, w.bank_a, "BANKA", "alice", now=T0 + timedelta(minutes=5)) == (300, 100)
    later = T0.replace(year=T0.year + 1) + timedelta(days=1)
    assert run_expiry(engine, later, limit=1) == (1, 300)
    assert run_expiry(engine, later) == (0, 0)
    assert balance(engine, w.bank_a, "BANKA", "alice", now=later) == (0, 0)
    with transaction(engine) as session:
        assert check_ledger(session) == []


def _at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 9, 30, tzinfo=UTC)


# (months a program's points live, earned, expiry written out by hand): month ends and leap days,
# where "the same day n months later" does not exist and the month's last day is meant.
MONTH_ENDS = [
    (1, _at(2027, 1, 31), _at(2027, 2, 28)),
    (1, _at(2028, 1, 31), _at(2028, 2, 29)),
    (1, _at(2027, 3, 31), _at(2027, 4, 30)),
    (3, _at(2027, 11, 30), _at(2028, 2, 29)),
    (6, _at(2027, 8, 31), _at(2028, 2, 29)),
    (12, _at(2028, 2, 29), _at(2029, 2, 28)),
    (24, _at(2028, 2, 29), _at(2030, 2, 28)),
    (48, _at(2028, 2, 29), _at(2032, 2, 29)),
    (12, _at(2027, 12, 31), _at(2028, 12, 31)),
]


def test_lots_earned_at_month_ends_and_on_leap_days_expire_on_the_right_day(
    engine: Engine,
) -> None:
    bank = org(engine, "issuer", "Month-end bank")
    for months in sorted({months for months, _, _ in MONTH_ENDS}):
        program(engine, bank, f"M{months}", "0.01", expiry_months=months)
    for n, (months, earned, _) in enumerate(MONTH_ENDS):
        member(engine, bank, f"M{months}", f"m{n}")
        accrue(engine, bank, f"M{months}", f"m{n}", 100 + n, now=earned)
    with transaction(engine) as session:
        expiries = session.execute(select(Lot.points, Lot.expires_at)).all()
    assert sorted((points, at and aware(at)) for points, at in expiries) == [
        (100 + n, expires) for n, (_, _, expires) in enumerate(MONTH_ENDS)
    ]
    # Each lot expires at its instant, not a second before.
    for instant in sorted({expires for _, _, expires in MONTH_ENDS}):
        due = [(n, months) for n, (months, _, at) in enumerate(MONTH_ENDS) if at == instant]
        just_before = instant - timedelta(seconds=1)
        assert run_expiry(engine, just_before) == (0, 0)
        for n, months in due:
            assert balance(engine, bank, f"M{months}", f"m{n}", just_before) == (100 + n, 100 + n)
        assert run_expiry(engine, instant) == (0, sum(100 + n for n, _ in due))
        for n, months in due:
            assert balance(engine, bank, f"M{months}", f"m{n}", instant) == (0, 0)
    with transaction(engine) as session:
        assert check_ledger(session) == []
