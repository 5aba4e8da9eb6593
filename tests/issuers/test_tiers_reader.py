"""The tier each member holds: its recorded tier, else its program's base tier."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine

from clearing.core.db import transaction
from issuers import repository, tiers
from tests.factories import T0, build_world, member


def test_members_hold_the_base_tier_until_placed(engine: Engine) -> None:
    world = build_world(engine)
    member(engine, world.bank_a, "BANKA", "m1")
    member(engine, world.bank_a, "BANKA", "m2")
    member(engine, world.carrier, "MOBILE", "c1")
    with transaction(engine) as session:
        bank_a = repository.program_by_code(session, "BANKA")
        assert bank_a is not None
        tiers.define_tier(session, bank_a.id, "standard", "Standard", 0, Decimal(1), T0)
        gold = tiers.define_tier(
            session, bank_a.id, "gold", "Gold", 2, Decimal("2"), T0, qualify_points=50_000
        )
        silver = tiers.define_tier(
            session, bank_a.id, "silver", "Silver", 1, Decimal("1.5"), T0, privileges=["lounge"]
        )
        m1 = repository.member_by_external_id(session, bank_a.id, "m1")
        m2 = repository.member_by_external_id(session, bank_a.id, "m2")
        mobile = repository.program_by_code(session, "MOBILE")
        assert m1
        assert m2
        assert mobile
        c1 = repository.member_by_external_id(session, mobile.id, "c1")
        assert c1
        tiers.place_member(session, m1.id, silver.id, T0)
        held = tiers.tiers_of(session, [m1, m2, c1])
        assert [t.code for t in tiers.program_tiers(session, bank_a.id)] == [
            "standard",
            "silver",
            "gold",
        ]
    first, second = held[m1.id], held[m2.id]
    assert first is not None
    assert (first.code, first.multiplier, first.privileges) == (
        "silver",
        Decimal("1.5"),
        ("lounge",),
    )
    assert second is not None
    assert second.code == "standard"
    assert held[c1.id] is None  # MOBILE has no tiers
    assert gold.qualify_points == 50_000
