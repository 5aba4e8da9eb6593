"""Earning rules, worked out by hand: spend rules, minimum spend, tier, caps, behaviours."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.models import JournalEntry
from issuers import repository, tiers
from issuers.models import ProgramEvent
from tests.factories import T0, balance, build_world, member
from tests.issuers.earning_support import book, post, post_file, preview, steps

DAY = timedelta(days=1)
SPEND_RULES = [
    {"code": "base", "rate": "1"},
    {"code": "dining", "rate": "2", "merchant_category": "dining"},
    {"code": "wealth", "rate": "0.5", "product_line": "wealth"},
    {"code": "app-dining", "rate": "3", "merchant_category": "dining", "channel": "app"},
]


def test_the_most_specific_spend_rule_earns_rounded_down(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "a")
    book(engine, w.bank_a, "BANKA", spend_rules=SPEND_RULES, min_spend=500)
    # 19.99 CNY at 1 per yuan: 19.99 -> 19 (down, never up)
    out = post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=1999)
    assert steps(out) == [("rule", "base", 19)]
    # dining: 2 per yuan on 10.05 CNY = 20.1 -> 20
    out = post(
        engine,
        w.bank_a,
        "BANKA",
        external_id="a",
        kind="purchase",
        spend=1005,
        merchant_category="dining",
    )
    assert steps(out) == [("rule", "dining", 20)]
    # dining in the app matches two selectors: 3 per yuan on 10.05 = 30.15 -> 30
    out = post(
        engine,
        w.bank_a,
        "BANKA",
        external_id="a",
        kind="purchase",
        spend=1005,
        merchant_category="dining",
        channel="app",
    )
    assert steps(out) == [("rule", "app-dining", 30)]
    # wealth: 0.5 per yuan on 9.99 = 4.995 -> 4
    out = post(
        engine,
        w.bank_a,
        "BANKA",
        external_id="a",
        kind="purchase",
        spend=999,
        product_line="wealth",
    )
    assert out.points == 4
    # below the minimum spend of 5.00 CNY: nothing, and an event row still says why
    out = post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=499)
    assert steps(out) == [("min_spend", None, 0)]
    assert out.earnings[0].accrual_id is None
    assert balance(engine, w.bank_a, "BANKA", "a") == (19 + 20 + 30 + 4, 73)


def test_a_merchant_rule_and_the_tier_multiplier(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "a")
    book(
        engine,
        w.bank_a,
        "BANKA",
        spend_rules=[
            {"code": "base", "rate": "1"},
            {"code": "shop", "rate": "1.5", "merchant_id": str(w.shop.org_id)},
        ],
    )
    with transaction(engine) as session:
        program = repository.program_by_code(session, "BANKA")
        assert program is not None
        tiers.define_tier(session, program.id, "standard", "Standard", 0, Decimal(1), T0)
        silver = tiers.define_tier(session, program.id, "silver", "Silver", 1, Decimal("1.5"), T0)
        m = repository.member_by_external_id(session, program.id, "a")
        assert m is not None
        tiers.place_member(session, m.id, silver.id, T0)
    from tests.factories import agree_all

    agree_all(engine, w)
    # the shop posts its own purchase: 1.5 per yuan on 13.33 = 19.995 -> 19; silver x1.5 adds
    # floor(19 x 0.5) = 9
    out = post(engine, w.shop, "BANKA", external_id="a", kind="purchase", spend=1333)
    assert steps(out) == [("rule", "shop", 19), ("tier", "silver", 9)]
    assert out.points == 28
    # the issuer posts a purchase elsewhere: 1 per yuan on 13.33 = 13; x1.5 adds floor(6.5) = 6
    out = post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=1333)
    assert steps(out) == [("rule", "base", 13), ("tier", "silver", 6)]
    assert balance(engine, w.bank_a, "BANKA", "a")[0] == 28 + 19
    with pytest.raises(ClearingError) as err:
        book(
            engine,
            w.bank_a,
            "BANKA",
            spend_rules=[{"code": "x", "rate": "1", "merchant_id": str(w.bank_b.org_id)}],
        )
    assert err.value.code == "invalid_input"


def test_day_and_month_caps_in_the_issuers_zone(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "a")
    book(
        engine,
        w.bank_a,
        "BANKA",
        spend_rules=[{"code": "base", "rate": "1"}],
        day_cap=100,
        month_cap=250,
    )
    # T0 is 09:00 on Nov 20 in Shanghai: 80 then 80 -> the day cap cuts the second to 20
    assert (
        post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=8000).points == 80
    )
    out = post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=8000)
    assert steps(out) == [("rule", "base", 80), ("day_cap", None, -60)]
    # 15:59 UTC is still Nov 20 in Shanghai (23:59): nothing more today
    late = T0 + timedelta(hours=14, minutes=59)
    assert (
        post(
            engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=5000, now=late
        ).points
        == 0
    )
    # 16:00 UTC is Nov 21 in Shanghai: a new day, 100 of 120
    nxt = T0 + timedelta(hours=15)
    assert (
        post(
            engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=12000, now=nxt
        ).points
        == 100
    )
    # the month has 250: 100 + 100 paid, 50 left on Nov 22
    out = post(
        engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=9000, now=T0 + 2 * DAY
    )
    assert steps(out) == [("rule", "base", 90), ("month_cap", None, -40)]
    # December in Shanghai: a new month
    dec = T0 + 11 * DAY
    assert (
        post(
            engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=9000, now=dec
        ).points
        == 90
    )
    assert balance(engine, w.bank_a, "BANKA", "a")[0] == 80 + 20 + 100 + 50 + 90


def test_behaviours_and_their_frequency_limits(engine: Engine) -> None:
    w = build_world(engine)
    for m in ("a", "b", "c"):
        member(engine, w.bank_a, "BANKA", m)
    book(
        engine,
        w.bank_a,
        "BANKA",
        behaviours=[
            {"event": "sign_up", "points": 50, "frequency": "once"},
            {
                "event": "check_in",
                "points": 1,
                "frequency": "day",
                "streak_days": 7,
                "streak_points": 20,
            },
            {"event": "referral", "points": 100, "referee_points": 30},
            {"event": "birthday", "points": 200, "frequency": "year"},
            {"event": "profile_completed", "points": 10, "frequency": "once"},
            {"event": "survey", "points": 5, "frequency": "month", "max_per_period": 2},
            {"event": "share", "points": 10},
        ],
    )
    assert post(engine, w.bank_a, "BANKA", external_id="a", kind="sign_up").points == 50
    again = post(engine, w.bank_a, "BANKA", external_id="a", kind="sign_up")
    assert steps(again) == [("frequency", "sign_up", 0)]
    # eight consecutive days of check-in, with a second check-in on day 3 and a gap after day 8
    total = 0
    for n in range(8):
        total += post(
            engine, w.bank_a, "BANKA", external_id="a", kind="check_in", now=T0 + n * DAY
        ).points
        if n == 2:
            assert (
                post(
                    engine, w.bank_a, "BANKA", external_id="a", kind="check_in", now=T0 + n * DAY
                ).points
                == 0
            )
    assert total == 8 * 1 + 20  # the 7th consecutive day pays the streak bonus
    # after a gap the streak starts again: day 10 is day 1 of a new streak
    later = post(engine, w.bank_a, "BANKA", external_id="a", kind="check_in", now=T0 + 9 * DAY)
    assert steps(later) == [("rule", "check_in", 1)]
    # referral: both sides, once per referred member, whoever refers
    ref = post(
        engine,
        w.bank_a,
        "BANKA",
        external_id="a",
        kind="referral",
        referred_external_id="b",
        now=T0 + 9 * DAY,
    )
    assert [(e.external_id, e.kind, e.points) for e in ref.earnings] == [
        ("a", "referral", 100),
        ("b", "referred", 30),
    ]
    ref2 = post(
        engine,
        w.bank_a,
        "BANKA",
        external_id="c",
        kind="referral",
        referred_external_id="b",
        now=T0 + 9 * DAY,
    )
    assert ref2.points == 0
    assert len(ref2.earnings) == 1
    now = T0 + 9 * DAY
    assert post(engine, w.bank_a, "BANKA", external_id="a", kind="birthday", now=now).points == 200
    assert post(engine, w.bank_a, "BANKA", external_id="a", kind="birthday", now=now).points == 0
    assert (
        post(engine, w.bank_a, "BANKA", external_id="a", kind="profile_completed", now=now).points
        == 10
    )
    surveys = [
        post(engine, w.bank_a, "BANKA", external_id="a", kind="survey", now=now).points
        for _ in range(3)
    ]
    assert surveys == [5, 5, 0]
    assert [
        post(engine, w.bank_a, "BANKA", external_id="a", kind="share", now=now).points
        for _ in range(3)
    ] == [10, 10, 10]
    assert balance(engine, w.bank_a, "BANKA", "a")[0] == 50 + 28 + 1 + 100 + 200 + 10 + 10 + 30
    assert balance(engine, w.bank_a, "BANKA", "b")[0] == 30
    with pytest.raises(ClearingError) as err:
        post(engine, w.bank_a, "BANKA", external_id="a", kind="dance", now=now)
    assert err.value.code == "unknown_event"


def test_versions_take_effect_when_published_and_preview_writes_nothing(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "a")
    book(engine, w.bank_a, "BANKA", spend_rules=[{"code": "base", "rate": "1"}])
    book(
        engine,
        w.bank_a,
        "BANKA",
        spend_rules=[{"code": "base2", "rate": "2"}],
        effective_from=(T0 + DAY).isoformat(),
    )
    seen = preview(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=1000)
    assert (seen.preview, seen.points) == (True, 10)
    with transaction(engine) as session:
        assert session.execute(select(func.count()).select_from(ProgramEvent)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(JournalEntry)).scalar_one() == 0
    assert (
        post(engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=1000).points == 10
    )
    tomorrow = T0 + DAY
    assert (
        post(
            engine, w.bank_a, "BANKA", external_id="a", kind="purchase", spend=1000, now=tomorrow
        ).points
        == 20
    )
    # an event that happened yesterday still earns by yesterday's rules
    back = post(
        engine,
        w.bank_a,
        "BANKA",
        external_id="a",
        kind="purchase",
        spend=1000,
        now=tomorrow,
        occurred_at=T0.isoformat(),
    )
    assert steps(back) == [("rule", "base", 10)]
    with pytest.raises(ClearingError) as err:
        book(
            engine,
            w.bank_a,
            "BANKA",
            spend_rules=[],
            effective_from=(T0 - DAY).isoformat(),
            now=T0 + DAY,
        )
    assert err.value.code == "earning_history"


def test_a_file_is_all_or_nothing_and_earns_as_the_singles_do(engine: Engine) -> None:
    w = build_world(engine)
    for m in ("a", "b"):
        member(engine, w.bank_a, "BANKA", m)
    book(
        engine,
        w.bank_a,
        "BANKA",
        spend_rules=[{"code": "base", "rate": "1"}],
        day_cap=100,
        behaviours=[{"event": "sign_up", "points": 50, "frequency": "once"}],
    )
    lines: list[dict[str, Any]] = [
        {"external_id": "a", "kind": "purchase", "spend": 6000},
        {"external_id": "a", "kind": "purchase", "spend": 6000},  # capped: 40 of 60
        {"external_id": "b", "kind": "sign_up"},
        {"external_id": "b", "kind": "sign_up"},  # once: 0
    ]
    with pytest.raises(ClearingError):
        post_file(engine, w.bank_a, "BANKA", [*lines, {"external_id": "ghost", "kind": "sign_up"}])
    assert balance(engine, w.bank_a, "BANKA", "a") == (0, 0)
    out = post_file(engine, w.bank_a, "BANKA", lines)
    assert (out.count, out.points, len(out.event_ids), len(out.accrual_ids)) == (4, 150, 4, 3)
    assert balance(engine, w.bank_a, "BANKA", "a")[0] == 100
    assert balance(engine, w.bank_a, "BANKA", "b")[0] == 50
