"""The scheduled expiry job: holds past their time-to-live are released, due lots expire."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from clearing.check import check_ledger
from clearing.db import transaction
from clearing.tasks import run_expiry
from tests.factories import T0, accrue, authorise, balance, build_world, member


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
