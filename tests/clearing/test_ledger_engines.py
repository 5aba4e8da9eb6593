"""On PostgreSQL a posting goes through `ledger_post` (one round trip); on SQLite, and for
give-backs, through the Python engine. Both must leave exactly the same ledger behind."""

from __future__ import annotations

import uuid
from datetime import timedelta
from importlib import resources
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from clearing.app.migrate import alembic_config
from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import InsufficientPoints
from clearing.core.kinds import EntryKind, LotSource
from clearing.core.ledger import (
    LEDGER_POST_FUNCTION,
    MEMBER,
    REDEEMED,
    EntryDraft,
    Ledger,
    LedgerImbalance,
    Leg,
    LotSpec,
    engines,
    points_asset,
)
from clearing.core.sql import function_body
from issuers import organisations
from issuers.schemas import OrganisationCreate
from tests.factories import T0

ASSET = points_asset("ENGINE")
# Lots earned on these days after T0, expiring a year later; one never expires.
EARNINGS = [(40, 300), (5, 200), (20, 500), (None, 700), (5, 100)]


def _org(session: Session) -> tuple[uuid.UUID, str]:
    org = organisations.create_organisation(
        session, OrganisationCreate(kind="issuer", name="Engine bank", currency="CNY"), T0
    )
    return org.id, org.name


def _world(engine: Engine) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """An issuer, its redeemed account and two member accounts with the same lots."""
    with transaction(engine) as session:
        org = organisations.create_organisation(
            session, OrganisationCreate(kind="issuer", name="Engine bank", currency="CNY"), T0
        ).id
        ledger = Ledger(session)
        program = uuid.uuid4()
        redeemed = ledger.open_account(ASSET, REDEEMED, org, program, T0)
        members = [ledger.open_account(ASSET, MEMBER, org, uuid.uuid4(), T0) for _ in range(2)]
        for account in members:
            for days, points in EARNINGS:
                expires = None if days is None else T0 + timedelta(days=days + 365)
                ledger.post(
                    EntryDraft(
                        kind=EntryKind.ACCRUAL,
                        org_id=org,
                        booked_at=T0,
                        legs=[
                            Leg(redeemed, -points),
                            Leg(account, points, lot=LotSpec(LotSource.ACCRUAL, expires, org)),
                        ],
                    )
                )
    return org, redeemed, members


def _spend(
    session: Session,
    org: uuid.UUID,
    redeemed: uuid.UUID,
    account: uuid.UUID,
    points: int,
    on_server: bool,
) -> None:
    Ledger(session, on_server=on_server).post(
        EntryDraft(
            kind=EntryKind.CHECKOUT_CAPTURE,
            org_id=org,
            booked_at=T0 + timedelta(days=1),
            legs=[Leg(account, -points), Leg(redeemed, points)],
        )
    )


def _state(session: Session, account: uuid.UUID) -> dict[str, Any]:
    lots = session.execute(
        text(
            "SELECT points, remaining, expires_at FROM lots WHERE account_id = :a"
            " ORDER BY expires_at NULLS LAST, points"
        ),
        {"a": account},
    ).all()
    moved = session.execute(
        text(
            "SELECT l.points, m.points FROM lot_movements m JOIN lots l ON l.id = m.lot_id"
            " WHERE l.account_id = :a ORDER BY l.expires_at NULLS LAST, l.points"
        ),
        {"a": account},
    ).all()
    balance = session.execute(
        text("SELECT balance, held FROM balances WHERE account_id = :a"), {"a": account}
    ).one()
    return {
        "lots": [tuple(r) for r in lots],
        "moved": [tuple(r) for r in moved],
        "balance": tuple(balance),
    }


def test_server_and_python_engines_take_the_same_lots(pg_engine: Engine) -> None:
    org, redeemed, (on_server, in_python) = _world(pg_engine)
    for points in (250, 1, 449, 600):
        with transaction(pg_engine) as session:
            _spend(session, org, redeemed, on_server, points, on_server=True)
            _spend(session, org, redeemed, in_python, points, on_server=False)
    with transaction(pg_engine) as session:
        server_state, python_state = _state(session, on_server), _state(session, in_python)
        assert server_state == python_state
        # Earliest-expiring first: the lots that expire are used up (1,100 points), then 200 of
        # the lot that never expires.
        assert [remaining for _, remaining, _ in server_state["lots"]] == [0, 0, 0, 0, 500]
        assert server_state["balance"] == (1800 - 1300, 0)
        assert check_ledger(session) == []


@pytest.mark.parametrize("on_server", [True, False])
def test_both_engines_refuse_a_member_below_zero_and_write_nothing(
    pg_engine: Engine, on_server: bool
) -> None:
    org, redeemed, (account, _) = _world(pg_engine)
    with pytest.raises(InsufficientPoints), transaction(pg_engine) as session:
        _spend(session, org, redeemed, account, 1801, on_server=on_server)
    with transaction(pg_engine) as session:
        assert _state(session, account)["balance"] == (1800, 0)
        assert session.execute(text("SELECT count(*) FROM lot_movements")).scalar_one() == 0
        assert check_ledger(session) == []


