"""Manual adjustments by maker-checker: one key proposes, a different key of the same issuer
approves (posts) or rejects; every step recorded; a debit never exceeds available points."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import JournalEntry
from clearing.core.policy import Declined, bind_policy
from clearing.web.context import Caller
from issuers import adjustments, statements
from issuers.organisations import platform
from issuers.schemas import AdjustmentCreate, AdjustmentOut
from risk.limits import LimitRule, set_rule
from risk.policy import RiskPolicy
from risk.schemas import LimitRuleSet
from tests.factories import T0, accrue, agree_all, authorise, balance, build_world, key, member


def keyed(caller: Caller, key_id: str) -> Caller:
    return Caller(caller.org_id, caller.kind, key_id)


def propose(
    engine: Engine, caller: Caller, direction: str, points: int, external_id: str = "alice"
) -> AdjustmentOut:
    with transaction(engine) as session:
        out, _ = adjustments.propose(
            session,
            caller,
            "BANKA",
            AdjustmentCreate(
                external_id=external_id,
                direction=direction,
                points=points,
                reason_code="goodwill",
                note="late delivery",
            ),
            T0 + timedelta(minutes=1),
            key(),
        )
        return out


def decide(
    engine: Engine, caller: Caller, adjustment_id: uuid.UUID, approve: bool = True
) -> AdjustmentOut:
    with transaction(engine) as session:
        out, _ = adjustments.decide(
            session, caller, "BANKA", adjustment_id, approve, T0 + timedelta(minutes=2), key()
        )
        return out


def entries(engine: Engine, kind: str) -> int:
    with transaction(engine) as session:
        return int(
            session.execute(
                select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == kind)
            ).scalar_one()
        )


def test_a_credit_needs_a_second_key_and_records_every_step(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    maker, checker = keyed(w.bank_a, "key-maker"), keyed(w.bank_a, "key-checker")
    proposed = propose(engine, maker, "credit", 300)
    assert proposed.status == "proposed"
    assert balance(engine, w.bank_a, "BANKA", "alice") == (0, 0)
    with pytest.raises(ClearingError) as err:
        decide(engine, maker, proposed.id)
    assert err.value.code == "maker_checker"
    approved = decide(engine, checker, proposed.id)
    assert approved.status == "approved"
    assert approved.entry_id is not None
    assert [(s.step, s.key_id, s.org_id) for s in approved.steps] == [
        ("proposed", "key-maker", w.bank_a.org_id),
        ("approved", "key-checker", w.bank_a.org_id),
    ]
    assert [s.at for s in approved.steps] == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
    assert balance(engine, w.bank_a, "BANKA", "alice") == (300, 300)
    with pytest.raises(ClearingError) as err:
        decide(engine, keyed(w.bank_a, "key-third"), proposed.id)
    assert err.value.code == "adjustment_decided"
    assert entries(engine, "adjustment") == 1
    with transaction(engine) as session:
        lines = statements.statement(session, w.bank_a, "BANKA", "alice", None, 10)
        assert [(ln.kind, ln.points) for ln in lines] == [("adjustment", 300)]
        assert check_ledger(session) == []


def test_a_debit_beyond_available_points_is_refused_at_approval(engine: Engine) -> None:
    w = build_world(engine)
    agree_all(engine, w)
    member(engine, w.bank_a, "BANKA", "alice")
    accrue(engine, w.bank_a, "BANKA", "alice", 500)
    authorise(engine, w.shop, "BANKA", "alice", 100)  # 200 held: 300 available
    maker, checker = keyed(w.bank_a, "k1"), keyed(w.bank_a, "k2")
    too_much = propose(engine, maker, "debit", 301)
    with pytest.raises(ClearingError) as err:
        decide(engine, checker, too_much.id)
    assert err.value.code == "insufficient_points"
    assert err.value.problem()["available"] == 300
    # Refused: nothing changed, the proposal waits; it can be rejected instead.
    rejected = decide(engine, checker, too_much.id, approve=False)
    assert (rejected.status, rejected.entry_id) == ("rejected", None)
    exact = propose(engine, maker, "debit", 300)
    assert decide(engine, checker, exact.id).status == "approved"
    assert balance(engine, w.bank_a, "BANKA", "alice") == (200, 0)
    with transaction(engine) as session:
        listed = adjustments.list_adjustments(session, checker, "BANKA", None, 10)
        assert sorted((a.points, a.status) for a in listed) == [
            (300, "approved"),
            (301, "rejected"),
        ]
        only = adjustments.list_adjustments(session, checker, "BANKA", "rejected", 10)
        assert [a.points for a in only] == [301]
        assert check_ledger(session) == []


def test_another_issuer_and_keyless_callers_cannot_act(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    proposed = propose(engine, keyed(w.bank_a, "k1"), "credit", 10)
    with pytest.raises(ClearingError) as err:
        decide(engine, keyed(w.bank_b, "k2"), proposed.id)
    assert err.value.code == "not_found"
    with pytest.raises(ClearingError) as err:
        decide(engine, w.bank_a, proposed.id)  # no key
    assert err.value.code == "key_required"
    with pytest.raises(ClearingError) as err:
        propose(engine, keyed(w.bank_a, "k1"), "credit", 10, external_id="nobody")
    assert err.value.code == "not_found"


def test_approval_is_screened_by_the_risk_policy(engine: Engine) -> None:
    w = build_world(engine)
    bind_policy(engine, RiskPolicy(rules=[LimitRule("UTC")]))
    member(engine, w.bank_a, "BANKA", "alice")
    with transaction(engine) as session:
        operator = Caller(platform(session).id, "platform", "ops-key")
        set_rule(
            session,
            operator,
            LimitRuleSet(kind="single_operation", action="adjustment", max_points=1000),
            T0,
        )
    big = propose(engine, keyed(w.bank_a, "k1"), "credit", 1001)
    with pytest.raises(Declined):
        decide(engine, keyed(w.bank_a, "k2"), big.id)
    ok = propose(engine, keyed(w.bank_a, "k1"), "credit", 1000)
    decide(engine, keyed(w.bank_a, "k2"), ok.id)
    assert balance(engine, w.bank_a, "BANKA", "alice") == (1000, 1000)


def test_two_concurrent_approvals_post_once(pg_engine: Engine) -> None:
    w = build_world(pg_engine)
    member(pg_engine, w.bank_a, "BANKA", "alice")
    proposed = propose(pg_engine, keyed(w.bank_a, "k1"), "credit", 250)
    barrier = threading.Barrier(4)
    outcomes: list[Any] = []

    def one(n: int) -> None:
        barrier.wait()
        try:
            outcomes.append(decide(pg_engine, keyed(w.bank_a, f"checker-{n}"), proposed.id).status)
        except ClearingError as error:
            outcomes.append(error.code)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["adjustment_decided"] * 3 + ["approved"]
    assert balance(pg_engine, w.bank_a, "BANKA", "alice") == (250, 250)
    assert entries(pg_engine, "adjustment") == 1
