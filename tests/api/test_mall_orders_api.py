"""Points mall orders through the signed API: a supplier's voucher from the member's mall to the
till, a delivery item shipped and returned, and every refusal as problem+json that changes
nothing."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.api.api_support import World, assert_problem, signed
from tests.api.test_mall_catalogue_api import api_error, new_item, on_sale


def supply(world: World, program: str = "BANK", rate: str = "0.8") -> None:
    """The shop supplies the program's mall; its issuer approves."""
    with world.client(world.shop) as shop:
        proposed = shop.request(
            "POST",
            "/v1/agreements",
            {
                "program": program,
                "accept": True,
                "fund": True,
                "supply": True,
                "wholesale_rate": rate,
            },
        )
    with world.client(world.bank) as bank:
        bank.request("POST", f"/v1/agreements/{proposed['id']}/approve", {})


def member(world: World, external_id: str) -> dict[str, Any]:
    with world.client(world.bank) as bank:
        return dict(bank.request("GET", f"/v1/programs/BANK/members/{external_id}"))


def test_a_suppliers_voucher_from_the_members_mall_to_the_till(
    world: World, http: TestClient
) -> None:
    supply(world)
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "alice", 5_000)
    with world.client(world.shop) as shop:
        item = new_item(shop, "LATTE", fulfilment="voucher", value_amount=3200, stock=2)
        on_sale(shop, item["id"], "BANK", 1_200, cash_amount=500)
    with world.client(world.bank) as bank:
        mall = bank.request("GET", "/v1/programs/BANK/mall/items", params={"external_id": "alice"})
        assert [i["id"] for i in mall["items"]] == [item["id"]]
    body = {"external_id": "alice", "item_id": item["id"], "expected_points": 1_200}
    first = signed(
        http, world.bank, "POST", "/v1/programs/BANK/mall/orders", body, idempotency_key="o-1"
    )
    assert first.status_code == 201, first.text
    again = signed(
        http, world.bank, "POST", "/v1/programs/BANK/mall/orders", body, idempotency_key="o-1"
    )
    assert (again.headers["Idempotent-Replayed"], again.content) == ("true", first.content)
    placed = first.json()
    assert (placed["status"], placed["points"], placed["cash_amount"]) == ("fulfilled", 1_200, 500)
    assert placed["wholesale_amount"] == 2560  # 32.00 CNY x 0.8
    code = placed["vouchers"][0]["code"]
    assert member(world, "alice")["balance"] == 3_800
    with world.client(world.shop) as shop:
        seen = shop.request("GET", f"/v1/mall/orders/{placed['id']}")
        assert seen["vouchers"] == [
            {"code": None, "code_hint": f"****{code[-4:]}", "status": "issued", "redeemed_at": None}
        ]
        queue = shop.request("GET", "/v1/mall/orders", params={"status": "fulfilled"})
        assert [o["id"] for o in queue["items"]] == [placed["id"]]
        done = shop.request("POST", "/v1/mall/vouchers/redeem", {"code": code.lower()})
        assert done["order_id"] == placed["id"]
    twice = signed(http, world.shop, "POST", "/v1/mall/vouchers/redeem", {"code": code})
    assert_problem(twice, 409, "voucher_redeemed")
    stranger = signed(http, world.other_shop, "POST", "/v1/mall/vouchers/redeem", {"code": code})
    assert_problem(stranger, 404, "unknown_voucher")
    with world.client(world.bank) as bank:
        bank.request(
            "POST",
            "/v1/programs/BANK/mall/orders",
            {"external_id": "alice", "item_id": item["id"]},
        )
    sold_out = signed(
        http,
        world.bank,
        "POST",
        "/v1/programs/BANK/mall/orders",
        {"external_id": "alice", "item_id": item["id"]},
    )
    assert_problem(sold_out, 409, "out_of_stock")
    assert member(world, "alice")["balance"] == 2_600


def test_refusals_are_problems_that_change_nothing(world: World, http: TestClient) -> None:
    with world.client(world.bank) as bank:
        bank.accrue("BANK", "bob", 100)
        item = new_item(bank, "MUG", stock=5, member_limit=1, limit_period="month")
        on_sale(bank, item["id"], "BANK", 80)
    orders = "/v1/programs/BANK/mall/orders"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"external_id": "bob", "item_id": item["id"], "quantity": 2}, 409, "member_limit_reached"),
        (
            {"external_id": "bob", "item_id": item["id"], "expected_points": 70},
            409,
            "price_changed",
        ),
        ({"external_id": "nobody", "item_id": item["id"]}, 404, "not_found"),
        ({"external_id": "bob", "item_id": item["id"], "quantity": 0}, 422, "invalid_input"),
    ]
    for body, status, code in cases:
        assert_problem(signed(http, world.bank, "POST", orders, body), status, code)
    assert member(world, "bob")["balance"] == 100
    placed = signed(http, world.bank, "POST", orders, {"external_id": "bob", "item_id": item["id"]})
    assert placed.status_code == 201, placed.text
    poor = signed(http, world.bank, "POST", orders, {"external_id": "bob", "item_id": item["id"]})
    assert_problem(poor, 409, "member_limit_reached")
    order_id = placed.json()["id"]
    foreign = signed(
        http,
        world.telco,
        "POST",
        "/v1/programs/BANK/mall/orders",
        {"external_id": "bob", "item_id": item["id"]},
    )
    assert_problem(foreign, 404, "not_found")
    with world.client(world.telco) as telco:
        api_error(lambda: telco.request("GET", f"/v1/mall/orders/{order_id}"), 404, "unknown_order")
    with world.client(world.bank) as bank:
        shipped = bank.request(
            "POST", f"/v1/mall/orders/{order_id}/fulfil", {"delivery_reference": "SF-88"}
        )
        assert shipped["status"] == "fulfilled"
        api_error(
            lambda: bank.request("POST", f"/v1/mall/orders/{order_id}/cancel", {}),
            409,
            "order_status_move",
        )
        back = bank.request(
            "POST", f"/v1/mall/orders/{order_id}/returns", {"quantity": 1, "restock": True}
        )
        assert (back["status"], back["returned_points"]) == ("returned", 80)
        seen = bank.request("GET", f"/v1/mall/items/{item['id']}")
    assert seen["stock"] == 5
    assert member(world, "bob")["balance"] == 100
