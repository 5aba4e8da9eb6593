"""A purchase that reaches a tier's spend threshold moves its member up at once: the event's
spend is written before the tiers are looked at again."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine

from clearing.core.db import transaction
from issuers import repository, tiers
from tests.factories import T0, build_world, member
from tests.issuers.earning_support import book, post, post_file


def _tier(engine: Engine, external_id: str) -> str:
    with transaction(engine) as session:
        program = repository.program_by_code(session, "BANKA")
        assert program is not None
        found = repository.member_by_external_id(session, program.id, external_id)
        assert found is not None
        held = tiers.tiers_of(session, [found])[found.id]
        assert held is not None
        return held.code


def test_a_purchase_reaching_the_spend_threshold_upgrades_at_once(engine: Engine) -> None:
    w = build_world(engine)
    member(engine, w.bank_a, "BANKA", "ann")
    member(engine, w.bank_a, "BANKA", "bob")
    with transaction(engine) as session:
        program = repository.program_by_code(session, "BANKA")
        assert program is not None
        tiers.define_tier(session, program.id, "standard", "Standard", 0, Decimal(1), T0)
        tiers.define_tier(
            session, program.id, "silver", "Silver", 1, Decimal("1.5"), T0, qualify_spend=100_000
        )
    book(engine, w.bank_a, "BANKA", spend_rules=[{"code": "base", "rate": "1"}])

    # 600 yuan: 600 points, 600 of the 1,000 yuan that reach silver.
    first = post(engine, w.bank_a, "BANKA", external_id="ann", kind="purchase", spend=60_000)
    assert first.points == 600
    assert _tier(engine, "ann") == "standard"
    # 500 yuan more earns at the tier held when it is evaluated (standard: 500 points); its
    # spend makes 1,100 yuan, so ann is silver as soon as it is written.
    second = post(engine, w.bank_a, "BANKA", external_id="ann", kind="purchase", spend=50_000)
    assert second.points == 500
    assert _tier(engine, "ann") == "silver"
    # The next 100 yuan earn 100 points and silver's half again: 150.
    third = post(engine, w.bank_a, "BANKA", external_id="ann", kind="purchase", spend=10_000)
    assert third.points == 150

    # A file's purchases count the same way: 2 x 500 yuan reach silver once the file is written.
    lines = [{"external_id": "bob", "kind": "purchase", "spend": 50_000}] * 2
    assert post_file(engine, w.bank_a, "BANKA", lines).points == 1_000
    assert _tier(engine, "bob") == "silver"
