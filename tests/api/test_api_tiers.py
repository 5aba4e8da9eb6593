"""Tiers through the signed API: definitions and versions, upgrade at once by an accrual, the
member view's tier and progress, manual placement and the history of moves."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient

from tests.api.api_support import World, assert_problem, signed

SILVER = {
    "code": "silver",
    "name": "Silver",
    "rank": 1,
    "multiplier": "1.5",
    "qualify_points": 1000,
    "privileges": ["lounge", "free_shipping"],
}


def _define(http: TestClient, world: World) -> None:
    base = {"code": "standard", "name": "Standard", "rank": 0}
    for body in (base, SILVER, {"code": "gold", "name": "Gold", "rank": 2, "qualify_spend": 10**7}):
        made = signed(http, world.bank, "POST", "/v1/programs/BANK/tiers", body)
        assert made.status_code == 201, made.text


def test_tiers_defined_listed_and_versioned(world: World, http: TestClient) -> None:
    early = signed(http, world.bank, "POST", "/v1/programs/BANK/tiers", SILVER)
    assert_problem(early, 409, "base_tier_missing")
    _define(http, world)
    again = signed(http, world.bank, "POST", "/v1/programs/BANK/tiers", SILVER)
    assert_problem(again, 409, "tier_exists")
    foreign = signed(http, world.telco, "POST", "/v1/programs/BANK/tiers", SILVER)
    assert_problem(foreign, 404, "not_found")
    # Anyone signed reads a program's tiers and their privileges (the mall does).
    listed = signed(http, world.shop, "GET", "/v1/programs/BANK/tiers")
    assert listed.status_code == 200, listed.text
    assert [(t["code"], t["rank"], t["privileges"], t["version"]) for t in listed.json()] == [
        ("standard", 0, [], 1),
        ("silver", 1, ["lounge", "free_shipping"], 1),
        ("gold", 2, [], 1),
    ]
    changed = signed(
        http,
        world.bank,
        "POST",
        "/v1/programs/BANK/tiers/silver/versions",
        {"multiplier": "1.75", "qualify_points": 1200},
    )
    assert changed.status_code == 201, changed.text
    assert (changed.json()["version"], Decimal(changed.json()["multiplier"])) == (
        2,
        Decimal("1.75"),
    )
    versions = signed(http, world.bank, "GET", "/v1/programs/BANK/tiers/silver/versions")
    assert [
        (v["version"], Decimal(v["multiplier"]), v["qualify_points"]) for v in versions.json()
    ] == [(1, Decimal("1.5"), 1000), (2, Decimal("1.75"), 1200)]
    bad = signed(
        http, world.bank, "POST", "/v1/programs/BANK/tiers/standard/versions", {"qualify_points": 5}
    )
    assert_problem(bad, 422, "tier_invalid")


def test_accrual_upgrades_at_once_and_the_member_view_shows_progress(
    world: World, http: TestClient
) -> None:
    _define(http, world)
    accrual = {"program": "BANK", "external_id": "alice", "points": 999}
    assert signed(http, world.bank, "POST", "/v1/accruals", accrual).status_code == 201
    view = signed(http, world.bank, "GET", "/v1/programs/BANK/members/alice").json()
    tier = view["tier"]
    assert (tier["code"], tier["qualifying_points"], tier["qualifying_spend"]) == (
        "standard",
        999,
        0,
    )
    assert tier["next_tier"] == {
        "code": "silver",
        "name": "Silver",
        "qualify_points": 1000,
        "qualify_spend": None,
        "points_missing": 1,  # 1,000 - 999
        "spend_missing": None,
    }
    one_more = {**accrual, "points": 1}
    assert signed(http, world.bank, "POST", "/v1/accruals", one_more).status_code == 201
    tier = signed(http, world.bank, "GET", "/v1/programs/BANK/members/alice").json()["tier"]
    assert (tier["code"], Decimal(tier["multiplier"]), tier["privileges"]) == (
        "silver",
        Decimal("1.5"),
        ["lounge", "free_shipping"],
    )
    assert tier["next_tier"]["code"] == "gold"
    assert tier["next_tier"]["spend_missing"] == 10**7  # no purchases yet
    placed = signed(
        http, world.bank, "POST", "/v1/programs/BANK/members/bob/tier", {"tier": "gold"}
    )
    assert placed.status_code == 201, placed.text
    assert (placed.json()["code"], placed.json()["qualifies_for"]) == ("gold", "standard")
    moves = signed(http, world.bank, "GET", "/v1/programs/BANK/tier-changes?limit=1")
    assert moves.status_code == 200, moves.text
    first = moves.json()
    assert [
        (m["external_id"], m["from_tier"], m["to_tier"], m["reason"]) for m in first["items"]
    ] == [("alice", "standard", "silver", "upgrade")]
    assert first["items"][0]["qualifying_points"] == 1000
    rest = signed(
        http, world.bank, "GET", f"/v1/programs/BANK/tier-changes?after={first['next']}"
    ).json()
    assert [(m["external_id"], m["reason"], m["changed_by_key"]) for m in rest["items"]] == [
        ("bob", "manual", world.bank.keyid)
    ]
    assert rest["next"] is None
    mine = signed(http, world.bank, "GET", "/v1/programs/BANK/tier-changes?external_id=bob")
    assert [m["to_tier"] for m in mine.json()["items"]] == ["gold"]
    hidden = signed(http, world.telco, "GET", "/v1/programs/BANK/tier-changes")
    assert_problem(hidden, 404, "not_found")
    untiered = signed(http, world.telco, "GET", "/v1/programs/TEL/members/carol").json()
    assert untiered["tier"] is None
