"""A partner's bulk file of accruals: one transaction, all lines or none, replayable."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import JournalEntry, Obligation
from issuers import accruals, members
from issuers.schemas import AccrualBatchCreate, AccrualCreate
from tests.factories import T0, balance, build_world, key, member


def batch(*lines: tuple[str, int]) -> AccrualBatchCreate:
    return AccrualBatchCreate(
        items=[AccrualCreate(program="BANKA", external_id=m, points=p) for m, p in lines]
    )


def test_bulk_accruals_post_each_line_as_its_own_entry(engine: Engine) -> None:
    w = build_world(engine)
    for m in ("a", "b", "c"):
        member(engine, w.bank_a, "BANKA", m)
    req = batch(("a", 100), ("b", 333), ("a", 7), ("c", 1))
    with transaction(engine) as session:
        out, replayed = accruals.accrue_batch(session, w.shop, req, T0, "file-1")
    assert (out.count, out.points, replayed) == (4, 441, False)
    # each line's value is rounded up on its own: 50 + 166.5->167 + 3.5->4 + 0.5->1
    assert out.amount_owed == 50 + 167 + 4 + 1
    assert balance(engine, w.bank_a, "BANKA", "a") == (107, 107)
    with transaction(engine) as session:
        again, replayed = accruals.accrue_batch(session, w.shop, req, T0, "file-1")
        assert replayed
        assert again == out
        assert session.execute(select(func.count()).select_from(JournalEntry)).scalar_one() == 4
        assert session.execute(select(func.sum(Obligation.amount))).scalar_one() == out.amount_owed
        assert check_ledger(session) == []


def test_one_bad_line_writes_nothing(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "a")
    with transaction(engine) as session:
        members.set_member_status(session, w.bank_a, "BANKA", "a", "active")
    with pytest.raises(ClearingError) as err, transaction(engine) as session:
        accruals.accrue_batch(session, w.bank_a, batch(("a", 100), ("ghost", 5)), T0, key())
    assert err.value.code == "not_found"
    assert balance(engine, w.bank_a, "BANKA", "a") == (0, 0)
    with transaction(engine) as session:
        assert session.execute(select(func.count()).select_from(JournalEntry)).scalar_one() == 0
