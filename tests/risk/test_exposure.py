"""Settlement risk: net debit caps over the open window, headroom, payments and the overdue
restriction. Service tests bind a policy of the exposure rule alone."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import Engine, func, select, text

from clearing.app.factory import create_app
from clearing.app.scheduler import declared_jobs
from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.models import JournalEntry, Obligation
from clearing.core.policy import Declined, bind_policy
from clearing.core.timeutil import business_date_of
from clearing.sdk.client import ApiError, PartnerClient
from clearing.web.context import Caller
from risk import exposure
from risk.exposure import ExposureRule, count, count_portable
from risk.models import ExposurePosition, RiskDecision
from risk.policy import RiskPolicy
from risk.schemas import ExposureCapSet, SettlementPaymentCreate
from risk.tasks import run_overdue
from settlement.service import run_batch
from tests.api.api_support import BASE, Party, bootstrap_operator, make_settings, onboard
from tests.factories import T0, World, accrue, build_world, member

ZONE, CUTOFF = "Asia/Shanghai", "00:00"
DAY = date(2026, 11, 20)
"""T0 (01:00 UTC) is 09:00 in Shanghai: business day 2026-11-20."""
FEN_PER_200_POINTS = 100
"""BANKA's points are worth 0.005 CNY: 200 points a merchant funds owe 100 fen."""


def bind_exposure(engine: Engine) -> ExposureRule:
    rule = ExposureRule(ZONE, CUTOFF)
    bind_policy(engine, RiskPolicy(rules=[rule]))
    return rule


def set_cap(engine: Engine, world: World, party: Caller, **fields: Any) -> int | None:
    with transaction(engine) as session:
        out = exposure.set_cap(
            session,
            Caller(world.platform.org_id, "platform", "operator-key"),
            ExposureCapSet(org_id=party.org_id, currency="CNY", **fields),
            T0,
        )
    return out.cap


def fund(engine: Engine, world: World, fen: int, now: datetime = T0, who: str = "alice") -> None:
    """The shop funds an accrual into BANKA worth `fen` (it comes to owe Bank A that much)."""
    accrue(engine, world.shop, "BANKA", who, fen * 2, now)


def open_debit(engine: Engine, party: Caller) -> int:
    with transaction(engine) as session:
        return exposure.open_net_debits(session, party.org_id).get("CNY", 0)


def headroom(engine: Engine, party: Caller) -> int | None:
    with transaction(engine) as session:
        lines = exposure.exposure(session, party.org_id, "CNY").currencies
    return lines[0].headroom


@pytest.fixture
def world(engine: Engine) -> World:
    bind_exposure(engine)
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "alice")
    return w


# business days: the rule keeps the last window it found --------------------------------


def test_the_rule_keeps_its_window_across_a_dst_edge() -> None:
    rule = ExposureRule("Europe/London", "01:30")
    # 2026-10-25: clocks go back at 02:00 BST; the day's cut-off 01:30 happens twice.
    instants = [
        datetime(2026, 10, 24, 22, 0, tzinfo=UTC) + timedelta(minutes=7 * i) for i in range(99)
    ]
    for instant in instants:
        assert rule.business_date(instant) == business_date_of(instant, "Europe/London", "01:30")


# caps ------------------------------------------------------------------------------------


def test_a_cap_allows_up_to_its_exact_boundary_and_declines_beyond(
    engine: Engine, world: World
) -> None:
    assert set_cap(engine, world, world.shop, limit=1000) == 1000
    fund(engine, world, 600)
    fund(engine, world, 400)  # exactly the cap
    assert open_debit(engine, world.shop) == 1000
    assert headroom(engine, world.shop) == 0
    with pytest.raises(Declined) as caught:
        fund(engine, world, 1)
    problem = caught.value.problem()
    assert problem["status"] == 409
    assert problem["code"] == "exposure_cap_exceeded"
    assert problem["rule"] == f"exposure_cap:{world.shop.org_id}:CNY"
    assert problem["rule_version"] == 1
    assert (problem["headroom"], problem["cap"], problem["open_net_debit"]) == (0, 1000, 1000)
    assert problem["party"] == str(world.shop.org_id)


