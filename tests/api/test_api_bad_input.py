"""Bad input through the signed app: one clear 422 problem, nothing written, never a 500."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from clearing.core.db import transaction
from clearing.core.money import BALANCE_LIMIT, MAX_AMOUNT
from clearing.core.timeutil import utcnow
from tests.api.api_support import World, assert_problem, signed


def members_of(world: World) -> list[str]:
    with world.client(world.bank) as bank:
        return sorted(m for m in ("alice", "bob") if bank.member("BANK", m))


def program_count(http: TestClient, world: World) -> int:
    response = signed(http, world.bank, "GET", "/v1/programs?limit=200")
    assert response.status_code == 200
    return len(response.json()["items"])


@pytest.mark.parametrize(
    "external_id",
    [
        "nul\x00id",
        "a/b",
        "line\nbreak",
        "tab\there",
        " lead",
        ".hidden",
        "..",
        "a b",
        "é",
        "x" * 101,
    ],
)
def test_an_external_id_outside_the_allowed_characters_is_refused(
    http: TestClient, world: World, external_id: str
) -> None:
    response = signed(
        http, world.bank, "POST", "/v1/programs/BANK/members", {"external_id": external_id}
    )
    assert_problem(response, 422, "invalid_input")
    # and an accrual naming it is refused before anything is looked up
    response = signed(
        http,
        world.bank,
        "POST",
        "/v1/accruals",
        {"program": "BANK", "external_id": external_id, "points": 1},
    )
    assert_problem(response, 422, "invalid_input")


def test_every_allowed_external_id_can_be_read_back_by_path(http: TestClient, world: World) -> None:
    external_id = "13800000000.a_b:c@d+e=f~g-h"
    created = signed(
        http, world.bank, "POST", "/v1/programs/BANK/members", {"external_id": external_id}
    )
    assert created.status_code == 201, created.text
    with world.client(world.bank) as bank:
        assert bank.member("BANK", external_id)["external_id"] == external_id


@pytest.mark.parametrize("text", ["nul\x00", "bell\x07", "esc\x1b[31m", "del\x7f", "c1\x85"])
def test_control_characters_in_names_and_references_are_refused(
    http: TestClient, world: World, text: str
) -> None:
    before = program_count(http, world)
    response = signed(
        http, world.bank, "POST", "/v1/programs", {"code": "NEW", "name": text, "point_value": "1"}
    )
    assert_problem(response, 422, "invalid_input")
    assert program_count(http, world) == before
    response = signed(
        http,
        world.bank,
        "POST",
        "/v1/accruals",
        {"program": "BANK", "external_id": "alice", "points": 1, "reference": text},
    )
    assert_problem(response, 422, "invalid_input")
    with world.client(world.bank) as bank:
        assert bank.member("BANK", "alice")["balance"] == 0


def test_names_in_any_script_are_welcome(http: TestClient, world: World) -> None:
    response = signed(
        http,
        world.bank,
        "POST",
        "/v1/programs",
        {"code": "JIFEN", "name": "招商积分 – Points ★", "point_value": "0.01"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "招商积分 – Points ★"


@pytest.mark.parametrize(
    "cursor",
    [
        "%00",
        "abc%00def",
        "not_a_cursor",
        "with%20space",
        base64.urlsafe_b64encode(b'["\\u0000"]').decode().rstrip("="),
        base64.urlsafe_b64encode(b'["BANK\\n"]').decode().rstrip("="),
    ],
)
def test_a_forged_cursor_is_refused(http: TestClient, world: World, cursor: str) -> None:
    response = signed(http, world.bank, "GET", f"/v1/programs?after={cursor}")
    assert_problem(response, 422, "invalid_input")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "UTC\x00"])
def test_an_unknown_zone_is_refused(http: TestClient, world: World, zone: str) -> None:
    response = signed(
        http,
        world.operator,
        "POST",
        "/v1/organizations",
        {"kind": "issuer", "name": "Zoned", "currency": "CNY", "zone": zone},
    )
    assert_problem(response, 422, "invalid_input")


def test_a_known_zone_is_kept(http: TestClient, world: World) -> None:
    response = signed(
        http,
        world.operator,
        "POST",
        "/v1/organizations",
        {"kind": "issuer", "name": "Paris", "currency": "EUR", "zone": "Europe/Paris"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["zone"] == "Europe/Paris"


def test_a_point_value_beyond_the_horizon_is_refused(http: TestClient, world: World) -> None:
    def publish(effective: str) -> Any:
        return signed(
            http,
            world.bank,
            "POST",
            "/v1/programs/BANK/point-values",
            {"value": "0.02", "effective_from": effective},
        )

    assert_problem(publish("9999-12-31T00:00:00Z"), 422, "invalid_input")
    assert_problem(publish((utcnow() + timedelta(days=400)).isoformat()), 422, "invalid_input")
    # nothing blocks a later, sensible version
    soon = publish((utcnow() + timedelta(days=30)).isoformat())
    assert soon.status_code == 201, soon.text
    assert soon.json()["version"] == 2


def test_amounts_are_bounded_where_the_schema_is_defined(http: TestClient, world: World) -> None:
    for points in (MAX_AMOUNT + 1, 2**63 - 1, 2**63):
        response = signed(
            http,
            world.bank,
            "POST",
            "/v1/accruals",
            {"program": "BANK", "external_id": "alice", "points": points},
        )
        assert_problem(response, 422, "invalid_input")
    with world.client(world.bank) as bank:
        assert bank.member("BANK", "alice")["balance"] == 0


def test_an_amount_a_rounding_would_take_beyond_the_bound_is_amount_out_of_range(
    http: TestClient, world: World
) -> None:
    # the telco's point is worth 0.005 CNY: MAX_AMOUNT points a shop funds owe half as many fen,
    # but at a point value of 2 CNY they would owe 200 x MAX_AMOUNT fen
    published = signed(http, world.telco, "POST", "/v1/programs/TEL/point-values", {"value": "2"})
    assert published.status_code == 201, published.text
    response = signed(
        http,
        world.shop,
        "POST",
        "/v1/accruals",
        {"program": "TEL", "external_id": "carol", "points": MAX_AMOUNT},
    )
    assert_problem(response, 422, "amount_out_of_range")
    with world.client(world.telco) as telco:
        assert telco.member("TEL", "carol")["balance"] == 0


def test_a_balance_pushed_to_its_limit_answers_amount_out_of_range_never_500(
    http: TestClient, world: World
) -> None:
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 10)
    with transaction(world.app.state.engine) as session:
        # As if the member's slot had been filled by years of accruals.
        session.execute(
            text(
                "UPDATE balances SET balance = :b WHERE account_id IN (SELECT id FROM accounts"
                " WHERE kind = 'member' AND asset = 'points:BANK')"
            ),
            {"b": BALANCE_LIMIT - 5},
        )
    for _ in range(3):
        response = signed(
            http,
            world.bank,
            "POST",
            "/v1/accruals",
            {"program": "BANK", "external_id": "alice", "points": 6},
        )
        assert_problem(response, 422, "amount_out_of_range")
    with world.client(world.bank) as bank:
        assert bank.member("BANK", "alice")["balance"] == BALANCE_LIMIT - 5
