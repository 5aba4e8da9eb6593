"""Member-to-member transfers by the program's rules: allowed or not, a fee in points to the
program, bounds per transfer, limits through the risk policy; never an overdraw."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.ledger import ISSUED, Ledger, points_asset
from clearing.core.models import Lot
from clearing.core.policy import Declined, bind_policy
from clearing.web.context import Caller
from issuers import statements, transfers
from issuers.members import member_of
from issuers.organisations import platform
from issuers.programs import program_by_code
from issuers.schemas import TransferCreate, TransferOut, TransferRuleSet
from risk.limits import LimitRule, set_rule
from risk.policy import RiskPolicy
from risk.schemas import LimitRuleSet
from tests.factories import T0, accrue, balance, build_world, key, member


def rules(engine: Engine, issuer: Caller, **fields: object) -> None:
    with transaction(engine) as session:
        transfers.set_rules(session, issuer, "BANKA", TransferRuleSet.model_validate(fields), T0)


def send(
    engine: Engine,
    issuer: Caller,
    points: int,
    source: str = "alice",
    target: str = "bob",
    idem: str | None = None,
) -> TransferOut:
    with transaction(engine) as session:
        out, _ = transfers.transfer(
            session,
            issuer,
            "BANKA",
            TransferCreate(from_external_id=source, to_external_id=target, points=points),
            T0 + timedelta(minutes=1),
            idem or key(),
        )
        return out


def issued(engine: Engine) -> int:
    with transaction(engine) as session:
        program = program_by_code(session, "BANKA")
        ledger = Ledger(session)
        return ledger.balance(ledger.account_id(points_asset("BANKA"), ISSUED, program.id))


def world(engine: Engine) -> Caller:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    member(engine, w.bank_a, "BANKA", "bob")
    accrue(engine, w.bank_a, "BANKA", "alice", 1000)
    return w.bank_a


def test_a_transfer_moves_points_and_the_fee_goes_to_the_program(engine: Engine) -> None:
    bank = world(engine)
    rules(engine, bank, allowed=True, fee_points=5, min_points=10, max_points=1000)
    assert issued(engine) == -1000
    out = send(engine, bank, 100)
    assert (out.points, out.fee) == (100, 5)
    # alice pays 100 + 5, bob gets 100, the program's issued account takes the 5 back.
    assert balance(engine, bank, "BANKA", "alice") == (895, 895)
    assert balance(engine, bank, "BANKA", "bob") == (100, 100)
    assert issued(engine) == -995
    with transaction(engine) as session:
        alice = statements.statement(session, bank, "BANKA", "alice", None, 10)
        bob = statements.statement(session, bank, "BANKA", "bob", None, 10)
        assert check_ledger(session) == []
    assert [(ln.kind, ln.points, ln.counterparty, ln.fee) for ln in alice] == [
        ("accrual", 1000, None, 0),
        ("transfer", -105, "bob", 5),
    ]
    assert [(ln.kind, ln.points, ln.counterparty, ln.fee) for ln in bob] == [
        ("transfer", 100, "alice", 0)
    ]
    assert alice[-1].entry_id == bob[0].entry_id == out.entry_id


def test_the_programs_rules_bound_each_transfer(engine: Engine) -> None:
    bank = world(engine)
    with pytest.raises(ClearingError) as err:
        send(engine, bank, 100)
    assert err.value.code == "transfers_not_allowed"
    rules(engine, bank, allowed=True, fee_points=5, min_points=10, max_points=1000)
    for points in (9, 1001):
        with pytest.raises(ClearingError) as err:
            send(engine, bank, points)
        assert err.value.code == "transfer_out_of_bounds"
    send(engine, bank, 10)
    send(engine, bank, 900)  # 1000 - 15 = 985 left; 905 more leaves 80
    with pytest.raises(ClearingError) as err:
        send(engine, bank, 76)  # needs 81
    assert err.value.code == "insufficient_points"
    with pytest.raises(ClearingError) as err:
        send(engine, bank, 10, target="alice", source="alice")
    assert err.value.code == "invalid_input"
    rules(engine, bank, allowed=False)
    with pytest.raises(ClearingError) as err:
        send(engine, bank, 10)
    assert err.value.code == "transfers_not_allowed"
    assert balance(engine, bank, "BANKA", "alice") == (80, 80)
    assert balance(engine, bank, "BANKA", "bob") == (910, 910)


def test_a_transfer_is_idempotent_and_keeps_the_points_expiry(engine: Engine) -> None:
    bank = world(engine)  # alice's 1000 expire at T0 + 12 months
    accrue(engine, bank, "BANKA", "alice", 50, now=T0 + timedelta(days=40))
    rules(engine, bank, allowed=True)
    idem = key()
    first = send(engine, bank, 1020, idem=idem)
    assert send(engine, bank, 1020, idem=idem) == first
    assert balance(engine, bank, "BANKA", "bob") == (1020, 1020)
    with transaction(engine) as session:
        program = program_by_code(session, "BANKA")
        bob = member_of(session, program, "bob")
        lots = session.execute(
            select(Lot.points, Lot.expires_at)
            .where(Lot.account_id == bob.account_id)
            .order_by(Lot.points)
        ).all()
    # 1000 earned at T0 keep their expiry, the next 20 that of the later accrual.
    assert [(n, at and at.replace(tzinfo=None)) for n, at in lots] == [
        (20, (T0 + timedelta(days=40)).replace(year=2027, tzinfo=None)),
        (1000, T0.replace(year=2027, tzinfo=None)),
    ]


def test_transfer_limits_pass_through_the_risk_policy(engine: Engine) -> None:
    bank = world(engine)
    rules(engine, bank, allowed=True)
    bind_policy(engine, RiskPolicy(rules=[LimitRule("UTC")]))
    with transaction(engine) as session:
        operator = Caller(platform(session).id, "platform", "ops-key")
        set_rule(
            session,
            operator,
            LimitRuleSet(kind="member_window", action="transfer", period="day", max_points=300),
            T0,
        )
    send(engine, bank, 200)
    send(engine, bank, 100)
    with pytest.raises(Declined) as refused:
        send(engine, bank, 1)
    assert refused.value.problem()["code"] == "limit_exceeded"
    assert balance(engine, bank, "BANKA", "alice") == (700, 700)


def test_concurrent_transfers_never_overdraw(pg_engine: Engine) -> None:
    bank = world(pg_engine)  # alice has 1000
    rules(pg_engine, bank, allowed=True, fee_points=10)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def one() -> None:
        barrier.wait()
        try:
            send(pg_engine, bank, 240)  # 250 with the fee: four fit in 1000
            outcomes.append("ok")
        except ClearingError as error:
            outcomes.append(error.code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["insufficient_points"] * 4 + ["ok"] * 4
    assert balance(pg_engine, bank, "BANKA", "alice") == (0, 0)
    assert balance(pg_engine, bank, "BANKA", "bob") == (960, 960)
    with transaction(pg_engine) as session:
        assert check_ledger(session) == []