def test_a_decline_writes_nothing_but_its_decision(engine: Engine, world: World) -> None:
    set_cap(engine, world, world.shop, limit=300)
    fund(engine, world, 200)

    def snapshot() -> tuple[Any, ...]:
        with transaction(engine) as session:
            return (
                session.scalar(select(func.count()).select_from(JournalEntry)),
                session.scalar(select(func.count()).select_from(Obligation)),
                session.execute(
                    text("SELECT account_id, slot, balance FROM balances ORDER BY 1, 2")
                ).all(),
                session.execute(
                    select(
                        ExposurePosition.org_id, ExposurePosition.slot, ExposurePosition.net
                    ).order_by(ExposurePosition.org_id, ExposurePosition.slot)
                ).all(),
            )

    before = snapshot()
    with pytest.raises(Declined):
        fund(engine, world, 101)
    assert snapshot() == before
    with transaction(engine) as session:
        decisions = session.execute(select(RiskDecision)).scalars().all()
    assert [(d.code, d.outcome, d.rule_version) for d in decisions] == [
        ("exposure_cap_exceeded", "declined", 1)
    ]
    assert decisions[0].caller_org_id == world.shop.org_id
    fund(engine, world, 100)  # what fits still passes
    assert open_debit(engine, world.shop) == 300


