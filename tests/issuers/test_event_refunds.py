"""Refunds of purchase events: the event's points (campaign bonus included) come back in
proportion to the spend refunded, parts adding up to exactly the whole."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing.core.check import check_ledger
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.ids import new_id
from clearing.web.context import Caller
from issuers import debts, refunds
from issuers.members import member_of
from issuers.models import ProgramEvent
from issuers.programs import program_by_code
from issuers.schemas import EventRefundCreate, EventRefundOut, ReturnPolicySet
from tests.factories import (
    T0,
    World,
    accrue,
    agree_all,
    authorise,
    balance,
    build_world,
    capture,
    key,
    member,
)


def purchase(
    engine: Engine,
    w: World,
    external_id: str,
    spend: int,
    points: int,
    funder: Caller | None = None,
) -> uuid.UUID:
    """A purchase event of `spend` fen that earned `points` (base and campaign bonus) in one
    accrual made through the normal accrual service."""
    earned = accrue(engine, funder or w.bank_a, "BANKA", external_id, points)
    with transaction(engine) as session:
        program = program_by_code(session, "BANKA")
        event = ProgramEvent(
            id=new_id(),
            program_id=program.id,
            member_id=member_of(session, program, external_id).id,
            kind="purchase",
            reference=None,
            posted_by=(funder or w.bank_a).org_id,
            occurred_at=T0,
            spend=spend,
            currency="CNY",
            points=points,
            accrual_id=earned.id,
            explanation=[{"rule": "base", "points": points - 50}, {"campaign": "x", "points": 50}],
            refunded_spend=0,
            created_at=T0,
        )
        session.add(event)
        return event.id


def refund(
    engine: Engine, caller: Caller, event_id: uuid.UUID, spend: int, idem: str | None = None
) -> EventRefundOut:
    with transaction(engine) as session:
        out, _ = refunds.refund_event(
            session,
            caller,
            "BANKA",
            event_id,
            EventRefundCreate(spend=spend),
            T0 + timedelta(minutes=5),
            idem or key(),
        )
        return out


def assert_clean(engine: Engine) -> None:
    with transaction(engine) as session:
        assert check_ledger(session) == []


def test_partial_refunds_take_back_cumulative_shares(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    event = purchase(engine, w, "alice", spend=10_000, points=150)
    # floor(150 x 3333 / 10000) = 49; floor(150 x 6666 / 10000) = 99 (50 more); then 150 (51).
    parts = [refund(engine, w.bank_a, event, n) for n in (3333, 3333, 3334)]
    assert [p.points for p in parts] == [49, 50, 51]
    assert [p.refunded_spend_total for p in parts] == [3333, 6666, 10_000]
    assert balance(engine, w.bank_a, "BANKA", "alice") == (0, 0)
    with pytest.raises(ClearingError) as err:
        refund(engine, w.bank_a, event, 1)
    assert err.value.code == "refund_exceeds_spend"
    assert_clean(engine)


def test_a_small_refund_may_take_back_nothing_yet(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    event = purchase(engine, w, "alice", spend=10_000, points=150)
    first = refund(engine, w.bank_a, event, 66)  # floor(150 x 66 / 10000) = 0
    assert (first.points, first.entry_id) == (0, None)
    second = refund(engine, w.bank_a, event, 1)  # floor(150 x 67 / 10000) = 1
    assert second.points == 1
    assert balance(engine, w.bank_a, "BANKA", "alice") == (149, 149)
    assert_clean(engine)


def test_refunds_are_idempotent_and_refuse_more_than_the_spend(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    event = purchase(engine, w, "alice", spend=1000, points=100)
    idem = key()
    one = refund(engine, w.bank_a, event, 500, idem)
    again = refund(engine, w.bank_a, event, 500, idem)
    assert again == one
    assert balance(engine, w.bank_a, "BANKA", "alice") == (50, 50)
    with pytest.raises(ClearingError) as err:
        refund(engine, w.bank_a, event, 501)
    assert err.value.code == "refund_exceeds_spend"
    assert err.value.problem()["refundable"] == 500
    with pytest.raises(ClearingError) as err:
        refund(engine, w.bank_b, event, 1)
    assert err.value.code == "not_found"
    assert balance(engine, w.bank_a, "BANKA", "alice") == (50, 50)


def test_a_refund_of_spent_points_goes_through_the_debt_path(engine: Engine) -> None:
    w = build_world(engine)
    agree_all(engine, w)
    member(engine, w.bank_a, "BANKA", "alice")
    with transaction(engine) as session:
        debts.set_return_policy(session, w.bank_a, "BANKA", ReturnPolicySet(spent_reversal="debt"))
    event = purchase(engine, w, "alice", spend=20_000, points=300, funder=w.shop)
    held = authorise(engine, w.shop, "BANKA", "alice", 100, now=T0 + timedelta(minutes=1))
    capture(engine, w.shop, held.id, now=T0 + timedelta(minutes=1))  # 100 fen = 200 points
    out = refund(engine, w.shop, event, 20_000)
    # 300 back: 100 left are taken, 200 owed; the shop gets its 150 fen (300 x 0.005 CNY) back.
    assert (out.points, out.points_taken, out.debt_recorded, out.written_off) == (300, 100, 200, 0)
    assert out.amount_returned == 150
    assert balance(engine, w.bank_a, "BANKA", "alice") == (0, 0)
    assert_clean(engine)


def test_a_behaviour_event_has_nothing_to_refund(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    event = purchase(engine, w, "alice", spend=100, points=60)
    with transaction(engine) as session:
        found = session.get(ProgramEvent, event)
        assert found is not None
        found.kind, found.spend = "check_in", None
    with pytest.raises(ClearingError) as err:
        refund(engine, w.bank_a, event, 1)
    assert err.value.code == "event_not_refundable"


@st.composite
def spend_and_parts(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A purchase's spend and points, and a split of the spend into partial refunds."""
    spend = draw(st.integers(1, 10**7))
    points = draw(st.integers(51, 10**6))
    cuts = (
        sorted(draw(st.lists(st.integers(1, spend - 1), max_size=6, unique=True)))
        if spend > 1
        else []
    )
    bounds = [0, *cuts, spend]
    return spend, points, [b - a for a, b in itertools.pairwise(bounds)]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=spend_and_parts())
def test_any_split_of_refunds_takes_back_exactly_the_events_points(
    engine: Engine, case: tuple[int, int, list[int]]
) -> None:
    spend, points, parts = case
    w = _world(engine)
    alice = f"m{uuid.uuid4().hex[:12]}"
    member(engine, w.bank_a, "BANKA", alice)
    event = purchase(engine, w, alice, spend=spend, points=points)
    back = [refund(engine, w.bank_a, event, n).points for n in parts]
    assert all(b >= 0 for b in back)
    assert sum(back) == points
    assert balance(engine, w.bank_a, "BANKA", alice) == (0, 0)


_WORLDS: dict[str, World] = {}


def _world(engine: Engine) -> World:
    """One world per database across the property's examples (building one is slow)."""
    url = str(engine.url)
    if url not in _WORLDS:
        _WORLDS[url] = build_world(engine)
    return _WORLDS[url]