def test_the_installed_function_is_the_file_the_code_calls(pg_engine: Engine) -> None:
    with transaction(pg_engine) as session:
        installed = session.execute(
            text(
                "SELECT p.proname, p.prosrc, pg_get_function_identity_arguments(p.oid),"
                " p.prorettype::regtype::text, l.lanname"
                " FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
                " WHERE p.proname LIKE 'ledger\\_post%'"
            )
        ).all()
    # Only the version the code calls is installed, and its body is the file's, byte for byte.
    assert [tuple(row) for row in installed] == [
        (LEDGER_POST_FUNCTION, function_body(LEDGER_POST_FUNCTION), "p jsonb", "void", "plpgsql")
    ]
    # The code calls that version, and it is the newest file.
    assert f"SELECT {LEDGER_POST_FUNCTION}(" in str(engines._LEDGER_POST.statement)
    versions = [
        name
        for name in (p.name for p in resources.files("clearing.core.sql").iterdir())
        if name.startswith("ledger_post_v")
    ]
    assert f"{LEDGER_POST_FUNCTION}.sql" == max(versions, key=lambda n: int(n[13:-4]))


def test_migration_0008_goes_back_to_the_first_version_and_forth(pg_engine: Engine) -> None:
    def installed() -> dict[str, str]:
        with transaction(pg_engine) as session:
            rows = session.execute(
                text("SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'ledger\\_post%'")
            )
            return {name: source for name, source in rows}

    config = alembic_config(pg_engine.url.render_as_string(hide_password=False))
    command.downgrade(config, "0007")
    assert installed() == {"ledger_post": function_body("ledger_post_v1")}
    command.upgrade(config, "head")
    assert installed() == {LEDGER_POST_FUNCTION: function_body(LEDGER_POST_FUNCTION)}


@pytest.mark.parametrize("on_server", [True, False], ids=["server", "python"])
@pytest.mark.parametrize("accounts", [2, 5], ids=["few-moves", "many-moves"])
def test_both_engines_refuse_a_missing_system_balance_row(
    pg_engine: Engine, on_server: bool, accounts: int
) -> None:
    with transaction(pg_engine) as session:
        org, _ = _org(session)
        ledger = Ledger(session, balance_slots=1)
        ids = [ledger.open_account(ASSET, REDEEMED, org, uuid.uuid4(), T0) for _ in range(accounts)]
        session.execute(text("DELETE FROM balances WHERE account_id = :a"), {"a": ids[-1]})
    legs = [Leg(a, 5) for a in ids[1:]] + [Leg(ids[0], -5 * (accounts - 1))]
    with (
        pytest.raises(LedgerImbalance, match="balance row is missing"),
        transaction(pg_engine) as session,
    ):
        Ledger(session, on_server=on_server).post(EntryDraft(EntryKind.ACCRUAL, org, T0, legs))
    with transaction(pg_engine) as session:
        assert session.execute(text("SELECT count(*) FROM journal_entries")).scalar_one() == 0
        assert session.execute(text("SELECT sum(balance) FROM balances")).scalar_one() == 0


@pytest.mark.parametrize("on_server", [True, False], ids=["server", "python"])
def test_both_engines_refuse_a_missing_member_balance_row(
    pg_engine: Engine, on_server: bool
) -> None:
    with transaction(pg_engine) as session:
        org, _ = _org(session)
        ledger = Ledger(session)
        issued = ledger.open_account(ASSET, REDEEMED, org, uuid.uuid4(), T0)
        account = ledger.open_account(ASSET, MEMBER, org, uuid.uuid4(), T0)
        session.execute(text("DELETE FROM balances WHERE account_id = :a"), {"a": account})
    draft = EntryDraft(
        EntryKind.ACCRUAL,
        org,
        T0,
        [Leg(issued, -7), Leg(account, 7, lot=LotSpec(LotSource.ACCRUAL, None, org))],
    )
    with (
        pytest.raises(LedgerImbalance, match="balance row is missing"),
        transaction(pg_engine) as session,
    ):
        Ledger(session, on_server=on_server).post(draft)
    with transaction(pg_engine) as session:
        assert session.execute(text("SELECT count(*) FROM lots")).scalar_one() == 0


@pytest.mark.parametrize("accounts", [2, 4], ids=["few-moves", "many-moves"])
def test_both_engines_answer_a_member_below_zero_alike(pg_engine: Engine, accounts: int) -> None:
    org, redeemed, (account, _) = _world(pg_engine)
    with transaction(pg_engine) as session:
        ledger = Ledger(session)
        extra = [ledger.open_account(ASSET, REDEEMED, org, uuid.uuid4(), T0) for _ in range(2)]
    legs = [Leg(account, -1801), Leg(redeemed, 1801)]
    if accounts == 4:
        legs += [Leg(extra[0], -1), Leg(extra[1], 1)]
    problems = []
    for on_server in (True, False):
        with pytest.raises(InsufficientPoints) as refused, transaction(pg_engine) as session:
            Ledger(session, on_server=on_server).post(
                EntryDraft(EntryKind.CHECKOUT_CAPTURE, org, T0, legs)
            )
        problems.append(refused.value.problem())
    assert problems[0] == problems[1]
    assert problems[0]["needed"] == 1801