@pytest.mark.parametrize(
    "fields",
    [
        {"limit": 5, "collateral": 5},
        {},
        {"limit": 5, "multiple": "2"},
        {"uncapped": True, "limit": 5},
        {"collateral": 5, "multiple": "0"},
        {"limit": -1},
    ],
)
def test_a_cap_has_exactly_one_basis(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ExposureCapSet(org_id=uuid.uuid4(), currency="CNY", **fields)


def test_collateral_times_a_multiple_and_versions(engine: Engine, world: World) -> None:
    # 333 x 1.5 = 499.5: a fraction of a fen of credit is never granted.
    assert set_cap(engine, world, world.shop, collateral=333, multiple=Decimal("1.5")) == 499
    fund(engine, world, 499)
    with pytest.raises(Declined):
        fund(engine, world, 1)
    assert set_cap(engine, world, world.shop, collateral=500, reason="more prefunding") == 500
    fund(engine, world, 1)
    assert headroom(engine, world.shop) == 0
    assert set_cap(engine, world, world.shop, uncapped=True) is None
    fund(engine, world, 10_000)
    with transaction(engine) as session:
        history = exposure.cap_history(session, world.shop.org_id)
    assert [(h.version, h.cap, h.collateral, h.multiple) for h in history] == [
        (3, None, None, None),
        (2, 500, 500, Decimal(1)),
        (1, 499, 333, Decimal("1.5")),
    ]
    assert {(h.set_by_org, h.set_by_key) for h in history} == {
        (world.platform.org_id, "operator-key")
    }


def test_what_a_party_is_owed_makes_room_and_uncapped_parties_are_counted(
    engine: Engine, world: World
) -> None:
    set_cap(engine, world, world.bank_a, limit=50)
    fund(engine, world, 700)  # the shop owes Bank A
    assert open_debit(engine, world.shop) == 700
    assert open_debit(engine, world.bank_a) == -700
    assert headroom(engine, world.bank_a) == 750
    with transaction(engine) as session:
        shop = exposure.exposure(session, world.shop.org_id)
    assert (shop.currencies[0].cap, shop.currencies[0].headroom) == (None, None)
    assert not shop.restricted


def test_a_bulk_file_is_summed_per_party_and_declined_at_its_first_line_past_the_cap(
    engine: Engine, world: World
) -> None:
    from issuers import accruals
    from issuers.schemas import AccrualBatchCreate, AccrualCreate

    set_cap(engine, world, world.shop, limit=1000)
    lines = [AccrualCreate(program="BANKA", external_id="alice", points=200) for _ in range(5)]
    with transaction(engine) as session:
        accruals.accrue_batch(session, world.shop, AccrualBatchCreate(items=lines), T0, "f1")
    assert open_debit(engine, world.shop) == 500
    over = [AccrualCreate(program="BANKA", external_id="alice", points=200) for _ in range(6)]
    with pytest.raises(Declined) as caught, transaction(engine) as session:
        accruals.accrue_batch(session, world.shop, AccrualBatchCreate(items=over), T0, "f2")
    assert caught.value.problem()["open_net_debit"] == 1000  # line 6: 500 + 5 x 100
    assert caught.value.problem()["headroom"] == 0
    assert open_debit(engine, world.shop) == 500


def test_concurrent_operations_never_pass_a_cap_together(pg_engine: Engine) -> None:
    engine = pg_engine
    bind_exposure(engine)
    world = build_world(engine)
    threads = 8
    for t in range(threads):
        member(engine, world.bank_a, "BANKA", f"m{t}")
    set_cap(engine, world, world.shop, limit=1000)
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        barrier.wait()
        for _ in range(4):
            try:
                fund(engine, world, 100, who=f"m{t}")
                outcome = "ok"
            except Declined:
                outcome = "declined"
            with lock:
                outcomes.append(outcome)

    running = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    assert outcomes.count("ok") == 10
    assert outcomes.count("declined") == threads * 4 - 10
    assert open_debit(engine, world.shop) == 1000
    with transaction(engine) as session:
        owed = session.scalar(
            select(func.sum(Obligation.amount)).where(Obligation.payer_org_id == world.shop.org_id)
        )
    assert owed == 1000


def test_the_one_statement_matches_its_portable_twin(pg_engine: Engine) -> None:
    world = build_world(pg_engine)
    set_cap(pg_engine, world, world.shop, limit=900)
    set_cap(pg_engine, world, world.cafe, limit=10)
    a, b, c, d = world.shop, world.cafe, world.bank_a, world.bank_b
    with transaction(pg_engine) as session:
        session.execute(
            text(
                "INSERT INTO risk_settlement_restrictions (org_id, batch_id, due_at,"
                " restricted_at, restricted_by) VALUES (:o, 'SB-CNY-20261101', :t, :t, 'test')"
            ),
            {"o": b.org_id, "t": T0},
        )
        for org, day, slot, net in [
            (a.org_id, DAY - timedelta(days=1), 0, 300),
            (a.org_id, DAY, 3, -50),
            (a.org_id, DAY, 0, 120),
            (c.org_id, DAY, 2, 40),
        ]:
            session.add(
                ExposurePosition(org_id=org, currency="CNY", business_date=day, slot=slot, net=net)
            )
    totals = {
        (a.org_id, "CNY"): 200,
        (b.org_id, "CNY"): 5,
        (c.org_id, "CNY"): -150,
        (d.org_id, "CNY"): -55,
    }
    rising = {(a.org_id, "CNY"), (b.org_id, "CNY")}
    slots = {key: 5 for key in totals}
    answers = []
    rows = []
    for counter in (count, count_portable):
        session_engine = pg_engine
        with transaction(session_engine) as session:
            answers.append(counter(session, DAY, totals, rising, slots))
            rows.append(
                session.execute(
                    select(
                        ExposurePosition.org_id,
                        ExposurePosition.business_date,
                        ExposurePosition.slot,
                        ExposurePosition.net,
                    ).order_by(
                        ExposurePosition.org_id,
                        ExposurePosition.business_date,
                        ExposurePosition.slot,
                    )
                ).all()
            )
            session.rollback()
    assert answers[0] == answers[1]
    assert rows[0] == rows[1]
    shop = answers[0][(a.org_id, "CNY")]
    assert (shop.cap, shop.open_after, shop.overdue) == (900, 300 - 50 + 120 + 200, None)
    assert answers[0][(b.org_id, "CNY")].overdue == "SB-CNY-20261101"
    assert answers[0][(c.org_id, "CNY")].open_after is None


# payments and the overdue restriction ----------------------------------------------------


def test_an_unpaid_party_is_restricted_after_the_deadline_until_it_pays(
    engine: Engine, world: World, tmp_path: Path
) -> None:
    settings_ = dataclasses.replace(
        Settings.from_env(),
        zone=ZONE,
        cutoff=CUTOFF,
        platform_key_path=tmp_path / "keys" / "platform.pem",
        settlement_dir=tmp_path / "settlement",
    )
    deadline = timedelta(hours=settings_.payment_deadline_hours)
    fund(engine, world, 800)
    published_at = datetime(2026, 11, 20, 16, 20, tzinfo=UTC)  # 00:20 on the 21st in Shanghai
    batch = run_batch(engine, DAY, "CNY", published_at, settings_)
    assert batch.state == "published"
    # The published day leaves the open window.
    assert open_debit(engine, world.shop) == 0
    operator = Caller(world.platform.org_id, "platform", "op-key")

    with transaction(engine) as session:
        assert exposure.restrict_overdue(session, published_at + deadline, deadline) == []
    later = published_at + deadline + timedelta(seconds=1)
    assert "risk-payment-deadline" in {job.id for job in declared_jobs(settings_, engine)}
    made = run_overdue(engine, settings_, later)  # what the scheduled job runs
    assert [(r.org_id, r.batch_id, r.due_at, r.restricted_by) for r in made] == [
        (world.shop.org_id, batch.id, published_at + deadline, "system:payment-deadline")
    ]
    with transaction(engine) as session:  # a second run adds nothing
        assert exposure.restrict_overdue(session, later, deadline) == []
        shown = exposure.exposure(session, world.shop.org_id)
    assert (shown.restricted, shown.overdue_batches) == (True, [batch.id])

    with pytest.raises(Declined) as caught:
        fund(engine, world, 1, now=later)
    assert caught.value.problem()["code"] == "settlement_overdue"
    assert caught.value.problem()["batch_id"] == batch.id
    # Bank A was owed: it is never restricted, and records its receipt.
    with transaction(engine) as session:
        got = exposure.record_payment(
            session,
            operator,
            SettlementPaymentCreate(
                batch_id=batch.id, org_id=world.bank_a.org_id, direction="received"
            ),
            later,
        )
    assert (got.amount, got.lifted_restriction) == (800, False)

    wrong = SettlementPaymentCreate(
        batch_id=batch.id, org_id=world.shop.org_id, direction="received"
    )
    with pytest.raises(exposure.PaymentDirectionMismatch), transaction(engine) as session:
        exposure.record_payment(session, operator, wrong, later)
    paid_at = later + timedelta(hours=2)
    paid = SettlementPaymentCreate(
        batch_id=batch.id, org_id=world.shop.org_id, direction="paid", reference="wire 77"
    )
    with transaction(engine) as session:
        out = exposure.record_payment(session, operator, paid, paid_at)
    assert (out.amount, out.lifted_restriction, out.recorded_by_key) == (800, True, "op-key")
    with pytest.raises(exposure.PaymentAlreadyRecorded), transaction(engine) as session:
        exposure.record_payment(session, operator, paid, paid_at)
    with transaction(engine) as session:
        (restriction,) = exposure.list_restrictions(session, world.shop.org_id)
        assert exposure.restrict_overdue(session, paid_at, deadline) == []
    assert (restriction.lifted_at, restriction.lifted_by_org, restriction.lifted_by_key) == (
        paid_at,
        world.platform.org_id,
        "op-key",
    )
    fund(engine, world, 1, now=paid_at)
    assert open_debit(engine, world.shop) == 1


# through the signed API ------------------------------------------------------------------


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(make_settings(db_url, tmp_path))
    # Only this rule: the test does not depend on the other controls' defaults.
    bind_policy(application.state.engine, RiskPolicy(rules=[ExposureRule(ZONE, CUTOFF)]))
    yield application
    application.state.engine.dispose()


def client(app: FastAPI, party: Party) -> PartnerClient:
    return PartnerClient(BASE, party.keyid, party.key, transport=httpx.ASGITransport(app=app))


def test_headroom_through_the_signed_api(app: FastAPI) -> None:
    operator = bootstrap_operator(app)
    with client(app, operator) as op:
        bank = onboard(op, "issuer", "Bank")
        shop = onboard(op, "merchant", "Shop")
        other = onboard(op, "merchant", "Other")
        cap = op.request(
            "POST",
            "/v1/risk/exposure-caps",
            {"org_id": shop.org_id, "currency": "CNY", "limit": 500},
        )
        assert (cap["cap"], cap["version"], cap["set_by_key"]) == (500, 1, operator.keyid)
    with client(app, bank) as b:
        b.request("POST", "/v1/programs", {"code": "BANK", "name": "Bank", "point_value": "0.01"})
        b.request("POST", "/v1/programs/BANK/members", {"external_id": "alice"})
    with client(app, shop) as s:
        s.accrue("BANK", "alice", 300)  # 300 points at 0.01 CNY: the shop owes 300 fen
        own = s.request("GET", "/v1/risk/exposure")
        assert own == {
            "org_id": shop.org_id,
            "restricted": False,
            "overdue_batches": [],
            "currencies": [
                {
                    "currency": "CNY",
                    "open_net_debit": 300,
                    "cap": 500,
                    "cap_version": 1,
                    "headroom": 200,
                }
            ],
        }
        with pytest.raises(ApiError) as caught:
            s.accrue("BANK", "alice", 201)
        assert (caught.value.status, caught.value.code) == (409, "exposure_cap_exceeded")
        assert caught.value.problem["headroom"] == 200
        s.accrue("BANK", "alice", 200)
    with client(app, operator) as op:
        seen = op.request("GET", f"/v1/risk/exposure?org_id={shop.org_id}")
        assert seen["currencies"][0]["headroom"] == 0
    with client(app, other) as o:
        with pytest.raises(ApiError) as hidden:
            o.request("GET", f"/v1/risk/exposure?org_id={shop.org_id}")
        assert (hidden.value.status, hidden.value.code) == (404, "not_found")


def test_the_open_window_holds_every_day_not_yet_published(
    engine: Engine, world: World, tmp_path: Path
) -> None:
    settings_ = dataclasses.replace(
        Settings.from_env(),
        zone=ZONE,
        cutoff=CUTOFF,
        platform_key_path=tmp_path / "keys" / "platform.pem",
        settlement_dir=tmp_path / "settlement",
    )
    set_cap(engine, world, world.shop, limit=1000)
    fund(engine, world, 600)
    next_day = T0 + timedelta(days=1)
    fund(engine, world, 400, now=next_day)  # day 1 is closed but not yet settled: it counts
    with pytest.raises(Declined):
        fund(engine, world, 1, now=next_day)
    run_batch(engine, DAY, "CNY", next_day, settings_)
    assert open_debit(engine, world.shop) == 400
    fund(engine, world, 600, now=next_day)
    assert headroom(engine, world.shop) == 0
