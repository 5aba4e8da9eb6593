"""On PostgreSQL a posting goes through `ledger_post` (one round trip); on SQLite, and for
give-backs, through the Python engine. Both must leave exactly the same ledger behind."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from clearing.check import check_ledger
from clearing.db import transaction
from clearing.errors import InsufficientPoints
from clearing.ledger import (
    MEMBER,
    REDEEMED,
    EntryDraft,
    Ledger,
    Leg,
    LotSpec,
    points_asset,
)
from issuers import service as issuers
from issuers.schemas import OrganisationCreate
from tests.factories import T0

ASSET = points_asset("ENGINE")
# Lots earned on these days after T0, expiring a year later; one never expires.
EARNINGS = [(40, 300), (5, 200), (20, 500), (None, 700), (5, 100)]


def _world(engine: Engine) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """An issuer, its redeemed account and two member accounts with the same lots."""
    with transaction(engine) as session:
        org = issuers.create_organisation(
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
                        kind="accrual",
                        org_id=org,
                        booked_at=T0,
                        legs=[
                            Leg(redeemed, -points),
                            Leg(account, points, lot=LotSpec("accrual", expires, org)),
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
            kind="checkout_capture",
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
