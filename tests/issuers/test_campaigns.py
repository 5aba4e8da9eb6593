"""Campaigns, worked out by hand: recurring days in the issuer's zone, first purchase, spend X
get Y, targeting, the stacking rule, budgets (also under concurrent events), figures."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing.core.db import make_engine, transaction
from clearing.core.money import earned_points, multiplied_extra, spend_points
from issuers import repository, tiers
from tests.factories import T0, balance, build_world, member
from tests.issuers.earning_support import book, campaign, figures, post, steps

BASE = [{"code": "base", "rate": "1"}]
# Dec 8, 2026 in Shanghai runs from Dec 7 16:00 UTC to Dec 8 16:00 UTC.
EIGHTH = datetime(2026, 12, 7, 16, 30, tzinfo=UTC)


def test_double_points_on_the_eighth_in_the_issuers_zone(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "a")
    book(engine, w.bank_a, "BANKA", spend_rules=BASE)
    campaign(
        engine,
        w.bank_a,
        "BANKA",
        code="day8",
        kind="multiplier",
        multiplier="2",
        days_of_month=[8],
        budget=10_000,
    )
    # 00:30 on Dec 8 in Shanghai (still Dec 7 in UTC): 123 + 123
    out = post(
        engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=12_345, now=EIGHTH
    )
    assert steps(out) == [("rule", "base", 123), ("campaign", "day8", 123)]
    # 15:59 UTC on Dec 7 is 23:59 on Dec 7 in Shanghai: no campaign
    before = EIGHTH - timedelta(minutes=31)
    assert (
        post(
            engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=12_345, now=before
        ).points
        == 123
    )
    fig = figures(engine, w.bank_a, "BANKA", "day8")
    assert (fig.paid, fig.remaining, fig.members_reached, fig.exhausted) == (123, 9877, 1, False)


def test_first_purchase_spend_x_get_y_and_the_stacking_rule(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "a")
    book(engine, w.bank_a, "BANKA", spend_rules=BASE)
    campaign(
        engine,
        w.bank_a,
        "BANKA",
        code="a-first",
        kind="first_purchase",
        multiplier="3",
        priority=1,
        budget=10_000,
    )
    campaign(
        engine,
        w.bank_a,
        "BANKA",
        code="b-double",
        kind="multiplier",
        multiplier="2",
        priority=2,
        budget=10_000,
    )
    campaign(
        engine,
        w.bank_a,
        "BANKA",
        code="c-500get100",
        kind="spend_bonus",
        min_spend=50_000,
        bonus_points=100,
        priority=3,
        budget=10_000,
    )
    # first purchase of 600 CNY: rule 600; of the multipliers only x3 pays (1200), x2 does not
    # stack; spend 500 get 100 adds 100
    out = post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=60_000)
    assert steps(out) == [
        ("rule", "base", 600),
        ("campaign", "a-first", 1200),
        ("campaign", "b-double", 0),
        ("campaign", "c-500get100", 100),
    ]
    # second purchase of 400 CNY: not first, below 500: x2 only
    out = post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=40_000)
    assert steps(out) == [("rule", "base", 400), ("campaign", "b-double", 400)]
    assert balance(engine, w.bank_a, "BANKA", "a")[0] == 1900 + 800


def test_a_first_purchase_campaign_knows_purchases_made_before_it(engine: Engine) -> None:
    w = build_world(engine)
    for m in ("old", "new"):
        member(engine, w.bank_a, "BANKA", m)
    book(engine, w.bank_a, "BANKA", spend_rules=BASE)
    post(engine, w.bank_a, "BANKA", external_id="old", kind="purchase", spend=1000)
    campaign(
        engine, w.bank_a, "BANKA", code="first", kind="first_purchase", bonus_points=50, budget=1000
    )
    assert (
        post(engine, w.bank_a, "BANKA", external_id="old", kind="purchase", spend=1000).points == 10
    )
    assert (
        post(engine, w.bank_a, "BANKA", external_id="new", kind="purchase", spend=1000).points == 60
    )


def test_targeting_by_tier_and_membership_age(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "old", now=T0 - timedelta(days=400))
    member(engine, w.bank_a, "BANKA", "new")
    book(engine, w.bank_a, "BANKA", spend_rules=BASE, now=T0 - timedelta(days=400))
    with transaction(engine) as session:
        program = repository.program_by_code(session, "BANKA")
        assert program is not None
        tiers.define_tier(session, program.id, "standard", "Standard", 0, Decimal(1), T0)
        gold = tiers.define_tier(session, program.id, "gold", "Gold", 1, Decimal("2"), T0)
        old = repository.member_by_external_id(session, program.id, "old")
        assert old is not None
        tiers.place_member(session, old.id, gold.id, T0)
    campaign(
        engine,
        w.bank_a,
        "BANKA",
        code="gold-bonus",
        kind="multiplier",
        multiplier="1.5",
        tiers=["gold"],
        budget=1000,
    )
    campaign(
        engine,
        w.bank_a,
        "BANKA",
        code="welcome",
        kind="spend_bonus",
        min_spend=100,
        bonus_points=20,
        max_member_days=30,
        budget=1000,
    )
    campaign(
        engine,
        w.bank_a,
        "BANKA",
        code="loyal",
        kind="spend_bonus",
        min_spend=100,
        bonus_points=7,
        min_member_days=365,
        budget=1000,
    )
    # gold, 400 days a member: rule 33, tier x2 +33, gold x1.5 on the rule's 33 = +16, loyal +7
    out = post(engine, w.bank_a, "BANKA", external_id="old", kind="purchase", spend=3399)
    assert steps(out) == [
        ("rule", "base", 33),
        ("tier", "gold", 33),
        ("campaign", "gold-bonus", 16),
        ("campaign", "loyal", 7),
    ]
    # standard, new: rule 33, welcome +20
    out = post(engine, w.bank_a, "BANKA", external_id="new", kind="purchase", spend=3399)
    assert steps(out) == [("rule", "base", 33), ("campaign", "welcome", 20)]


def test_a_budget_pays_what_is_left_then_says_it_is_exhausted(engine: Engine) -> None:
    w = build_world(engine)
    for m in ("a", "b"):
        member(engine, w.bank_a, "BANKA", m)
    book(engine, w.bank_a, "BANKA", spend_rules=BASE)
    campaign(
        engine, w.bank_a, "BANKA", code="double", kind="multiplier", multiplier="2", budget=250
    )
    assert (
        post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=20_000).points
        == 400
    )
    out = post(engine, w.bank_a, "BANKA", external_id="b", kind="purchase", spend=20_000)
    assert steps(out) == [("rule", "base", 200), ("campaign", "double", 50)]
    assert out.earnings[0].explanation[-1].note == "budget exhausted: paid 50 of 200"
    out = post(engine, w.bank_a, "BANKA", external_id="b", kind="purchase", spend=1000)
    assert steps(out) == [("rule", "base", 10), ("campaign", "double", 0)]
    fig = figures(engine, w.bank_a, "BANKA", "double")
    assert (fig.paid, fig.remaining, fig.members_reached, fig.exhausted) == (250, 0, 2, True)


def test_concurrent_events_never_pass_a_budget_or_a_monthly_cap(pg_engine: Engine) -> None:
    w = build_world(pg_engine)
    members = [member(pg_engine, w.bank_a, "BANKA", f"m{n}") for n in range(8)]
    member(pg_engine, w.bank_a, "BANKA", "capped")
    book(pg_engine, w.bank_a, "BANKA", spend_rules=BASE, month_cap=250)
    campaign(
        pg_engine, w.bank_a, "BANKA", code="double", kind="multiplier", multiplier="2", budget=350
    )
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def one(external_id: str) -> None:
        barrier.wait()
        try:
            post(
                pg_engine, w.bank_a, "BANKA", external_id=external_id, kind="purchase", spend=10_000
            )
        except BaseException as error:  # shown by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=one, args=(m,)) for m in members]
    threads += [threading.Thread(target=one, args=("capped",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # 16 purchases of 100 CNY: each rule pays 100, the capped member's 8 pay 250 in all (its
    # month cap); the campaign pays 100 on each while its budget lasts. Concurrent events pay from
    # different slots of the budget, never past it (an event that finds every other slot in use
    # pays what it holds and says so).
    fig = figures(pg_engine, w.bank_a, "BANKA", "double")
    assert fig.paid <= 350
    total = sum(balance(pg_engine, w.bank_a, "BANKA", m)[0] for m in [*members, "capped"])
    assert total == 8 * 100 + 250 + fig.paid
    # what is left is paid to later events, and no more: m0 has 150 of its month cap left
    for _ in range(4):
        post(pg_engine, w.bank_a, "BANKA", external_id="m0", kind="purchase", spend=10_000)
    fig = figures(pg_engine, w.bank_a, "BANKA", "double")
    assert (fig.paid, fig.exhausted) == (350, True)
    total = sum(balance(pg_engine, w.bank_a, "BANKA", m)[0] for m in [*members, "capped"])
    assert total == 8 * 100 + 250 + 150 + 350


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    spend=st.integers(min_value=1, max_value=10**12),
    rate=st.decimals(min_value=0, max_value=1000, places=6),
    multiplier=st.decimals(min_value=1, max_value=100, places=6),
)
def test_earned_points_are_whole_and_never_above_the_exact_amount(
    spend: int, rate: Decimal, multiplier: Decimal
) -> None:
    base = spend_points(spend, rate, "CNY")
    exact = Decimal(spend) / 100 * rate
    assert isinstance(base, int)
    assert 0 <= base <= exact < base + 1
    extra = multiplied_extra(base, multiplier)
    assert 0 <= extra <= base * (multiplier - 1) < extra + 1
    # no split of a purchase earns more than the whole
    half = spend // 2
    assert spend_points(half, rate, "CNY") + spend_points(spend - half, rate, "CNY") <= base
    assert earned_points(Decimal("-1")) == 0


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    budget=st.integers(min_value=0, max_value=500),
    spends=st.lists(st.integers(min_value=1, max_value=30_000), min_size=1, max_size=6),
)
def test_a_campaign_never_pays_past_its_budget(
    sqlite_url: str, budget: int, spends: list[int]
) -> None:
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "db.sqlite")
    shutil.copyfile(sqlite_url.removeprefix("sqlite:///"), path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        w = build_world(engine)
        member(engine, w.bank_a, "BANKA", "a")
        book(engine, w.bank_a, "BANKA", spend_rules=BASE)
        campaign(
            engine,
            w.bank_a,
            "BANKA",
            code="double",
            kind="multiplier",
            multiplier="2",
            budget=budget,
        )
        paid = 0
        for spend in spends:
            out = post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=spend)
            paid += sum(s.points for s in out.earnings[0].explanation if s.step == "campaign")
        fig = figures(engine, w.bank_a, "BANKA", "double")
        wanted = sum(spend // 100 for spend in spends)
        assert fig.paid == paid == min(budget, wanted)
    finally:
        engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
