"""The event path's one-statement tier read answers as `issuers.tiers.tiers_of` does."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine

from clearing.core.db import transaction
from issuers import earning_repository, repository, tiers
from tests.factories import T0, build_world, member


def test_tier_of_matches_tiers_of(engine: Engine) -> None:
    w = build_world(engine)
    for m in ("placed", "base"):
        member(engine, w.bank_a, "BANKA", m)
    member(engine, w.carrier, "MOBILE", "tierless")
    with transaction(engine) as session:
        bank_a = repository.program_by_code(session, "BANKA")
        mobile = repository.program_by_code(session, "MOBILE")
        assert bank_a is not None
        assert mobile is not None
        tiers.define_tier(session, bank_a.id, "standard", "Standard", 0, Decimal(1), T0)
        gold = tiers.define_tier(
            session, bank_a.id, "gold", "Gold", 1, Decimal("2.5"), T0, privileges=["lounge"]
        )
        placed = repository.member_by_external_id(session, bank_a.id, "placed")
        base = repository.member_by_external_id(session, bank_a.id, "base")
        tierless = repository.member_by_external_id(session, mobile.id, "tierless")
        assert placed is not None
        assert base is not None
        assert tierless is not None
        tiers.place_member(session, placed.id, gold.id, T0)
        everyone = [placed, base, tierless]
        expected = tiers.tiers_of(session, everyone)
        assert {m.id: earning_repository.tier_of(session, m) for m in everyone} == expected
    assert expected[placed.id] == gold
    assert expected[tierless.id] is None
