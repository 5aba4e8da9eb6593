"""The database itself keeps the journal balanced and append-only; `ledger check` finds tampering."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.kinds import EntryKind
from clearing.core.ledger import EntryDraft, Ledger, LedgerImbalance, Leg
from tests.factories import T0, accrue, authorise, build_world, member

# The ledger's rules hold whichever engine applies a posting on PostgreSQL.
pytestmark = pytest.mark.ledger_engines


def forge_unbalanced_entry(engine: Engine, org: uuid.UUID) -> None:
    """Write an entry with one posting, past the application, straight into the tables."""
    entry = uuid.uuid4()
    with transaction(engine) as session:
        account = session.execute(
            text("SELECT id FROM accounts WHERE kind = 'member'")
        ).scalar_one()
        session.execute(
            text(
                "INSERT INTO journal_entries (id, kind, org_id, booked_at, memo)"
                " VALUES (:id, 'forged', :org, now(), '{}')"
            ),
            {"id": entry, "org": org},
        )
        session.execute(
            text(
                "INSERT INTO postings (entry_id, leg, account_id, asset, amount)"
                " VALUES (:id, 0, :account, 'points:BANKA', 1000)"
            ),
            {"id": entry, "account": account},
        )


def post_unbalanced_draft(engine: Engine, org: uuid.UUID) -> None:
    """Ask the ledger to post a debit with no matching credit."""
    with transaction(engine) as session:
        account = session.execute(select_member_account).scalar_one()
        Ledger(session).post(
            EntryDraft(EntryKind.ACCRUAL, org, T0, [Leg(uuid.UUID(str(account)), -5)])
        )


select_member_account = text("SELECT account_id FROM members")


def test_unbalanced_postings_are_refused_at_commit(pg_engine: Engine) -> None:
    w = build_world(pg_engine)
    member(pg_engine, w.bank_a, "BANKA", "alice")
    accrue(pg_engine, w.bank_a, "BANKA", "alice", 10)
    with pytest.raises(DBAPIError, match="does not sum to zero"):
        forge_unbalanced_entry(pg_engine, w.bank_a.org_id)
    with transaction(pg_engine) as session:
        forged = session.execute(text("SELECT count(*) FROM journal_entries WHERE kind = 'forged'"))
        assert forged.scalar_one() == 0


def test_journal_is_append_only(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 10)
    for statement in ("UPDATE postings SET amount = amount * 2", "DELETE FROM journal_entries"):
        with pytest.raises(DBAPIError, match="append-only"), transaction(engine) as session:
            session.execute(text(statement))


def test_ledger_refuses_unbalanced_drafts_before_writing(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 10)
    with pytest.raises(LedgerImbalance):
        post_unbalanced_draft(engine, w.bank_a.org_id)
    with transaction(engine) as session:
        assert check_ledger(session) == []


def test_ledger_check_reports_a_tampered_balance(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 10)
    with transaction(engine) as session:
        assert check_ledger(session) == []
        session.execute(text("UPDATE balances SET balance = balance + 1 WHERE floor_zero"))
        errors = check_ledger(session)
    assert any("balance 11 but postings sum to 10" in e for e in errors)
    assert any("lots hold 10" in e for e in errors)


def test_ledger_check_reports_tampered_holds_lots_and_positions(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 1000)
    authorise(engine, w.shop, "BANKA", "alice", 100)  # an open hold on alice's points
    with transaction(engine) as session:
        assert check_ledger(session) == []
        session.execute(text("UPDATE holds SET status = 'voided'"))
        session.execute(text("UPDATE lots SET remaining = remaining - 1"))
        session.execute(
            text(
                "UPDATE balances SET balance = balance + 7 WHERE account_id IN"
                " (SELECT id FROM accounts WHERE kind = 'position')"
            )
        )
        errors = check_ledger(session)
    assert any("open holds sum to 0" in e for e in errors), errors
    assert any("but lots hold" in e for e in errors), errors
    assert any("points and movements give" in e for e in errors), errors
    assert any("obligations net to" in e for e in errors), errors
    assert any("not zero" in e for e in errors), errors
